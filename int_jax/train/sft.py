"""Token-weighted cross-entropy for masked-prefix SFT, computed vocab-safely.

The loss of a global batch is `sum_i w_i * nll_i / sum_i w_i` over every label
token of every micro-batch: each loss function returns the *sums* and the train
step divides once, so gradient accumulation and device count never change it.

[B, T, V] fp32 logits are never materialised: `token_stats` walks the sequence
in chunks, projecting `chunk` positions at a time through `model.project` under
`jax.checkpoint`, so the backward pass recomputes one chunk's logits instead of
storing all of them (16k tokens x 152k vocab would be ~10 GB per row).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class LossTerms:
    """What every loss returns: a weighted sum, its total weight, and summed metrics."""

    total: jax.Array  # sum of weighted per-token losses
    weight: jax.Array  # sum of weights (the divisor for the global batch)
    metrics: dict  # extra sums, divided by `weight` for logging


jax.tree_util.register_dataclass(LossTerms, data_fields=["total", "weight", "metrics"],
                                 meta_fields=[])

# (model, micro-batch, rng) -> LossTerms. SFT and GRPO plug different ones into one loop.
LossFn = Callable[[object, Batch, jax.Array], LossTerms]


def next_token_targets(ids, weights, segment_ids):
    """Labels for position t are ids[t+1] with weight weights[t+1] (same segment only)."""
    targets = jnp.concatenate([ids[:, 1:], jnp.zeros_like(ids[:, :1])], axis=1)
    same = segment_ids[:, 1:] == segment_ids[:, :-1]
    w = jnp.where(same & (segment_ids[:, 1:] != 0), weights[:, 1:], 0.0)
    w = jnp.concatenate([w, jnp.zeros_like(w[:, :1])], axis=1)
    return targets, w.astype(jnp.float32)


def token_stats(model, hidden, targets, *, chunk_size: int = 512, entropy: bool = False):
    """Per-token NLL [B, T] (and next-token entropy [B, T]) from final hidden states."""
    b, t, d = hidden.shape
    c = min(chunk_size, t)
    pad = (-t) % c
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    n = (t + pad) // c
    h_chunks = hidden.reshape(b, n, c, d).swapaxes(0, 1)
    y_chunks = targets.reshape(b, n, c).swapaxes(0, 1)

    @jax.checkpoint
    def one_chunk(h, y):
        logits = model.project(h)  # [B, c, V] fp32
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, y[..., None].astype(jnp.int32), axis=-1)[..., 0]
        nll = lse - picked
        if not entropy:
            return nll, jnp.zeros_like(nll)
        p = jnp.exp(logits - lse[..., None])
        return nll, lse - jnp.sum(p * logits, axis=-1)

    def body(_, xs):
        return None, one_chunk(*xs)

    _, (nll, ent) = jax.lax.scan(body, None, (h_chunks, y_chunks))
    nll = nll.swapaxes(0, 1).reshape(b, n * c)[:, :t]
    ent = ent.swapaxes(0, 1).reshape(b, n * c)[:, :t]
    return (nll, ent) if entropy else nll


def sft_loss(model, batch: Batch, rng=None, *, chunk_size: int = 512) -> LossTerms:
    """Weighted next-token cross-entropy of one micro-batch (sums, not a mean).

    `batch`: ids, loss_weights, segment_ids, positions, all [B, T]; weights are
    per *label* token as produced by `int_jax.data.tokenize`.
    """
    del rng
    ids, seg = batch["ids"], batch["segment_ids"]
    hidden = model.hidden_states(ids, batch["positions"], segment_ids=seg)
    targets, w = next_token_targets(ids, batch["loss_weights"], seg)
    nll = token_stats(model, hidden, targets, chunk_size=chunk_size)
    weighted = jnp.sum(w * nll)
    counted = (w != 0).astype(jnp.float32)
    return LossTerms(total=weighted, weight=jnp.sum(w),
                     metrics={"trained_tokens": jnp.sum(counted),
                              "tokens": jnp.sum((seg != 0).astype(jnp.float32))})
