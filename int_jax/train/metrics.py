"""Per-step training metrics: JSONL always, TensorBoard when available, a progress bar.

`metrics.jsonl` is append-only. A resumed run re-logs the steps between its
last checkpoint and the kill; readers keep the last line per step
(`read_metrics` does).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

# Dense bf16 peak FLOP/s per device, by `jax.devices()[0].device_kind` substring.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
}


def peak_flops_per_device(device=None, override: float = 0.0) -> float | None:
    """Known peak for this device kind (None for CPUs and unknown kinds)."""
    if override:
        return float(override)
    kind = (device or jax.devices()[0]).device_kind
    for key, value in PEAK_FLOPS.items():
        if key.lower() in kind.lower():
            return value
    return None


def train_flops_per_token(config, seq_len: int) -> float:
    """Model FLOPs per trained token (forward + backward, remat not counted).

    6 x matmul parameters plus causal attention (6 x layers x heads x head_dim x T).
    """
    matmul_params = config.num_params
    if not config.tie_word_embeddings:
        matmul_params -= config.vocab_size * config.hidden_size  # lookup is not a matmul
    attention = 6 * config.num_layers * config.num_heads * config.head_dim * seq_len
    return 6.0 * matmul_params + attention


class _TensorBoard:
    """tensorboardX if importable, else tf.summary, else nothing."""

    def __init__(self, logdir: Path):
        self._tbx = self._tf = None
        try:
            from tensorboardX import SummaryWriter

            self._tbx = SummaryWriter(str(logdir))
            return
        except ImportError:
            pass
        try:
            import tensorflow as tf

            self._tf = tf
            self._writer = tf.summary.create_file_writer(str(logdir))
        except ImportError:
            pass

    @property
    def available(self) -> bool:
        return self._tbx is not None or self._tf is not None

    def write(self, step: int, scalars: dict) -> None:
        if self._tbx is not None:
            for k, v in scalars.items():
                self._tbx.add_scalar(k, v, step)
        elif self._tf is not None:
            with self._writer.as_default(step=step):
                for k, v in scalars.items():
                    self._tf.summary.scalar(k, v)

    def close(self) -> None:
        if self._tbx is not None:
            self._tbx.close()
        elif self._tf is not None:
            self._writer.flush()


class MetricsLogger:
    """Writes one JSON line per step (process 0 only), plus TensorBoard and a bar."""

    def __init__(self, directory: str | os.PathLike, *, total_steps: int, start_step: int = 0,
                 tensorboard: bool = True, progress: bool = True,
                 flops_per_token: float | None = None, peak_flops: float | None = None,
                 desc: str = "train", postfix: dict[str, str] | None = None):
        self.directory = Path(directory)
        self.is_main = jax.process_index() == 0
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops  # all devices together
        # progress-bar fields: row key -> format (SFT: loss and lr)
        self.postfix = dict(postfix if postfix is not None else {"loss": ".4f", "lr": ".2e"})
        self._last = time.perf_counter()
        self._file = self._tb = self._bar = None
        if self.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = open(self.directory / "metrics.jsonl", "a", encoding="utf-8")
            if tensorboard:
                self._tb = _TensorBoard(self.directory / "tensorboard")
            if progress:
                self._bar = tqdm(total=total_steps, initial=start_step, desc=desc,
                                 dynamic_ncols=True)

    def restart_clock(self) -> None:
        """Call after compilation so the first step's tokens/s is not the compile time."""
        self._last = time.perf_counter()

    def log(self, step: int, metrics: dict) -> dict:
        """One step's row (device arrays are read here)."""
        return self.log_window([(step, metrics)])[0]

    def log_window(self, entries: list[tuple[int, dict]]) -> list[dict]:
        """The rows of the steps since the last call, read from the device in one go;
        the time since then is shared out evenly (`step_time_s`, `tokens_per_s`)."""
        if not entries:
            return []
        now = time.perf_counter()
        elapsed, self._last = (now - self._last) / len(entries), now
        values = jax.device_get([m for _, m in entries])
        rows = []
        for (step, _), metrics in zip(entries, values):
            row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
            row["step_time_s"] = elapsed
            tokens = row.get("tokens")
            if tokens is not None and elapsed > 0:
                row["tokens_per_s"] = tokens / elapsed
                if self.flops_per_token and self.peak_flops:
                    row["mfu"] = tokens * self.flops_per_token / elapsed / self.peak_flops
            self._write(row)
            rows.append(row)
        return rows

    def _write(self, row: dict) -> None:
        if not self.is_main:
            return
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            self._tb.write(row["step"], {k: v for k, v in row.items()
                                         if isinstance(v, (int, float)) and k != "step"})
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k.rpartition("/")[2]: format(row[k], f)
                                   for k, f in self.postfix.items()
                                   if isinstance(row.get(k), (int, float))})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._bar is not None:
            self._bar.close()


def _plain(v):
    try:
        return v.item()
    except AttributeError:
        return v


def read_metrics(path: str | os.PathLike) -> dict[int, dict]:
    """step -> the last row logged for it (a resumed run re-logs some steps)."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a killed run
                rows[row["step"]] = row
    return rows


def is_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
