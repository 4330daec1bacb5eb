"""Pallas attention kernels under a mesh: run them per shard.

A `pallas_call` is opaque to XLA's partitioner, so a kernel on sharded activations
runs through `jax.shard_map`: rows split like `activation_batch`, heads like
`q_heads` / `kv_heads` when both head counts divide the same mesh axes (GQA groups
must stay whole on a shard), else whole on every device. Used by `splash` (TPU) and
`triton` (GPU); outside an `activation_rules` context the kernel runs as it is.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from int_jax.models import sharding as sharding_lib


def training_call(name: str, local: Callable, q, k, v, q_index, q_segment, kv_segment):
    """A training-only kernel (queries and keys the same sequence, so `q_index` is
    0..T-1 and goes unused) behind `attention.xla_attention`'s signature, per shard."""
    del q_index  # causal by construction: queries and keys are the same positions
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"{name} attention serves training forwards only (T == S); "
                         "use attention_impl='flash' or 'xla' for KV-cache decoding")
    return per_shard(local, q, k, v, q_segment, kv_segment)


def per_shard(local: Callable, q, k, v, q_segment, kv_segment):
    """`local(q, k, v, q_segment, kv_segment)` on each shard: q [B, T, H, D], k/v
    [B, S, K, D], segments [B, T] / [B, S] -> [B, T, H, D]."""
    active = sharding_lib.active()
    if active is None:
        return local(q, k, v, q_segment, kv_segment)
    mesh, rules = active
    # The batch axis follows the activation rules (an indivisible one was already
    # an error or a logged replication where the model constrained its activations).
    batch = sharding_lib.logical_to_spec(("activation_batch",), rules, q.shape[:1], mesh)[0]
    heads = sharding_lib.logical_to_spec(("q_heads",), rules, (q.shape[2],), mesh)[0]
    kv_heads = sharding_lib.logical_to_spec(("kv_heads",), rules, (k.shape[2],), mesh)[0]
    if heads != kv_heads:  # GQA groups must stay whole on a shard
        heads = kv_heads = None
    qkv = PartitionSpec(batch, None, heads, None)
    seg = PartitionSpec(batch, None)
    fn = jax.shard_map(local, mesh=mesh, in_specs=(qkv, qkv, qkv, seg, seg),
                       out_specs=qkv, check_vma=False)
    return fn(q, k, v, q_segment, kv_segment)


def pad_to_blocks(block: int, q, k, v, q_segment, kv_segment):
    """Right-pad the (equal) sequence axes to a multiple of `block` with segment 0,
    which no real token sees; returns the padded arrays and the original length."""
    t = q.shape[1]
    pad = (-t) % block
    if pad:
        seq = ((0, 0), (0, pad), (0, 0), (0, 0))
        q, k, v = jnp.pad(q, seq), jnp.pad(k, seq), jnp.pad(v, seq)
        q_segment = jnp.pad(q_segment, ((0, 0), (0, pad)))
        kv_segment = jnp.pad(kv_segment, ((0, 0), (0, pad)))
    return q, k, v, q_segment, kv_segment, t
