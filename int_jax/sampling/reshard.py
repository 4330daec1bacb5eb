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

Several processes (multi-host GRPO): the trainer's weights are spread over every
host's devices, each host's sampler holds a whole copy on its own devices. A weight
is cast on the trainer's layout (when the sampler's dtype differs), then resharded by
the collective `jax.device_put` onto a mesh that stacks every host's sampler mesh
(`hosts_mesh`), replicated over hosts and laid out as the sampler's within each; this
host's shards of it are its sampler copy. Peak per device while a weight moves: the
trainer's state, the sampler's other weights, that weight cast (1 / devices of it) and
two sampler-layout copies of it (the gathered one and the fresh copy kept).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding


@functools.lru_cache(maxsize=None)
def _copier(sharding: jax.sharding.Sharding, dtype):
    return jax.jit(lambda x: jnp.array(x, dtype=dtype, copy=True), out_shardings=sharding)


@functools.lru_cache(maxsize=None)
def _caster(dtype):
    return jax.jit(lambda x: x.astype(dtype))


def copy_onto(x, sharding: jax.sharding.Sharding, dtype) -> jax.Array:
    """A new array holding `x` as `dtype`, laid out as `sharding`."""
    dtype = jnp.dtype(dtype)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = _onto_this_host(x, sharding, dtype)
    if isinstance(x, jax.Array) and x.sharding.device_set == sharding.device_set:
        return _copier(sharding, dtype)(x)
    moved = jax.device_put(x, sharding)
    return moved if moved.dtype == dtype else moved.astype(dtype)


@functools.lru_cache(maxsize=None)
def hosts_mesh(local: Mesh) -> Mesh:
    """Every process's mesh `local` (same shape on each) stacked on a leading `hosts`
    axis. A collective: every process calls it with its own mesh."""
    from int_jax.data.host_sync import process_all_gather  # noqa: PLC0415

    ids = np.vectorize(lambda d: d.id, otypes=[np.int64])(local.devices)
    stacked = process_all_gather(ids.reshape(-1)).reshape(-1, *local.devices.shape)
    by_id = {d.id: d for d in jax.devices()}
    return Mesh(np.vectorize(by_id.__getitem__, otypes=[object])(stacked),
                ("hosts", *local.axis_names))


def _onto_this_host(x: jax.Array, sharding: NamedSharding, dtype) -> jax.Array:
    """The whole of `x` (spread over several processes) on this process's devices as
    `sharding`, cast to `dtype`: a collective, every process calls it with its own
    sampler sharding of the same mesh shape."""
    if not isinstance(sharding, NamedSharding):
        raise TypeError(f"a weight spread over processes goes onto a NamedSharding, got "
                        f"{type(sharding).__name__}")
    if x.dtype != dtype:  # cast where the weight is split finest: the gather moves less
        x = _caster(dtype)(x)
    stacked = jax.device_put(x, NamedSharding(hosts_mesh(sharding.mesh), sharding.spec))
    # One cross-process collective in flight at a time: left asynchronous, the CPU
    # backend's gloo runs hung (tests/test_multihost.py), and the copy made next reads it.
    jax.block_until_ready(stacked)
    return jax.make_array_from_single_device_arrays(
        x.shape, sharding, [s.data for s in stacked.addressable_shards])
