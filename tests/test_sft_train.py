"""SFT loss against numpy, label-only invariance, sharded and accumulated steps, overfitting."""

import functools
import math

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from int_jax.models import qwen3
from int_jax.models.sharding import DEFAULT_RULES, MeshConfig, make_mesh
from int_jax.train import optim, sft
from int_jax.train import step as train_step
from int_jax.train.state import ModelDef, TrainState, init_state, state_shardings
from int_jax.train.vocab import token_stats

CFG = qwen3.Qwen3Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=8, tie_word_embeddings=False)


def _batch(rng, b=2, t=12):
    """Prompt (w=0) | prefix (w=1) | intervention (w=2) | tail (w=0), second row padded."""
    ids = rng.integers(1, CFG.vocab_size, size=(b, t)).astype(np.int32)
    w = np.zeros((b, t), np.float32)
    w[:, 4:7] = 1.0
    w[:, 7:10] = 2.0
    seg = np.ones((b, t), np.int32)
    seg[b - 1, 10:] = 0  # padding (last row)
    pos = np.tile(np.arange(t, dtype=np.int32), (b, 1))
    return {"ids": ids, "loss_weights": w, "segment_ids": seg, "positions": pos}


def _numpy_loss(logits, batch):
    """sum_t w[t+1] * -log softmax(logits[t])[ids[t+1]] / sum w, in float64."""
    lg = np.asarray(logits, np.float64)[:, :-1]
    lp = lg - lg.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    y = batch["ids"][:, 1:]
    w = batch["loss_weights"][:, 1:] * (batch["segment_ids"][:, 1:] != 0)
    nll = -np.take_along_axis(lp, y[..., None], -1)[..., 0]
    return (w * nll).sum() / w.sum()


def test_loss_matches_numpy_weighted_cross_entropy():
    model = qwen3.create(CFG, seed=1)
    batch = _batch(np.random.default_rng(0))
    jb = {k: jnp.asarray(v) for k, v in batch.items()}
    model_def, params = ModelDef.split(model)
    logits = jax.jit(lambda p, b: model_def.merge(p)(
        b["ids"], b["positions"], segment_ids=b["segment_ids"]))(params, jb)
    want = _numpy_loss(logits, batch)
    # sft_loss recomputes the logits (a second fp32 forward: 2 evaluations of the chain),
    # then its own fp32 log-softmax (1 evaluation; numpy's float64 rounding is ~1e-16) and
    # a weighted mean whose terms w nll >= 0 sum with relative error gamma_(b*t) (+ divide).
    b, t = batch["ids"].shape
    logit_tol = numerics.qwen3_logit_tol(model, kv_len=t, max_position=t - 1)
    tol = (numerics.log_softmax_tol(logit_tol, numerics.qwen3_logit_magnitude(model),
                                    CFG.vocab_size, evaluations=1)
           + numerics.gamma(b * t + 1) * want)
    for chunk in (5, 12, 512):  # chunking pads and splits the sequence
        terms = jax.jit(lambda p, b, c=chunk: sft.sft_loss(model_def.merge(p), b, chunk_size=c))(
            params, jb)
        got = float(terms.total / terms.weight)
        assert abs(got - want) <= tol, (chunk, got, want, tol)
    assert float(terms.weight) == 2 * 3 * 1.0 + 3 * 2.0 + 3 * 2.0  # small integers: exact


@functools.lru_cache(maxsize=None)
def _loss_and_grad_fn(model_def):
    def f(p, batch):
        terms = sft.sft_loss(model_def.merge(p), batch, chunk_size=5)
        return terms.total / terms.weight
    return jax.jit(jax.value_and_grad(f))


def _loss_and_grad(model_def, params, batch):
    return _loss_and_grad_fn(model_def)(params, batch)


