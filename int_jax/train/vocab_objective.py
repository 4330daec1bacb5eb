"""SFT's vocabulary part, sum_t w_t * nll_t, in chunks, with its gradient formed in the
forward pass.

Why: SFT's loss is linear in every token's NLL with a weight known before the backward
pass, so the gradient with respect to a chunk's logits, w_t * (softmax_t - onehot_t),
can be formed while those logits are live. `vocab.token_stats` (any loss: GRPO's is
not linear in the logprobs) must recompute each chunk's logits in the backward pass:
four vocabulary matmuls per chunk. This takes three (logits, d_hidden, d_weight), like
torch keeping every logit, without keeping them: the ~100M SFT step at 2048 tokens
spent 1.6 s of 12 in the projection's backward on 2 CPU cores; for Qwen3-4B the
projection is ~10% of a token's FLOPs. The price is memory: the projection weight's
gradient (fp32, [V, D]) and d_hidden ([B, T, D]) are held from the forward to the
backward; `train/memory.py` compiles this function for SFT's plan.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from int_jax.train.vocab import sequence_chunks


def weighted_nll(model, hidden, targets, weights, *, chunk_size: int = 512):
    """sum_t weights[b, t] * -log softmax(model.project(hidden))[b, t, targets[b, t]] (fp32
    scalar), differentiable in `hidden` and the projection weight (tied embedding or
    lm_head); `targets` and `weights` are data."""
    with jax.named_scope("loss"):
        if model.config.tie_word_embeddings:
            w, vocab_major = model.embed_tokens[...].astype(model.dtype), True  # [V, D]
        else:
            w, vocab_major = model.lm_head[...].astype(model.dtype), False  # [D, V]
        return _weighted_nll(hidden, w, targets.astype(jnp.int32), weights.astype(jnp.float32),
                             vocab_major, int(chunk_size))


def _scan(hidden, w, targets, weights, vocab_major, chunk, grads=True):
    """(total, d_total/d_hidden, d_total/d_w in fp32); without `grads` the total alone."""
    b, t, d = hidden.shape
    c = min(chunk, t)
    logits_eq, d_hidden_eq = (("bcd,vd->bcv", "bcv,vd->bcd") if vocab_major
                              else ("bcd,dv->bcv", "bcv,dv->bcd"))

    def body(d_w, xs):
        h, y, wt = xs
        with jax.named_scope("lm_head"):  # the model's name for the projection (profiles)
            logits = jnp.einsum(logits_eq, h, w, preferred_element_type=jnp.float32)
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
        total = jnp.sum(wt * (lse - picked))
        if not grads:
            return d_w, (total, None)
        p = jnp.exp(logits - lse[..., None])
        hit = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2) == y[..., None]
        d_logits = (wt[..., None] * jnp.where(hit, p - 1.0, p)).astype(h.dtype)
        d_h = jnp.einsum(d_hidden_eq, d_logits, w, preferred_element_type=jnp.float32)
        # Accumulated as [D, V] whatever w's layout: contracting the chunk's tokens with
        # the [c, V] logits gradient as the right operand needs no transposed copy of it
        # (on CPU, [V, D] = dl^T h copied dl, 0.2 s per step at V=32k, 2048 tokens).
        d_w = d_w + jnp.einsum("bcd,bcv->dv", h, d_logits, preferred_element_type=jnp.float32)
        return d_w, (total, d_h.astype(h.dtype))

    d_w, (totals, d_h) = jax.lax.scan(
        body, jnp.zeros((d, w.shape[0] if vocab_major else w.shape[1]) if grads else (),
                        jnp.float32),
        (sequence_chunks(hidden, c), sequence_chunks(targets, c), sequence_chunks(weights, c)))
    if not grads:
        return jnp.sum(totals)
    if vocab_major:
        d_w = d_w.T
    d_h = d_h.swapaxes(0, 1).reshape(b, -1, d)[:, :t]
    return jnp.sum(totals), d_h, d_w


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _weighted_nll(hidden, w, targets, weights, vocab_major, chunk):
    return _scan(hidden, w, targets, weights, vocab_major, chunk, grads=False)


def _forward(hidden, w, targets, weights, vocab_major, chunk):
    total, d_h, d_w = _scan(hidden, w, targets, weights, vocab_major, chunk)
    return total, (d_h, d_w, jnp.zeros((), w.dtype))  # the last: w's dtype


def _backward(vocab_major, chunk, res, cotangent):
    del vocab_major, chunk
    d_h, d_w, w_like = res
    return ((cotangent * d_h).astype(d_h.dtype), (cotangent * d_w).astype(w_like.dtype), None,
            None)


_weighted_nll.defvjp(_forward, _backward)
