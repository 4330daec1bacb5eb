"""`vocab_objective`: a per-token loss of log pi(y_t) and H_t whose gradient is formed in
the forward pass, per vocabulary chunk. GRPO's loss through it (`grpo.sequence_loss`)
against autodiff of the same objective over dense [B, T, V] logits (`grpo_loss_sums`),
for every aggregation mode with every optional term, tied and untied projections.

Tolerances (tests/numerics.py): two fp32 programs for one gradient differ by
2 gamma_K * (the leaf's largest |entry|), K the loss-gradient chain. GRPO's per-token
coefficients are functions of log pi(y_t) (the ratio exp(log pi - log pi_old), k3's
exp(log pi_ref - log pi)), so they also move with the two programs' logprob
difference d (numerics.log_softmax_tol): by a relative d for the exponentials, an
absolute beta e^|log pi_ref - log pi| d for k3's derivative. The test adds
4 d * (largest |entry|) to each leaf's bound: the coefficients' relative change at most
2 d (the ratios stay within e^1 of each other here), counted twice for the products of
the coefficients and the transposed chain.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import numerics
from int_jax.models import qwen3
from int_jax.train import grpo
from int_jax.train.state import ModelDef

CFG = qwen3.Qwen3Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=8, tie_word_embeddings=False)
B, T, CHUNK = 4, 12, 5

# One loss config per aggregation mode, each with a different set of optional terms
# (coefficients large enough that a wrong derivative of a term shows).
LOSSES = {
    "seq-mean-token-mean": {},  # the paper's
    "token-mean": dict(temperature=0.7, clip_high=0.28, kl_coef=0.3, kl_estimator="k1",
                       entropy_coef=0.2),
    "seq-mean-token-sum": dict(temperature=0.8, dual_clip=3.0, entropy_coef=0.5,
                               tis_cap=2.0),  # the release's shape
    "seq-mean-token-sum-norm": dict(constant_len=7, kl_coef=0.5, kl_estimator="k3",
                                    dual_clip=2.0),
}


def _batch(model, loss_cfg, seed):
    """Rows with a prompt (mask 0), a completion (mask 1) and, in the last, padding; old,
    sampler and reference logprobs scattered around the model's own so that ratios fall
    on both sides of every clip."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, CFG.vocab_size, (B, T)).astype(np.int32)
    seg = np.ones((B, T), np.int32)
    seg[-1, 9:] = 0
    mask = np.zeros((B, T), np.float32)
    mask[:, 3:T - 1] = 1.0
    mask[-1, 8:] = 0.0
    pos = np.asarray(qwen3.default_positions(jnp.asarray(seg)))
    logits = model(jnp.asarray(ids), jnp.asarray(pos), segment_ids=jnp.asarray(seg))
    lp = jax.nn.log_softmax(logits / loss_cfg.temperature, -1)
    own = np.asarray(jnp.take_along_axis(lp, grpo.next_token_targets(jnp.asarray(ids))[..., None],
                                         -1)[..., 0])
    old = (own + rng.uniform(-0.6, 0.6, (B, T))).astype(np.float32)
    return {"ids": ids, "positions": pos, "segment_ids": seg, "mask": mask,
            "advantages": np.array([1.0, -1.0, 0.5, -0.25], np.float32),
            "old_logp": old,
            "sampler_logp": (old + rng.uniform(-0.3, 0.3, (B, T))).astype(np.float32),
            "ref_logp": (own + rng.uniform(-0.5, 0.5, (B, T))).astype(np.float32)}


def _dense_loss(model_def, loss_cfg, batch):
    """The same objective by autodiff through dense logits."""
    def f(p):
        m = model_def.merge(p)
        logits = m(batch["ids"], batch["positions"], segment_ids=batch["segment_ids"])
        lp_all = jax.nn.log_softmax(logits / loss_cfg.temperature, -1)
        targets = grpo.next_token_targets(batch["ids"])
        logp = jnp.take_along_axis(lp_all, targets[..., None], -1)[..., 0]
        ent = -jnp.sum(jnp.exp(lp_all) * lp_all, -1)
        total, weight, _ = grpo.grpo_loss_sums(
            loss_cfg, logp, batch["old_logp"], batch["advantages"], batch["mask"], entropy=ent,
            ref_logp=batch["ref_logp"], sampler_logp=batch["sampler_logp"])
        return total / weight
    return f


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("mode", list(LOSSES))
def test_grpo_sequence_loss_and_gradient_equal_dense_autodiff(mode, tied):
    cfg = CFG.replace(tie_word_embeddings=tied)
    loss_cfg = grpo.GRPOConfig(loss_agg_mode=mode, **LOSSES[mode])
    model = qwen3.create(cfg, seed=7)
    batch = {k: jnp.asarray(v) for k, v in _batch(model, loss_cfg, 11).items()}
    model_def, params = ModelDef.split(model)

    def chunked(p):
        terms = grpo.sequence_loss(loss_cfg, CHUNK)(model_def.merge(p), batch)
        return terms.total / terms.weight, terms.metrics

    (got, metrics), g_got = jax.jit(jax.value_and_grad(chunked, has_aux=True))(params)
    want, g_want = jax.jit(jax.value_and_grad(_dense_loss(model_def, loss_cfg, batch)))(params)

    m = model_def.merge(params)
    score = numerics.qwen3_score_bound(m)
    logit_tol = numerics.qwen3_logit_tol(m, T)
    logit_bound = numerics.qwen3_logit_magnitude(m)
    d_logp = numerics.log_softmax_tol(logit_tol, logit_bound, cfg.vocab_size,
                                      loss_cfg.temperature)
    k_loss = numerics.qwen3_forward_chain(cfg, T, T - 1, score) + cfg.vocab_size + B * T
    numerics.assert_within(got, want, numerics.reduction_tol(k_loss, abs(float(want)))
                           + 4 * d_logp * abs(float(want)), "loss")
    k_grad = numerics.qwen3_gradient_chain(cfg, T, T - 1, score, B * T)
    assert set(g_got) == set(g_want)
    for name in g_want:
        biggest = float(np.abs(np.asarray(g_want[name], np.float64)).max())
        assert biggest > 0 or "norm" in name, name
        numerics.assert_within(g_got[name], g_want[name],
                               numerics.leaf_tol(g_want[name], k_grad) + 4 * d_logp * biggest,
                               f"{mode} tied={tied} d/d{name}")
    # The entropy metric is the same token mean however it is computed.
    ent_metric = metrics["train/entropy"]
    assert float(ent_metric.total / ent_metric.count) > 0


def test_all_masked_batch_gives_zero_loss_and_gradient():
    loss_cfg = grpo.GRPOConfig(loss_agg_mode="token-mean", **LOSSES["token-mean"])
    model = qwen3.create(CFG, seed=7)
    batch = {k: jnp.asarray(v) for k, v in _batch(model, loss_cfg, 3).items()}
    batch["mask"] = jnp.zeros_like(batch["mask"])
    model_def, params = ModelDef.split(model)

    def chunked(p):
        terms = grpo.sequence_loss(loss_cfg, CHUNK)(model_def.merge(p), batch)
        return terms.total, terms.weight

    (total, weight), grads = jax.value_and_grad(chunked, has_aux=True)(params)
    assert float(total) == 0.0 and float(weight) == 0.0
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in grads.values())
