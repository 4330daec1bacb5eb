"""The report's plots as data (`model.Figure`): what to draw and where each point comes from.

* `passk_<benchmark>`: pass@k against k (log2 axis) with the bootstrap band
  (`pass_at_k`, `ci` of `eval/summary_<benchmark>.json`), one line per run folder; one
  figure per paper benchmark (and the training set), plus any other benchmark found.
* `grpo_reward`, `grpo_all_wrong`, `grpo_length`: GRPO's mean reward, share of groups
  whose samples are all wrong and mean response length against the step, one line per
  GRPO output (its `metrics.jsonl`; the metric is looked up by name, see `GRPO_METRICS`:
  first the names `int_jax/train/learner.py` logs, then patterns).
* `funnel`: the pipeline funnel's counts (the `funnel` table), one bar per run folder.
"""

from __future__ import annotations

import math
import re

from int_jax.eval.report.collect import Collection, MetricsRun, shown
from int_jax.eval.report.model import Figure, Series, Source, Table
from int_jax.eval.report.tables import MAIN_COLUMNS

# figure key -> (title, y label, exact metric names tried first, then name patterns)
GRPO_METRICS = {
    "grpo_reward": ("GRPO: mean reward", "mean reward",
                    ("reward/mean", "reward/reward_mean", "reward/mean_reward"), (r"^reward/.*mean",)),
    "grpo_all_wrong": ("GRPO: share of groups with every sample wrong", "share of groups",
                       ("reward/frac_all_wrong", "reward/all_wrong_frac", "reward/all_wrong"),
                       (r"^reward/.*all_wrong",)),
    "grpo_length": ("GRPO: mean response length", "tokens",
                    ("rollout/response_len_mean", "rollout/response_length_mean", "rollout/length_mean"),
                    (r"^rollout/.*len.*mean", r"^rollout/(?!.*max).*len")),
}
NO_GRPO = "no GRPO run found among the folders given (a metrics.jsonl with rollout/ or reward/ metrics)"


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def passk_figures(c: Collection) -> list[Figure]:
    found = sorted({b for run in c.runs if run.eval for b in run.eval.summaries})
    benches = [b for b, _, _ in MAIN_COLUMNS] + [b for b in found if b not in {x for x, _, _ in MAIN_COLUMNS}]
    titles = {b: t for b, _, t in MAIN_COLUMNS}
    figures = []
    for bench in benches:
        series = []
        for run in c.runs:
            s = run.eval.summaries.get(bench) if run.eval else None
            if not s or not s.get("pass_at_k"):
                continue
            ks = sorted(int(k) for k in s["pass_at_k"])
            ci = s.get("ci") or {}
            have_ci = all(str(k) in ci for k in ks)
            series.append(Series(
                run.name, tuple(ks), tuple(float(s["pass_at_k"][str(k)]) for k in ks),
                tuple(float(ci[str(k)][0]) for k in ks) if have_ci else None,
                tuple(float(ci[str(k)][1]) for k in ks) if have_ci else None,
                (Source(shown(run.eval.summary_path(bench)), "pass_at_k, ci"),)))
        title = f"pass@k on {titles.get(bench, bench)}"
        figures.append(Figure(f"passk_{bench}", title, "k", "pass@k", tuple(series), log2_x=True,
                              reason="" if series else f"no run folder holds an eval summary of {bench}"))
    return figures


def metric_name(rows: dict[int, dict], exact: tuple[str, ...], patterns: tuple[str, ...]) -> str | None:
    """The metric a GRPO log names: an exact name first, else the first name (sorted)
    matching a pattern, patterns in order."""
    names = sorted({k for row in rows.values() for k in row})
    for name in exact:
        if name in names:
            return name
    for pattern in patterns:
        for name in names:
            if re.search(pattern, name):
                return name
    return None


def grpo_figures(c: Collection) -> list[Figure]:
    figures = []
    for key, (title, ylabel, exact, patterns) in GRPO_METRICS.items():
        series = []
        for run in c.grpo:
            series += _grpo_series(run, exact, patterns)
        if not c.grpo:
            reason = NO_GRPO
        elif not series:
            reason = f"no GRPO run logs this metric (tried {', '.join(exact)} and {', '.join(patterns)})"
        else:
            reason = ""
        figures.append(Figure(key, title, "step", ylabel, tuple(series), reason=reason))
    return figures


def _grpo_series(run: MetricsRun, exact, patterns) -> list[Series]:
    name = metric_name(run.rows, exact, patterns)
    if name is None:
        return []
    points = [(step, row[name]) for step, row in run.rows.items() if _is_number(row.get(name))]
    if not points:
        return []
    return [Series(f"{run.name} ({name})", tuple(p[0] for p in points), tuple(float(p[1]) for p in points),
                   sources=(Source(shown(run.path), name),))]


def funnel_figure(funnel: Table) -> Figure:
    steps = tuple(str(row["step"].value) for row in funnel.rows)
    series = []
    for col in funnel.columns:
        if not col.key.startswith("run"):
            continue
        cells = [row[col.key] for row in funnel.rows]
        if all(cell.missing for cell in cells):
            continue
        series.append(Series(col.title, steps, tuple(None if x.missing else float(x.value) for x in cells),
                             sources=tuple(dict.fromkeys(s for x in cells for s in x.sources))))
    return Figure("funnel", "Pipeline funnel", "count", "", tuple(series), kind="bars",
                  reason="" if series else "no run folder holds stats/stats.json with counts")


def all_figures(c: Collection, funnel: Table) -> tuple[Figure, ...]:
    return (*passk_figures(c), *grpo_figures(c), funnel_figure(funnel))
