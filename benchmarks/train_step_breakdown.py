"""Where the SFT train step's time goes, ours vs transformers + torch, per piece.

    python benchmarks/train_step_breakdown.py                 # CPU: seq 512 and 2048
    python benchmarks/train_step_breakdown.py --seqs 8192 --layers 4 --out ...

Pieces, each timed alternately with its torch peer in one process:
  1. attention of one layer (forward, forward+backward) per kernel vs torch SDPA;
  2. a `--layers`-deep model of the ~100M model's width: loss forward and loss
     gradient, per kernel, vs transformers;
  3. the AdamW update of the full ~100M parameters, and the embedding gradient
     (`jnp.take` backward is a scatter-add) vs torch.
This is the measurement behind choosing `flash` attention for long sequences.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _ready(fn, *args):
    import jax

    return lambda: jax.block_until_ready(fn(*args))


def _label(kernel: str, block: int) -> str:
    """Kernel name, with its block size where the kernel takes one."""
    return f"{kernel}/{block}" if kernel in ("flash", "chunked") else kernel


def attention_rows(seq, kernels, repeats):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from int_jax.models import attention

    c = common.SMALL_100M
    h, kh, d = c["num_heads"], c["num_kv_heads"], c["head_dim"]
    r = np.random.default_rng(0)
    q = jnp.asarray(r.standard_normal((1, seq, h, d), np.float32))
    k = jnp.asarray(r.standard_normal((1, seq, kh, d), np.float32))
    v = jnp.asarray(r.standard_normal((1, seq, kh, d), np.float32))
    idx = jnp.arange(seq, dtype=jnp.int32)[None]
    seg = jnp.ones((1, seq), jnp.int32)
    fns = {}
    for name, block in kernels:
        kern = attention.get_kernel(name, chunk_size=block)
        f = jax.jit(lambda q, k, v, kern=kern: kern(q, k, v, idx, seg, seg))
        g = jax.jit(jax.grad(lambda q, k, v, kern=kern: jnp.sum(kern(q, k, v, idx, seg, seg) ** 2),
                             argnums=(0, 1, 2)))
        label = _label(name, block)
        fns[f"{label} fwd"] = _ready(f, q, k, v)
        fns[f"{label} fwd+bwd"] = _ready(g, q, k, v)
    qt, kt, vt = (torch.tensor(np.asarray(x)).transpose(1, 2).requires_grad_() for x in (q, k, v))
    sdpa = functools.partial(torch.nn.functional.scaled_dot_product_attention, is_causal=True,
                             enable_gqa=True)

    def t_fwd():
        with torch.no_grad():
            sdpa(qt, kt, vt)

    def t_grad():
        (sdpa(qt, kt, vt) ** 2).sum().backward()

    fns["torch sdpa fwd"], fns["torch sdpa fwd+bwd"] = t_fwd, t_grad
    for fn in fns.values():
        fn()
    return common.interleaved(fns, repeats)


def model_rows(seq, layers, kernels, repeats):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers

    from int_jax.models import qwen3
    from int_jax.train import sft
    from int_jax.train.state import ModelDef

    cfg = qwen3.Qwen3Config(**{**common.SMALL_100M, "num_layers": layers,
                               "max_position_embeddings": max(seq, 4096)})
    r = np.random.default_rng(0)
    ids = r.integers(0, cfg.vocab_size, (1, seq)).astype(np.int32)
    w = np.ones((1, seq), np.float32)
    w[:, : seq // 4] = 0.0
    batch = {"ids": jnp.asarray(ids), "loss_weights": jnp.asarray(w),
             "segment_ids": jnp.ones((1, seq), jnp.int32),
             "positions": jnp.arange(seq, dtype=jnp.int32)[None]}
    fns = {}
    for name, block in kernels:
        model_def, params = ModelDef.split(qwen3.create(
            cfg.replace(attention_impl=name, attention_chunk_size=block), seed=0))

        def loss(p, model_def=model_def):
            terms = sft.sft_loss(model_def.merge(p), batch)
            return terms.total / terms.weight

        label = _label(name, block)
        fns[f"ours {label} loss fwd"] = _ready(jax.jit(loss), params)
        fns[f"ours {label} loss fwd+bwd"] = _ready(jax.jit(jax.grad(loss)), params)
    peer = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_hidden_layers=layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim, tie_word_embeddings=True,
        max_position_embeddings=max(seq, 4096))).train()
    ids_t, w_t = torch.tensor(ids, dtype=torch.long), torch.tensor(w)

    def t_loss():
        logits = peer(ids_t).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), ids_t[:, 1:].reshape(-1),
            reduction="none")
        ww = w_t[:, 1:].reshape(-1)
        return (nll * ww).sum() / ww.sum()

    def t_fwd():
        with torch.no_grad():
            t_loss()

    def t_grad():
        t_loss().backward()
        peer.zero_grad(set_to_none=True)

    fns["transformers loss fwd"], fns["transformers loss fwd+bwd"] = t_fwd, t_grad
    for fn in fns.values():
        fn()
    return common.interleaved(fns, repeats)


def update_rows(seq, repeats):
    """AdamW over the ~100M model's parameters, and the embedding gradient alone."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch
    from ml_collections import ConfigDict

    from int_jax.models import qwen3
    from int_jax.train import optim
    from int_jax.train.state import ModelDef

    cfg = qwen3.Qwen3Config(**common.SMALL_100M)
    _, params = ModelDef.split(qwen3.create(cfg, seed=0))
    tx, _ = optim.make_optimizer(ConfigDict(dict(
        lr=1e-5, warmup_ratio=0.0, min_lr_ratio=0.1, weight_decay=0.01, b1=0.9, b2=0.999,
        eps=1e-8, grad_clip=1.0)), 1000)
    opt_state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    holder = {"p": params, "s": opt_state}

    def ours_update():
        holder["p"], holder["s"] = update(holder["p"], holder["s"], grads)
        jax.block_until_ready(holder["p"])

    tparams = [torch.nn.Parameter(torch.tensor(np.asarray(p))) for p in params.values()]
    for p in tparams:
        p.grad = torch.full_like(p, 1e-3)
    topt = torch.optim.AdamW(tparams, lr=1e-5, weight_decay=0.01)

    def torch_update():
        torch.nn.utils.clip_grad_norm_(tparams, 1.0)
        topt.step()

    table = jnp.asarray(np.random.default_rng(0).standard_normal(
        (cfg.vocab_size, cfg.hidden_size), np.float32))
    ids = jnp.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, seq), jnp.int32)
    cot = jnp.ones((seq, cfg.hidden_size), jnp.float32)
    # ids and cotangent are arguments: as closure constants XLA would constant-fold the scatter.
    emb_grad = jax.jit(jax.grad(lambda t, i, c: jnp.sum(jnp.take(t, i, axis=0) * c)))
    emb_t = torch.nn.Embedding(cfg.vocab_size, cfg.hidden_size)
    ids_t = torch.tensor(np.asarray(ids), dtype=torch.long)

    def torch_emb():
        emb_t(ids_t).sum().backward()
        emb_t.zero_grad(set_to_none=True)

    fns = {"ours AdamW update (100M)": ours_update, "torch AdamW update (100M)": torch_update,
           "ours embedding grad": _ready(emb_grad, table, ids, cot), "torch embedding grad": torch_emb}
    for fn in fns.values():
        fn()
    return common.interleaved(fns, repeats)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqs", default="512,2048")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--kernels", default="xla,chunked/512,flash/128",
                    help="comma list of name[/block]")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="train_step_breakdown_cpu")
    args = ap.parse_args()
    kernels = [(k.split("/")[0], int(k.split("/")[1]) if "/" in k else 512)
               for k in args.kernels.split(",")]
    lines = [f"device: {common.device_name()}",
             f"width of the ~100M model ({common.SMALL_100M}); median of {args.repeats}, "
             "ours and torch timed alternately", ""]
    data = {"device": common.device_name(), "layers": args.layers, "rows": {}}

    def add(title, rows):
        lines.append(title)
        for name, sec in rows.items():
            lines.append(f"  {name:34s} {sec * 1000:10.1f} ms")
            data["rows"][f"{title} | {name}"] = sec
        lines.append("")
        print("\n".join(lines[-len(rows) - 2:]), flush=True)

    for seq in (int(s) for s in args.seqs.split(",")):
        add(f"seq {seq}: one layer's attention (1 x {seq} tokens)",
            attention_rows(seq, kernels, args.repeats))
        add(f"seq {seq}: {args.layers}-layer model, weighted CE loss",
            model_rows(seq, args.layers, kernels, args.repeats))
    add(f"optimizer and embedding gradient (seq {seq})", update_rows(seq, args.repeats))
    print(f"written to {common.write_result(args.out, lines, data)}")


if __name__ == "__main__":
    main()
