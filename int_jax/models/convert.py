"""HF safetensors <-> orbax parameter checkpoints (`int-jax convert`).

An orbax model checkpoint is a folder holding `params/` (the NNX parameter
tree as a pure dict, written by orbax) and `config.json` (the HF config), so
it is self-describing and converts back to HF bit for bit.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh
from ml_collections import ConfigDict

from int_jax.config_io import save_config
from int_jax.models import hf, sharding
from int_jax.models.qwen3 import Qwen3, Qwen3Config

log = logging.getLogger(__name__)


def save_orbax(model: Qwen3, path: str | os.PathLike) -> Path:
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path / "params", params, force=True)
    if jax.process_index() == 0:
        (path / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2))
    return path


def load_orbax(path: str | os.PathLike, *, dtype=jnp.float32, mesh: Mesh | None = None,
               rules=sharding.DEFAULT_RULES, **config_overrides) -> Qwen3:
    """Restore a model saved by `save_orbax`, each array placed with its sharding."""
    path = Path(path).absolute()
    cfg = hf.read_config(path, **config_overrides)
    params_dir = path / "params"
    if not params_dir.exists():
        raise hf.CheckpointError(f"{params_dir}: no orbax params found")
    # Parameter dtype is whatever was saved: read it from the checkpoint metadata.
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(params_dir)
    tree_meta = getattr(meta, "item_metadata", meta)
    saved_dtype = jax.tree.leaves(tree_meta)[0].dtype
    model = nnx.eval_shape(lambda: Qwen3(cfg, dtype=dtype, param_dtype=saved_dtype, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)

    def target(var):
        sh = (sharding.variable_sharding(var, mesh, rules) if mesh is not None
              else jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        return jax.ShapeDtypeStruct(var.get_value().shape, var.get_value().dtype, sharding=sh)

    abstract = nnx.to_pure_dict(jax.tree.map(target, state, is_leaf=lambda x: isinstance(x, nnx.Variable)))
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(params_dir, abstract)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
    return model


def main(config: ConfigDict, args: list[str]) -> int:
    """`int-jax convert --config=configs/model.py:<preset> --config.convert.src=... --config.convert.dst=...`"""
    conv = config.convert
    if not conv.src or not conv.dst:
        raise SystemExit("int-jax convert: set --config.convert.src and --config.convert.dst")
    if conv.direction == "hf_to_orbax":
        model = hf.from_pretrained(conv.src, param_dtype=_stored_dtype(conv.src))
        save_orbax(model, conv.dst)
    elif conv.direction == "orbax_to_hf":
        model = load_orbax(conv.src)
        hf.save_pretrained(model, conv.dst)
    else:
        raise SystemExit(f"int-jax convert: unknown direction {conv.direction!r} "
                         "(hf_to_orbax | orbax_to_hf)")
    save_config(config, conv.dst)
    print(f"wrote {conv.dst}")
    return 0


def _stored_dtype(hf_path) -> jnp.dtype:
    """Keep the checkpoint's own dtype so HF -> orbax -> HF is bit-identical."""
    reader = hf.SafetensorsReader(hf_path)
    smallest = min(reader.names(), key=lambda name: math.prod(reader.shape(name)))  # a norm weight
    return jnp.dtype(reader.get(smallest).dtype)
