"""The train step SFT and GRPO share, and the state around it.

A loss is a `LossFn`: (model, micro-batch, rng) -> `LossTerms`, sums not means. The
step (`make_train_step`) is one `jax.jit` with the state sharded by logical axes and
donated: it scans over the batch's leading accumulation axis, adds gradients and loss
terms of every micro-batch, and divides by the summed loss weight once, so the global
batch (not the device count or the micro-batch size) defines the update.

`Trainer` holds a run's train state and what acts on it: the jitted step, a jitted
forward over the same parameters (`apply`: GRPO's old-policy logprobs), orbax
checkpoints (`train/checkpoint.py`). The SFT loop (`train/loop.py`) and the GRPO
learner (`train/learner.py`) are two drivers of one `Trainer`.

Host-device syncs: the step returns device scalars; drivers read them only on
logging steps (and before a checkpoint, to never save after a diverged step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from int_jax.models import sharding as sharding_lib
from int_jax.train.checkpoint import Checkpointer
from int_jax.train.state import ModelDef, TrainState, abstract_state, init_state, state_shardings

Batch = Mapping[str, jax.Array]

# [accum, rows, T]: rows are split over the batch axes of the mesh.
BATCH_AXES = (None, "activation_batch", "activation_length")


# -- what a loss returns ------------------------------------------------------------


class Mean(NamedTuple):
    """A metric reported as total / count, both summed over micro-batches first
    (e.g. a token mean: the sum over a micro-batch's tokens and their number)."""

    total: jax.Array
    count: jax.Array


class Max(NamedTuple):
    """A metric reported as its largest value over micro-batches."""

    value: jax.Array


class Min(NamedTuple):
    """A metric reported as its smallest value over micro-batches."""

    value: jax.Array


_KINDS = (Mean, Max, Min)


@dataclasses.dataclass(frozen=True)
class LossTerms:
    """What every loss returns for one micro-batch.

    total: sum of weighted per-token losses; weight: sum of the weights (the divisor of
    the whole batch). metrics: a plain scalar is a sum over micro-batches (e.g. a token
    count); `Mean`, `Max`, `Min` say how else to combine and report it.
    """

    total: jax.Array
    weight: jax.Array
    metrics: dict


jax.tree_util.register_dataclass(LossTerms, data_fields=["total", "weight", "metrics"],
                                 meta_fields=[])

# (model, micro-batch, rng) -> LossTerms. SFT and GRPO plug different ones into one step.
LossFn = Callable[[object, Batch, jax.Array], LossTerms]


def _is_kind(x) -> bool:
    return isinstance(x, _KINDS)


def _combine(a, b):
    if isinstance(a, Mean):
        return Mean(a.total + b.total, a.count + b.count)
    if isinstance(a, Max):
        return Max(jnp.maximum(a.value, b.value))
    if isinstance(a, Min):
        return Min(jnp.minimum(a.value, b.value))
    return a + b


def _identity(x):
    """The neutral element of `x`'s combination (zeros; -inf for Max, +inf for Min)."""
    if isinstance(x, Max):
        return Max(jnp.full(x.value.shape, -jnp.inf, x.value.dtype))
    if isinstance(x, Min):
        return Min(jnp.full(x.value.shape, jnp.inf, x.value.dtype))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), x)


def combine_terms(a: LossTerms, b: LossTerms) -> LossTerms:
    """Two micro-batches' terms as one batch's."""
    return jax.tree.map(_combine, a, b, is_leaf=_is_kind)


def report(metrics: dict) -> dict:
    """Scalars to log: sums as they are, means divided (NaN when nothing was counted)."""
    out = {}
    for name, x in metrics.items():
        if isinstance(x, Mean):
            out[name] = jnp.where(x.count > 0, x.total / jnp.where(x.count > 0, x.count, 1.0),
                                  jnp.nan)
        elif isinstance(x, (Max, Min)):
            out[name] = x.value
        else:
            out[name] = x
    return out


# -- batches ------------------------------------------------------------------------


# What to change when the rows of a micro-batch do not split over the batch axes.
_ROWS_HINT = ("the rows per micro-batch: SFT train.micro_batch (train.global_batch when it "
              "is 0), GRPO grpo.micro_batch (grpo.prompts_per_update x grpo.n when it is 0)")


def batch_sharding(mesh: Mesh, rules, shape) -> NamedSharding:
    """Sharding of a host batch [accum, rows, T]: rows over the batch axes of the mesh.
    Rows those axes do not divide are an error (not a silent replication) unless the
    rules map activation_batch to None."""
    try:
        spec = sharding_lib.logical_to_spec(BATCH_AXES[:len(shape)], rules, shape, mesh,
                                            indivisible="error")
    except sharding_lib.ShardingError as e:
        raise sharding_lib.ShardingError(f"{e} (here: {_ROWS_HINT})") from None
    return NamedSharding(mesh, spec)


