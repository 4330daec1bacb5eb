"""The mixed-length case on the windowed engine the paged KV cache replaced (issue 10's
">= 1.5x" baseline), run from a tree of that commit.

    git archive 0e8ccb0 | (mkdir -p /tmp/windowed && tar -x -C /tmp/windowed)
    PYTHONPATH=/tmp/windowed python benchmarks/sampling_windowed.py --mixed 64 --mixed-max 512
    python benchmarks/sampling.py --batches "" --mixed 64 --mixed-max 512 --out sampling_mixed_cpu

The old engine keeps `slots x max_len` cache rows and attends, each decode step, over
one power-of-two window covering the longest live sequence. Its `generate` takes one
`max_new_tokens` per call; the budget per request already existed one level down (each
request's `RequestSpec.max_new_tokens`, the Driver's request), so this script gives
the old sampler's own `generate` one budget per prompt by rewriting those two
expressions in its source, nothing else. Same model shape, seed, prompts, budgets and
greedy sampling as `benchmarks/sampling.py --mixed`, whose figure this one is compared
with (run both back to back on an idle machine). Writes results/<out>.txt.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# The old generate's expressions that read the call's single budget, and what each becomes.
REWRITES = {
    "self._validate(prompts, n, max_new_tokens)": "self._validate(prompts, n, max(max_new_tokens))",
    "max_new_tokens=int(max_new_tokens)": "max_new_tokens=int(max_new_tokens[i])",
    "compat.new_request(prompt, max_new_tokens,": "compat.new_request(prompt, max_new_tokens[i],",
}


def per_request_budgets(sampler_cls) -> None:
    """Replace `sampler_cls.generate` with a copy that takes one budget per prompt."""
    module = sys.modules[sampler_cls.__module__]
    src = textwrap.dedent(inspect.getsource(sampler_cls.generate))
    for old, new in REWRITES.items():
        if src.count(old) != 1:
            raise SystemExit(f"{module.__file__}: expected `{old}` once in generate; is this "
                             "the windowed engine's tree (git 0e8ccb0)?")
        src = src.replace(old, new)
    namespace: dict = {}
    exec(compile(src, module.__file__, "exec"), module.__dict__, namespace)  # noqa: S102 - our own source
    sampler_cls.generate = namespace["generate"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mixed", type=int, default=64)
    ap.add_argument("--mixed-min", type=int, default=32)
    ap.add_argument("--mixed-max", type=int, default=2048)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="sampling_windowed_cpu")
    args = ap.parse_args()

    import jax.numpy as jnp
    import numpy as np

    import int_jax
    from int_jax.models import qwen3
    from int_jax.sampling import rollout
    from int_jax.sampling.types import GREEDY

    per_request_budgets(rollout.JetStreamSampler)
    dtype = jnp.float32
    cfg = qwen3.Qwen3Config(**common.SMALL_100M, attention_impl="xla")
    model = qwen3.create(cfg, dtype=dtype, param_dtype=dtype, seed=0)
    count, low, high = args.mixed, args.mixed_min, args.mixed_max
    budgets = [int(x) for x in np.linspace(low, high, count).round()]
    max_len = 1 << (args.prompt_len + high - 1).bit_length()
    bucket = 1 << (args.prompt_len - 1).bit_length()
    rng = np.random.RandomState(0)  # the prompts of `sampling.py --batches "" --mixed ...`
    prompts = [list(rng.randint(0, cfg.vocab_size, args.prompt_len)) for _ in range(count)]
    sampler = rollout.JetStreamSampler(model, None, slots=count, max_len=max_len,
                                       buckets=(bucket,), cache_dtype=dtype, stop_ids=(),
                                       progress=False)
    run = lambda: sampler.generate(prompts, 1, GREEDY, budgets, seed=0)  # noqa: E731
    got = run()  # compile + warm up
    assert [len(row[0].tokens) for row in got] == budgets
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    secs = sorted(times)[len(times) // 2]
    tokens = sum(budgets)
    line = (f"mixed, windowed engine ({Path(int_jax.__file__).parent.parent}): {count} sequences, "
            f"{low}..{high} new tokens ({tokens} in all), slots {count} x max_len {max_len}: "
            f"{tokens / secs:9.1f} tok/s (median of {args.repeats})")
    print(line, flush=True)
    data = dict(device=common.device_name(), params=cfg.num_params, sequences=count,
                new_tokens=[low, high], tokens=tokens, windowed_tok_s=tokens / secs,
                seconds=times)
    out = common.write_result(args.out, [f"device: {common.device_name()}", line], data)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
