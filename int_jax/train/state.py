"""The train state as plain pytrees: flat `{name: array}` params, optax state, step, rng.

jax.jit, optax and orbax all work best on plain pytrees with string keys, so the
NNX model is split once into a static `ModelDef` (graph + tree structure +
logical axes) and a flat dict of parameter arrays named like HF paths
(`layers/0/self_attn/q_proj`). `ModelDef.merge(params)` rebuilds a model view
inside a traced function at no cost.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from int_jax.models import sharding as sharding_lib


def _name(path) -> str:
    keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path
            if not isinstance(k, jax.tree_util.GetAttrKey)]
    return "/".join(keys)


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """Everything static about a model: rebuilds it from flat params."""

    graphdef: Any
    treedef: Any
    names: tuple[str, ...]
    logical_axes: tuple[tuple | None, ...]

    @classmethod
    def split(cls, model: nnx.Module) -> tuple["ModelDef", dict[str, jax.Array]]:
        graphdef, state = nnx.split(model)
        leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(state)
        names = tuple(_name(p) for p, _ in leaves_with_path)
        if len(set(names)) != len(names):
            raise ValueError("model parameter names are not unique")
        variables = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable))
        axes = tuple(getattr(v, "logical_axes", None) for v in variables)
        params = {n: x for n, (_, x) in zip(names, leaves_with_path)}
        return cls(graphdef, treedef, names, axes), params

    def merge(self, params: dict[str, jax.Array]) -> nnx.Module:
        state = jax.tree_util.tree_unflatten(self.treedef, [params[n] for n in self.names])
        return nnx.merge(self.graphdef, state)

    def param_shardings(self, params, mesh: Mesh, rules) -> dict[str, NamedSharding]:
        out = {}
        for name, axes in zip(self.names, self.logical_axes):
            spec = (PartitionSpec() if axes is None else
                    sharding_lib.logical_to_spec(axes, rules, params[name].shape, mesh))
            out[name] = NamedSharding(mesh, spec)
        return out


@flax.struct.dataclass
class TrainState:
    params: dict[str, jax.Array]
    opt_state: Any
    step: jax.Array  # int32 scalar: optimizer steps taken
    rng: jax.Array  # uint32[2] raw key data (orbax- and jit-friendly)


def state_shardings(params, tx: optax.GradientTransformation, param_shardings, mesh: Mesh):
    """Shardings of a whole TrainState: optimizer moments follow their parameter."""
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract_opt = jax.eval_shape(tx.init, params)
    opt_shardings = optax.tree_map_params(
        tx, lambda _, s: s, abstract_opt, param_shardings,
        transform_non_params=lambda _: replicated)
    return TrainState(params=param_shardings, opt_state=opt_shardings, step=replicated,
                      rng=replicated)


def init_state(params, tx, shardings: TrainState, seed: int) -> TrainState:
    """Place params on their shardings and build the optimizer state there."""
    params = jax.device_put(params, shardings.params)
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    return TrainState(params=params, opt_state=opt_state,
                      step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
                      rng=jax.device_put(jax.random.PRNGKey(seed), shardings.rng))


def abstract_state(state: TrainState, shardings: TrainState) -> TrainState:
    """ShapeDtypeStructs with shardings: the restore target for orbax."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        state, shardings)
