"""Profiler traces of chosen train steps (`train.profile_steps=a,b`).

The trace covers optimizer steps a..b (counted from 1, as the metrics log them) and
is written by `jax.profiler` under `<logdir>/plugins/profile/<run>/`, where
TensorBoard's profile plugin finds it (`tensorboard --logdir <logdir>`, Profile tab;
or xprof). The model names every module call and the step its phases (forward, loss,
backward, optimizer) with `jax.named_scope`, so the trace reads layer by layer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax

log = logging.getLogger(__name__)


def parse_steps(value) -> tuple[int, int] | None:
    """"a,b" (or (a, b)) -> (a, b); "a" -> (a, a); "" or None -> None (no trace)."""
    if value is None or value == "" or value == ():
        return None
    items = value if isinstance(value, (tuple, list)) else str(value).strip("()[] ").split(",")
    try:
        parts = [int(str(p).strip()) for p in items]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not 1 <= parts[0] <= parts[1]:
        raise ValueError(f"train.profile_steps={value!r}: give 'first,last' (or one step) with "
                         "1 <= first <= last, steps counted from 1 as logged")
    return parts[0], parts[1]


class StepProfiler:
    """Starts a trace before step `first` runs and stops it once step `last` is done."""

    def __init__(self, steps: tuple[int, int] | None, logdir: str | Path):
        self.steps, self.logdir = steps, Path(logdir)
        self.active = False

    def before(self, step: int) -> None:
        """Call before running step `step` (counted from 1)."""
        if self.steps and step == self.steps[0] and not self.active:
            self.logdir.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.logdir))
            self.active = True
            log.info("profiling steps %d..%d into %s", *self.steps, self.logdir)

    def after(self, step: int, outputs=None) -> None:
        """Call after dispatching step `step`; `outputs` are waited for before the trace
        stops, so the last step's device work is in it."""
        if self.active and step >= self.steps[1]:
            jax.block_until_ready(outputs)
            self.stop()

    def stop(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
