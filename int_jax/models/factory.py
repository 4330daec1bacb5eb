"""Build a model (and its mesh) from a `configs/model.py` ConfigDict.

The single place that turns config strings into dtypes, meshes and either a
loaded HF checkpoint or a seeded random model, so every stage builds models
the same way.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from ml_collections import ConfigDict

from int_jax.models import attention, hf, qwen3, sharding

log = logging.getLogger(__name__)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name: str):
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}") from None


def remat_of(value) -> str:
    """`model.remat`: a policy name (qwen3.REMAT_POLICIES), or the boolean of earlier
    configs (True: full, False: none; also as the strings "True" / "False")."""
    if isinstance(value, bool):
        return "full" if value else "none"
    text = str(value).strip().lower()
    return {"true": "full", "false": "none"}.get(text, text)


def remat_names_of(value) -> tuple[str, ...]:
    """`model.remat_names`: a sequence of names or one comma-separated string; empty
    means qwen3.DEFAULT_REMAT_NAMES."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return tuple(value) if value else qwen3.DEFAULT_REMAT_NAMES


def execution_overrides(cfg: ConfigDict, *, platform: str | None = None,
                        packed: bool = True) -> dict:
    """The execution switches of `cfg` as Qwen3Config fields, `attention_impl="auto"`
    resolved for `platform` (default: jax's default backend) and the rows the model
    will see (`packed`: several examples per row; see attention.choose_kernel)."""
    platform = platform or jax.default_backend()
    impl = attention.resolve(str(cfg.attention_impl), platform, packed=packed,
                             dtype=dtype_of(cfg.dtype))
    if impl != cfg.attention_impl:
        log.info("attention_impl=%s -> %s (%s, %s, %s rows)", cfg.attention_impl, impl, platform,
                 cfg.dtype, "packed" if packed else "unpacked")
    return dict(remat=remat_of(cfg.remat), remat_names=remat_names_of(cfg.get("remat_names", ())),
                scan_layers=bool(cfg.scan_layers), attention_impl=impl,
                attention_chunk_size=int(cfg.attention_chunk_size))


def build_mesh(cfg: ConfigDict) -> Mesh:
    sharding.maybe_initialize_distributed(bool(cfg.get("distributed", False)))
    mesh_cfg = sharding.MeshConfig(**dict(cfg.mesh))
    return sharding.make_mesh(mesh_cfg)


def build_sampler_mesh(cfg: ConfigDict) -> Mesh:
    """The mesh a sampler runs on. One process: the trainer's (`build_mesh`). Several (a
    pod, a GPU cluster): this process's own devices, as data=1 x fsdp x tensor with
    `model.mesh.tensor` kept, so each host decodes its own prompts without waiting on
    the others (multi-host GRPO)."""
    mesh = build_mesh(cfg)
    if jax.process_count() == 1:
        return mesh
    tensor = int(cfg.mesh.tensor)
    local = jax.local_devices()
    try:
        shape = sharding.MeshConfig(data=1, fsdp=1 if tensor == -1 else -1,
                                    tensor=tensor).shape(len(local))
    except ValueError:
        raise ValueError(f"config.model.mesh.tensor={tensor} does not divide this host's "
                         f"{len(local)} devices: each host's sampler runs on its own "
                         "devices") from None
    return sharding.make_mesh(sharding.MeshConfig(*shape), local)


def rules_of(cfg: ConfigDict):
    return sharding.rules_from_config(cfg.get("rules"))


def _platform(mesh: Mesh | None) -> str | None:
    return mesh.devices.flat[0].platform if mesh is not None else None


def model_config(cfg: ConfigDict, *, platform: str | None = None,
                 packed: bool = True) -> qwen3.Qwen3Config:
    overrides = execution_overrides(cfg, platform=platform, packed=packed)
    if cfg.hf_path:
        return hf.read_config(cfg.hf_path, **overrides)
    return qwen3.preset(cfg.preset, **overrides)


def build_model(cfg: ConfigDict, mesh: Mesh | None = None, *,
                packed_rows: bool = True) -> qwen3.Qwen3:
    """Load `cfg.hf_path` if set, else a random model from `cfg.preset`; shard on `mesh`.

    `packed_rows`: whether the model will see rows holding several examples (SFT with
    data.packing); `attention_impl="auto"` picks its kernel by it and by the mesh's
    platform. True (the default) is right for any rows.
    """
    dtype, param_dtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    rules = rules_of(cfg)
    overrides = execution_overrides(cfg, platform=_platform(mesh), packed=packed_rows)
    if cfg.hf_path:
        return hf.from_pretrained(cfg.hf_path, dtype=dtype, param_dtype=param_dtype, mesh=mesh,
                                  rules=rules, **overrides)
    model = qwen3.create(qwen3.preset(cfg.preset, **overrides), dtype=dtype,
                         param_dtype=param_dtype, seed=int(cfg.seed))
    if mesh is not None:
        sharding.shard_model(model, mesh, rules)
    return model
