"""Flash attention for GPU training on packed rows: the Pallas Triton kernel that
ships with jax (`jax.experimental.pallas.ops.gpu.attention.mha`).

Training forwards only (queries and keys are the same sequence: `q_index` is
0..T-1 and `q_segment` is `kv_segment`, as in `Qwen3.hidden_states`). Causality is
the kernel's flag (key blocks after a query block are skipped); packing and padding
come from segment ids, so no [T, S] mask exists in either pass. The kernel wants as
many key/value heads as query heads: grouped-query K/V are repeated (their gradient
sums over each group). T is padded to a power-of-two block with segment 0. Under an
`activation_rules` context it runs per shard (`kernel_shards.per_shard`).

`interpret=True` runs it in Pallas's interpreter (the CPU tests); natively it needs
an NVIDIA GPU.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax.experimental.pallas.ops.gpu import attention as triton_lib

from int_jax.models import kernel_shards

# Forward tiles of 128 (the kernel's default); backward tiles of 32 (its default:
# the fused dK/dV + dQ kernel keeps more in shared memory).
FORWARD_BLOCK, BACKWARD_BLOCK = 128, 32


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _local(q, k, v, q_segment, kv_segment, *, interpret: bool):
    """q [B, T, H, D], k/v [B, T, K, D] on one device -> [B, T, H, D]."""
    del q_segment  # the kernel takes one segment array for queries and keys (T == S)
    b, t, h, d = q.shape
    block = min(FORWARD_BLOCK, _pow2_at_least(t))
    back = min(BACKWARD_BLOCK, block)
    q, k, v, _, kv_segment, t = kernel_shards.pad_to_blocks(block, q, k, v, kv_segment,
                                                            kv_segment)
    groups = h // k.shape[2]
    if groups > 1:  # [B, T, K, D] -> [B, T, H, D]: head j reads K/V head j // groups
        k = jnp.repeat(k, groups, axis=2)
        v = jnp.repeat(v, groups, axis=2)
    sizes = triton_lib.BlockSizes(block_q=block, block_k=block, block_q_dkv=back,
                                  block_kv_dkv=back, block_q_dq=back, block_kv_dq=back)
    out = triton_lib.mha(q, k, v, kv_segment.astype(jnp.int32), sm_scale=d**-0.5, causal=True,
                         block_sizes=sizes, interpret=interpret)
    return out[:, :t]


def triton_attention(q, k, v, q_index, q_segment, kv_segment, *, interpret: bool = False):
    """Same contract as `attention.xla_attention`, restricted to training forwards."""
    return kernel_shards.training_call("triton", functools.partial(_local, interpret=interpret),
                                       q, k, v, q_index, q_segment, kv_segment)
