"""Where a jitted step's time goes, per XLA op and per named scope, from a profiler trace.

`summarize(trace_dir, hlo_text)` reads the `*.xplane.pb` that `jax.profiler` wrote,
sums the duration of every XLA op event (on CPU: the thunks, run on the client's
and Eigen's threads; on GPU: the kernels) by instruction name, and maps each instruction to the
`jax.named_scope` path in the compiled HLO's metadata (`compiled.as_text()`), so the
table says "backward/layer/mlp: 1.9 s" instead of "fusion.412". Used by
`benchmarks/train_step.py --profile DIR`.
"""

from __future__ import annotations

import collections
import glob
import re

# `%name = ... metadata={op_name="jit(step)/forward/decoder/layer_3/mlp/dot_general" ...}`
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?op_name=\"([^\"]*)\"", re.M)
# Events that are bookkeeping, not an op's work.
_NOT_OPS = ("ThreadpoolListener", "ThunkExecutor", "end: ")
# Transformation and control-flow parts of an op_name that are not scopes.
_WRAPPERS = {"closed_call", "pjit", "while", "body", "cond", "scan", "remat", "checkpoint",
             "custom_vjp_call", "custom_jvp_call", "rematted_computation"}


def scopes_of(hlo_text: str) -> dict[str, str]:
    """Instruction name -> its op_name (scope path) in the HLO text's metadata."""
    return {m.group(1): m.group(2) for m in _INSTRUCTION.finditer(hlo_text)}


def _scope(op_name: str, depth: int) -> str:
    """`jit(step)/jvp(...)/forward/decoder/attention/dot_general` -> the first `depth`
    named parts after the jit, dropping transformation wrappers."""
    parts = [p for p in op_name.split("/")[1:] if p and "(" not in p and p not in _WRAPPERS]
    parts = [re.sub(r"^layer_?\d+$", "layer", p) for p in parts]
    return "/".join(parts[:depth]) or "(unnamed)"


def op_durations(trace_dir: str) -> dict[str, float]:
    """Total seconds per event name over the trace's op events."""
    from jax._src.profiler import ProfileData  # noqa: PLC0415

    files = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))
    if not files:
        raise FileNotFoundError(f"{trace_dir}: no *.xplane.pb (did the trace run?)")
    total: dict[str, float] = collections.defaultdict(float)
    for plane in ProfileData.from_file(files[-1]).planes:
        if plane.name.startswith("/host:metadata"):
            continue
        for line in plane.lines:
            if line.name == "python":
                continue  # the dispatch; ops run on the client's and Eigen's threads
            for ev in line.events:
                if not ev.name.startswith(_NOT_OPS):
                    total[ev.name] += ev.duration_ns * 1e-9
    return dict(total)


def summarize(trace_dir: str, hlo_text: str, *, steps: int, depth: int = 3,
              top: int = 12) -> list[str]:
    """Lines: seconds per step by scope (the first `depth` scope parts), then the
    `top` single ops."""
    names = scopes_of(hlo_text)
    times = {k: v for k, v in op_durations(trace_dir).items() if k in names}
    if not times:
        return ["op profile: no XLA op events matched the step's HLO"]
    by_scope: dict[str, float] = collections.defaultdict(float)
    for op, sec in times.items():
        by_scope[_scope(names[op], depth)] += sec / steps
    whole = sum(by_scope.values())
    lines = [f"op profile ({steps} steps, {whole:.2f} s of ops per step), by scope:"]
    for scope, sec in sorted(by_scope.items(), key=lambda kv: -kv[1]):
        if sec / whole >= 0.005:
            lines.append(f"  {sec:8.3f} s  {100 * sec / whole:5.1f}%  {scope}")
    lines.append(f"top {top} ops:")
    for op, sec in sorted(times.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {sec / steps:8.3f} s  {op:<28} {_scope(names[op], 8)}")
    return lines
