"""Forward throughput: our jitted Qwen3 vs transformers' PyTorch Qwen3, same weights.

    python benchmarks/forward.py                       # CPU: ~100M model, seq 2048
    python benchmarks/forward.py --preset qwen3_4b --dtype bfloat16 --seq 4096   # GPU

Prints tokens/s of each and the ratio (goal on CPU: ours >= 1.0x), achieved
TFLOP/s (and the fraction of --peak-tflops when given), and the peak host
memory of loading the checkpoint relative to its largest tensor.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def forward_flops(cfg, tokens: int, seq: int) -> float:
    """Matmul FLOPs of one forward: 2 x params-in-matmuls x tokens + attention."""
    d, f, h, k, hd = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    per_token = cfg.num_layers * (2 * d * (2 * h * hd + 2 * k * hd) + 2 * 3 * d * f) + 2 * d * cfg.vocab_size
    attn = cfg.num_layers * 2 * 2 * h * hd * seq * tokens  # QK^T and PV, full (not causal-halved)
    return per_token * tokens + attn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="", help="a qwen3 preset instead of the ~100M model")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--attention", default="auto",
                    help="attention_impl (auto: what the model configs run, resolved per backend)")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="device bf16 peak, for the fraction")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--out", default="forward_cpu")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers
    from flax import nnx

    from int_jax.models import hf, qwen3

    if args.preset:
        base = qwen3.preset(args.preset)
        shape = dict(vocab_size=base.vocab_size, hidden_size=base.hidden_size,
                     intermediate_size=base.intermediate_size, num_layers=base.num_layers,
                     num_heads=base.num_heads, num_kv_heads=base.num_kv_heads,
                     head_dim=base.head_dim, tie_word_embeddings=base.tie_word_embeddings)
    else:
        shape = dict(common.SMALL_100M)
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]

    with tempfile.TemporaryDirectory() as tmp:
        hf_cfg = transformers.Qwen3Config(
            vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
            intermediate_size=shape["intermediate_size"], num_hidden_layers=shape["num_layers"],
            num_attention_heads=shape["num_heads"], num_key_value_heads=shape["num_kv_heads"],
            head_dim=shape["head_dim"], tie_word_embeddings=shape["tie_word_embeddings"],
            max_position_embeddings=max(args.seq, 4096))
        torch.manual_seed(0)
        peer = transformers.Qwen3ForCausalLM(hf_cfg).to(torch_dtype).eval()
        peer.save_pretrained(tmp)
        n_params = sum(p.numel() for p in peer.parameters())
        largest = max(p.numel() * p.element_size() for p in peer.parameters())

        tracemalloc.start()
        from int_jax.models import attention  # noqa: PLC0415

        kernel = attention.resolve(args.attention, jax.default_backend(), packed=False, dtype=dtype)
        model = hf.from_pretrained(tmp, dtype=dtype, param_dtype=dtype, attention_impl=kernel)
        _, load_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    if args.no_peer:
        del peer

    ids_np = np.random.RandomState(0).randint(0, shape["vocab_size"], (args.batch, args.seq))
    ids = jnp.asarray(ids_np)
    graphdef, state = nnx.split(model)

    @jax.jit
    def ours_fwd(state, ids):
        return nnx.merge(graphdef, state)(ids)

    ours_fwd(state, ids).block_until_ready()  # compile

    fns = {"ours": lambda: ours_fwd(state, ids).block_until_ready()}
    if not args.no_peer:
        ids_t = torch.tensor(ids_np)

        def peer_fwd():
            with torch.no_grad():
                peer(ids_t).logits.float()
        peer_fwd()
        fns["transformers"] = peer_fwd
    med = common.interleaved(fns, args.repeats)

    tokens = args.batch * args.seq
    flops = forward_flops(model.config, tokens, args.seq)
    lines = [f"device: {common.device_name()}",
             f"model: {n_params / 1e6:.1f}M params, {args.dtype}, batch {args.batch} x seq {args.seq}, "
             f"attention={kernel} (--attention {args.attention}), torch threads {torch.get_num_threads()}"]
    data = {"device": common.device_name(), "params": n_params, "seq": args.seq, "batch": args.batch,
            "dtype": args.dtype}
    for name, sec in med.items():
        tflops = flops / sec / 1e12
        frac = f", {100 * tflops / args.peak_tflops:.1f}% of peak" if args.peak_tflops else ""
        lines.append(f"{name:>13}: {tokens / sec:10.0f} tokens/s  ({sec * 1e3:.1f} ms/forward, "
                     f"{tflops:.3f} TFLOP/s{frac})")
        data[f"{name}_tokens_per_s"] = tokens / sec
        data[f"{name}_tflops"] = tflops
    if "transformers" in med:
        ratio = med["transformers"] / med["ours"]
        lines.append(f"ratio ours / transformers: {ratio:.2f}x (goal >= 1.0x)")
        data["ratio"] = ratio
    lines.append(f"checkpoint load: peak traced host memory {load_peak / 2**20:.1f} MiB = "
                 f"{load_peak / largest:.2f}x the largest tensor ({largest / 2**20:.1f} MiB)")
    data["load_peak_over_largest_tensor"] = load_peak / largest
    print("\n".join(lines))
    print(f"written to {common.write_result(args.out, lines, data)}")


if __name__ == "__main__":
    main()
