"""A loss that sums a per-token term of log pi(y_t) and H_t over the vocabulary in
chunks, with its gradient formed in the forward pass.

Why: SFT's loss (l_t = -w_t log pi(y_t)) and GRPO's (l_t = a_t * (clipped surrogate of
pi(y_t) / pi_old(y_t) + beta kl_t - alpha H_t), a_t the aggregation's weight, set by
the mask alone) are both sums of terms that depend on position t's logprob and entropy
only. Then the gradient with respect to the chunk's scaled logits z_t is

    dL/dz_t = g_t (onehot(y_t) - p_t) - e_t p_t (log p_t + H_t),
    g_t = dl_t / dlog pi(y_t),   e_t = dl_t / dH_t,

and g_t, e_t are known as soon as the chunk's logits are: this function forms the
gradient while they are live. `vocab.token_stats` (any loss of the logprobs) must
recompute each chunk's logits in the backward pass: four vocabulary matmuls per chunk;
this takes three (logits, d_hidden, d_weight), like torch keeping every logit, without
keeping them. The ~100M SFT step at 2048 tokens spent 1.6 s of 12 in the projection's
backward on 2 CPU cores; for Qwen3-4B the projection is ~10% of a token's FLOPs. The
price is memory: the projection weight's gradient (fp32, [V, D]) and d_hidden
([B, T, D]) are held from the forward to the backward; `train/memory.py` compiles this
function for the plan.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from int_jax.train.vocab import sequence_chunks, softmax_at, softmax_entropy

# per_token(logp [B, c], entropy [B, c] or None, aux {name: [B, c]}) -> l [B, c]: the
# term at (b, t) may read only position (b, t) of its arguments.
PerToken = Callable[[jax.Array, jax.Array | None, Mapping[str, jax.Array]], jax.Array]


def vocab_objective(model, hidden, targets, per_token: PerToken, aux: Mapping[str, jax.Array],
                    *, temperature: float = 1.0, entropy: bool = False,
                    entropy_gradient: bool = True, chunk_size: int = 512):
    """(total, logp, ent): total = sum_{b,t} per_token(logp, ent, aux)[b, t] (fp32
    scalar), differentiable in `hidden` [B, T, D] and the projection weight (tied
    embedding or lm_head); logp = log softmax(project(hidden) / temperature) at
    `targets` [B, T], ent its entropy ([B, T], or None without `entropy`), both values
    only (no gradient flows through them: the loss's gradient is total's). `aux`: [B, T]
    data the per-token term reads (weights, masks, old logprobs ...; not differentiated),
    zero-padded to the chunks: a position whose `aux` is all zero must give a zero term.
    `entropy_gradient=False`: the term reads the entropy as a constant (GRPO without an
    entropy bonus computes it for its metrics only), which spares two passes over each
    chunk's [B, c, V] probabilities in the gradient.
    """
    with jax.named_scope("loss"):
        if model.config.tie_word_embeddings:
            w, vocab_major = model.embed_tokens[...].astype(model.dtype), True  # [V, D]
        else:
            w, vocab_major = model.lm_head[...].astype(model.dtype), False  # [D, V]
        aux = {k: jnp.asarray(v) for k, v in aux.items()}
        total, logp, ent = _objective(hidden, w, targets.astype(jnp.int32), aux, per_token,
                                      vocab_major, int(chunk_size), float(temperature),
                                      bool(entropy), bool(entropy and entropy_gradient))
        logp = jax.lax.stop_gradient(logp)
        return total, logp, (jax.lax.stop_gradient(ent) if entropy else None)


def weighted_nll(model, hidden, targets, weights, *, chunk_size: int = 512):
    """SFT's sum_t weights[b, t] * -log softmax(model.project(hidden))[b, t, targets[b, t]]
    (fp32 scalar); `targets` and `weights` are data."""
    total, _, _ = vocab_objective(model, hidden, targets, _negative_weighted_logp,
                                  {"weights": weights.astype(jnp.float32)},
                                  chunk_size=chunk_size)
    return total


def _negative_weighted_logp(logp, ent, aux):
    del ent
    return -aux["weights"] * logp


def _scan(hidden, w, targets, aux, per_token, vocab_major, chunk, temperature, entropy,
          entropy_gradient, grads=True):
    """(total, logp, ent, d_total/d_hidden, d_total/d_w in fp32); without `grads` the
    first three."""
    b, t, d = hidden.shape
    c = min(chunk, t)
    logits_eq, d_hidden_eq = (("bcd,vd->bcv", "bcv,vd->bcd") if vocab_major
                              else ("bcd,dv->bcv", "bcv,dv->bcd"))

    def body(d_w, xs):
        h, y, aux_c = xs
        with jax.named_scope("lm_head"):  # the model's name for the projection (profiles)
            z = jnp.einsum(logits_eq, h, w, preferred_element_type=jnp.float32)
        if temperature != 1.0:
            z = z / temperature
        logp, p, lse = softmax_at(z, y)
        ent = softmax_entropy(p, z, lse) if entropy else None
        if entropy_gradient:
            term, pullback = jax.vjp(lambda lp, e: per_token(lp, e, aux_c), logp, ent)
        else:
            term, pull_logp = jax.vjp(lambda lp: per_token(lp, ent, aux_c), logp)
            pullback = lambda ct: (*pull_logp(ct), None)  # noqa: E731
        out = (jnp.sum(term), logp, ent if entropy else jnp.zeros((), jnp.float32))
        if not grads:
            return d_w, (out, None)
        # The term is per position, so the pullback of ones is each one's own derivative.
        g, e = pullback(jnp.ones_like(term))
        hit = jax.lax.broadcasted_iota(jnp.int32, z.shape, 2) == y[..., None]
        d_z = g[..., None] * jnp.where(hit, 1.0 - p, -p)
        if entropy_gradient:
            d_z = d_z - e[..., None] * p * (z - lse[..., None] + ent[..., None])
        if temperature != 1.0:
            d_z = d_z / temperature
        d_logits = d_z.astype(h.dtype)
        d_h = jnp.einsum(d_hidden_eq, d_logits, w, preferred_element_type=jnp.float32)
        # Accumulated as [D, V] whatever w's layout: contracting the chunk's tokens with
        # the [c, V] logits gradient as the right operand needs no transposed copy of it
        # (on CPU, [V, D] = dl^T h copied dl, 0.2 s per step at V=32k, 2048 tokens).
        d_w = d_w + jnp.einsum("bcd,bcv->dv", h, d_logits, preferred_element_type=jnp.float32)
        return d_w, (out, d_h.astype(h.dtype))

    chunks = (sequence_chunks(hidden, c), sequence_chunks(targets, c),
              {k: sequence_chunks(v, c) for k, v in aux.items()})
    init = jnp.zeros((d, w.shape[0] if vocab_major else w.shape[1]) if grads else (),
                     jnp.float32)
    d_w, ((totals, logp, ent), d_h) = jax.lax.scan(body, init, chunks)
    logp = logp.swapaxes(0, 1).reshape(b, -1)[:, :t]
    ent = ent.swapaxes(0, 1).reshape(b, -1)[:, :t] if entropy else jnp.zeros((), jnp.float32)
    if not grads:
        return jnp.sum(totals), logp, ent
    if vocab_major:
        d_w = d_w.T
    d_h = d_h.swapaxes(0, 1).reshape(b, -1, d)[:, :t]
    return jnp.sum(totals), logp, ent, d_h, d_w


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8, 9))
def _objective(hidden, w, targets, aux, per_token, vocab_major, chunk, temperature, entropy,
               entropy_gradient):
    return _scan(hidden, w, targets, aux, per_token, vocab_major, chunk, temperature,
                 entropy, entropy_gradient, grads=False)


def _forward(hidden, w, targets, aux, per_token, vocab_major, chunk, temperature, entropy,
             entropy_gradient):
    total, logp, ent, d_h, d_w = _scan(hidden, w, targets, aux, per_token, vocab_major, chunk,
                                       temperature, entropy, entropy_gradient)
    return (total, logp, ent), (d_h, d_w, jnp.zeros((), w.dtype))  # the last: w's dtype


def _backward(per_token, vocab_major, chunk, temperature, entropy, entropy_gradient, res,
              cotangents):
    """Only total's cotangent is used: `vocab_objective` stops logp's and ent's."""
    del per_token, vocab_major, chunk, temperature, entropy, entropy_gradient
    d_h, d_w, w_like = res
    cotangent = cotangents[0]
    return ((cotangent * d_h).astype(d_h.dtype), (cotangent * d_w).astype(w_like.dtype), None,
            None)


_objective.defvjp(_forward, _backward)
