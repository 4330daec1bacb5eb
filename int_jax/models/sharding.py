"""Device mesh and logical-axis sharding rules.

Weights and activations carry *logical* axis names (`embed`, `mlp`, `q_heads`,
...). A rules table maps each name to zero, one or several mesh axes (`data`,
`fsdp`, `tensor`). Parallelism is therefore a config change: a different mesh
shape or a different rules table, never a model edit.

What happens when a mesh axis does not divide a dimension depends on what the
dimension is:
- a weight dimension (one KV head on a tensor axis of 2) is replicated over that
  axis, and the replication is logged once: what a user resizing a mesh expects;
- a batch or activation dimension under the trainer's rules (a micro-batch of 4 rows
  on data x fsdp = 8 devices) is an error naming the logical axis, its size and the
  mesh: replicating it would run every row on 8 devices at 8x the compute and memory.
  Mapping the logical name to None in the rules is the request to replicate it.
  Other contexts (the sampler, whose prefill runs one prompt at a time) replicate
  such a dimension and log it once (`activation_rules(..., indivisible=...)`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
import os
from typing import Iterable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axis (str), axes (tuple) or None (replicated).
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # weights
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_vocab", "tensor"),
    # KV cache
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
    ("cache_kv_heads", "tensor"),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape; -1 on one axis means "all remaining devices"."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        dims = [self.data, self.fsdp, self.tensor]
        if dims.count(-1) > 1:
            raise ValueError(f"at most one mesh axis may be -1, got {dims}")
        known = math.prod(d for d in dims if d != -1)
        if -1 in dims:
            if num_devices % known:
                raise ValueError(f"mesh {dims} does not divide {num_devices} devices")
            dims[dims.index(-1)] = num_devices // known
        if math.prod(dims) != num_devices:
            raise ValueError(
                f"mesh data={dims[0]} fsdp={dims[1]} tensor={dims[2]} needs "
                f"{math.prod(dims)} devices, {num_devices} available")
        return tuple(dims)


# Set by `int_jax.launch.gpu` (SLURM) for every process; on TPU VMs JAX finds all three.
DISTRIBUTED_ENV = ("INT_JAX_COORDINATOR_ADDRESS", "INT_JAX_NUM_PROCESSES", "INT_JAX_PROCESS_ID")


def maybe_initialize_distributed(enabled: bool) -> None:
    """Multi-host start-up (TPU pods, multi-node GPU); a no-op when disabled.

    With the `DISTRIBUTED_ENV` variables set (all three), they name the coordinator
    and this process; without them JAX detects its cluster (TPU VM, SLURM, ...).
    Must run before anything touches a JAX backend (even `jax.process_count()`
    starts one, after which `initialize` refuses), so only `is_initialized` is asked.
    """
    if not enabled or jax.distributed.is_initialized():
        return
    given = {k: os.environ[k] for k in DISTRIBUTED_ENV if os.environ.get(k)}
    if not given:
        jax.distributed.initialize()
        return
    if len(given) < len(DISTRIBUTED_ENV):
        missing = [k for k in DISTRIBUTED_ENV if k not in given]
        raise ValueError(f"multi-host start-up: {', '.join(given)} set but {', '.join(missing)} "
                         "not; set all three or none")
    try:
        count, index = int(given["INT_JAX_NUM_PROCESSES"]), int(given["INT_JAX_PROCESS_ID"])
    except ValueError:
        raise ValueError("multi-host start-up: INT_JAX_NUM_PROCESSES and INT_JAX_PROCESS_ID must "
                         f"be integers, got {given['INT_JAX_NUM_PROCESSES']!r} and "
                         f"{given['INT_JAX_PROCESS_ID']!r}") from None
    jax.distributed.initialize(coordinator_address=given["INT_JAX_COORDINATOR_ADDRESS"],
                               num_processes=count, process_id=index)


def make_mesh(config: MeshConfig | None = None, devices: Sequence | None = None) -> Mesh:
    """The (data, fsdp, tensor) mesh over `devices` (default: all).

    Devices are placed by `mesh_utils.create_device_mesh` (TPU topology, GPU process
    order). Where it cannot place a shape (it raises ValueError or
    NotImplementedError, e.g. a device count that does not tile the TPU torus), the
    devices are used in order and the reason is logged; any other failure surfaces.
    """
    config = config or MeshConfig()
    devices = list(devices if devices is not None else jax.devices())
    shape = config.shape(len(devices))
    try:
        arr = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, NotImplementedError) as e:
        log.warning("make_mesh: no topology-aware placement of %d %s devices as "
                    "data=%d fsdp=%d tensor=%d (%s); using them in order", len(devices),
                    devices[0].platform, *shape, e)
        arr = np.asarray(devices).reshape(shape)
    return Mesh(arr, MESH_AXES)


def rules_from_config(rules: Iterable | None) -> tuple:
    """Accept rules as a list of pairs (from a ConfigDict) or None for defaults."""
    if rules is None:
        return DEFAULT_RULES
    out = []
    for name, target in rules:
        if isinstance(target, list):
            target = tuple(target)
        out.append((name, target))
    return tuple(out)


class ShardingError(ValueError):
    """A batch or activation dimension that the mesh axes of its rule do not divide."""


_LOGGED: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.warning(message)


def _axes_text(mesh: Mesh, axes: Sequence[str]) -> str:
    """'data x fsdp = 8 devices' (the mesh axes of a rule and their product)."""
    return f"{' x '.join(axes)} = {math.prod(mesh.shape[a] for a in axes)} devices"


def _mesh_text(mesh: Mesh) -> str:
    return "mesh " + " ".join(f"{a}={n}" for a, n in mesh.shape.items())


def logical_to_spec(logical_axes: Sequence[str | None], rules=DEFAULT_RULES,
                    shape: Sequence[int] | None = None, mesh: Mesh | None = None, *,
                    indivisible: str = "replicate") -> PartitionSpec:
    """Map logical names to a PartitionSpec; each mesh axis is used at most once.

    With `shape` and `mesh`, a dimension keeps only the mesh axes whose product
    divides it. When some are dropped, `indivisible` says what that means:
    "replicate" (weights; logged once per distinct case) or "error" (batch and
    activation dimensions under the trainer's rules: `ShardingError` naming the
    logical axis, its size and the mesh).
    """
    if indivisible not in ("replicate", "error"):
        raise ValueError(f"indivisible must be 'replicate' or 'error', got {indivisible!r}")
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for dim, name in enumerate(logical_axes):
        target = table.get(name) if name is not None else None
        axes = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
        axes = tuple(a for a in axes if a not in used)
        if shape is not None and mesh is not None:
            # Keep only the mesh axes whose product still divides this dimension.
            kept, size = [], 1
            for a in axes:
                if shape[dim] % (size * mesh.shape[a]) == 0:
                    kept.append(a)
                    size *= mesh.shape[a]
            if len(kept) < len(axes):
                _indivisible(name, shape[dim], axes, tuple(kept), mesh, indivisible)
            axes = tuple(kept)
        used.update(axes)
        spec.append(None if not axes else (axes[0] if len(axes) == 1 else axes))
    return PartitionSpec(*spec)


def _indivisible(name, size, axes, kept, mesh, mode) -> None:
    if mode == "error":
        n = math.prod(mesh.shape[a] for a in axes)
        raise ShardingError(
            f"{name} of size {size} cannot be split over {_axes_text(mesh, axes)} "
            f"({_mesh_text(mesh)}): make it a multiple of {n}, or map {name} to None in "
            "model.rules to replicate it")
    where = f"split over {_axes_text(mesh, kept)} only" if kept else "replicated"
    _log_once(f"sharding: {name} of size {size} is {where}: {_axes_text(mesh, axes)} "
              f"does not divide it ({_mesh_text(mesh)})")


def _is_var(x):
    return isinstance(x, nnx.Variable)


def state_shardings(state, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedSharding for every variable of an nnx State (by its logical_axes)."""
    return jax.tree.map(lambda var: variable_sharding(var, mesh, rules), state, is_leaf=_is_var)


