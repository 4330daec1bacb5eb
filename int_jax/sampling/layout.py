"""The sampler's weight layout: whole weights on every fsdp device by default.

The trainer splits weights over `fsdp` to fit optimizer state; a decode step
laid out that way all-gathers every weight shard on every generated token,
a full weight transfer per step when decoding is bandwidth-bound already. The
sampler instead keeps its own copy with the `embed` axis unsplit, so each
fsdp device holds whole weights (still split over `tensor` by heads / mlp /
vocab) and a step needs no weight collectives; slots stay split over
data x fsdp. Cost: weight memory per device grows from
params / (fsdp * tensor) to params / tensor; set `sampler.rules = ()` (the
model's own layout) where that does not fit.

`sampler.rules` holds overrides applied on top of the model's rules, so the
mesh axes and every other mapping stay the trainer's.
"""

from __future__ import annotations

from typing import Iterable

from int_jax.models import sharding as sharding_lib

# Default overrides: weight `embed` dimensions unsplit (no per-step all-gather).
SAMPLER_RULE_OVERRIDES: tuple = (("embed", None),)


def sampler_rules(model_rules: Iterable | None = None, overrides: Iterable | None = None) -> tuple:
    """The model's rules with `overrides` (default `SAMPLER_RULE_OVERRIDES`) replacing
    the entries of the same logical names; `()` keeps the model's layout."""
    base = sharding_lib.rules_from_config(model_rules)
    if overrides is None:
        overrides = SAMPLER_RULE_OVERRIDES
    changes = []
    for entry in overrides:
        try:
            name, target = entry
        except (TypeError, ValueError):
            raise ValueError(f"sampler.rules: expected (logical_name, mesh_axes) pairs, got {entry!r}") from None
        if not isinstance(name, str):
            raise ValueError(f"sampler.rules: logical name must be a string, got {name!r}")
        changes.append((name, tuple(target) if isinstance(target, list) else target))
    changed = dict(changes)
    for name, target in changes:
        axes = () if target is None else (target,) if isinstance(target, str) else target
        unknown = [a for a in axes if a not in sharding_lib.MESH_AXES]
        if unknown:
            raise ValueError(f"sampler.rules: {name!r} maps to unknown mesh axes {unknown}; "
                             f"mesh axes are {sharding_lib.MESH_AXES}")
    out = [(name, changed.pop(name) if name in changed else target) for name, target in base]
    out.extend(changed.items())  # names the model's rules do not mention
    return tuple(out)
