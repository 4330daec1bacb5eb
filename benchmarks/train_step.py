"""SFT train-step throughput: our sharded jitted step vs a transformers + torch AdamW step.

    python benchmarks/train_step.py                                   # CPU: ~100M model, seq 2048
    python benchmarks/train_step.py --config configs/sft.py:qwen3_4b_instruct_2507 \
        --seq 16384 --no-peer --memory --out train_step_h100          # what users run, on a GPU
    python benchmarks/train_step.py --preset qwen3_4b --dtype bfloat16 --seq 8192 \
        --remat dots --attention auto --no-peer --profile /tmp/prof  # one setting by hand

Both sides run forward + backward + AdamW update on the same random batch with a
token-weighted cross-entropy. Prints tokens/s, the ratio (goal on CPU >= 1.0x),
model TFLOP/s, MFU (peak from the device kind or --peak-tflops) and, on
accelerators, peak device memory.

What users run: `--config FILE:ARG` takes the model section of a run config (preset,
compute dtype, attention_impl, remat and remat_names, attention_chunk_size) and the
loss chunk, and resolves `attention_impl="auto"` exactly as the SFT stage does (the
backend, the compute dtype, `--packed`). The printed kernel and remat policy are the
ones that ran. Analysis hooks, off by default:
  --memory    the compiled step's memory analysis (arguments, outputs, temporaries:
              what the remat policy and the kernel keep) and XLA's FLOP count
  --profile D a jax.profiler trace of the timed steps under D (TensorBoard's profile
              tab; the step's phases and the model's modules are named scopes), and
              the seconds per step by scope and the slowest ops (op_profile.py)
  --packed    rows of several examples (segment ids), the case the segment-id kernels
              (splash, triton) serve; default: one right-padded example per row
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _settings(args):
    """(model config section or None, loss chunk) from --config, with flags on top."""
    if not args.config:
        return None, args.loss_chunk or 512
    from int_jax.config_io import load_config_file  # noqa: PLC0415

    path, _, arg = args.config.partition(":")
    cfg = load_config_file(path, arg or None)
    m = cfg.model
    for flag, key in ((args.attention, "attention_impl"), (args.remat, "remat"),
                      (args.attention_block, "attention_chunk_size"), (args.dtype, "dtype")):
        if flag is not None:
            m[key] = flag
    if args.preset:
        m.preset, m.hf_path = args.preset, ""
    loss_chunk = args.loss_chunk or int(cfg.get("train", {}).get("loss_chunk_size", 512))
    return m, loss_chunk


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="", help="a run config FILE:ARG (e.g. configs/sft.py:"
                    "qwen3_4b_instruct_2507): its model section and loss chunk")
    ap.add_argument("--preset", default="", help="a qwen3 preset instead of the ~100M model")
    ap.add_argument("--dtype", default=None, help="compute dtype (params stay fp32); "
                    "default: the config's, else float32")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    # auto: splash on TPU, cudnn / triton on GPU, flash on CPU (attention.choose_kernel).
    ap.add_argument("--attention", default=None, help="attention_impl (default: the config's, "
                    "else auto)")
    ap.add_argument("--attention-block", type=int, default=None,
                    help="attention_chunk_size (flash/chunked block; default: the config's, else 256, configs/sft.py's)")
    ap.add_argument("--remat", nargs="?", const="full", default=None,
                    help="none | full | dots | names (bare --remat: full; default: the config's, "
                         "else none)")
    ap.add_argument("--loss-chunk", type=int, default=0, help="default: the config's, else 512")
    ap.add_argument("--packed", action="store_true", help="rows of several examples")
    ap.add_argument("--memory", action="store_true", help="print the compiled step's memory "
                    "and FLOP analysis")
    ap.add_argument("--profile", default="", help="write a profiler trace of the timed steps here")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="per-device peak override")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--out", default="train_step_cpu")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from ml_collections import ConfigDict

    from int_jax.models import factory, qwen3
    from int_jax.models.sharding import DEFAULT_RULES, MeshConfig, make_mesh
    from int_jax.train import metrics, optim, sft
    from int_jax.train import step as train_step
    from int_jax.train.state import ModelDef, init_state, state_shardings

    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    platform = mesh.devices.flat[0].platform
    model_section, loss_chunk = _settings(args)
    if model_section is not None:  # the config's model, its kernel resolved as the stage does
        cfg = (factory.model_config(model_section, platform=platform, packed=args.packed)
               .replace(max_position_embeddings=max(args.seq, 4096)))
        dtype_name = str(model_section.dtype)
    else:
        base = qwen3.preset(args.preset) if args.preset else qwen3.Qwen3Config(**common.SMALL_100M)
        dtype_name = args.dtype or "float32"
        from int_jax.models import attention  # noqa: PLC0415

        impl = attention.resolve(args.attention or "auto", platform, packed=args.packed,
                                 dtype=factory.dtype_of(dtype_name))
        cfg = base.replace(remat=factory.remat_of(args.remat or "none"), attention_impl=impl,
                           attention_chunk_size=args.attention_block or 256,
                           max_position_embeddings=max(args.seq, 4096))
    dtype = factory.dtype_of(dtype_name)
    model = qwen3.create(cfg, dtype=dtype, param_dtype=jnp.float32, seed=0)

    rng = np.random.RandomState(0)
    b, t = args.batch, args.seq
    ids_np = rng.randint(0, cfg.vocab_size, (b, t)).astype(np.int32)
    w_np = np.ones((b, t), np.float32)
    w_np[:, : t // 4] = 0.0  # a masked prompt
    seg_np = np.ones((b, t), np.int32)
    if args.packed:  # four examples per row
        seg_np = 1 + (np.arange(t) * 4 // t)[None].repeat(b, 0).astype(np.int32)
    positions = np.asarray(qwen3.default_positions(jnp.asarray(seg_np)))
    local = {"ids": ids_np[None], "loss_weights": w_np[None], "segment_ids": seg_np[None],
             "positions": positions[None]}

    opt_cfg = ConfigDict(dict(lr=1e-5, warmup_ratio=0.0, min_lr_ratio=0.1, weight_decay=0.01,
                              b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0))
    tx, schedule = optim.make_optimizer(opt_cfg, 1000)
    model_def, params = ModelDef.split(model)
    del model
    sh = state_shardings(params, tx, model_def.param_shardings(params, mesh, DEFAULT_RULES), mesh)
    state = init_state(params, tx, sh, seed=0)
    del params
    step = train_step.make_train_step(model_def, tx, schedule,
                                      functools.partial(sft.sft_loss, chunk_size=loss_chunk),
                                      mesh, DEFAULT_RULES, sh)
    batch = train_step.global_batch(local, mesh, DEFAULT_RULES)
    holder = {"state": state}
    analysis = _analyse(step, state, batch) if args.memory else []

    def ours():
        holder["state"], m = step(holder["state"], batch)
        jax.block_until_ready(m["loss"])

    ours()  # compile
    fns = {"ours": ours}

    if args.packed and not args.no_peer:
        print("--packed: no transformers peer (it would attend across the packed examples)")
    if not args.no_peer and not args.packed:
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
        autocast = dtype_name == "bfloat16"

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

    if args.profile:
        jax.profiler.start_trace(args.profile)
    med = common.interleaved(fns, args.repeats)
    if args.profile:
        jax.profiler.stop_trace()
    tokens = b * t
    fpt = metrics.train_flops_per_token(cfg, t)
    peak_dev = metrics.peak_flops_per_device(override=args.peak_tflops * 1e12)
    peak = peak_dev * jax.device_count() if peak_dev else None
    remat = cfg.remat + (f" {','.join(cfg.remat_names)}" if cfg.remat == "names" else "")
    lines = [f"device: {common.device_name()}",
             f"model: {cfg.num_params / 1e6:.1f}M params, compute {dtype_name}, fp32 params, "
             f"batch {b} x seq {t} ({'packed' if args.packed else 'one example per row'}), "
             f"attention={cfg.attention_impl} (block {cfg.attention_chunk_size}), "
             f"remat={remat}, loss chunk {loss_chunk}"
             + (f", from {args.config}" if args.config else "")]
    lines += analysis
    data = {"device": common.device_name(), "params": cfg.num_params, "seq": t, "batch": b,
            "dtype": dtype_name, "attention": cfg.attention_impl, "packed": args.packed,
            "attention_block": cfg.attention_chunk_size, "remat": remat, "config": args.config}
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
    if args.profile:
        import op_profile  # noqa: PLC0415

        hlo = step.lower(holder["state"], batch).compile().as_text()
        lines += op_profile.summarize(args.profile, hlo, steps=args.repeats)
        lines.append(f"profile: {args.profile} (tensorboard --logdir {args.profile})")
    print("\n".join(lines))
    print(f"written to {common.write_result(args.out, lines, data)}")


def _analyse(step, state, batch) -> list[str]:
    """The compiled step's memory and FLOP analysis (XLA's view, per device): what the
    kernel and the remat policy keep shows in the temporaries."""
    compiled = step.lower(state, batch).compile()
    lines = []
    mem = compiled.memory_analysis()
    if mem is not None:
        gib = 2.0 ** 30
        parts = {"arguments": "argument_size_in_bytes", "outputs": "output_size_in_bytes",
                 "aliased": "alias_size_in_bytes", "temporaries": "temp_size_in_bytes",
                 "code": "generated_code_size_in_bytes"}
        lines.append("compiled step memory per device: " + ", ".join(
            f"{name} {getattr(mem, attr, 0) / gib:.2f} GiB" for name, attr in parts.items()))
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    if cost and "flops" in cost:
        lines.append(f"XLA's FLOP count of one step: {cost['flops'] / 1e12:.3f} TFLOP")
    return lines


if __name__ == "__main__":
    main()
