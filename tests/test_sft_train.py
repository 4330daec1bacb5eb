"""SFT loss against numpy, label-only invariance, sharded and accumulated steps, overfitting."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from int_jax.models import qwen3
from int_jax.models.sharding import DEFAULT_RULES, MeshConfig, make_mesh
from int_jax.train import loop, optim, sft
from int_jax.train.state import ModelDef, TrainState, init_state, state_shardings

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
    for chunk in (5, 12, 512):  # chunking pads and splits the sequence
        terms = jax.jit(lambda p, b, c=chunk: sft.sft_loss(model_def.merge(p), b, chunk_size=c))(
            params, jb)
        got = float(terms.total / terms.weight)
        assert abs(got - want) < 1e-5, (chunk, got, want)  # fp32 vs fp64
    assert float(terms.weight) == pytest.approx(2 * 3 * 1.0 + 3 * 2.0 + 3 * 2.0)


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
        return jnp.sum(w * sft.token_stats(model, hidden, labels, chunk_size=5))

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
    assert abs(float(loss) - float(loss2)) < 1e-7
    for k in grad:
        np.testing.assert_allclose(grad[k], grad2[k], atol=1e-7, err_msg=k)


def test_chunked_loss_gradient_equals_dense():
    model_def, params = ModelDef.split(qwen3.create(CFG, seed=4))
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
    for k in g_dense:
        np.testing.assert_allclose(g_chunked[k], g_dense[k], atol=1e-6, rtol=1e-5, err_msg=k)


OPT = ConfigDict(dict(lr=1e-3, warmup_ratio=0.0, min_lr_ratio=0.1, weight_decay=0.01,
                      b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0))


def _one_step(mesh, batch, accum, total_steps=10, cfg=CFG):
    model = qwen3.create(cfg, seed=5)
    model_def, params = ModelDef.split(model)
    tx, schedule = optim.make_optimizer(OPT, total_steps)
    sh = state_shardings(params, tx, model_def.param_shardings(params, mesh, DEFAULT_RULES), mesh)
    state = init_state(params, tx, sh, seed=0)
    step = loop.make_train_step(model_def, tx, schedule,
                                functools.partial(sft.sft_loss, chunk_size=8), mesh,
                                DEFAULT_RULES, sh)
    local = {k: v.reshape(accum, v.shape[0] // accum, *v.shape[1:]) for k, v in batch.items()}
    state, metrics = step(state, loop.global_batch(local, mesh, DEFAULT_RULES))
    return jax.device_get(state), jax.device_get(metrics), sh


def _assert_states_close(a: TrainState, b: TrainState, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                   atol=atol, rtol=0)


def test_sharded_step_equals_single_device_and_accumulation_equals_big_batch():
    assert jax.device_count() == 8, "conftest provides 8 emulated CPU devices"
    batch = _batch(np.random.default_rng(4), b=8, t=16)
    one = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    sharded = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
    s1, m1, _ = _one_step(one, batch, accum=1)
    s8, m8, sh = _one_step(sharded, batch, accum=1)
    # The weights really are split over fsdp x tensor.
    assert sh.params["layers/0/mlp/gate_proj"].spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert abs(m1["loss"] - m8["loss"]) < 1e-5
    _assert_states_close(s1, s8, atol=1e-5)
    # Gradient accumulation: 4 micro-batches of 2 == one batch of 8.
    s_acc, m_acc, _ = _one_step(sharded, batch, accum=4)
    assert abs(m1["loss"] - m_acc["loss"]) < 1e-5
    assert m_acc["loss_weight"] == m1["loss_weight"]
    _assert_states_close(s1, s_acc, atol=1e-5)
    assert int(s_acc.step) == 1


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
    step = loop.make_train_step(model_def, tx, schedule, sft.sft_loss, mesh, DEFAULT_RULES, sh)
    gb = loop.global_batch({k: v[None] for k, v in batch.items()}, mesh, DEFAULT_RULES)
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
