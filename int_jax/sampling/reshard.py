"""Copy weights onto the sampler's layout: device to device, never aliased.

The sampler and the trainer usually hold the same weights in different layouts
(e.g. fully sharded over fsdp for training, slots x tensor for decoding), and
GRPO swaps them in every step. Two things matter:

* No host round trip. When source and target live on the same devices, one
  small compiled copy per (target layout, dtype) reshards with the
  partitioner's collectives and casts in the same program, on every backend.
  (`jax.device_put` between shardings is device to device on TPU/GPU, but goes
  through host memory on the CPU backend, where it cannot be checked.)
* A fresh buffer, always. `jax.device_put` onto the placement an array already
  has returns the *same* buffer; a trainer that donates its state to its next
  step would then delete the sampler's weights under it.

Arrays on other devices (a disaggregated trainer) or host data take
`jax.device_put`, which allocates new buffers anyway.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.lru_cache(maxsize=None)
def _copier(sharding: jax.sharding.Sharding, dtype):
    return jax.jit(lambda x: jnp.array(x, dtype=dtype, copy=True), out_shardings=sharding)


def copy_onto(x, sharding: jax.sharding.Sharding, dtype) -> jax.Array:
    """A new array holding `x` as `dtype`, laid out as `sharding`."""
    dtype = jnp.dtype(dtype)
    if isinstance(x, jax.Array) and x.sharding.device_set == sharding.device_set:
        return _copier(sharding, dtype)(x)
    moved = jax.device_put(x, sharding)
    return moved if moved.dtype == dtype else moved.astype(dtype)
