"""One benchmark's pass@1 per row over several seeds of the miniature, and whether one
row beats another by more than the seeds' spread (`int-jax running-sum seeds`).

Each seed is a folder of run folders (`runs/toy`, `runs/toy_seed1`, ...: the rows run
with `--config.seed=S --config.workdir=<folder>/<row>`); a row's pass@1 is read from
`<folder>/<row>/eval/summary_<benchmark>.json`. A row missing from a seed is reported
as missing, never guessed.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def pass_at_1(folders: list[Path], benchmark: str) -> dict[str, list[float | None]]:
    """row -> pass@1 per folder (None where the row's eval has not run there)."""
    rows = sorted({p.parent.parent.name for f in folders
                   for p in f.glob(f"*/eval/summary_{benchmark}.json")})
    out: dict[str, list[float | None]] = {}
    for row in rows:
        values = []
        for f in folders:
            file = f / row / "eval" / f"summary_{benchmark}.json"
            if not file.exists():
                values.append(None)
                continue
            try:
                values.append(float(json.loads(file.read_text())["pass_at_1"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{file}: field 'pass_at_1' unreadable ({e})") from None
        out[row] = values
    return out


def beats(a: list[float], b: list[float]) -> dict:
    """Row a vs row b over the same seeds: mean difference, each row's range (max - min),
    and `clear`: every seed of a above every seed of b (the difference exceeds the
    spread)."""
    return {"mean_difference": statistics.fmean(a) - statistics.fmean(b),
            "range_a": max(a) - min(a), "range_b": max(b) - min(b),
            "clear": min(a) > max(b)}


def table(folders: list[Path], benchmark: str, compare: tuple[str, str]) -> str:
    """Markdown: one line per row (pass@1 per seed, mean, range), then the comparison."""
    values = pass_at_1(folders, benchmark)
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    head = " | ".join(f.name for f in folders)
    lines = [f"{benchmark} pass@1 | {head} | mean | range", "---|" + "---:|" * (len(folders) + 2)]
    for row, vs in values.items():
        got = [v for v in vs if v is not None]
        mean = pct(statistics.fmean(got)) if got else "-"
        spread = pct(max(got) - min(got)) if len(got) > 1 else "-"
        lines.append(f"{row} | " + " | ".join(pct(v) for v in vs) + f" | {mean} | {spread}")
    a, b = compare
    if a in values and b in values and None not in values[a] + values[b]:
        r = beats(values[a], values[b])
        lines.append("")
        lines.append(f"{a} - {b}: mean {100 * r['mean_difference']:+.1f} points; ranges "
                     f"{100 * r['range_a']:.1f} and {100 * r['range_b']:.1f}; every seed of {a} "
                     f"above every seed of {b}: {'yes' if r['clear'] else 'no'}")
    return "\n".join(lines)
