"""Orbax checkpoints of the whole run: train state (params, optimizer, step, rng), the
grain iterator's position (SFT) or a JSON progress record (GRPO: data position, step,
counters), so a resumed run continues bit-for-bit.

Saves are asynchronous (device->host copy blocks, the write does not) and
atomic: orbax writes to a temporary directory and renames it when complete, so
a run killed mid-save (even by SIGKILL) leaves the previous checkpoint as the
latest one. Only the last `keep` checkpoints are kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import grain
import orbax.checkpoint as ocp

from int_jax.train.state import TrainState


class Checkpointer:
    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
            cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "data", "progress"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: TrainState, data_iterator=None,
             progress: dict | None = None) -> None:
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        if progress is not None:
            items["progress"] = ocp.args.JsonSave(progress)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, target: TrainState, data_iterator=None,
                progress: bool = False) -> tuple[TrainState, dict | None]:
        """(state, progress record or None). `target`: abstract state
        (ShapeDtypeStructs with shardings); the iterator is restored in place."""
        items = {"state": ocp.args.StandardRestore(target)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        if progress:
            items["progress"] = ocp.args.JsonRestore()
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], (dict(restored["progress"]) if progress else None)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
