"""The blocked flash kernel computes the `xla` reference function, forward and backward,
and skips key blocks after every query; it and the Pallas kernels serve a sharded Qwen3
train step."""

import functools
import math

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest

from int_jax.models import attention, flash, qwen3, splash, triton
from int_jax.models.sharding import DEFAULT_RULES, MeshConfig, make_mesh
from int_jax.train import sft
from int_jax.train.state import ModelDef


def _inputs(seed, b, t, s, h, kh, d):
    r = np.random.default_rng(seed)
    q = r.standard_normal((b, t, h, d), np.float32)
    k = r.standard_normal((b, s, kh, d), np.float32)
    v = r.standard_normal((b, s, kh, d), np.float32)
    return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)


def _training_indices(b, t):
    """Row 0: two packed examples; last row: right padding (segment 0)."""
    seg = np.ones((b, t), np.int32)
    seg[0, t // 3:] = 2
    seg[-1, t - 5:] = 0
    return jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)), jnp.asarray(seg)


_forward_chain = numerics.attention_forward_chain
_backward_chain = numerics.attention_backward_chain


CASES = {
    # name: (b, t, h, kh, d, block); t not a multiple of the block pads both axes
    "packed_gqa": (2, 100, 4, 2, 16, 32),
    "one_block": (1, 24, 4, 4, 8, 64),
    "odd_len_gqa3": (2, 37, 6, 2, 8, 16),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_forward_and_gradients_match_xla(name):
    b, t, h, kh, d, block = CASES[name]
    q, k, v = _inputs(0, b, t, t, h, kh, d)
    q_index, seg = _training_indices(b, t)
    ref = jax.jit(lambda q, k, v: attention.xla_attention(q, k, v, q_index, seg, seg))
    ours = jax.jit(lambda q, k, v: flash.flash_attention(q, k, v, q_index, seg, seg,
                                                         block_size=block))
    real = (np.asarray(seg) != 0)[:, :, None, None]
    # Padding queries are don't-care (xla: uniform average; flash: zeros); compare real rows.
    # out = sum_j p_j v_j: two fp32 evaluations, magnitude sum_j p_j |v_j| <= max|v|.
    tol = numerics.reduction_tol(_forward_chain(q, k, t, block), float(jnp.abs(v).max()))
    numerics.assert_within(np.where(real, ours(q, k, v), 0), np.where(real, ref(q, k, v), 0), tol,
                           "attention output")
    assert np.all(np.asarray(ours(q, k, v))[~real[..., 0, 0]] == 0)
    cot = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape, np.float32) * real)
    g_ref = jax.jit(jax.grad(lambda *a: jnp.sum(ref(*a) * cot), argnums=(0, 1, 2)))(q, k, v)
    g_ours = jax.jit(jax.grad(lambda *a: jnp.sum(ours(*a) * cot), argnums=(0, 1, 2)))(q, k, v)
    for name_, a, b_ in zip("qkv", g_ours, g_ref):
        numerics.assert_within(a, b_, numerics.leaf_tol(b_, _backward_chain(q, k, t, block)),
                               f"d{name_}")


def test_cache_decoding_shapes_match_xla():
    """Queries at arbitrary cache slots (prefill bucket, one-token decode rows)."""
    b, t, s, h, kh, d = 3, 4, 40, 4, 2, 8
    q, k, v = _inputs(2, b, t, s, h, kh, d)
    q_index = jnp.asarray([[0, 1, 2, 3], [9, 10, 11, 12], [36, 37, 38, 39]], jnp.int32)
    q_seg, kv_seg = jnp.ones((b, t), jnp.int32), jnp.ones((b, s), jnp.int32)
    want = attention.xla_attention(q, k, v, q_index, q_seg, kv_seg)
    for block in (8, 16, 64):
        got = flash.flash_attention(q, k, v, q_index, q_seg, kv_seg, block_size=block)
        tol = numerics.reduction_tol(_forward_chain(q, k, s, block), float(jnp.abs(v).max()))
        numerics.assert_within(got, want, tol, f"block {block}")


