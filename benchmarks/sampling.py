"""Decode throughput: our JetStream sampler vs transformers' `generate`, same weights.

    python benchmarks/sampling.py                                   # CPU: ~100M model
    python benchmarks/sampling.py --preset qwen3_4b --dtype bfloat16 \\
        --batches 64,256 --prompt-len 512 --new-tokens 2048 --hbm-gbps 3350   # GPU

For each batch size: greedy decode of `batch` prompts x `new-tokens` tokens
(no stop tokens, so every request runs to the limit), timed end to end after
a warm-up call (compilation excluded, reported separately). Prints tokens/s of
each, the ratio (goal on CPU: >= 1x at batch 32), the engine's compile count
and time, and on accelerators the fraction of the HBM roofline (weights + the
KV pages each decode step reads, over --hbm-gbps).

The mixed case (`--mixed N`, 0 to skip) is the workload paging is for: N prompts whose
new-token budgets spread evenly from --mixed-min to --mixed-max, all in one call with
`slots=N` (each sequence frees its pages when it ends; decode reads each sequence's own
pages only). transformers runs them as one `generate` call to the longest budget (it
has no per-request lengths); both count only the tokens asked for. Goal on CPU: >= 1.5x
the windowed engine the paged one replaced (git 0e8ccb0 and before: run this script's
batches there for that figure).

    python benchmarks/sampling.py --batches "" --mixed 64 --mixed-min 32 --mixed-max 2048  # issue 10
    python benchmarks/sampling.py --batches "" --mixed 8 --mixed-max 64 --no-peer --out smoke  # smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="", help="a qwen3 preset instead of the ~100M model")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--attention", default="xla")
    ap.add_argument("--hbm-gbps", type=float, default=0.0, help="device HBM bandwidth, for the roofline")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--mixed", type=int, default=0, help="mixed case: prompts (0: skip)")
    ap.add_argument("--mixed-min", type=int, default=32)
    ap.add_argument("--mixed-max", type=int, default=2048)
    ap.add_argument("--out", default="sampling_cpu")
    args = ap.parse_args()

    import jax.numpy as jnp
    import numpy as np
    import torch

    from int_jax.models import factory, qwen3
    from int_jax.sampling.sampler import JetStreamSampler
    from int_jax.sampling.types import GREEDY

    dtype = factory.dtype_of(args.dtype)
    overrides = dict(attention_impl=args.attention)
    cfg = (qwen3.preset(args.preset, **overrides) if args.preset
           else qwen3.Qwen3Config(**common.SMALL_100M, **overrides))
    model = qwen3.create(cfg, dtype=dtype, param_dtype=dtype, seed=0)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    max_len = 1 << (args.prompt_len + args.new_tokens - 1).bit_length()
    bucket = 1 << (args.prompt_len - 1).bit_length()
    rng = np.random.RandomState(0)
    lines = [f"device: {common.device_name()}",
             f"model: {args.preset or '~100M'} ({cfg.num_params / 1e6:.0f}M params), dtype {args.dtype}, "
             f"prompt {args.prompt_len} + {args.new_tokens} new tokens, greedy, repeats {args.repeats}"]
    data = dict(device=common.device_name(), params=cfg.num_params, dtype=args.dtype,
                prompt_len=args.prompt_len, new_tokens=args.new_tokens, runs=[])

    peer = None if args.no_peer else common.transformers_peer(model, args.dtype)

    for batch in batches:
        sampler = JetStreamSampler(model, None, slots=batch, max_len=max_len, buckets=(bucket,),
                                   cache_dtype=dtype, stop_ids=(), progress=False,
                                   **pool_for(cfg, dtype, batch, max_len))
        prompts = [list(rng.randint(0, cfg.vocab_size, args.prompt_len)) for _ in range(batch)]
        t0 = time.perf_counter()
        sampler.generate(prompts, 1, GREEDY, args.new_tokens, seed=0)  # compile + warm up
        warm = time.perf_counter() - t0
        stats = sampler.engine.compile_stats
        fns = {"ours": lambda: sampler.generate(prompts, 1, GREEDY, args.new_tokens, seed=0)}
        if peer is not None:
            ids = torch.tensor(prompts, device=peer.device)

            def run_peer():
                with torch.no_grad():
                    peer.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                  max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)

            run_peer()  # warm up
            fns["transformers"] = run_peer
        secs = common.interleaved(fns, args.repeats)
        tokens = batch * args.new_tokens
        ours = tokens / secs["ours"]
        run = dict(batch=batch, ours_tok_s=ours, compile_count=stats.count,
                   compile_s=round(stats.seconds, 2), warmup_s=round(warm, 2))
        line = (f"batch {batch:>4}: ours {ours:9.1f} tok/s  (compiles {stats.count}, "
                f"{stats.seconds:.1f}s)")
        if "transformers" in secs:
            theirs = tokens / secs["transformers"]
            run.update(transformers_tok_s=theirs, ratio=ours / theirs)
            line += f"  transformers {theirs:9.1f} tok/s  ratio {ours / theirs:5.2f}x"
        if args.hbm_gbps > 0:
            # Every decode step reads all weights and each sequence's pages up to its length.
            itemsize = jnp.dtype(dtype).itemsize
            rows = args.prompt_len + (args.new_tokens + 1) / 2  # mean length over the steps
            kv = 2 * cfg.num_layers * batch * rows * cfg.num_kv_heads * cfg.head_dim * itemsize
            step_s = secs["ours"] / args.new_tokens
            frac = (cfg.num_params * itemsize + kv) / step_s / (args.hbm_gbps * 1e9)
            run["roofline_fraction"] = frac
            line += f"  HBM roofline {frac:.1%}"
        print(line, flush=True)
        lines.append(line)
        data["runs"].append(run)
        del sampler

    if args.mixed:
        data["mixed"] = mixed_case(args, model, cfg, dtype, peer, rng, lines)
    out = common.write_result(args.out, lines, data)
    print(f"wrote {out}")


def pool_for(cfg, dtype, sequences: int, max_len: int, page: int = 16) -> dict:
    """Sampler settings whose KV pool holds `sequences` whole sequences (plus slack)."""
    import jax.numpy as jnp

    token_bytes = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(dtype).itemsize
    pages = sequences * (-(-max_len // page) + 2) + 1
    return dict(page_size=page, kv_pool_bytes=pages * page * token_bytes)


def mixed_case(args, model, cfg, dtype, peer, rng, lines) -> dict:
    """N prompts with new-token budgets spread from mixed_min to mixed_max, one call."""
    import numpy as np
    import torch

    from int_jax.sampling.sampler import JetStreamSampler
    from int_jax.sampling.types import GREEDY

    count, low, high = args.mixed, args.mixed_min, args.mixed_max
    budgets = [int(x) for x in np.linspace(low, high, count).round()]
    max_len = args.prompt_len + high
    bucket = 1 << (args.prompt_len - 1).bit_length()
    prompts = [list(rng.randint(0, cfg.vocab_size, args.prompt_len)) for _ in range(count)]
    sampler = JetStreamSampler(model, None, slots=count, max_len=max_len, buckets=(bucket,),
                               cache_dtype=dtype, stop_ids=(), progress=False,
                               **pool_for(cfg, dtype, count, max_len))
    run = lambda: sampler.generate(prompts, 1, GREEDY, budgets, seed=0)  # noqa: E731
    got = run()  # compile + warm up
    assert [len(row[0].tokens) for row in got] == budgets
    fns = {"ours": run}
    if peer is not None:
        ids = torch.tensor(prompts, device=peer.device)

        def run_peer():
            with torch.no_grad():
                peer.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=high, min_new_tokens=high)

        run_peer()
        fns["transformers"] = run_peer
    secs = common.interleaved(fns, args.repeats)
    tokens = sum(budgets)
    stats = sampler.engine.compile_stats
    result = dict(sequences=count, new_tokens=[low, high], tokens=tokens,
                  ours_tok_s=tokens / secs["ours"], compile_count=stats.count,
                  peak_live=sampler.last_run.get("peak_live"), steps=sampler.last_run.get("steps"))
    line = (f"mixed: {count} sequences, {low}..{high} new tokens ({tokens} in all): ours "
            f"{result['ours_tok_s']:9.1f} tok/s (steps {result['steps']}, compiles {stats.count})")
    if "transformers" in secs:
        theirs = tokens / secs["transformers"]
        result.update(transformers_tok_s=theirs, ratio=result["ours_tok_s"] / theirs)
        line += f"  transformers {theirs:9.1f} tok/s  ratio {result['ratio']:5.2f}x"
    print(line, flush=True)
    lines.append(line)
    return result


if __name__ == "__main__":
    main()
