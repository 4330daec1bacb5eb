"""Token-weighted cross-entropy for masked-prefix SFT, computed vocab-safely.

The loss of a global batch is `sum_i w_i * nll_i / sum_i w_i` over every label
token of every micro-batch: the loss returns the *sums* (`step.LossTerms`) and the
train step divides once, so gradient accumulation and device count never change it.
[B, T, V] logits are never materialised, and the projection's gradient is formed in the
forward pass (`vocab_objective.py`).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from int_jax.train.step import LossTerms
from int_jax.train.vocab_objective import weighted_nll

Batch = Mapping[str, jax.Array]


def next_token_targets(ids, weights, segment_ids):
    """Labels for position t are ids[t+1] with weight weights[t+1] (same segment only)."""
    targets = jnp.concatenate([ids[:, 1:], jnp.zeros_like(ids[:, :1])], axis=1)
    same = segment_ids[:, 1:] == segment_ids[:, :-1]
    w = jnp.where(same & (segment_ids[:, 1:] != 0), weights[:, 1:], 0.0)
    w = jnp.concatenate([w, jnp.zeros_like(w[:, :1])], axis=1)
    return targets, w.astype(jnp.float32)


def sft_loss(model, batch: Batch, rng=None, *, chunk_size: int = 512) -> LossTerms:
    """Weighted next-token cross-entropy of one micro-batch (sums, not a mean).

    `batch`: ids, loss_weights, segment_ids, positions, all [B, T]; weights are
    per *label* token as produced by `int_jax.data.tokenize`.
    """
    del rng
    ids, seg = batch["ids"], batch["segment_ids"]
    hidden = model.hidden_states(ids, batch["positions"], segment_ids=seg)
    targets, w = next_token_targets(ids, batch["loss_weights"], seg)
    weighted = weighted_nll(model, hidden, targets, w, chunk_size=chunk_size)
    counted = (w != 0).astype(jnp.float32)
    return LossTerms(total=weighted, weight=jnp.sum(w),
                     metrics={"trained_tokens": jnp.sum(counted),
                              "tokens": jnp.sum((seg != 0).astype(jnp.float32))})