def test_label_only_tokens_change_neither_loss_nor_gradient():
    """Tokens that are only *labels* with weight 0 cannot matter: the last token
    (a trailing unweighted label, e.g. suffix) and unweighted prompt labels."""
    model_def, params = ModelDef.split(qwen3.create(CFG, seed=2))
    rng = np.random.default_rng(1)
    batch = _batch(rng)
    batch["loss_weights"][:, -2:] = 0.0  # trailing tokens carry no weight
    base = {k: jnp.asarray(v) for k, v in batch.items()}
    loss, grad = _loss_and_grad(model_def, params, base)

    changed = dict(batch, ids=batch["ids"].copy())
    changed["ids"][:, -1] = (changed["ids"][:, -1] + 7) % CFG.vocab_size  # last token: label only
    loss2, grad2 = _loss_and_grad(model_def, params, {k: jnp.asarray(v) for k, v in changed.items()})
    assert float(loss) == float(loss2)
    assert all(np.array_equal(grad[k], grad2[k]) for k in grad)

    # Prompt tokens as labels: replace the targets at unweighted positions only.
    @jax.jit
    def weighted_nll(p, labels):
        model = model_def.merge(p)
        hidden = model.hidden_states(base["ids"], base["positions"],
                                     segment_ids=base["segment_ids"])
        return jnp.sum(w * token_stats(model, hidden, labels, chunk_size=5))

    targets, w = sft.next_token_targets(base["ids"], base["loss_weights"], base["segment_ids"])
    noisy = jnp.where(w == 0, (targets + 13) % CFG.vocab_size, targets)
    a = weighted_nll(params, targets)
    assert float(a) == float(weighted_nll(params, noisy))
    # ... while changing a weighted label does change it (the test can fail).
    assert float(weighted_nll(params, targets.at[0, 5].add(1))) != float(a)


