"""SFT train-step throughput: our sharded jitted step vs a transformers + torch AdamW step.

    python benchmarks/train_step.py                                   # CPU: ~100M model, seq 2048
    python benchmarks/train_step.py --preset qwen3_4b --dtype bfloat16 --seq 8192 \\
        --remat --attention cudnn --no-peer --out train_step_h100     # GPU (also --seq 16384)

Both sides run forward + backward + AdamW update on the same random batch with a
token-weighted cross-entropy. Prints tokens/s, the ratio (goal on CPU >= 1.0x),
model TFLOP/s, MFU (peak from the device kind or --peak-tflops) and, on
accelerators, peak device memory.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="", help="a qwen3 preset instead of the ~100M model")
    ap.add_argument("--dtype", default="float32", help="compute dtype (params stay fp32)")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    # flash: blocked, causal-skipping, hand-written backward; on CPU at 2048 tokens
    # a layer's attention is ~10x faster than `xla` (which builds [T, S] scores).
    ap.add_argument("--attention", default="flash")
    ap.add_argument("--attention-block", type=int, default=128,
                    help="attention_chunk_size (query/key block of chunked and flash)")
    ap.add_argument("--remat", action="store_true")
    ap.add_argument("--loss-chunk", type=int, default=512)
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="per-device peak override")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--out", default="train_step_cpu")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from ml_collections import ConfigDict

    from int_jax.models import qwen3
    from int_jax.models.sharding import DEFAULT_RULES, MeshConfig, make_mesh
    from int_jax.train import metrics, optim, sft
    from int_jax.train import step as train_step
    from int_jax.train.state import ModelDef, init_state, state_shardings

    base = qwen3.preset(args.preset) if args.preset else qwen3.Qwen3Config(**common.SMALL_100M)
    cfg = base.replace(remat=args.remat, attention_impl=args.attention,
                       attention_chunk_size=args.attention_block,
                       max_position_embeddings=max(args.seq, 4096))
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
    model = qwen3.create(cfg, dtype=dtype, param_dtype=jnp.float32, seed=0)

    rng = np.random.RandomState(0)
    b, t = args.batch, args.seq
    ids_np = rng.randint(0, cfg.vocab_size, (b, t)).astype(np.int32)
    w_np = np.ones((b, t), np.float32)
    w_np[:, : t // 4] = 0.0  # a masked prompt
    local = {"ids": ids_np[None], "loss_weights": w_np[None],
             "segment_ids": np.ones((1, b, t), np.int32),
             "positions": np.tile(np.arange(t, dtype=np.int32), (1, b, 1))}

    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    opt_cfg = ConfigDict(dict(lr=1e-5, warmup_ratio=0.0, min_lr_ratio=0.1, weight_decay=0.01,
                              b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0))
    tx, schedule = optim.make_optimizer(opt_cfg, 1000)
    model_def, params = ModelDef.split(model)
    del model
    sh = state_shardings(params, tx, model_def.param_shardings(params, mesh, DEFAULT_RULES), mesh)
    state = init_state(params, tx, sh, seed=0)
    del params
    step = train_step.make_train_step(model_def, tx, schedule,
                                      functools.partial(sft.sft_loss, chunk_size=args.loss_chunk),
                                      mesh, DEFAULT_RULES, sh)
    batch = train_step.global_batch(local, mesh, DEFAULT_RULES)
    holder = {"state": state}

    def ours():
        holder["state"], m = step(holder["state"], batch)
        jax.block_until_ready(m["loss"])

    ours()  # compile
    fns = {"ours": ours}

    if not args.no_peer:
        import torch
        import transformers

        hf_cfg = transformers.Qwen3Config(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim, tie_word_embeddings=cfg.tie_word_embeddings,
            max_position_embeddings=max(args.seq, 4096))
        torch.manual_seed(0)
        peer = transformers.Qwen3ForCausalLM(hf_cfg).train()
        peer_opt = torch.optim.AdamW(peer.parameters(), lr=1e-5, weight_decay=0.01)
        ids_t = torch.tensor(ids_np, dtype=torch.long)
        w_t = torch.tensor(w_np)
        autocast = args.dtype == "bfloat16"

        def peer_step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits = peer(ids_t).logits.float()
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), ids_t[:, 1:].reshape(-1),
                reduction="none")
            w = w_t[:, 1:].reshape(-1)
            loss = (nll * w).sum() / w.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(peer.parameters(), 1.0)
            peer_opt.step()
            peer_opt.zero_grad(set_to_none=True)

        peer_step()  # warm-up (allocates optimizer state)
        fns["transformers"] = peer_step

    med = common.interleaved(fns, args.repeats)
    tokens = b * t
    fpt = metrics.train_flops_per_token(cfg, t)
    peak_dev = metrics.peak_flops_per_device(override=args.peak_tflops * 1e12)
    peak = peak_dev * jax.device_count() if peak_dev else None
    lines = [f"device: {common.device_name()}",
             f"model: {cfg.num_params / 1e6:.1f}M params, compute {args.dtype}, fp32 params, "
             f"batch {b} x seq {t}, attention={args.attention} (block {args.attention_block}), "
             f"remat={args.remat}, "
             f"loss chunk {args.loss_chunk}"]
    data = {"device": common.device_name(), "params": cfg.num_params, "seq": t, "batch": b,
            "dtype": args.dtype, "attention": args.attention,
            "attention_block": args.attention_block, "remat": args.remat}
    for name, sec in med.items():
        tflops = tokens * fpt / sec / 1e12
        mfu = f", MFU {100 * tokens * fpt / sec / peak:.1f}%" if peak else ", MFU n/a (no peak for CPU)"
        lines.append(f"{name:>13}: {tokens / sec:9.1f} tokens/s  ({sec:.2f} s/step, "
                     f"{tflops:.3f} model TFLOP/s{mfu})")
        data[f"{name}_tokens_per_s"] = tokens / sec
        data[f"{name}_tflops"] = tflops
        if peak:
            data[f"{name}_mfu"] = tokens * fpt / sec / peak
    if "transformers" in med:
        ratio = med["transformers"] / med["ours"]
        lines.append(f"ratio ours / transformers: {ratio:.2f}x (goal >= 1.0x)")
        data["ratio"] = ratio
    common.report_peak_memory(lines, data)
    print("\n".join(lines))
    print(f"written to {common.write_result(args.out, lines, data)}")


if __name__ == "__main__":
    main()
