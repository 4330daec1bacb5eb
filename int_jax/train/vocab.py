"""Per-token statistics over the vocabulary, in chunks: what SFT's loss, GRPO's
logprobs and the NLL/entropy diagnostics all read from final hidden states.

[B, T, V] fp32 logits are never materialised: `token_stats` walks the sequence in
chunks, projecting `chunk` positions at a time through `model.project` under
`jax.checkpoint`, so the backward pass recomputes one chunk's logits instead of
storing all of them (16k tokens x 152k vocab would be ~10 GB per row).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_stats(model, hidden, targets, *, chunk_size: int = 512, entropy: bool = False):
    """Per-token NLL [B, T] (and next-token entropy [B, T]) from final hidden states
    (under the "loss" scope of a profile)."""
    with jax.named_scope("loss"):
        return _token_stats(model, hidden, targets, chunk_size, entropy)


def sequence_chunks(x, c: int):
    """[B, T, ...] -> [ceil(T / c), B, c, ...]: the sequence in chunks of c positions (the
    scan axis first), zero-padded to a multiple of c."""
    b, t = x.shape[:2]
    pad = (-t) % c
    if pad:
        x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
    return x.reshape(b, (t + pad) // c, c, *x.shape[2:]).swapaxes(0, 1)


def softmax_at(logits, targets):
    """(log p at `targets` [...], p [..., V], logsumexp [...]) of softmax over the last
    axis: what every per-token statistic of a chunk reads."""
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - lse, jnp.exp(logits - lse[..., None]), lse


def softmax_entropy(p, logits, lse):
    """H = -sum_v p_v log p_v, as lse - sum_v p_v z_v (no log 0), from `softmax_at`'s p
    and lse."""
    return lse - jnp.sum(p * logits, axis=-1)


def _token_stats(model, hidden, targets, chunk_size, entropy):
    b, t = hidden.shape[:2]
    c = min(chunk_size, t)
    n = -(-t // c)
    h_chunks, y_chunks = sequence_chunks(hidden, c), sequence_chunks(targets, c)

    @jax.checkpoint
    def one_chunk(h, y):
        logits = model.project(h)  # [B, c, V] fp32
        logp, p, lse = softmax_at(logits, y)
        if not entropy:
            return -logp, jnp.zeros_like(logp)
        return -logp, softmax_entropy(p, logits, lse)

    def body(_, xs):
        return None, one_chunk(*xs)

    _, (nll, ent) = jax.lax.scan(body, None, (h_chunks, y_chunks))
    nll = nll.swapaxes(0, 1).reshape(b, n * c)[:, :t]
    ent = ent.swapaxes(0, 1).reshape(b, n * c)[:, :t]
    return (nll, ent) if entropy else nll
