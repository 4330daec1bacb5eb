"""RMSNorm as Qwen3 computes it (fp32 statistics, cast to the input dtype before the
scale), with a hand-written backward.

Why: autodiff's backward keeps the forward's intermediate chain and sums the weight
gradient in a fusion that XLA's CPU backend runs as a slow column reduction; the rule
below saves only the input and the per-row 1/rms and writes the two reductions
directly: one norm's forward + backward at [2048, 768] took 19.7 ms with autodiff and
8.2 ms with this rule on 2 CPU cores. Same math (the gradient is the textbook
`r * (g - xn * mean(g * xn))` with `g = dy * w`, `xn = x * r`), in fp32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _inverse_rms(x32, eps):
    return jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def rms_norm(x, weight, eps: float):
    """x [..., D], weight [D] -> weight * x / rms(x), in x's dtype."""
    return _forward(x, weight, eps)[0]  # the residuals are dead code when not differentiated


def _forward(x, weight, eps):
    x32 = x.astype(jnp.float32)
    r = _inverse_rms(x32, eps)
    return weight.astype(x.dtype) * (x32 * r).astype(x.dtype), (x, weight, r)


def _backward(eps, res, dy):
    del eps
    x, weight, r = res
    x, r, dy = jax.lax.optimization_barrier((x, r, dy))  # as in swiglu.py: no early x * r
    xn = x.astype(jnp.float32) * r
    dy32 = dy.astype(jnp.float32)
    d_weight = jnp.sum(dy32 * xn, axis=tuple(range(dy.ndim - 1)))
    g = dy32 * weight.astype(jnp.float32)
    d_x = r * (g - xn * jnp.mean(g * xn, axis=-1, keepdims=True))
    return d_x.astype(x.dtype), d_weight.astype(weight.dtype)


rms_norm.defvjp(_forward, _backward)