def global_batch(local: dict, mesh: Mesh, rules) -> dict:
    """Host-local numpy [accum, local_rows, ...] -> global arrays sharded over the batch."""
    out = {}
    for k, x in local.items():
        x = np.asarray(x)
        global_shape = (x.shape[0], x.shape[1] * jax.process_count(), *x.shape[2:])
        sharding = batch_sharding(mesh, rules, global_shape)
        out[k] = jax.make_array_from_process_local_data(sharding, x, global_shape)
    return out


def whole_batch(batch: dict, mesh: Mesh, rules) -> dict:
    """Host numpy [accum, rows, ...] that every process holds whole -> global arrays
    sharded over the batch, each process placing only the rows of its own devices
    (GRPO, where every process packs the whole step; in SFT each process holds its
    own rows: `global_batch`). One process: the same arrays as `global_batch`."""
    out = {}
    for k, x in batch.items():
        x = np.asarray(x)
        sharding = batch_sharding(mesh, rules, x.shape)
        out[k] = jax.make_array_from_callback(x.shape, sharding, lambda index, x=x: x[index])
    return out


def batch_digest(batch: dict) -> str:
    """Short hash of a host batch's arrays: equal across runs iff the data order is.
    (Not a config `fingerprint`, which `stages/base.py` computes.)"""
    h = hashlib.sha1()
    for k in sorted(batch):
        h.update(np.ascontiguousarray(batch[k]).tobytes())
    return h.hexdigest()[:16]


# -- the step -----------------------------------------------------------------------


def make_train_step(model_def: ModelDef, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, loss_fn: LossFn, mesh: Mesh, rules,
                    shardings: TrainState) -> Callable:
    """A jitted `(state, batch) -> (state, metrics)` with the state donated.

    metrics: `loss` (total / weight), `grad_norm` (before clipping), `lr`,
    `loss_weight` and the loss's own metrics (`report`ed), all device scalars.
    """
    replicated = NamedSharding(mesh, PartitionSpec())

    def step(state: TrainState, batch):
        # Profiles read by phase: forward (the loss's own part under "loss", e.g.
        # train/vocab.py), backward, optimizer; the model names its modules inside.
        with sharding_lib.activation_rules(mesh, rules, indivisible="error"):
            rng, step_rng = jax.random.split(state.rng)
            accum = jax.tree.leaves(batch)[0].shape[0]

            def micro_loss(params, micro, key):
                terms = loss_fn(model_def.merge(params), micro, key)
                return terms.total, terms

            def grad_fn(params, micro, key):
                with jax.named_scope("forward"):
                    total, pullback, terms = jax.vjp(
                        lambda p: micro_loss(p, micro, key), params, has_aux=True)
                with jax.named_scope("backward"):
                    (g,) = pullback(jnp.ones_like(total))
                return g, terms

            def body(carry, xs):
                g_sum, t_sum = carry
                g, terms = grad_fn(state.params, *xs)
                g_sum = jax.lax.with_sharding_constraint(
                    jax.tree.map(jnp.add, g_sum, g), shardings.params)
                return (g_sum, combine_terms(t_sum, terms)), None

            first = jax.tree.map(lambda x: x[0], batch)
            keys = jax.random.split(step_rng, accum)
            if accum == 1:  # no accumulation buffer: a zero-filled copy of the params saved
                g_sum, terms = grad_fn(state.params, first, keys[0])
                g_sum = jax.lax.with_sharding_constraint(g_sum, shardings.params)
            else:
                terms_shape = jax.eval_shape(lambda: micro_loss(state.params, first, step_rng)[1])
                zeros_terms = jax.tree.map(_identity, terms_shape, is_leaf=_is_kind)
                zeros_grads = jax.tree.map(jnp.zeros_like, state.params)
                (g_sum, terms), _ = jax.lax.scan(body, (zeros_grads, zeros_terms), (batch, keys))

            with jax.named_scope("optimizer"):
                denom = jnp.where(terms.weight > 0, terms.weight, 1.0)
                grads = jax.tree.map(lambda g: g / denom, g_sum)
                updates, opt_state = tx.update(grads, state.opt_state, state.params)
                params = optax.apply_updates(state.params, updates)
                metrics = {"loss": terms.total / denom, "grad_norm": optax.tree.norm(grads),
                           "lr": schedule(state.step), "loss_weight": terms.weight,
                           **report(terms.metrics)}
            new_state = TrainState(params=params, opt_state=opt_state, step=state.step + 1,
                                   rng=rng)
            return new_state, metrics

    return jax.jit(step, in_shardings=(shardings, None), out_shardings=(shardings, replicated),
                   donate_argnums=(0,))


