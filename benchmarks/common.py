"""Shared benchmark plumbing: a ~100M random Qwen3 and interleaved timing.

Machines are shared and noisy, so ours and the peer are timed alternately in
the same process and compared by the ratio of medians, and every result file records
the load average when the benchmark started and when it wrote its result (a figure
taken while anything else ran is not a figure).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).parent / "results"
LOAD_AT_START = os.getloadavg()  # this module is imported before any work starts

# ~100M parameters: 25M embeddings + 12 layers x 6.3M.
SMALL_100M = dict(vocab_size=32768, hidden_size=768, intermediate_size=2048, num_layers=12,
                  num_heads=12, num_kv_heads=4, head_dim=64, tie_word_embeddings=True)


def device_name() -> str:
    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {jax.device_count()} device(s))"
    return f"{dev.platform}: {dev.device_kind}"


def transformers_peer(model, dtype: str):
    """The same weights as a transformers model, the peer side of a benchmark: saved as
    safetensors and loaded by `AutoModelForCausalLM` (on the GPU when JAX runs on one),
    with no end-of-sequence token and pad id 0, so every request runs to its limit."""
    import tempfile

    import jax
    import torch
    import transformers

    from int_jax.models import hf

    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(model, tmp)
        tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        dev = "cuda" if torch.cuda.is_available() and jax.devices()[0].platform == "gpu" else "cpu"
        peer = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=tdtype).to(dev).eval()
    peer.generation_config.eos_token_id = None
    peer.generation_config.pad_token_id = 0
    return peer


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each fn, calling them round-robin."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def report_peak_memory(lines: list[str], data: dict) -> None:
    """Append the device's peak memory (accelerators report it; CPUs do not)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        lines.append(f"peak device memory: {stats['peak_bytes_in_use'] / 2**30:.2f} GiB")
        data["peak_device_bytes"] = stats["peak_bytes_in_use"]


def load_average() -> tuple[str, str]:
    """The 1/5/15-minute load averages when this module was imported and now."""
    fmt = lambda load: " ".join(f"{x:.2f}" for x in load)  # noqa: E731
    return fmt(LOAD_AT_START), fmt(os.getloadavg())


def write_result(name: str, lines: list[str], data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.txt"
    start, end = load_average()
    lines = [*lines, f"load average (1, 5, 15 min): start {start}, end {end}"]
    data = {**data, "load_average_start": start, "load_average_end": end}
    out.write_text("\n".join(lines) + "\n\n" + json.dumps(data, indent=2) + "\n")
    return out
