"""Splash (sparse flash) attention for TPU training, through Pallas.

Training forwards only: queries and keys are the same sequence (`q_index` is
0..T-1, as in `Qwen3.hidden_states`). Causality is a static `CausalMask` (fully
masked blocks are skipped); packing and padding come from segment ids (padding is
segment 0, so real tokens never see it). Grouped-query heads are native. T is padded
to a multiple of 128 with segment 0. The kernel does not scale q, so q is scaled by
1/sqrt(head_dim) here. Under an `activation_rules` context the kernel runs per shard
(`kernel_shards.per_shard`).

`interpret=True` runs it in Pallas's interpreter (the CPU tests); natively it needs a TPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash_lib
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib

from int_jax.models import kernel_shards

LANE = 128  # sequence blocks are multiples of this


@functools.lru_cache(maxsize=32)
def _kernel(num_heads: int, seq_len: int, interpret: bool):
    block = next(b for b in (512, 256, LANE) if seq_len % b == 0)
    sizes = splash_lib.BlockSizes(
        block_q=block, block_kv=block, block_kv_compute=block,
        block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
        block_q_dq=block, block_kv_dq=block)
    mask = mask_lib.MultiHeadMask(
        [mask_lib.CausalMask((seq_len, seq_len)) for _ in range(num_heads)])
    # Its residuals (output, log-sum-exp) carry the name remat policies save
    # (qwen3.ACTIVATION_NAMES), as the flash kernel's do. The kernel's mask tables are
    # built as concrete arrays even when first asked for inside a trace: a cached
    # kernel holding one trace's values would leak them into the next.
    with jax.ensure_compile_time_eval():
        return splash_lib.make_splash_mha(mask, block_sizes=sizes, head_shards=1,
                                          q_seq_shards=1,
                                          residual_checkpoint_name="attention_stats",
                                          interpret=interpret)


def _local(q, k, v, q_segment, kv_segment, *, interpret: bool):
    """q [B, T, H, D], k/v [B, T, K, D] on one device -> [B, T, H, D]."""
    q, k, v, q_segment, kv_segment, t = kernel_shards.pad_to_blocks(LANE, q, k, v, q_segment,
                                                                    kv_segment)
    b, t_pad, h, d = q.shape
    kernel = _kernel(h, t_pad, interpret)
    q = (q * jnp.asarray(d**-0.5, q.dtype)).transpose(0, 2, 1, 3)  # [B, H, T, D]
    k = k.transpose(0, 2, 1, 3)  # [B, K, T, D]
    v = v.transpose(0, 2, 1, 3)

    def one(qb, kb, vb, qs, ks):
        return kernel(qb, kb, vb, segment_ids=splash_lib.SegmentIds(q=qs, kv=ks))

    out = jax.vmap(one)(q, k, v, q_segment.astype(jnp.int32), kv_segment.astype(jnp.int32))
    return out.transpose(0, 2, 1, 3)[:, :t]


def splash_attention(q, k, v, q_index, q_segment, kv_segment, *, interpret: bool = False):
    """Same contract as `attention.xla_attention`, restricted to training forwards."""
    return kernel_shards.training_call("splash", functools.partial(_local, interpret=interpret),
                                       q, k, v, q_index, q_segment, kv_segment)
