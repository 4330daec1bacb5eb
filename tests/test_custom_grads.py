"""The hand-written backward passes of the model's SwiGLU MLP and RMSNorm
(int_jax/models/swiglu.py, rms_norm.py) against torch float64 autograd of the plain
formulas: gradients of every input, within the rounding bound of an fp32 evaluation
(tests/numerics.py: a chain of K terms, relative to the same computation in absolute
values)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

from int_jax.models.rms_norm import rms_norm
from int_jax.models.swiglu import swiglu
from numerics import assert_within, reduction_tol

B, T, D, F = 2, 64, 32, 48
ELEMENTWISE = 16  # roundings on the longest elementwise path of either backward, rounded up


def _rng():
    return np.random.default_rng(0)


def test_swiglu_gradients_match_float64_autograd():
    r = _rng()
    x = r.standard_normal((B, T, D)).astype(np.float32)
    wg, wu = (r.standard_normal((D, F)).astype(np.float32) * 0.3 for _ in range(2))
    wd = r.standard_normal((F, D)).astype(np.float32) * 0.3
    dy = r.standard_normal((B, T, D)).astype(np.float32)

    got = jax.grad(lambda *a: jnp.sum(swiglu(*a) * dy), argnums=(0, 1, 2, 3))(x, wg, wu, wd)

    t = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, wg, wu, wd)]
    out = (torch.nn.functional.silu(t[0] @ t[1]) * (t[0] @ t[2])) @ t[3]
    (out * torch.tensor(dy, dtype=torch.float64)).sum().backward()
    want = [a.grad.numpy() for a in t]

    # Magnitudes: the backward computed in absolute values (float64).
    x64, wg64, wu64, wd64, dy64 = (np.abs(a.astype(np.float64)) for a in (x, wg, wu, wd, dy))
    g = x.astype(np.float64) @ wg.astype(np.float64)
    u = x.astype(np.float64) @ wu.astype(np.float64)
    sig = 1 / (1 + np.exp(-g))
    d_hidden = dy64 @ wd64.T
    d_gate = d_hidden * np.abs(u) * np.abs(sig * (1 + g * (1 - sig)))
    d_up = d_hidden * np.abs(g * sig)
    hidden = np.abs(g * sig * u)
    mags = [d_gate @ wg64.T + d_up @ wu64.T,
            np.einsum("btd,btf->df", x64, d_gate), np.einsum("btd,btf->df", x64, d_up),
            np.einsum("btf,btd->fd", hidden, dy64)]
    # Longest chain: the forward projection (D terms), d_hidden (D), then a sum over F
    # (d_x) or over B*T tokens (weights), plus the elementwise roundings.
    k = 2 * D + max(F, B * T) + ELEMENTWISE
    for name, gv, wv, m in zip(("x", "w_gate", "w_up", "w_down"), got, want, mags):
        assert_within(gv, wv, reduction_tol(k, 1.0, evaluations=1) * m + 1e-12, name)


def test_rms_norm_gradients_match_float64_autograd():
    r = _rng()
    eps = 1e-6
    x = (r.standard_normal((B, T, D)) * 3).astype(np.float32)
    w = (1 + 0.2 * r.standard_normal(D)).astype(np.float32)
    dy = r.standard_normal((B, T, D)).astype(np.float32)

    got = jax.grad(lambda x, w: jnp.sum(rms_norm(x, w, eps) * dy),
                   argnums=(0, 1))(x, w)

    tx, tw = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    out = tw * tx * torch.rsqrt((tx * tx).mean(-1, keepdim=True) + eps)
    (out * torch.tensor(dy, dtype=torch.float64)).sum().backward()

    x64, dy64, w64 = (a.astype(np.float64) for a in (x, dy, w))
    inv = 1 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + eps)
    xn, g = np.abs(x64 * inv), np.abs(dy64 * w64)
    mag_x = inv * (g + xn * (g * xn).mean(-1, keepdims=True))
    mag_w = np.sum(np.abs(dy64) * xn, axis=(0, 1))
    # 1/rms: a mean of D squares; d_x: another mean over D; d_w: a sum over B*T tokens.
    k = 2 * D + B * T + ELEMENTWISE
    tol = reduction_tol(k, 1.0, evaluations=1)
    assert_within(got[0], tx.grad.numpy(), tol * mag_x + 1e-12, "x")
    assert_within(got[1], tw.grad.numpy(), tol * mag_w + 1e-12, "w")

