"""Attention kernels, chosen by name: dense ones behind one signature (`KERNELS`,
`Qwen3Config.attention_impl`) and paged decode ones (`PAGED_KERNELS`, the sampler's
`decode_kernel`; see paged_attention.py).

Masks are never passed as [T, S] arrays. Each kernel gets *index vectors* and
builds the mask itself (block by block for the chunked kernel), so a 16k-token
sequence never materialises a T x S boolean or score matrix unless the kernel
chosen is the plain `xla` one.

A query at key-index `q_index[b, t]` may attend to key `s` when

    s <= q_index[b, t]                       (causal, in key coordinates)
    and q_segment[b, t] == kv_segment[b, s]  (same packed example)
    and kv_segment[b, s] != 0                (not padding)

This one rule covers plain causal forwards, left padding (`kv_segment = mask`),
sequence packing (segment ids 1, 2, ...) and KV-cache decoding (`q_index` is the
cache slot each new token was written to).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# A large finite negative instead of -inf: a fully-masked row (padding queries)
# then softmaxes to a uniform row instead of NaN, and gradients stay finite.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def visible_keys(q_index, q_segment, kv_segment, kv_offset=0, kv_len=None):
    """Boolean [B, T, S_chunk] mask for keys kv_offset .. kv_offset+kv_len."""
    kv_len = kv_segment.shape[-1] if kv_len is None else kv_len
    kv_index = kv_offset + jnp.arange(kv_len, dtype=jnp.int32)
    causal = kv_index[None, None, :] <= q_index[:, :, None]
    same = q_segment[:, :, None] == kv_segment[:, None, :]
    valid = (kv_segment != 0)[:, None, :]
    return causal & same & valid


def _group_queries(q, num_kv_heads):
    """[B, T, H, D] -> [B, T, K, G, D] where H = K * G (grouped-query attention)."""
    b, t, h, d = q.shape
    return q.reshape(b, t, num_kv_heads, h // num_kv_heads, d)


def xla_attention(q, k, v, q_index, q_segment, kv_segment):
    """Reference kernel: materialises [B, K, G, T, S] scores in fp32."""
    b, t, h, d = q.shape
    kv_heads = k.shape[2]
    qg = _group_queries(q, kv_heads)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = scores * (d**-0.5)
    mask = visible_keys(q_index, q_segment, kv_segment)[:, None, None, :, :]
    scores = jnp.where(mask, scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, h, d).astype(q.dtype)


def chunked_attention(q, k, v, q_index, q_segment, kv_segment, *, chunk_size=512):
    """Online-softmax attention over key chunks: memory O(T x chunk), not O(T x S).

    Runs everywhere (CPU included) and is differentiable; `jax.checkpoint` on
    the chunk body keeps the backward pass from storing every chunk's scores.
    """
    b, t, h, d = q.shape
    s = k.shape[1]
    kv_heads = k.shape[2]
    chunk = min(chunk_size, s)
    pad = (-s) % chunk
    if pad:
        k = jnp.pad(k, ((0, 0), (0, pad), (0, 0), (0, 0)))
        v = jnp.pad(v, ((0, 0), (0, pad), (0, 0), (0, 0)))
        kv_segment = jnp.pad(kv_segment, ((0, 0), (0, pad)))  # segment 0: masked
    n_chunks = (s + pad) // chunk
    qg = _group_queries(q, kv_heads) * jnp.asarray(d**-0.5, q.dtype)
    k_chunks = k.reshape(b, n_chunks, chunk, kv_heads, d).swapaxes(0, 1)
    v_chunks = v.reshape(b, n_chunks, chunk, kv_heads, d).swapaxes(0, 1)
    seg_chunks = kv_segment.reshape(b, n_chunks, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def body(carry, xs):
        m_prev, l_prev, acc = carry
        idx, kc, vc, segc = xs
        scores = jnp.einsum("btkgd,bskd->bkgts", qg, kc, preferred_element_type=jnp.float32)
        mask = visible_keys(q_index, q_segment, segc, kv_offset=idx * chunk, kv_len=chunk)
        scores = jnp.where(mask[:, None, None], scores, _MASK_VALUE)
        m_new = jnp.maximum(m_prev, scores.max(axis=-1))
        correction = jnp.exp(m_prev - m_new)
        p = jnp.exp(scores - m_new[..., None])
        l_new = l_prev * correction + p.sum(axis=-1)
        pv = jnp.einsum("bkgts,bskd->bkgtd", p.astype(vc.dtype), vc,
                        preferred_element_type=jnp.float32)
        acc = acc * correction[..., None] + pv
        return (m_new, l_new, acc), None

    g = h // kv_heads
    init = (
        jnp.full((b, kv_heads, g, t), _MASK_VALUE, jnp.float32),
        jnp.zeros((b, kv_heads, g, t), jnp.float32),
        jnp.zeros((b, kv_heads, g, t, d), jnp.float32),
    )
    (m, l, acc), _ = jax.lax.scan(
        body, init, (jnp.arange(n_chunks), k_chunks, v_chunks, seg_chunks))
    out = acc / jnp.maximum(l, 1e-30)[..., None]
    # [B, K, G, T, D] -> [B, T, H, D]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d).astype(q.dtype)


def cudnn_attention(q, k, v, q_index, q_segment, kv_segment, *, implementation="cudnn"):
    """cuDNN flash attention on GPU for training forwards of rows that hold one example
    each, right-padded (SFT without packing, GRPO rows, diagnostics).

    Causality is a flag and padding is a length per row, so no [T, S] mask exists in
    either pass (a boolean mask would become a dense bias and, in the backward, a dense
    bias gradient: ~512 MiB per row each at 16k tokens). GQA heads are native. Packed
    rows (several segments) cannot be expressed this way: `triton` takes segment ids,
    and `auto` picks it for them. cuDNN takes bfloat16 / float16 only.
    `implementation="xla"` runs jax's XLA version of the same call: what the CPU tests
    check (cuDNN itself needs an NVIDIA GPU).
    """
    del q_index, q_segment  # causal and same-sequence by construction (T == S)
    if q.shape[1] != k.shape[1]:
        # cuDNN's causal mask is top-left aligned: wrong for KV-cache decoding.
        raise ValueError("cudnn attention serves training forwards only (T == S); "
                         "use attention_impl='flash' or 'xla' for KV-cache decoding")
    if implementation == "cudnn" and q.dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(f"cudnn attention takes bfloat16 or float16 inputs, got {q.dtype}: "
                         "set model.dtype=bfloat16, or attention_impl='auto' (triton for float32)")
    # Real tokens per row (segment 1 then padding). At least 1: an all-padding row then
    # attends to its first token (finite, weight 0) instead of a zero-length softmax.
    lengths = jnp.maximum(jnp.sum(kv_segment != 0, axis=1), 1).astype(jnp.int32)
    return jax.nn.dot_product_attention(
        q, k, v, is_causal=True, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
        implementation=implementation)


def _flash(chunk_size):
    from int_jax.models import flash  # blocked, causal-skipping, hand-written backward

    return functools.partial(flash.flash_attention, block_size=chunk_size)


def _splash(chunk_size):
    from int_jax.models import splash  # TPU only; imported lazily.

    return splash.splash_attention


def _triton(chunk_size):
    from int_jax.models import triton  # GPU (Pallas Triton); imported lazily.

    return triton.triton_attention


def _auto(chunk_size):
    return functools.partial(auto_attention, chunk_size=chunk_size)


# Config name -> factory(chunk_size) -> kernel. `chunk_size` is the key block of
# the blocked kernels; the others ignore it.
KERNELS = {
    "xla": lambda chunk_size: xla_attention,
    "chunked": lambda chunk_size: functools.partial(chunked_attention, chunk_size=chunk_size),
    "flash": _flash,
    "cudnn": lambda chunk_size: cudnn_attention,
    "splash": _splash,
    "triton": _triton,
    "auto": _auto,  # choose_kernel's pick for the backend (see below)
}


def get_kernel(name: str, *, chunk_size: int = 512, decoding: bool = False):
    """Look up an attention kernel by config name; unknown names are an error.
    `decoding`: the call attends over a KV cache (`auto` then takes `flash`, which
    serves any query index)."""
    if name == "auto" and decoding:
        name = "flash"
    return _lookup(KERNELS, name, "attention_impl")(chunk_size)


def _lookup(table: dict, name: str, what: str):
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(table)}") from None


# --------------------------------------------------------------------------- auto


def choose_kernel(platform: str, *, packed: bool = True, dtype=jnp.float32) -> str:
    """The training kernel `attention_impl="auto"` runs on `platform` (a jax platform
    name: "tpu", "gpu" / "cuda", "cpu").

    TPU: `splash` (causal block skipping, segment ids). GPU: `cudnn` for rows of one
    right-padded example in bfloat16 / float16 (`packed=False`), else `triton` (segment
    ids: packed rows; and float32, which cuDNN rejects). Anything else: `flash`.
    `packed=True` is the safe default: that kernel is right for any rows.
    """
    if platform == "tpu":
        return "splash"
    if platform in ("gpu", "cuda"):
        if not packed and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
            return "cudnn"
        return "triton"
    return "flash"


def resolve(name: str, platform: str, *, packed: bool = True, dtype=jnp.float32) -> str:
    """A configured `attention_impl` with `auto` replaced by `choose_kernel`'s pick."""
    return choose_kernel(platform, packed=packed, dtype=dtype) if name == "auto" else name


