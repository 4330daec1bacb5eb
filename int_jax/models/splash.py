"""Splash (sparse flash) attention for TPU training, through Pallas.

Training only: queries and keys are the same sequence (`q_index` must be
0..T-1, as in `Qwen3.hidden_states`), T a multiple of 128. Causality is a
static `CausalMask` (fully masked blocks are skipped); packing and padding come
from segment ids (padding is segment 0, so real tokens never see it). The
kernel does not scale q, so q is scaled by 1/sqrt(head_dim) here. Under an
`activation_rules` context the kernel runs per shard through `shard_map`
(batch over data/fsdp, heads over tensor when both head counts divide).
Not testable on CPU; the `chunked` kernel computes the same function.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from jax.experimental.pallas.ops.tpu import splash_attention as splash_lib


@functools.lru_cache(maxsize=32)
def _kernel(num_heads: int, seq_len: int):
    block = min(512, seq_len)
    sizes = splash_lib.BlockSizes(
        block_q=block, block_kv=block, block_kv_compute=block,
        block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
        block_q_dq=block, block_kv_dq=block)
    mask = splash_lib.MultiHeadMask(
        [splash_lib.CausalMask((seq_len, seq_len)) for _ in range(num_heads)])
    return splash_lib.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1)


def _local(q, k, v, q_segment, kv_segment):
    """q [B, T, H, D], k/v [B, T, K, D] on one device -> [B, T, H, D]."""
    b, t, h, d = q.shape
    kernel = _kernel(h, t)
    q = (q * jnp.asarray(d**-0.5, q.dtype)).transpose(0, 2, 1, 3)  # [B, H, T, D]
    k = k.transpose(0, 2, 1, 3)
    v = v.transpose(0, 2, 1, 3)

    def one(qb, kb, vb, qs, ks):
        return kernel(qb, kb, vb, segment_ids=splash_lib.SegmentIds(q=qs, kv=ks))

    out = jax.vmap(one)(q, k, v, q_segment.astype(jnp.int32), kv_segment.astype(jnp.int32))
    return out.transpose(0, 2, 1, 3)


def splash_attention(q, k, v, q_index, q_segment, kv_segment):
    """Same contract as `attention.xla_attention`, restricted to training forwards."""
    del q_index  # causal by construction: queries and keys are the same positions
    t, s = q.shape[1], k.shape[1]
    if t != s:
        raise ValueError("splash attention serves training forwards only (T == S); "
                         "use attention_impl='xla' or 'chunked' for KV-cache decoding")
    if t % 128:
        raise ValueError(f"splash attention needs a sequence length multiple of 128, got {t}")
    from int_jax.models import sharding as sharding_lib

    active = sharding_lib._ACTIVE.get()
    if active is None:
        return _local(q, k, v, q_segment, kv_segment)
    mesh, rules = active
    batch = sharding_lib.logical_to_spec(("activation_batch",), rules, q.shape[:1], mesh)[0]
    heads = sharding_lib.logical_to_spec(("q_heads",), rules, (q.shape[2],), mesh)[0]
    kv_heads = sharding_lib.logical_to_spec(("kv_heads",), rules, (k.shape[2],), mesh)[0]
    if heads != kv_heads:  # GQA groups must stay whole on a shard
        heads = kv_heads = None
    qkv = PartitionSpec(batch, None, heads, None)
    seg = PartitionSpec(batch, None)
    fn = jax.shard_map(_local, mesh=mesh, in_specs=(qkv, qkv, qkv, seg, seg),
                       out_specs=qkv, check_vma=False)
    return fn(q, k, v, q_segment, kv_segment)