def make_apply(model_def: ModelDef, fn: Callable, mesh: Mesh, rules,
               param_shardings) -> Callable:
    """A jitted `(params, batch [accum, rows, ...]) -> fn(model, micro) per micro-batch`,
    stacked on the accumulation axis: a forward over the train state's parameters in
    micro-batches (no gradient, no update)."""

    def apply(params, batch):
        with sharding_lib.activation_rules(mesh, rules, indivisible="error"):
            model = model_def.merge(params)
            return jax.lax.map(lambda micro: fn(model, micro), batch)

    return jax.jit(apply, in_shardings=(param_shardings, None))


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


def check_losses(losses: list[tuple[int, jax.Array]], ckpt: Checkpointer) -> None:
    """Read (step, device loss) pairs in one host transfer; on the first NaN or inf, let
    pending saves finish and raise `TrainingDiverged` naming the last good checkpoint.
    Drivers call it before every save, so a diverged state is never checkpointed."""
    if not losses:
        return
    values = jax.device_get([x for _, x in losses])
    for (step, _), value in zip(losses, values):
        if not np.isfinite(value):
            ckpt.wait()
            raise TrainingDiverged(
                f"step {step}: loss is {float(value)}; stopping. The last good checkpoint "
                f"(step {ckpt.latest_step()}) in {ckpt.directory} is intact")


class Trainer:
    """One run's train state, its jitted step and forward, and its checkpoints.

    Built from a model (whose arrays it takes over: use `model()` afterwards), a loss,
    an optax transformation and its schedule, placed on `mesh` by `rules`.
    """

    def __init__(self, model, loss_fn: LossFn, tx: optax.GradientTransformation,
                 schedule: optax.Schedule, mesh: Mesh, rules, *, seed: int,
                 checkpoint_dir: str | os.PathLike, keep: int = 3, async_save: bool = True,
                 whole_batches: bool = False):
        self.mesh, self.rules = mesh, rules
        # How host batches become global arrays: each process's own rows (SFT) or the
        # whole batch on every process (GRPO: `whole_batch`).
        self._place = whole_batch if whole_batches else global_batch
        self.model_def, params = ModelDef.split(model)
        del model
        self.shardings = state_shardings(
            params, tx, self.model_def.param_shardings(params, mesh, rules), mesh)
        self.state = init_state(params, tx, self.shardings, seed)
        del params
        self.ckpt = Checkpointer(Path(checkpoint_dir), keep=keep, async_save=async_save)
        self._step_fn = make_train_step(self.model_def, tx, schedule, loss_fn, mesh, rules,
                                        self.shardings)

    # -- state -----------------------------------------------------------------------

    def restore(self, *, resume: bool, data=None, progress: bool = False):
        """Load the latest checkpoint if there is one: (its step, its progress record
        when `progress`), or (None, None). `data`: a grain iterator restored in place.
        With `resume` False an existing checkpoint is an error."""
        latest = self.ckpt.latest_step()
        if latest is None:
            return None, None
        if not resume:
            raise FileExistsError(
                f"{self.ckpt.directory} already holds checkpoints (latest step {latest}); "
                "resume with train.resume=True or choose a new output directory")
        self.state, record = self.ckpt.restore(
            latest, abstract_state(self.state, self.shardings), data, progress=progress)
        return latest, record

    @property
    def optimizer_steps(self) -> int:
        return int(jax.device_get(self.state.step))

    def model(self):
        """The model over the current parameters (no copy)."""
        return self.model_def.merge(self.state.params)

    # -- work ------------------------------------------------------------------------

    def update(self, local_batch: dict) -> dict:
        """One optimizer step on a host batch [accum, rows, ...]; device metrics back."""
        self.state, metrics = self._step_fn(self.state,
                                            self._place(local_batch, self.mesh, self.rules))
        return metrics

    def forward(self, fn: Callable) -> Callable:
        """`local batch -> fn(model, micro)` stacked per micro-batch, over the current
        parameters (`make_apply`). Build it once: each call of `forward` compiles anew."""
        apply = self.forward_with(fn)
        return lambda local: apply(self.state.params, local)

    def forward_with(self, fn: Callable) -> Callable:
        """`(params, local batch) -> fn(model, micro)` per micro-batch, for parameters
        laid out like the train state's (e.g. a frozen reference copy)."""
        apply = make_apply(self.model_def, fn, self.mesh, self.rules, self.shardings.params)
        return lambda params, local: apply(params, self._place(local, self.mesh, self.rules))

    def save(self, step: int, data=None, progress: dict | None = None) -> None:
        self.ckpt.save(step, self.state, data, progress=progress)

    def close(self) -> None:
        self.ckpt.close()