def test_key_blocks_after_every_query_are_never_read():
    """The causal saving is real: NaN keys/values in blocks no query of a block can see
    leave the output finite and unchanged (a kernel that read them would yield NaN)."""
    b, t, h, kh, d, block = 1, 64, 4, 2, 8, 16
    q, k, v = _inputs(3, b, t, t, h, kh, d)
    q_index = jnp.arange(t, dtype=jnp.int32)[None]
    seg = jnp.ones((b, t), jnp.int32)
    clean = flash.flash_attention(q[:, :16], k, v, q_index[:, :16], seg[:, :16], seg,
                                  block_size=block)
    k_bad, v_bad = k.at[:, 16:].set(jnp.nan), v.at[:, 16:].set(jnp.nan)
    poisoned = flash.flash_attention(q[:, :16], k_bad, v_bad, q_index[:, :16], seg[:, :16], seg,
                                     block_size=block)
    np.testing.assert_array_equal(poisoned, clean)


CFG = qwen3.Qwen3Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=1,
                        num_heads=4, num_kv_heads=2, head_dim=8)


# The Pallas kernels run interpreted here (tests/test_attention_kernels.py says why).
INTERPRETED = {"splash": lambda: functools.partial(splash.splash_attention, interpret=True),
               "triton": lambda: functools.partial(triton.triton_attention, interpret=True)}


@pytest.mark.parametrize("kernel", ["flash", "splash", "triton"])
def test_qwen3_loss_and_gradient_match_xla_sharded(kernel, monkeypatch):
    """A Qwen3 SFT loss gradient with `attention_impl=kernel` on fsdp=4 x tensor=2 (packed
    and padded rows; splash and triton per shard) equals the single-device `xla` one
    (within the chain bounds of tests/numerics.py)."""
    from int_jax.models import sharding

    if kernel in INTERPRETED:
        monkeypatch.setitem(attention.KERNELS, kernel, lambda chunk_size: INTERPRETED[kernel]())
    r = np.random.default_rng(4)
    b, t = 4, 40
    seg = np.ones((b, t), np.int32)
    seg[1, 25:] = 2
    seg[3, 30:] = 0
    batch = {"ids": jnp.asarray(r.integers(1, 96, (b, t)).astype(np.int32)),
             "loss_weights": jnp.asarray((r.random((b, t)) > 0.3).astype(np.float32)),
             "segment_ids": jnp.asarray(seg),
             "positions": qwen3.default_positions(jnp.asarray(seg))}

    def loss_grad(cfg, mesh):
        model_def, params = ModelDef.split(qwen3.create(cfg, seed=7))
        shardings = model_def.param_shardings(params, mesh, DEFAULT_RULES)
        params = jax.device_put(params, shardings)

        def f(p):
            with sharding.activation_rules(mesh, DEFAULT_RULES, indivisible="error"):
                terms = sft.sft_loss(model_def.merge(p), batch, chunk_size=16)
            return terms.total / terms.weight

        return jax.device_get(jax.jit(jax.value_and_grad(f))(params))

    one = make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    loss_ref, g_ref = loss_grad(CFG, one)
    loss, g = loss_grad(CFG.replace(attention_impl=kernel, attention_chunk_size=16),
                        make_mesh(MeshConfig(data=1, fsdp=4, tensor=2)))
    # Two fp32 evaluations of the SFT loss and its gradient (as in test_sft_train), plus
    # the kernel's rescalings: 3 roundings per key block (16 keys or more), per layer,
    # both ways.
    model = qwen3.create(CFG, seed=7)
    score = numerics.qwen3_score_bound(model)
    flash_terms = 2 * 3 * math.ceil(t / 16) * CFG.num_layers
    k_loss = (numerics.qwen3_forward_chain(CFG, t, t - 1, score) + CFG.vocab_size + b * t
              + flash_terms)
    loss_mag = float(loss_ref) + 2 * numerics.qwen3_logit_magnitude(model)  # nll = lse - z_y
    assert abs(float(loss) - float(loss_ref)) <= numerics.reduction_tol(k_loss, loss_mag)
    k_grad = numerics.qwen3_gradient_chain(CFG, t, t - 1, score, b * t) + flash_terms
    for name in g_ref:
        numerics.assert_within(g[name], g_ref[name], numerics.leaf_tol(g_ref[name], k_grad), name)


def test_get_kernel_knows_flash():
    kernel = attention.get_kernel("flash", chunk_size=32)
    assert isinstance(kernel, functools.partial) and kernel.keywords == {"block_size": 32}
    with pytest.raises(ValueError, match="flash"):
        attention.get_kernel("nope")