def auto_attention(q, k, v, q_index, q_segment, kv_segment, *, chunk_size=512):
    """`auto` left unresolved until trace time (a model built with it directly): the
    platform is the active mesh's (else jax's default backend), rows may be packed."""
    from int_jax.models import sharding  # noqa: PLC0415 - sharding imports nothing of ours

    active = sharding.active()
    platform = active[0].devices.flat[0].platform if active else jax.default_backend()
    name = choose_kernel(platform, packed=True, dtype=q.dtype)
    return get_kernel(name, chunk_size=chunk_size)(q, k, v, q_index, q_segment, kv_segment)


# --------------------------------------------------------------------------- paged decode


def _paged(name):
    def factory(interpret):
        from int_jax.models import paged_attention  # noqa: PLC0415 - Pallas imports lazily

        kernel = getattr(paged_attention, f"paged_{name}")
        if name.startswith("pallas"):
            return functools.partial(kernel, interpret=interpret)
        return kernel

    return factory


# Decode attention over a paged KV cache (see paged_attention.py for the signature):
# config name -> factory(interpret) -> kernel. `interpret` runs a Pallas kernel in
# Pallas's interpreter (how the tests check them on CPU).
PAGED_KERNELS = {
    "reference": _paged("reference"),  # gather every table page: the test oracle
    "blocked": _paged("blocked"),  # online softmax over page blocks: the CPU default
    "pallas_gpu": _paged("pallas_gpu"),  # jax.experimental.pallas.ops.gpu.paged_attention
    "pallas_tpu": _paged("pallas_tpu"),  # jax.experimental.pallas.ops.tpu.paged_attention
}


def get_paged_kernel(name: str, *, interpret: bool = False):
    """Look up a paged decode kernel by config name (the sampler's `decode_kernel`;
    `auto` is resolved per backend by its settings); unknown names are an error."""
    return _lookup(PAGED_KERNELS, name, "paged attention kernel")(interpret)
