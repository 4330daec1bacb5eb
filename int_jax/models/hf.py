"""Hugging Face checkpoints in and out: safetensors <-> Qwen3 NNX modules.

`WEIGHT_MAP` is the one table from HF tensor names to our module paths, with the
layout change each needs. Loading reads tensor by tensor from memory-mapped
safetensors and, with a mesh, builds each global array from per-shard callbacks
(`jax.make_array_from_callback`): a host only ever holds the slices its own
devices need plus at most one decoded tensor, never a full copy of the model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from safetensors import safe_open
from safetensors.numpy import save_file

from int_jax.models import sharding as sharding_lib
from int_jax.models.qwen3 import Qwen3, Qwen3Config

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint on disk does not match what the model expects."""


# --------------------------------------------------------------------------- mapping


@dataclasses.dataclass(frozen=True)
class WeightRule:
    """One HF tensor family. `{i}` in names stands for the layer index.

    `to_ours(hf_array, cfg)` and `to_hf(our_array, cfg)` are exact inverses
    (transposes and reshapes only), so a round trip is bit-identical.
    """

    hf_name: str
    path: tuple  # module path; "{i}" marks the layer index
    to_ours: Callable[[np.ndarray, Qwen3Config], np.ndarray]
    to_hf: Callable[[np.ndarray, Qwen3Config], np.ndarray]

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf_name


def _same(x, cfg):
    return x


# HF -> ours returns *views* (reshape first, then transpose): loading then holds
# only the decoded tensor, and the copy into device memory does the relayout.
# Ours -> HF makes contiguous copies, which safetensors needs.


def _transpose_in(x, cfg):
    return x.T


def _transpose_out(x, cfg):
    return np.ascontiguousarray(x.T)


def _heads_in(n_heads: Callable[[Qwen3Config], int]):
    # HF [heads * head_dim, embed] -> ours [embed, heads, head_dim]
    return lambda x, cfg: x.reshape(n_heads(cfg), cfg.head_dim, cfg.hidden_size).transpose(2, 0, 1)


def _heads_out(n_heads: Callable[[Qwen3Config], int]):
    return lambda x, cfg: np.ascontiguousarray(x.transpose(1, 2, 0).reshape(n_heads(cfg) * cfg.head_dim, cfg.hidden_size))


def _o_in(x, cfg):
    # HF [embed, heads * head_dim] -> ours [heads, head_dim, embed]
    return x.reshape(cfg.hidden_size, cfg.num_heads, cfg.head_dim).transpose(1, 2, 0)


def _o_out(x, cfg):
    return np.ascontiguousarray(x.transpose(2, 0, 1).reshape(cfg.hidden_size, cfg.num_heads * cfg.head_dim))


def _q(cfg):
    return cfg.num_heads


def _kv(cfg):
    return cfg.num_kv_heads


_L = "model.layers.{i}."
WEIGHT_MAP: tuple[WeightRule, ...] = (
    WeightRule("model.embed_tokens.weight", ("embed_tokens",), _same, _same),
    WeightRule(_L + "input_layernorm.weight", ("layers", "{i}", "input_layernorm", "weight"), _same, _same),
    WeightRule(_L + "self_attn.q_proj.weight", ("layers", "{i}", "self_attn", "q_proj"), _heads_in(_q), _heads_out(_q)),
    WeightRule(_L + "self_attn.k_proj.weight", ("layers", "{i}", "self_attn", "k_proj"), _heads_in(_kv), _heads_out(_kv)),
    WeightRule(_L + "self_attn.v_proj.weight", ("layers", "{i}", "self_attn", "v_proj"), _heads_in(_kv), _heads_out(_kv)),
    WeightRule(_L + "self_attn.o_proj.weight", ("layers", "{i}", "self_attn", "o_proj"), _o_in, _o_out),
    WeightRule(_L + "self_attn.q_norm.weight", ("layers", "{i}", "self_attn", "q_norm", "weight"), _same, _same),
    WeightRule(_L + "self_attn.k_norm.weight", ("layers", "{i}", "self_attn", "k_norm", "weight"), _same, _same),
    WeightRule(_L + "post_attention_layernorm.weight",
               ("layers", "{i}", "post_attention_layernorm", "weight"), _same, _same),
    WeightRule(_L + "mlp.gate_proj.weight", ("layers", "{i}", "mlp", "gate_proj"), _transpose_in, _transpose_out),
    WeightRule(_L + "mlp.up_proj.weight", ("layers", "{i}", "mlp", "up_proj"), _transpose_in, _transpose_out),
    WeightRule(_L + "mlp.down_proj.weight", ("layers", "{i}", "mlp", "down_proj"), _transpose_in, _transpose_out),
    WeightRule("model.norm.weight", ("norm", "weight"), _same, _same),
    WeightRule("lm_head.weight", ("lm_head",), _transpose_in, _transpose_out),
)