def variable_sharding(var: nnx.Variable, mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
    """Target sharding of one variable from its `logical_axes` (replicated if none)."""
    axes = getattr(var, "logical_axes", None)
    if axes is None:
        return NamedSharding(mesh, PartitionSpec())
    return NamedSharding(mesh, logical_to_spec(axes, rules, var.get_value().shape, mesh))


def shard_model(model: nnx.Module, mesh: Mesh, rules=DEFAULT_RULES) -> nnx.Module:
    """Move every variable to its target sharding, in place; return the model."""
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Variable):
            var.set_value(jax.device_put(var.get_value(), variable_sharding(var, mesh, rules)))
    return model


# --------------------------------------------------------------------------- activations

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("int_jax_sharding", default=None)
_INDIVISIBLE: contextvars.ContextVar = contextvars.ContextVar("int_jax_indivisible",
                                                              default="replicate")


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules=DEFAULT_RULES, *, indivisible: str = "replicate"):
    """Within this context (at trace time), `constrain` shards activations.

    `indivisible`: what an activation dimension the mesh does not divide means (see
    `logical_to_spec`). The train step passes "error"; the default replicates and
    logs once (the sampler: prompts are prefilled one at a time).
    """
    if indivisible not in ("replicate", "error"):
        raise ValueError(f"indivisible must be 'replicate' or 'error', got {indivisible!r}")
    token = _ACTIVE.set((mesh, tuple(rules)))
    mode = _INDIVISIBLE.set(indivisible)
    try:
        yield
    finally:
        _INDIVISIBLE.reset(mode)
        _ACTIVE.reset(token)


def active():
    """(mesh, rules) of the enclosing `activation_rules` context, or None."""
    return _ACTIVE.get()


def constrain(x, logical_axes: Sequence[str | None]):
    """`with_sharding_constraint` by logical names; identity outside a rules context."""
    current = _ACTIVE.get()
    if current is None:
        return x
    mesh, rules = current
    spec = logical_to_spec(logical_axes, rules, x.shape, mesh, indivisible=_INDIVISIBLE.get())
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
