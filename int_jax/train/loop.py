"""The SFT driver of the one train step: batches from a checkpointable (grain)
iterator into `step.Trainer`, orbax checkpoints with the iterator's position, exact
resume, metrics on logging steps.

Batches are dicts of [accum, micro_batch, T] arrays (`step.make_train_step`). The GRPO
learner (`train/learner.py`) drives the same `Trainer` with batches it samples itself.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Iterator

import optax
from jax.sharding import Mesh

from int_jax.train.metrics import MetricsLogger
from int_jax.train.profile import StepProfiler
from int_jax.train.step import LossFn, Trainer, batch_digest, check_losses

log = logging.getLogger(__name__)


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
    log_every: int = 1  # metrics reach the host (and the logs) every this many steps
    profile_steps: tuple[int, int] | None = None  # trace steps a..b (from 1) into tensorboard/


def train(model, loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule,
          data: Iterator, mesh: Mesh, rules, opts: LoopOptions):
    """Run (or resume) training to `opts.total_steps`; returns (model, final state).

    `data` is a checkpointable grain iterator yielding host-local batches. The
    model's own arrays are donated to the first step: use the returned model. A NaN
    or inf loss raises `step.TrainingDiverged` before anything after it is saved.
    """
    if opts.log_every < 1 or opts.save_every < 1:
        raise ValueError(f"log_every={opts.log_every} and save_every={opts.save_every} "
                         "must be >= 1")
    workdir = Path(opts.workdir)
    trainer = Trainer(model, loss_fn, tx, schedule, mesh, rules, seed=opts.seed,
                      checkpoint_dir=workdir / "checkpoints", keep=opts.keep,
                      async_save=opts.async_save)
    del model
    logger = profiler = None
    try:
        latest, _ = trainer.restore(resume=opts.resume, data=data)
        if latest is not None:
            log.info("resumed from %s step %d", trainer.ckpt.directory, latest)
        start = trainer.optimizer_steps
        peak = (opts.peak_flops_per_device or 0) * mesh.devices.size or None
        logger = MetricsLogger(workdir, total_steps=opts.total_steps, start_step=start,
                               tensorboard=opts.tensorboard, progress=opts.progress,
                               flops_per_token=opts.flops_per_token, peak_flops=peak)
        # Under tensorboard/ (TensorBoard's profile plugin looks in plugins/profile).
        profiler = StepProfiler(opts.profile_steps, workdir / "tensorboard")
        unchecked: list = []  # (step, device loss) not yet read on the host
        pending: list = []  # (step, device metrics, batch digest) not yet logged
        for step in range(start, opts.total_steps):
            try:
                local = next(data)
            except StopIteration:
                raise RuntimeError(f"the data ran out after {step} of {opts.total_steps} "
                                   "steps; lower train.max_steps or add epochs") from None
            done = step + 1
            profiler.before(done)
            metrics = trainer.update(local)
            profiler.after(done, metrics)
            unchecked.append((done, metrics["loss"]))
            pending.append((done, metrics, batch_digest(local)))
            last = done == opts.total_steps
            saving = done % opts.save_every == 0 or last
            # The first step is logged alone, so compilation stays out of tokens/s.
            logging_step = done % opts.log_every == 0 or last or step == start
            if logging_step or saving:
                # Host sync point: the loss of every step since the last one is read.
                check_losses(unchecked, trainer.ckpt)
                unchecked = []
            if logging_step:
                logger.log_window([(s, {**m, "batch_sha": digest}) for s, m, digest in pending])
                pending = []
                if step == start:
                    logger.restart_clock()
            if saving:
                trainer.save(done, data)
    finally:
        if profiler is not None:
            profiler.stop()
        trainer.close()
        if logger is not None:
            logger.close()
    return trainer.model(), trainer.state
