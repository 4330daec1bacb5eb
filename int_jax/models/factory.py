"""Build a model (and its mesh) from a `configs/model.py` ConfigDict.

The single place that turns config strings into dtypes, meshes and either a
loaded HF checkpoint or a seeded random model, so every stage builds models
the same way.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.sharding import Mesh
from ml_collections import ConfigDict

from int_jax.models import hf, qwen3, sharding

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name: str):
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}") from None


def execution_overrides(cfg: ConfigDict) -> dict:
    return dict(remat=bool(cfg.remat), scan_layers=bool(cfg.scan_layers),
                attention_impl=str(cfg.attention_impl),
                attention_chunk_size=int(cfg.attention_chunk_size))


def build_mesh(cfg: ConfigDict) -> Mesh:
    sharding.maybe_initialize_distributed(bool(cfg.get("distributed", False)))
    mesh_cfg = sharding.MeshConfig(**dict(cfg.mesh))
    return sharding.make_mesh(mesh_cfg)


def rules_of(cfg: ConfigDict):
    return sharding.rules_from_config(cfg.get("rules"))


def model_config(cfg: ConfigDict) -> qwen3.Qwen3Config:
    if cfg.hf_path:
        return hf.read_config(cfg.hf_path, **execution_overrides(cfg))
    return qwen3.preset(cfg.preset, **execution_overrides(cfg))


def build_model(cfg: ConfigDict, mesh: Mesh | None = None) -> qwen3.Qwen3:
    """Load `cfg.hf_path` if set, else a random model from `cfg.preset`; shard on `mesh`."""
    dtype, param_dtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    rules = rules_of(cfg)
    if cfg.hf_path:
        return hf.from_pretrained(cfg.hf_path, dtype=dtype, param_dtype=param_dtype, mesh=mesh,
                                  rules=rules, **execution_overrides(cfg))
    model = qwen3.create(model_config(cfg), dtype=dtype, param_dtype=param_dtype, seed=int(cfg.seed))
    if mesh is not None:
        sharding.shard_model(model, mesh, rules)
    return model
