"""Decode throughput: our JetStream sampler vs transformers' `generate`, same weights.

    python benchmarks/sampling.py                                   # CPU: ~100M model
    python benchmarks/sampling.py --preset qwen3_4b --dtype bfloat16 \\
        --batches 64,256 --prompt-len 512 --new-tokens 2048 --hbm-gbps 3350   # GPU

For each batch size: greedy decode of `batch` prompts x `new-tokens` tokens
(no stop tokens, so every request runs to the limit), timed end to end after
a warm-up call (compilation excluded, reported separately). Prints tokens/s of
each, the ratio (goal on CPU: >= 2x at batch 32), the engine's compile count
and time, and on accelerators the fraction of the HBM roofline (weights + the
KV-cache window each decode step reads, over --hbm-gbps).

The window case (`--window-max-len`, 0 to skip) shows what attending over a
length-bucketed window of the cache buys: short sequences (prompt + new tokens)
in a cache sized for long ones, decoded by the same engine attending over the
whole cache (as before windows existed) and over its decode buckets:

    python benchmarks/sampling.py --batches "" --no-peer --window-max-len 2048 \\
        --window-batch 16 --new-tokens 96 --out sampling_window_cpu              # CPU
    python benchmarks/sampling.py --preset qwen3_4b --dtype bfloat16 --batches "" --no-peer \\
        --prompt-len 512 --new-tokens 1536 --window-max-len 8192 --window-batch 32 \\
        --out sampling_window_gpu                                                # GPU
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
    ap.add_argument("--window-max-len", type=int, default=0,
                    help="window case: KV-cache length (0: skip the case)")
    ap.add_argument("--window-batch", type=int, default=16)
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
                                   cache_dtype=dtype, stop_ids=(), progress=False)
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
            # Every decode step reads all weights and its window of the [slots, max_len] cache.
            itemsize = jnp.dtype(dtype).itemsize
            rows = mean_window(sampler.engine.core.decode_buckets, args.prompt_len, args.new_tokens)
            kv = 2 * cfg.num_layers * batch * rows * cfg.num_kv_heads * cfg.head_dim * itemsize
            step_s = secs["ours"] / args.new_tokens
            frac = (cfg.num_params * itemsize + kv) / step_s / (args.hbm_gbps * 1e9)
            run["roofline_fraction"] = frac
            line += f"  HBM roofline {frac:.1%}"
        print(line, flush=True)
        lines.append(line)
        data["runs"].append(run)
        del sampler

    if args.window_max_len:
        data["window"] = window_case(args, model, cfg, dtype, bucket, rng, lines)
    out = common.write_result(args.out, lines, data)
    print(f"wrote {out}")


def mean_window(buckets, prompt_len: int, new_tokens: int) -> float:
    """Cache rows a decode step attends over, averaged over one sequence's steps."""
    from int_jax.sampling import decode_window

    return sum(decode_window.window_for(prompt_len + i + 1, buckets)
               for i in range(new_tokens)) / new_tokens


def window_case(args, model, cfg, dtype, bucket, rng, lines) -> dict:
    """Short sequences in a long cache: whole-cache attention vs decode windows, same run."""
    from int_jax.sampling import decode_window
    from int_jax.sampling.sampler import JetStreamSampler
    from int_jax.sampling.types import GREEDY

    max_len, batch = args.window_max_len, args.window_batch
    prompts = [list(rng.randint(0, cfg.vocab_size, args.prompt_len)) for _ in range(batch)]
    variants = {"whole cache": (max_len,), "windows": decode_window.decode_buckets(max_len)}
    samplers, fns, outputs = {}, {}, {}
    for name, buckets in variants.items():
        s = JetStreamSampler(model, None, slots=batch, max_len=max_len, buckets=(bucket,),
                             cache_dtype=dtype, stop_ids=(), progress=False, decode_buckets=buckets)
        run = lambda s=s: s.generate(prompts, 1, GREEDY, args.new_tokens, seed=0)  # noqa: E731
        outputs[name] = [row[0].tokens for row in run()]  # compile + warm up
        samplers[name], fns[name] = s, run
    same = outputs["whole cache"] == outputs["windows"]
    secs = common.interleaved(fns, args.repeats)
    tokens = batch * args.new_tokens
    tok_s = {name: tokens / secs[name] for name in fns}
    seq = args.prompt_len + args.new_tokens
    header = (f"window case: batch {batch}, {seq}-token sequences ({args.prompt_len} + "
              f"{args.new_tokens}) in a {max_len}-row KV cache, greedy, repeats {args.repeats}")
    result = dict(batch=batch, max_len=max_len, sequence=seq, same_tokens=same, variants={})
    lines.append(header)
    print(header, flush=True)
    for name, s in samplers.items():
        rows = mean_window(s.engine.core.decode_buckets, args.prompt_len, args.new_tokens)
        stats = s.engine.compile_stats
        line = (f"  {name:<12} buckets {s.engine.core.decode_buckets}: {tok_s[name]:8.1f} tok/s, "
                f"{rows:.0f} cache rows read per step (compiles {stats.count}, {stats.seconds:.1f}s)")
        result["variants"][name] = dict(tok_s=tok_s[name], decode_buckets=list(s.engine.core.decode_buckets),
                                        mean_rows=rows, compile_count=stats.count,
                                        compile_s=round(stats.seconds, 2))
        lines.append(line)
        print(line, flush=True)
    ratio = tok_s["windows"] / tok_s["whole cache"]
    result["ratio"] = ratio
    line = f"  windows / whole cache: {ratio:.2f}x, identical greedy tokens: {same}"
    lines.append(line)
    print(line, flush=True)
    return result


if __name__ == "__main__":
    main()