def test_packed_unweighted_neighbour_does_not_leak():
    """A packed row = example A (trained) + example B (all weight 0): editing B's
    tokens leaves A's loss and gradient unchanged (no attention across examples)."""
    model_def, params = ModelDef.split(qwen3.create(CFG, seed=3))
    rng = np.random.default_rng(2)
    batch = _batch(rng, b=1, t=12)
    batch["segment_ids"][0] = [1] * 7 + [2] * 5
    batch["positions"][0] = list(range(7)) + list(range(5))
    batch["loss_weights"][0] = [0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    loss, grad = _loss_and_grad(model_def, params, {k: jnp.asarray(v) for k, v in batch.items()})
    batch["ids"][0, 7:] = rng.integers(1, CFG.vocab_size, 5)
    loss2, grad2 = _loss_and_grad(model_def, params, {k: jnp.asarray(v) for k, v in batch.items()})
    # B's tokens reach A's loss only through terms multiplied by an exact 0 (masked
    # attention probabilities, zero loss weights and cotangents), and x * 0 and y + 0 are
    # exact: the same compiled program gives bit-identical results (as the label-only test).
    assert float(loss) == float(loss2)
    for k in grad:
        np.testing.assert_array_equal(grad[k], grad2[k], err_msg=k)


@pytest.mark.parametrize("tied", [False, True])
def test_chunked_loss_gradient_equals_dense(tied):
    """sft_loss (chunked, its projection gradient formed in the forward: vocab_objective.py)
    against autodiff of the dense [B, T, V] loss; tied: the embedding takes both the
    input's and the projection's gradient."""
    cfg = CFG.replace(tie_word_embeddings=tied)
    model_def, params = ModelDef.split(qwen3.create(cfg, seed=4))
    batch = {k: jnp.asarray(v) for k, v in _batch(np.random.default_rng(3)).items()}

    def dense(p):
        m = model_def.merge(p)
        logits = m(batch["ids"], batch["positions"], segment_ids=batch["segment_ids"])
        targets, w = sft.next_token_targets(batch["ids"], batch["loss_weights"], batch["segment_ids"])
        lp = jax.nn.log_softmax(logits, -1)
        nll = -jnp.take_along_axis(lp, targets[..., None], -1)[..., 0]
        return jnp.sum(w * nll) / jnp.sum(w)

    _, g_chunked = _loss_and_grad(model_def, params, batch)
    g_dense = jax.jit(jax.grad(dense))(params)
    assert set(g_dense) == set(g_chunked)
    # Two fp32 programs for one gradient: 2 gamma_K * (leaf's largest |entry|), K the
    # loss-gradient chain (tests/numerics.py).
    b, t = batch["ids"].shape
    score = numerics.qwen3_score_bound(model_def.merge(params))
    k_grad = numerics.qwen3_gradient_chain(cfg, t, t - 1, score, b * t)
    for k in g_dense:
        numerics.assert_within(g_chunked[k], g_dense[k], numerics.leaf_tol(g_dense[k], k_grad), k)


OPT = ConfigDict(dict(lr=1e-3, warmup_ratio=0.0, min_lr_ratio=0.1, weight_decay=0.01,
                      b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0))


def _one_step(mesh, batch, accum, total_steps=10, cfg=CFG):
    model = qwen3.create(cfg, seed=5)
    model_def, params = ModelDef.split(model)
    tx, schedule = optim.make_optimizer(OPT, total_steps)
    sh = state_shardings(params, tx, model_def.param_shardings(params, mesh, DEFAULT_RULES), mesh)
    state = init_state(params, tx, sh, seed=0)
    step = train_step.make_train_step(model_def, tx, schedule,
                                      functools.partial(sft.sft_loss, chunk_size=8), mesh,
                                      DEFAULT_RULES, sh)
    local = {k: v.reshape(accum, v.shape[0] // accum, *v.shape[1:]) for k, v in batch.items()}
    state, metrics = step(state, train_step.global_batch(local, mesh, DEFAULT_RULES))
    return jax.device_get(state), jax.device_get(metrics), sh


def _adam(state: TrainState) -> optax.ScaleByAdamState:
    (adam,) = [s for s in jax.tree.leaves(state.opt_state,
                                          is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
               if isinstance(s, optax.ScaleByAdamState)]
    return adam


def _assert_first_steps_agree(ref: TrainState, got: TrainState, m_ref, m_got, batch_shape):
    """`got` is one AdamW step from the same start as `ref` on the same global batch,
    computed with other reduction orders (sharded, or in micro-batches). The bounds come
    from tests/numerics.py: two fp32 evaluations of a K-term chain differ by
    <= 2 gamma_K * magnitude."""
    b, t = batch_shape
    model = qwen3.create(CFG, seed=5)  # _one_step's model
    # Loss = sum_t w_t nll_t / sum_t w_t: a forward chain, the logsumexp over V, the sum
    # over b*t tokens; nll_t = lse - z_t, so its terms' magnitude is <= loss + 2 max|z|.
    score = numerics.qwen3_score_bound(model)
    k_loss = numerics.qwen3_forward_chain(CFG, t, t - 1, score) + CFG.vocab_size + b * t
    loss_mag = float(m_ref["loss"]) + 2 * numerics.qwen3_logit_magnitude(model)
    assert abs(m_ref["loss"] - m_got["loss"]) <= numerics.reduction_tol(k_loss, loss_mag)
    assert m_got["loss_weight"] == m_ref["loss_weight"]  # sums of small integers: exact

    # The (clipped) gradient applied: at step 1 AdamW's mu = (1 - b1) g.
    b1, b2, eps, lr = OPT.b1, OPT.b2, OPT.eps, float(m_ref["lr"])
    a_ref, a_got = _adam(ref), _adam(got)
    g = {n: np.asarray(a_ref.mu[n], np.float64) / (1 - b1) for n in a_ref.mu}
    # Each entry: 2 gamma_K * (the leaf's largest |entry|), K the loss-gradient chain ...
    k_grad = numerics.qwen3_gradient_chain(CFG, t, t - 1, score, b * t)
    chain = {n: numerics.leaf_tol(g[n], k_grad) for n in g}
    # ... plus the global-norm clip, one factor 1 / ||g|| for all entries: the sum of P
    # squares is off by gamma_P (relative, all terms >= 0), ||g|| itself moves by at most
    # ||chain errors||_2, then a sqrt, a divide and a multiply round.
    count = sum(x.size for x in g.values())
    norm = math.sqrt(sum(float((x * x).sum()) for x in g.values()))
    clip = (numerics.gamma(count + 3)
            + math.sqrt(sum(g[n].size * chain[n] ** 2 for n in g)) / norm)
    for name, p_ref in ref.params.items():
        gr = g[name]
        tol_g = chain[name] + clip * np.abs(gr)
        mu = np.asarray(a_got.mu[name], np.float64)
        numerics.assert_within(mu, (1 - b1) * gr, (1 - b1) * tol_g + 2 * numerics.U32 * np.abs(mu),
                               f"mu {name}")
        nu_ref, nu = (np.asarray(a.nu[name], np.float64) for a in (a_ref, a_got))
        numerics.assert_within(nu, nu_ref, (1 - b2) * (2 * np.abs(gr) + tol_g) * tol_g
                               + 4 * numerics.U32 * nu_ref, f"nu {name}")
        # Params: p - lr (g / (|g| + eps) + wd p). x / (|x| + eps) has slope
        # eps / (|x| + eps)^2, so it moves by <= tol_g eps / (m + eps)^2, m the least |x|
        # within tol_g of g (0 if the sign can flip), and never by more than 2; the
        # weight-decay term is the same in both; ~8 roundings of the update (|.| <= 1) and
        # one of the result, per evaluation.
        m = np.maximum(np.abs(gr) - tol_g, 0.0)
        tol_p = (lr * np.minimum(2.0, tol_g * eps / (m + eps) ** 2)
                 + 2 * numerics.U32 * (8 * lr + np.abs(np.asarray(p_ref, np.float64))))
        numerics.assert_within(got.params[name], p_ref, tol_p, f"param {name}")
    # Step counters, Adam's count and the rng: exact.
    for x, y in zip(jax.tree.leaves((ref.step, ref.rng, a_ref.count)),
                    jax.tree.leaves((got.step, got.rng, a_got.count))):
        np.testing.assert_array_equal(x, y)


def test_sharded_step_equals_single_device_and_accumulation_equals_big_batch():
    assert jax.device_count() == 8, "conftest provides 8 emulated CPU devices"
    batch = _batch(np.random.default_rng(4), b=8, t=16)
    one = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    sharded = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
    s1, m1, _ = _one_step(one, batch, accum=1)
    s8, m8, sh = _one_step(sharded, batch, accum=1)
    # The weights really are split over fsdp x tensor.
    assert sh.params["layers/0/mlp/gate_proj"].spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    _assert_first_steps_agree(s1, s8, m1, m8, (8, 16))
    # Gradient accumulation: 2 micro-batches of 4 (one row per fsdp device) == one batch of 8.
    s_acc, m_acc, _ = _one_step(sharded, batch, accum=2)
    _assert_first_steps_agree(s1, s_acc, m1, m_acc, (8, 16))
    assert int(s_acc.step) == 1
    # Micro-batches of 2 rows cannot be split over fsdp=4: an error, not 2x replicated work.
    with pytest.raises(ValueError, match="activation_batch of size 2 cannot be split over "
                                         "data x fsdp = 4 devices.*train.micro_batch"):
        _one_step(sharded, batch, accum=4)


def test_tiny_model_overfits_eight_examples():
    rng = np.random.default_rng(5)
    batch = _batch(rng, b=8, t=16)
    batch["loss_weights"][:, 3:] = 1.0
    batch["segment_ids"][:] = 1
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    model = qwen3.create(CFG, seed=6)
    model_def, params = ModelDef.split(model)
    opt = ConfigDict(dict(OPT, lr=1e-2, warmup_ratio=0.05))
    steps = 80
    tx, schedule = optim.make_optimizer(opt, steps)
    sh = state_shardings(params, tx, model_def.param_shardings(params, mesh, DEFAULT_RULES), mesh)
    state = init_state(params, tx, sh, seed=0)
    step = train_step.make_train_step(model_def, tx, schedule, sft.sft_loss, mesh, DEFAULT_RULES,
                                      sh)
    gb = train_step.global_batch({k: v[None] for k, v in batch.items()}, mesh, DEFAULT_RULES)
    losses = []
    for _ in range(steps):
        state, m = step(state, gb)
        losses.append(float(m["loss"]))
    # Random init: ~ln(96) = 4.56 nats. Memorised: well under 0.1.
    assert losses[0] > 4.0
    assert losses[-1] < 0.1, losses[-10:]


def test_schedule_warmup_and_cosine_floor():
    s = optim.lr_schedule(1e-6, total_steps=100, warmup_ratio=0.1, min_lr_ratio=0.1)
    assert float(s(0)) == pytest.approx(1e-6 / 11, rel=1e-5)
    assert float(s(10)) == pytest.approx(1e-6, rel=1e-5)
    assert float(s(55)) == pytest.approx(1e-6 * (0.1 + 0.9 * 0.5), rel=1e-4)
    assert float(s(100)) == pytest.approx(1e-7, rel=1e-5)
