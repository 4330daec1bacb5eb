"""Remat policies (`Qwen3Config.remat`): every policy gives the gradients of no remat,
and each keeps what it names for the backward."""

import contextlib
import io

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest

from int_jax.models import qwen3
from int_jax.train import sft
from int_jax.train.state import ModelDef

CFG = qwen3.Qwen3Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=8, tie_word_embeddings=False,
                        attention_chunk_size=16)


def _batch(b=2, t=40):
    r = np.random.default_rng(0)
    seg = np.ones((b, t), np.int32)
    seg[0, 25:] = 2  # packed
    seg[1, 33:] = 0  # padded
    return {"ids": jnp.asarray(r.integers(1, CFG.vocab_size, (b, t)).astype(np.int32)),
            "loss_weights": jnp.asarray((r.random((b, t)) > 0.3).astype(np.float32)),
            "segment_ids": jnp.asarray(seg),
            "positions": qwen3.default_positions(jnp.asarray(seg))}


def _loss_fn(cfg):
    model_def, params = ModelDef.split(qwen3.create(cfg, seed=3))
    batch = _batch()

    def loss(p):
        terms = sft.sft_loss(model_def.merge(p), batch, chunk_size=16)
        return terms.total / terms.weight

    return loss, params


POLICIES = [("full", ()), ("dots", ()), ("names", qwen3.DEFAULT_REMAT_NAMES),
            ("names", qwen3.ACTIVATION_NAMES), ("names", ("mlp_gate", "mlp_up"))]


@pytest.mark.parametrize("kernel,scan", [("flash", False), ("xla", True)])
@pytest.mark.parametrize("remat,names", POLICIES)
def test_every_policy_gives_the_gradient_of_no_remat(remat, names, kernel, scan):
    base = CFG.replace(attention_impl=kernel, scan_layers=scan)
    loss_ref, params = _loss_fn(base)
    loss, _ = _loss_fn(base.replace(remat=remat, remat_names=names or qwen3.DEFAULT_REMAT_NAMES))
    g_ref = jax.device_get(jax.jit(jax.grad(loss_ref))(params))
    g = jax.device_get(jax.jit(jax.grad(loss))(params))
    # Recomputing a forward in fp32 differs from storing it by rounding only: two fp32
    # evaluations of the SFT loss gradient's chain (tests/numerics.py), plus the flash
    # kernel's rescalings (3 roundings per 16-key block per layer, both ways).
    b, t = _batch()["ids"].shape
    score = numerics.qwen3_score_bound(qwen3.create(base, seed=3))
    k = numerics.qwen3_gradient_chain(base, t, t - 1, score, b * t) + 2 * 3 * -(-t // 16) * 2
    for key in g_ref:
        numerics.assert_within(g[key], g_ref[key], numerics.leaf_tol(g_ref[key], k), key)


def _saved(cfg):
    """What the backward keeps, one line per residual ("f32[..] named 'query' from ...")."""
    loss, params = _loss_fn(cfg)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        jax.ad_checkpoint.print_saved_residuals(loss, params)
    return [line.split(" ", 1)[1] for line in out.getvalue().splitlines() if line.strip()]


def test_each_policy_keeps_what_it_names():
    base = CFG.replace(attention_impl="flash")
    named = lambda saved: sorted({w.split("'")[1] for w in saved if w.startswith("named")})  # noqa: E731
    assert named(_saved(base.replace(remat="names"))) == sorted(qwen3.DEFAULT_REMAT_NAMES)
    assert named(_saved(base.replace(remat="names", remat_names=("mlp_up",)))) == ["mlp_up"]
    assert named(_saved(base.replace(remat="full"))) == []
    # full keeps the least; no remat the most.
    sizes = {r: len(_saved(base.replace(remat=r))) for r in qwen3.REMAT_POLICIES}
    assert sizes["full"] < sizes["dots"] < sizes["none"]
    assert sizes["full"] < sizes["names"] < sizes["none"]


def test_remat_setting_is_checked_and_the_boolean_still_works():
    assert CFG.replace(remat=True).remat == "full" and CFG.replace(remat=False).remat == "none"
    with pytest.raises(ValueError, match="unknown remat 'some'"):
        CFG.replace(remat="some")
    with pytest.raises(ValueError, match="unknown remat_names"):
        CFG.replace(remat="names", remat_names=("attn",))
