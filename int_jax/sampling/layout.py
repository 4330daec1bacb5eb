"""The sampler's weights: its own layout (whole weights on every fsdp device by
default) and its own execution settings (dtypes, kernels, no remat).

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

import jax
import jax.numpy as jnp
from flax import nnx

from int_jax.models import attention as attention_lib
from int_jax.models import sharding as sharding_lib
from int_jax.models.qwen3 import Qwen3
from int_jax.sampling.settings import SamplerSettings

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


def platform_of(mesh=None) -> str:
    """The backend the sampler runs on: "cpu", "gpu" or "tpu"."""
    device = mesh.devices.flat[0] if mesh is not None else jax.devices()[0]
    return device.platform


def sampler_model(model: Qwen3, settings: SamplerSettings) -> Qwen3:
    """The sampler's own model, abstract (shapes and dtypes only): the trainer's
    architecture with the sampler's execution settings (resolved `settings`): its
    weight and compute dtypes, its prefill attention kernel, no remat. Its state has
    the trainer's structure, so the trainer's weights load into it leaf by leaf."""
    attention_lib.get_kernel(settings.prefill_kernel)  # an unknown name is an error here
    cfg = model.config.replace(remat=False, attention_impl=settings.prefill_kernel)
    param_dtype, dtype = jnp.dtype(settings.param_dtype), jnp.dtype(settings.compute_dtype)
    return nnx.eval_shape(lambda: Qwen3(cfg, dtype=dtype, param_dtype=param_dtype))
