"""One train loop for SFT and GRPO: a sharded, donated, accumulating `jax.jit` step
around a pluggable loss, with orbax checkpoints, exact resume and metrics.

Batches are dicts of [accum, micro_batch, T] arrays. The step scans over the
accumulation axis, summing gradients and loss terms, and divides by the total
loss weight once, so the global batch (not the device count or the micro-batch
size) defines the update.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from int_jax.models import sharding as sharding_lib
from int_jax.train.checkpoint import Checkpointer
from int_jax.train.metrics import MetricsLogger, is_finite
from int_jax.train.sft import LossFn, LossTerms
from int_jax.train.state import ModelDef, TrainState, abstract_state, init_state, state_shardings

log = logging.getLogger(__name__)

BATCH_AXES = (None, "activation_batch", "activation_length")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


def batch_sharding(mesh: Mesh, rules, shape) -> NamedSharding:
    return NamedSharding(mesh, sharding_lib.logical_to_spec(BATCH_AXES[:len(shape)], rules,
                                                            shape, mesh))


def make_train_step(model_def: ModelDef, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, loss_fn: LossFn, mesh: Mesh, rules,
                    shardings: TrainState) -> Callable:
    """A jitted `(state, batch) -> (state, metrics)` with the state donated."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def step(state: TrainState, batch):
        with sharding_lib.activation_rules(mesh, rules):
            rng, step_rng = jax.random.split(state.rng)
            accum = jax.tree.leaves(batch)[0].shape[0]

            def micro_loss(params, micro, key):
                terms = loss_fn(model_def.merge(params), micro, key)
                return terms.total, terms

            grad_fn = jax.grad(micro_loss, has_aux=True)

            def body(carry, xs):
                g_sum, t_sum = carry
                g, terms = grad_fn(state.params, *xs)
                g_sum = jax.lax.with_sharding_constraint(
                    jax.tree.map(jnp.add, g_sum, g), shardings.params)
                return (g_sum, jax.tree.map(jnp.add, t_sum, terms)), None

            first = jax.tree.map(lambda x: x[0], batch)
            terms_shape = jax.eval_shape(lambda: micro_loss(state.params, first, step_rng)[1])
            zeros_terms = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), terms_shape)
            zeros_grads = jax.tree.map(jnp.zeros_like, state.params)
            (g_sum, terms), _ = jax.lax.scan(
                body, (zeros_grads, zeros_terms), (batch, jax.random.split(step_rng, accum)))

            denom = jnp.where(terms.weight > 0, terms.weight, 1.0)
            grads = jax.tree.map(lambda g: g / denom, g_sum)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            metrics = {"loss": terms.total / denom, "grad_norm": optax.tree.norm(grads),
                       "lr": schedule(state.step), "loss_weight": terms.weight,
                       **terms.metrics}
            new_state = TrainState(params=params, opt_state=opt_state, step=state.step + 1,
                                   rng=rng)
            return new_state, metrics

    return jax.jit(step, in_shardings=(shardings, None), out_shardings=(shardings, replicated),
                   donate_argnums=(0,))


def global_batch(local: dict, mesh: Mesh, rules) -> dict:
    """Host-local numpy [accum, local_rows, T] -> global arrays sharded over the batch."""
    out = {}
    for k, x in local.items():
        x = np.asarray(x)
        global_shape = (x.shape[0], x.shape[1] * jax.process_count(), *x.shape[2:])
        sharding = batch_sharding(mesh, rules, global_shape)
        out[k] = jax.make_array_from_process_local_data(sharding, x, global_shape)
    return out


def fingerprint(batch: dict) -> str:
    """Short hash of a batch's tokens: equal across runs iff the data order is."""
    h = hashlib.sha1()
    for k in sorted(batch):
        h.update(np.ascontiguousarray(batch[k]).tobytes())
    return h.hexdigest()[:16]


@dataclasses.dataclass
class LoopOptions:
    total_steps: int
    workdir: Path
    seed: int = 0
    save_every: int = 100
    keep: int = 3
    async_save: bool = True
    resume: bool = True
    tensorboard: bool = True
    progress: bool = True
    flops_per_token: float | None = None
    peak_flops_per_device: float | None = None


def train(model, loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule,
          data: Iterator, mesh: Mesh, rules, opts: LoopOptions):
    """Run (or resume) training to `opts.total_steps`; returns (model, final state).

    `data` is a checkpointable grain iterator yielding host-local batches. The
    model's own arrays are donated to the first step: use the returned model.
    """
    workdir = Path(opts.workdir)
    model_def, params = ModelDef.split(model)
    del model
    shardings = state_shardings(params, tx, model_def.param_shardings(params, mesh, rules), mesh)
    state = init_state(params, tx, shardings, opts.seed)
    del params
    ckpt = Checkpointer(workdir / "checkpoints", keep=opts.keep, async_save=opts.async_save)
    latest = ckpt.latest_step()
    if latest is not None:
        if not opts.resume:
            ckpt.close()
            raise FileExistsError(
                f"{ckpt.directory} already holds checkpoints (latest step {latest}); "
                "resume with train.resume=True or choose a new output directory")
        state = ckpt.restore(latest, abstract_state(state, shardings), data)
        log.info("resumed from %s step %d", ckpt.directory, latest)
    start = int(jax.device_get(state.step))
    step_fn = make_train_step(model_def, tx, schedule, loss_fn, mesh, rules, shardings)
    peak = (opts.peak_flops_per_device or 0) * jax.device_count() or None
    logger = MetricsLogger(workdir, total_steps=opts.total_steps, start_step=start,
                           tensorboard=opts.tensorboard, progress=opts.progress,
                           flops_per_token=opts.flops_per_token, peak_flops=peak)
    try:
        for step in range(start, opts.total_steps):
            try:
                local = next(data)
            except StopIteration:
                raise RuntimeError(f"the data ran out after {step} of {opts.total_steps} "
                                   "steps; lower train.max_steps or add epochs") from None
            batch_id = fingerprint(local)
            state, metrics = step_fn(state, global_batch(local, mesh, rules))
            row = logger.log(step + 1, {**metrics, "batch_sha": batch_id})
            if step == start:
                logger.restart_clock()  # do not count compilation in tokens/s
            if not is_finite(row["loss"]):
                ckpt.wait()
                raise TrainingDiverged(
                    f"step {step + 1}: loss is {row['loss']}; stopping. The last good "
                    f"checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is intact")
            done = step + 1
            if done % opts.save_every == 0 or done == opts.total_steps:
                ckpt.save(done, state, data)
    finally:
        ckpt.close()
        logger.close()
    return model_def.merge(state.params), state
