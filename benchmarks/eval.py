"""Eval sampling: K samples per problem with the prompt prefilled once vs once per sample,
and transformers' `generate(num_return_sequences=K)` on the same work.

    python benchmarks/eval.py            # CPU: ~100M random Qwen3, 16 problems x 32 samples x
                                         # 64 new tokens, 512-token prompts (needs an idle machine)
    python benchmarks/eval.py --quick    # smoke test: a tiny model and tiny work, seconds

The work is what `int-jax eval` does per benchmark (paper sampling: temperature 0.7,
top-p 0.8, top-k 20), with no stop tokens so every sample runs to the limit:

* ours, prefill shared: one `JetStreamSampler.generate(prompts, K)` call; the engine's
  prefix cache prefills each prompt once and its K samples reuse that KV;
* ours, prefill not shared: the same call with `share_prompts=False`, so every sample
  prefills its own copy of its prompt into pages of its own (an engine without prefix
  sharing); its line reports K prefills per problem and no reuse;
* transformers: `generate(prompt, num_return_sequences=K)` per problem (it expands the
  prompt K times and prefills every copy).

Each is warmed up first (compilation excluded, reported), then timed round-robin
(`common.interleaved`). Prints seconds and generated tokens/s of each and the ratios
(goal on CPU: shared >= 2x not shared with long prompts and short samples), with the
load average at start and end (the machine is shared: a busy one skews the figures),
and writes `benchmarks/results/<out>.txt` (the full run only, unless --out is given).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TINY = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
            num_kv_heads=2, head_dim=16, tie_word_embeddings=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a tiny model and tiny work (smoke test)")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--samples", type=int, default=32, help="K: samples per problem")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--slots", type=int, default=32, help="concurrent decode rows of our sampler")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--out", default=None, help="results file stem (default: eval_cpu; --quick: none)")
    args = ap.parse_args()
    if args.quick:
        args.problems, args.samples, args.new_tokens, args.prompt_len, args.slots = 2, 4, 8, 32, 8
    out = args.out if args.out is not None else ("" if args.quick else "eval_cpu")

    import numpy as np
    import torch

    from int_jax.models import factory, qwen3
    from int_jax.sampling.sampler import JetStreamSampler
    from int_jax.sampling.types import PAPER_ROLLOUT

    dtype = factory.dtype_of(args.dtype)
    cfg = qwen3.Qwen3Config(**(TINY if args.quick else common.SMALL_100M))
    model = qwen3.create(cfg, dtype=dtype, param_dtype=dtype, seed=0)

    def prompt_sets(seed: int):
        """Fresh random prompts per call (the same sequence for every variant), so no call
        finds a previous call's prompts in the prefix cache."""
        rng = np.random.RandomState(seed)
        while True:
            yield [list(rng.randint(0, cfg.vocab_size, args.prompt_len)) for _ in range(args.problems)]

    k, new = args.samples, args.new_tokens
    # Warm-up: one round of the decode slots filled as the timed call fills them (K samples
    # of each prompt), so the prefill batch shapes a variant runs are compiled before timing
    # (without sharing, K copies of a prompt go 8 to a prefill call).
    warm_prompts = next(prompt_sets(1))[:max(1, min(args.problems, args.slots // k))]
    tokens = args.problems * k * new
    max_len = 1 << (args.prompt_len + new - 1).bit_length()
    bucket = 1 << (args.prompt_len - 1).bit_length()
    sp = PAPER_ROLLOUT

    samplers = {
        "prefill shared": JetStreamSampler(
            model, None, slots=args.slots, max_len=max_len, buckets=(bucket,), max_prefill_length=bucket,
            cache_dtype=args.dtype, stop_ids=(), progress=False, prefix_cache_entries=args.problems),
        "prefill not shared": JetStreamSampler(
            model, None, slots=args.slots, max_len=max_len, buckets=(bucket,), max_prefill_length=bucket,
            cache_dtype=args.dtype, stop_ids=(), progress=False, share_prompts=False),
    }
    warm = {}
    for name, s in samplers.items():
        s.generate(warm_prompts, k, sp, new, seed=1)  # compile + warm up
        warm[name] = (s.engine.compile_stats.count, s.engine.compile_stats.seconds)
    fns = {name: (lambda s=s, sets=prompt_sets(0): s.generate(next(sets), k, sp, new, seed=0))
           for name, s in samplers.items()}

    if not args.no_peer:
        peer = common.transformers_peer(model, args.dtype)

        def run_peer(prompts):
            with torch.no_grad():
                for p in prompts:
                    x = torch.tensor([p], device=peer.device)
                    peer.generate(x, attention_mask=torch.ones_like(x), do_sample=True,
                                  temperature=sp.temperature, top_p=sp.top_p, top_k=sp.top_k,
                                  num_return_sequences=k, max_new_tokens=new, min_new_tokens=new)

        run_peer(warm_prompts)  # warm up
        fns["transformers"] = lambda sets=prompt_sets(0): run_peer(next(sets))

    before = {name: s.engine.prefix_cache_stats for name, s in samplers.items()}
    secs = common.interleaved(fns, args.repeats)

    lines = [f"device: {common.device_name()}",
             f"model: {'tiny (--quick)' if args.quick else '~100M'} ({cfg.num_params / 1e6:.1f}M params), "
             f"dtype {args.dtype}; work: {args.problems} problems x {k} samples x {new} new tokens, "
             f"{args.prompt_len}-token prompts, temperature {sp.temperature} top-p {sp.top_p} "
             f"top-k {sp.top_k}, no stop tokens; our sampler: {args.slots} slots; repeats {args.repeats}"]
    data = dict(device=common.device_name(), quick=args.quick,
                params=cfg.num_params, dtype=args.dtype, problems=args.problems, samples=k, new_tokens=new,
                prompt_len=args.prompt_len, slots=args.slots, repeats=args.repeats, generated_tokens=tokens,
                runs={})
    for name, s in fns.items():
        run = dict(seconds=secs[name], tok_s=tokens / secs[name])
        line = f"{name:<20} {secs[name]:9.2f} s  {tokens / secs[name]:9.1f} tok/s"
        if name in samplers:
            engine = samplers[name].engine
            hits, misses = (a - b for a, b in zip(engine.prefix_cache_stats, before[name]))
            prefills = misses // args.repeats
            count, compile_s = warm[name]
            extra = engine.compile_stats.count - count
            run.update(prefills_per_call=prefills, prefill_reuses_per_call=hits // args.repeats,
                       warmup_compiles=count, warmup_compile_s=round(compile_s, 2), compiles_while_timed=extra)
            line += (f"  (prefills per call {prefills}, reused {hits // args.repeats}; warm-up compiles "
                     f"{count} in {compile_s:.1f}s, {extra} more while timed)")
        print(line, flush=True)
        lines.append(line)
        data["runs"][name] = run
    ratios = {"prefill shared / not shared": ("prefill shared", "prefill not shared"),
              "prefill shared / transformers": ("prefill shared", "transformers"),
              "prefill not shared / transformers": ("prefill not shared", "transformers")}
    data["ratios"] = {}
    for label, (a, b) in ratios.items():
        if a in secs and b in secs:
            r = secs[b] / secs[a]
            data["ratios"][label] = r
            line = f"{label}: {r:.2f}x" + ("  (goal >= 2x)" if label.endswith("not shared") else "")
            print(line, flush=True)
            lines.append(line)
    print("load average (1, 5, 15 min): start {}, end {}".format(*common.load_average()))
    if out:
        print(f"wrote {common.write_result(out, lines, data)}")


if __name__ == "__main__":
    main()
