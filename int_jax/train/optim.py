"""AdamW with linear warmup and cosine decay to a floor (the paper's SFT/GRPO recipe).

Weight decay applies to matrices only (ndim >= 2): norm scales are not decayed,
as in the HF Trainer recipes the paper's numbers come from.
"""

from __future__ import annotations

import jax
import optax
from ml_collections import ConfigDict


def lr_schedule(lr: float, total_steps: int, warmup_ratio: float = 0.1,
                min_lr_ratio: float = 0.1) -> optax.Schedule:
    """0 -> lr linearly over `warmup_ratio * total_steps`, then cosine to `min_lr_ratio * lr`."""
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be >= 1")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio={warmup_ratio} must be in [0, 1)")
    warmup = int(round(warmup_ratio * total_steps))
    decay = max(total_steps - warmup, 1)
    cosine = optax.cosine_decay_schedule(lr, decay_steps=decay, alpha=min_lr_ratio)
    if warmup == 0:
        return cosine
    # Step 0 already takes a (small) step: warmup reaches lr at step `warmup`.
    ramp = optax.linear_schedule(lr / (warmup + 1), lr, transition_steps=warmup)
    return optax.join_schedules([ramp, cosine], boundaries=[warmup])


def _decay_mask(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`cfg`: lr, warmup_ratio, min_lr_ratio, weight_decay, b1, b2, eps, grad_clip."""
    schedule = lr_schedule(float(cfg.lr), total_steps, float(cfg.warmup_ratio),
                           float(cfg.min_lr_ratio))
    parts = []
    if cfg.grad_clip and float(cfg.grad_clip) > 0:
        parts.append(optax.clip_by_global_norm(float(cfg.grad_clip)))
    parts.append(optax.adamw(schedule, b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps),
                             weight_decay=float(cfg.weight_decay), mask=_decay_mask))
    return optax.chain(*parts), schedule