def _rules_for(cfg: Qwen3Config) -> list[WeightRule]:
    return [r for r in WEIGHT_MAP if not (r.hf_name == "lm_head.weight" and cfg.tie_word_embeddings)]


def _variable_at(model: nnx.Module, path: tuple) -> nnx.Variable:
    node = model
    for key in path:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node


def _module_path(rule: WeightRule, cfg: Qwen3Config, layer: int | None) -> tuple:
    """Concrete module path: drop the layer index when layers are scanned (stacked)."""
    out = []
    for key in rule.path:
        if key == "{i}":
            if not cfg.scan_layers:
                out.append(layer)
        else:
            out.append(key)
    return tuple(out)


# --------------------------------------------------------------------------- reading


class SafetensorsReader:
    """Lazy access to the tensors of one checkpoint folder (one or many shards)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._handles: dict[Path, object] = {}
        index = self.path / "model.safetensors.index.json"
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: unreadable index file ({e})") from e
            self._file_of = {name: self.path / fname for name, fname in weight_map.items()}
        else:
            files = sorted(self.path.glob("*.safetensors"))
            if not files:
                raise CheckpointError(f"{self.path}: no *.safetensors files found")
            self._file_of = {}
            for f in files:
                for name in self._open(f).keys():
                    self._file_of[name] = f

    def _open(self, file: Path):
        if file in self._handles:
            return self._handles[file]
        if not file.exists():
            raise CheckpointError(f"{file}: listed in the index but missing")
        try:
            handle = safe_open(str(file), framework="numpy")
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{file}: corrupt or unreadable safetensors file ({e})") from e
        self._handles[file] = handle
        return handle

    def names(self) -> set[str]:
        return set(self._file_of)

    def shape(self, name: str) -> tuple[int, ...]:
        file = self._file(name)
        return tuple(self._open(file).get_slice(name).get_shape())

    def get(self, name: str) -> np.ndarray:
        file = self._file(name)
        try:
            return self._open(file).get_tensor(name)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{file}: cannot read tensor {name!r} ({e})") from e

    def _file(self, name: str) -> Path:
        try:
            return self._file_of[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: checkpoint has no tensor {name!r}") from None


def read_config(path: str | os.PathLike, **overrides) -> Qwen3Config:
    file = Path(path) / "config.json"
    try:
        hf = json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{file}: not found") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: invalid JSON ({e})") from e
    try:
        return Qwen3Config.from_hf(hf, **overrides)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{file}: {e}") from e


def from_pretrained(path: str | os.PathLike, *, dtype=jnp.float32, param_dtype=jnp.float32,
                    mesh: Mesh | None = None, rules=sharding_lib.DEFAULT_RULES,
                    **config_overrides) -> Qwen3:
    """Load a transformers Qwen3 checkpoint folder into a (sharded) NNX model.

    `config_overrides` set execution switches (remat, scan_layers,
    attention_impl, ...) on the config read from `config.json`.
    """
    cfg = read_config(path, **config_overrides)
    reader = SafetensorsReader(path)
    model = nnx.eval_shape(lambda: Qwen3(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
    expected = set()
    for rule in _rules_for(cfg):
        layers = range(cfg.num_layers) if rule.per_layer else [None]
        names = [rule.hf_name.format(i=i) for i in layers]
        expected.update(names)
        if rule.per_layer and cfg.scan_layers:
            _load_stacked(model, reader, rule, cfg, names, mesh, rules, param_dtype)
        else:
            for layer, name in zip(layers, names):
                var = _variable_at(model, _module_path(rule, cfg, layer))
                load = lambda name=name, var=var: _load_one(reader, rule, cfg, name, var, param_dtype)  # noqa: E731
                var.set_value(_place(var, load, mesh, rules))
    extra = reader.names() - expected - {"lm_head.weight"}
    if extra:
        log.warning("%s: ignoring %d unexpected tensors, e.g. %s", path, len(extra), sorted(extra)[:3])
    return model


def _load_one(reader, rule, cfg, name, var, param_dtype) -> np.ndarray:
    raw = reader.get(name)
    want = tuple(var.get_value().shape[1:] if (rule.per_layer and cfg.scan_layers) else var.get_value().shape)
    try:
        arr = rule.to_ours(raw, cfg)
    except ValueError:  # a reshape that cannot fit: same report as below
        arr = raw
    if arr.shape != want:
        raise CheckpointError(
            f"{reader.path}: tensor {name!r} has shape {tuple(raw.shape)}, "
            f"which does not fit the config's {want} (after layout change)")
    return arr.astype(np.dtype(param_dtype)) if arr.dtype != np.dtype(param_dtype) else arr


def _place(var, load: Callable[[], np.ndarray], mesh, rules):
    """Materialise one variable: on the default device, or shard by shard on a mesh."""
    if mesh is None:
        return jnp.asarray(load())
    target = sharding_lib.variable_sharding(var, mesh, rules)
    cache: dict = {}

    def shard(index):
        if "full" not in cache:  # decode once per tensor, slice per device
            cache["full"] = load()
        return cache["full"][index]

    out = jax.make_array_from_callback(tuple(var.get_value().shape), target, shard)
    cache.clear()
    return out


def _load_stacked(model, reader, rule, cfg, names, mesh, rules, param_dtype):
    """A scanned layer weight [L, ...]: read only the layers each shard needs."""
    var = _variable_at(model, _module_path(rule, cfg, None))
    shape = tuple(var.get_value().shape)

    def layers_slice(index):
        layer_idx = range(cfg.num_layers)[index[0]]
        parts = [_load_one(reader, rule, cfg, names[i], var, param_dtype)[index[1:]] for i in layer_idx]
        return np.stack(parts)

    if mesh is None:
        var.set_value(jnp.asarray(layers_slice((slice(None),) * len(shape))))
    else:
        target = sharding_lib.variable_sharding(var, mesh, rules)
        var.set_value(jax.make_array_from_callback(shape, target, layers_slice))


# --------------------------------------------------------------------------- writing


def hf_tensors(model: Qwen3, dtype=None):
    """Yield (hf_name, numpy array) in HF layout, one tensor at a time."""
    cfg = model.config
    for rule in _rules_for(cfg):
        layers = range(cfg.num_layers) if rule.per_layer else [None]
        stacked = None
        for layer in layers:
            if rule.per_layer and cfg.scan_layers:
                if stacked is None:
                    stacked = _to_host(_variable_at(model, _module_path(rule, cfg, None)).get_value())
                ours = stacked[layer]
            else:
                ours = _to_host(_variable_at(model, _module_path(rule, cfg, layer)).get_value())
            arr = rule.to_hf(ours, cfg)
            if dtype is not None:
                arr = arr.astype(np.dtype(dtype))
            yield rule.hf_name.format(i=layer), arr


def _to_host(x) -> np.ndarray:
    if jax.process_count() > 1 and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))


def save_pretrained(model: Qwen3, path: str | os.PathLike, *, dtype=None,
                    max_shard_bytes: int = 4 << 30) -> Path:
    """Write safetensors shards (+ index) and config.json that transformers loads.

    Written to a temporary folder and renamed into place, so a crash never
    leaves a half-written checkpoint under `path`. Only process 0 writes.
    """
    path = Path(path)
    tensors = hf_tensors(model, dtype)
    if jax.process_index() != 0:
        for _ in tensors:  # still join the all-gathers
            pass
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for name, arr in tensors:
            if size and size + arr.nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = arr
            size += arr.nbytes
        weight_map = {}
        for n, shard in enumerate(shards):
            fname = ("model.safetensors" if len(shards) == 1
                     else f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors")
            save_file(shard, str(tmp / fname), metadata={"format": "pt"})
            weight_map.update({name: fname for name in shard})
        if len(shards) > 1:
            total = sum(a.nbytes for s in shards for a in s.values())
            (tmp / "model.safetensors.index.json").write_text(json.dumps(
                {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        hf_cfg = model.config.to_hf()
        store = dtype if dtype is not None else _param_dtype(model)
        hf_cfg["torch_dtype"] = hf_cfg["dtype"] = np.dtype(store).name
        (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _param_dtype(model: Qwen3):
    return np.dtype(model.embed_tokens.get_value().dtype)

