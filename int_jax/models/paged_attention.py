"""Decode attention over a paged KV cache: one query token per sequence.

Keys and values live in one pool of fixed-size pages per layer, laid out as the Pallas
kernels that ship with jax want them: `k_pages, v_pages [kv_heads, pages, page_size,
head_dim]`. Sequence `b` owns the pages `page_table[b, :]` in order (position `p` sits
in page `page_table[b, p // page_size]` at row `p % page_size`), and its query attends
to its positions `0 .. lengths[b] - 1`. Entries of the table past a sequence's length
may name any page: they are never read into the result.

Every kernel here has the signature

    kernel(q [B, H, D], k_pages, v_pages, lengths [B] int32, page_table [B, W] int32)
        -> [B, H, D]   (softmax(q k^T / sqrt(D)) v per head, grouped-query heads)

* `reference`: a plain-JAX gather of every table page, then a masked softmax in fp32.
  The test oracle; it reads all W pages of every sequence.
* `blocked`: plain JAX, online softmax over blocks of pages in a `while_loop` that
  stops at the longest live length: the CPU default (reads no page past the longest
  sequence, and never copies the pool).
* `pallas_gpu`: `jax.experimental.pallas.ops.gpu.paged_attention` (Triton); each
  sequence reads its own pages up to its length.
* `pallas_tpu`: `jax.experimental.pallas.ops.tpu.paged_attention` (Mosaic), likewise.

The Pallas kernels run on CPU in interpret mode (`interpret=True`), which is how the
tests check them against `reference`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# As in attention.py: finite, so a row with nothing to attend to stays finite.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def _grouped(q, num_kv_heads):
    """[B, H, D] -> [B, K, G, D] (H = K * G, heads of one KV head adjacent)."""
    b, h, d = q.shape
    return q.reshape(b, num_kv_heads, h // num_kv_heads, d)


def paged_reference(q, k_pages, v_pages, lengths, page_table):
    """Gather every page of each sequence's table, mask past its length, softmax."""
    b, h, d = q.shape
    kv_heads, _, page_size, _ = k_pages.shape
    width = page_table.shape[1]
    # [K, B, W, page, D] -> [B, K, W * page, D]
    k = k_pages[:, page_table].reshape(kv_heads, b, width * page_size, d).swapaxes(0, 1)
    v = v_pages[:, page_table].reshape(kv_heads, b, width * page_size, d).swapaxes(0, 1)
    qg = _grouped(q, kv_heads)
    scores = jnp.einsum("bkgd,bksd->bkgs", qg, k, preferred_element_type=jnp.float32) * d**-0.5
    live = jnp.arange(width * page_size)[None, :] < lengths[:, None]  # [B, S]
    scores = jnp.where(live[:, None, None, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bkgs,bksd->bkgd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.reshape(b, h, d).astype(q.dtype)


def paged_blocked(q, k_pages, v_pages, lengths, page_table, *, pages_per_block: int = 8):
    """Online softmax over blocks of `pages_per_block` pages, up to the longest length."""
    b, h, d = q.shape
    kv_heads, _, page_size, _ = k_pages.shape
    width = page_table.shape[1]
    block = min(pages_per_block, width)
    pad = (-width) % block
    table = jnp.pad(page_table, ((0, 0), (0, pad))) if pad else page_table
    tokens = block * page_size
    qg = _grouped(q, kv_heads).astype(jnp.float32) * d**-0.5
    g = h // kv_heads
    n_blocks = (jnp.max(lengths) + tokens - 1) // tokens

    def body(carry):
        i, m_prev, l_prev, acc = carry
        pages = jax.lax.dynamic_slice_in_dim(table, i * block, block, axis=1)  # [B, block]
        k = k_pages[:, pages].reshape(kv_heads, b, tokens, d).swapaxes(0, 1)
        v = v_pages[:, pages].reshape(kv_heads, b, tokens, d).swapaxes(0, 1)
        s = jnp.einsum("bkgd,bksd->bkgs", qg, k, preferred_element_type=jnp.float32)
        live = i * tokens + jnp.arange(tokens)[None, :] < lengths[:, None]
        s = jnp.where(live[:, None, None, :], s, _MASK_VALUE)
        m_new = jnp.maximum(m_prev, s.max(axis=-1))
        correction = jnp.exp(m_prev - m_new)
        p = jnp.exp(s - m_new[..., None])
        l_new = l_prev * correction + p.sum(axis=-1)
        pv = jnp.einsum("bkgs,bksd->bkgd", p, v.astype(jnp.float32))
        return i + 1, m_new, l_new, acc * correction[..., None] + pv

    init = (jnp.int32(0), jnp.full((b, kv_heads, g), _MASK_VALUE, jnp.float32),
            jnp.zeros((b, kv_heads, g), jnp.float32), jnp.zeros((b, kv_heads, g, d), jnp.float32))
    _, _, l, acc = jax.lax.while_loop(lambda c: c[0] < n_blocks, body, init)
    out = acc / jnp.maximum(l, 1e-30)[..., None]
    return out.reshape(b, h, d).astype(q.dtype)


def _largest_divisor(n: int, at_most: int) -> int:
    return max(k for k in range(1, min(n, at_most) + 1) if n % k == 0)


def paged_pallas_gpu(q, k_pages, v_pages, lengths, page_table, *, interpret: bool = False):
    """The GPU (Triton) Pallas paged attention shipped with jax."""
    from jax.experimental.pallas.ops.gpu import paged_attention as gpu_paged  # noqa: PLC0415

    width = page_table.shape[1]
    k_splits = _largest_divisor(width, 16)  # the kernel splits each table in k_splits parts
    per_block = _largest_divisor(width // k_splits, 8)
    d = q.shape[-1]
    out = gpu_paged.paged_attention(
        (q.astype(jnp.float32) * d**-0.5).astype(q.dtype), k_pages, v_pages, page_table,
        lengths.astype(jnp.int32), block_h=16, pages_per_compute_block=per_block,
        k_splits=k_splits, interpret=interpret)
    return out.astype(q.dtype)


def paged_pallas_tpu(q, k_pages, v_pages, lengths, page_table, *, interpret: bool = False):
    """The TPU (Mosaic) Pallas paged attention shipped with jax; `interpret` runs it
    through Pallas's TPU interpreter (any backend)."""
    from jax.experimental.pallas import tpu as pltpu  # noqa: PLC0415
    from jax.experimental.pallas.ops.tpu.paged_attention import (  # noqa: PLC0415
        paged_attention as tpu_paged)

    width = page_table.shape[1]
    d = q.shape[-1]
    call = functools.partial(
        tpu_paged, (q.astype(jnp.float32) * d**-0.5).astype(q.dtype), k_pages, v_pages,
        lengths.astype(jnp.int32), page_table,
        pages_per_compute_block=_largest_divisor(width, 8))
    if interpret:
        with pltpu.force_tpu_interpret_mode():
            return call().astype(q.dtype)
    return call().astype(q.dtype)
