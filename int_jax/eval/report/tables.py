"""The paper's tables from what the run folders hold (`collect.Collection`).

Each table keeps the paper's layout with the paper's figure beside ours
(`int_jax.eval.paper_figures`; `not recorded` where we have none). Every number of
ours is read from one file of a run folder, and its cell names that file and key; a
number the folders do not hold is a missing cell with the reason, never a zero.

* **main**: one row per run folder with an eval stage (or with no stage we know), and
  one per paper row no folder stands for:
  pass@1 on IMO-AnswerBench, HMMT Nov'25 and the training set, pass@8 on AMO-Bench and
  Apex Shortlist, from `eval/summary_<benchmark>.json` (`pass_at_k`); the average of
  the five when all five are there.
* **table1** (intervention effectiveness): from `stats/stats.json` (`table1`), per
  run folder with InT data stages and conditioning: accuracy = correct / all continuations; coverage = share of
  interventions (and of problems) with >= 1 correct continuation.
* **table2** (SFT ablation): one row per SFT output (given, or named by an eval stage's
  `model.hf_path`) and eval run of its checkpoint: coverage and accuracy (pass@1) on the
  training set (`eval/summary_train.json`); the variant is read from the SFT output's
  `run_config.json` (its data's stage, segment weights, the correctness filter).
* **diagnostics**: NLL and next-token entropy over all response tokens (`all`) of each
  SFT set in a `diagnostics.json`, the set named by the stage folder of its file.
* **funnel**: the pipeline's counts from `stats/stats.json` (`counts`), one column per
  run folder with InT data stages.
"""

from __future__ import annotations

import statistics
from pathlib import Path, PurePath

from int_jax.eval import paper_figures as paper
from int_jax.eval.report.collect import Collection, RunFolder, shown
from int_jax.eval.report.model import Cell, Column, Source, Table
from int_jax.stages.stats import CONDITION_LABELS

# (benchmark as the eval stage names it, k of pass@k, column title) in the paper's order.
MAIN_COLUMNS = (
    ("imo_answerbench", 1, "IMO-AnswerBench"),
    ("hmmt_nov_2025", 1, "HMMT Nov'25"),
    ("amo_bench", 8, "AMO-Bench"),
    ("apex_shortlist", 8, "Apex Shortlist"),
    ("train", 1, "training set"),
)
TABLE2_BENCHMARK = "train"
# The stage folder an SFT set's file sits in -> the set's name in the diagnostics table.
SFT_SETS = {"select": "InT", "reference": "reference solutions", "reflect": "SFT(Reflect)",
            "rollout": "base"}
# (key, label, stage that produces the count, stats.json key under `counts`)
FUNNEL_STEPS = (
    ("problems", "problems", "rollout", "problems"),
    ("attempts", "attempts", "rollout", "attempts"),
    ("failed", "failed attempts", "rollout", "failed_attempts"),
    ("proposals", "proposals", "propose", "proposals"),
    ("parsed", "parsed", "filter", "parsed"),
    ("not_leaky", "not leaky (passed every filter)", "filter", None),  # proposals - rejected
    ("kept", "kept (first survivor per attempt)", "filter", "kept_interventions"),
    ("verified", "verified (>= 1 correct continuation)", "continue", "with_correct_continuation"),
    ("sft", "SFT examples", "select", "sft_examples"),
)


def _paper(figure: paper.PaperFigure | None) -> Cell:
    if figure is None:
        return Cell.text(paper.NOT_RECORDED)
    return Cell(value=figure.value, paper=figure.source)


# -- main table -----------------------------------------------------------------------


def pass_cell(run: RunFolder, bench: str, k: int) -> Cell:
    """pass@k of one benchmark from a run folder's eval summary, or why not."""
    if run.eval is None:
        return Cell.absent(run.eval_reason)
    if bench in run.eval.unreadable:
        return Cell.absent(run.eval.unreadable[bench])
    path = run.eval.summary_path(bench)
    summary = run.eval.summaries.get(bench)
    if summary is None:
        have = ", ".join(run.eval.summaries) or "none"
        return Cell.absent(f"no {bench} summary in {shown(run.eval.dir)} (benchmarks there: {have})")
    scores = summary.get("pass_at_k")
    if not scores:
        return Cell.absent(f"{shown(path)}: {summary.get('missing') or 'no pass_at_k'}")
    if str(k) not in scores:
        top = max(int(x) for x in scores)
        return Cell.absent(f"{shown(path)} has pass@k up to k={top}; pass@{k} needs >= {k} "
                           "samples per problem")
    return Cell.number(float(scores[str(k)]), Source(shown(path), f"pass_at_k.{k}"))


def _main_columns() -> tuple[Column, ...]:
    cols = [Column("experiment", "experiment"), Column("paper_row", "paper row")]
    for bench, k, title in MAIN_COLUMNS:
        cols += [Column(bench, f"{title} pass@{k}", "rate"),
                 Column(f"{bench}:paper", f"{title} pass@{k} (paper)", "rate", paper=True)]
    cols += [Column("average", "average", "rate"), Column("average:paper", "average (paper)", "rate", paper=True)]
    return tuple(cols)


def _paper_main(row: dict, paper_row: str | None) -> None:
    figures = paper.MAIN_TABLE.get(paper_row or "", {})
    for bench, _, _ in MAIN_COLUMNS:
        row[f"{bench}:paper"] = _paper(figures.get(bench))
    row["average:paper"] = _paper(figures.get("average"))


def main_table(c: Collection) -> Table:
    rows = []
    matched = set()
    for run in (r for r in c.runs if r.is_experiment):
        paper_row = paper.main_row(run.name)
        matched.add(paper_row)
        row = {"experiment": Cell.text(run.name),
               "paper_row": Cell.text(paper_row) if paper_row else Cell.absent(
                   "no paper row of this name")}
        cells = {bench: pass_cell(run, bench, k) for bench, k, _ in MAIN_COLUMNS}
        row.update(cells)
        if all(not x.missing for x in cells.values()):
            row["average"] = Cell.number(statistics.fmean(x.value for x in cells.values()),
                                         *(s for x in cells.values() for s in x.sources))
        else:
            gone = ", ".join(t for (b, _, t) in MAIN_COLUMNS if cells[b].missing)
            row["average"] = Cell.absent(f"needs all five columns; missing: {gone}")
        _paper_main(row, paper_row)
        rows.append(row)
    for paper_row, names in paper.MAIN_ROWS.items():
        if paper_row in matched:
            continue
        why = f"no run folder named {names[0]!r}"
        row = {"experiment": Cell.absent(why), "paper_row": Cell.text(paper_row)}
        row.update({bench: Cell.absent(why) for bench, _, _ in MAIN_COLUMNS})
        row["average"] = Cell.absent(why)
        _paper_main(row, paper_row)
        rows.append(row)
    return Table("main", "Main table: pass@k per benchmark",
                 "One row per run folder with an eval stage, from eval/summary_<benchmark>.json "
                 "(pass_at_k): pass@1 on "
                 "IMO-AnswerBench, HMMT Nov'25 and the training set (benchmark 'train'), pass@8 on "
                 "AMO-Bench and Apex Shortlist; the average of the five. A run folder stands for a "
                 "paper row by its name (int_jax/eval/paper_figures.py MAIN_ROWS).",
                 _main_columns(), tuple(rows))


# -- Table 1 --------------------------------------------------------------------------

_T1_OURS = ("interventions", "continuations", "accuracy", "coverage_interventions", "coverage_problems")


def table1(c: Collection) -> Table:
    cols = (Column("run", "run"), Column("condition", "conditioned on"),
            Column("interventions", "interventions", "count"),
            Column("continuations", "continuations", "count"),
            Column("accuracy", "accuracy", "rate"), Column("accuracy:paper", "accuracy (paper)", "rate", True),
            Column("coverage_interventions", "coverage (interventions)", "rate"),
            Column("coverage_problems", "coverage (problems)", "rate"),
            Column("coverage:paper", "coverage (paper)", "rate", True))
    rows = []
    runs = [r for r in c.runs if r.is_pipeline]
    for run in runs:
        table = run.stats.get("table1") if run.stats is not None else None
        if not table:  # one row saying why, not four
            if run.stats is None:
                why = run.stats_reason
            elif table is None:
                why = (f"{shown(run.stats_path)}: the continue stage had not finished when stats ran "
                       "(table1 is null)")
            else:
                why = f"{shown(run.stats_path)}: no intervention survived the filters; nothing was continued"
            rows.append({"run": Cell.text(run.name), "condition": Cell.absent(why),
                         **{k: Cell.absent(why) for k in _T1_OURS},
                         "accuracy:paper": _paper(None), "coverage:paper": _paper(None)})
            continue
        for cond, label in CONDITION_LABELS.items():
            figures = paper.TABLE1.get(cond, {})
            row = {"run": Cell.text(run.name), "condition": Cell.text(label),
                   "accuracy:paper": _paper(figures.get("accuracy")),
                   "coverage:paper": _paper(figures.get("coverage"))}
            entry = table.get(cond)
            for key in _T1_OURS:
                if entry is None:
                    row[key] = Cell.absent(f"{shown(run.stats_path)}: condition {cond!r} was not "
                                           "continued (continuation.conditions)")
                else:
                    row[key] = Cell.number(entry[key], Source(shown(run.stats_path), f"table1.{cond}.{key}"))
            rows.append(row)
    if not runs:
        rows.append({"run": Cell.absent("no run folder with InT data stages among the folders given")})
    return Table("table1", "Table 1: intervention effectiveness",
                 "Continuations of the same interventions under four conditionings, from "
                 "stats/stats.json (table1): accuracy = correct / all continuations; coverage = "
                 "share of interventions (problems) with at least one correct continuation.",
                 cols, tuple(rows))


# -- Table 2 ----------------------------------------------------------------------------


def table2(c: Collection) -> Table:
    b = TABLE2_BENCHMARK
    cols = (Column("variant", "SFT variant"), Column("sft", "SFT output"), Column("eval_run", "eval run"),
            Column("k", "samples per problem", "count"),
            Column("coverage", "coverage", "rate"), Column("coverage:paper", "coverage (paper)", "rate", True),
            Column("accuracy", "accuracy (pass@1)", "rate"),
            Column("accuracy:paper", "accuracy (paper)", "rate", True))
    rows = []
    for sft in c.sft:
        figures = paper.TABLE2.get(sft.variant, {})
        base = {"variant": Cell(sft.variant, sources=(Source(shown(sft.config_path),
                                                              "data.train_path, data.weights"),)),
                "sft": Cell.text(shown(sft.path)),
                "coverage:paper": _paper(figures.get("coverage")),
                "accuracy:paper": _paper(figures.get("accuracy"))}
        evals = [run for run in c.runs if run.sft is sft]
        if not evals:
            why = f"no eval run among the folders given evaluated {shown(sft.path / 'hf')}"
            rows.append({**base, "eval_run": Cell.absent(why),
                         **{k: Cell.absent(why) for k in ("k", "coverage", "accuracy")}})
        for run in evals:
            row = {**base, "eval_run": Cell.text(run.name)}
            acc = pass_cell(run, b, 1)
            row["accuracy"] = acc
            if acc.missing:
                row["k"] = row["coverage"] = Cell.absent(acc.reason)
            else:
                path = shown(run.eval.summary_path(b))
                s = run.eval.summaries[b]
                row["coverage"] = Cell.number(s["coverage"], Source(path, "coverage"))
                row["k"] = Cell.number(s["samples_per_problem"], Source(path, "samples_per_problem")) \
                    if isinstance(s.get("samples_per_problem"), int) else \
                    Cell.absent(f"{path}: problems have different sample counts {s.get('samples_per_problem')}")
            rows.append(row)
    seen = {sft.variant for sft in c.sft}
    for variant in paper.TABLE2_ROWS:
        if variant in seen:
            continue
        why = "no SFT output of this variant among the folders given"
        figures = paper.TABLE2.get(variant, {})
        rows.append({"variant": Cell.text(variant), "sft": Cell.absent(why), "eval_run": Cell.absent(why),
                     **{k: Cell.absent(why) for k in ("k", "coverage", "accuracy")},
                     "coverage:paper": _paper(figures.get("coverage")),
                     "accuracy:paper": _paper(figures.get("accuracy"))})
    return Table("table2", "Table 2: SFT ablation",
                 "One row per SFT output (given, or named by an eval stage's model.hf_path) and eval "
                 f"run of its checkpoint: coverage and accuracy (pass@1) on the training set "
                 f"(eval/summary_{b}.json); the variant is read from the SFT output's run_config.json "
                 "(the stage its data.train_path comes from, data.weights, and the select stage's "
                 "select.require_correct).",
                 cols, tuple(rows))


# -- NLL / entropy ------------------------------------------------------------------------


def _set_name(file: str) -> str:
    p = PurePath(file)
    return SFT_SETS.get(p.parent.name, p.name)


def diagnostics_table(c: Collection) -> Table:
    cols = (Column("set", "SFT set"), Column("file", "file"), Column("scored_by", "scored by"),
            Column("tokens", "tokens", "count"),
            Column("nll", "NLL", "float"), Column("nll:paper", "NLL (paper)", "float", True),
            Column("entropy", "entropy", "float"), Column("entropy:paper", "entropy (paper)", "float", True))
    rows, seen = [], set()
    for d in c.diagnostics:
        for file, kinds in d.results.items():
            name = _set_name(file)
            seen.add(name)
            figures = paper.DIAGNOSTICS.get(name, {})
            row = {"set": Cell.text(name), "file": Cell.text(shown(Path(file))), "scored_by": Cell.text(d.scored_by),
                   "nll:paper": _paper(figures.get("nll")), "entropy:paper": _paper(figures.get("entropy"))}
            entry = kinds.get("all") if isinstance(kinds, dict) else None
            for key in ("tokens", "nll", "entropy"):
                if entry is None or key not in entry:
                    row[key] = Cell.absent(f"{shown(d.path)}: no 'all' figures for {file}")
                else:
                    row[key] = Cell.number(entry[key], Source(shown(d.path), f"[{file}].all.{key}"))
            rows.append(row)
    for name, figures in paper.DIAGNOSTICS.items():
        if name in seen:
            continue
        why = f"no diagnostics of a {name} SFT set among the folders given"
        rows.append({"set": Cell.text(name), "file": Cell.absent(why), "scored_by": Cell.absent(why),
                     **{k: Cell.absent(why) for k in ("tokens", "nll", "entropy")},
                     "nll:paper": _paper(figures.get("nll")), "entropy:paper": _paper(figures.get("entropy"))})
    return Table("diagnostics", "NLL and next-token entropy of the SFT sets",
                 "Mean NLL and next-token entropy over every response token ('all') of each SFT set, "
                 "from diagnostics.json (int-jax diagnostics); the set is named by the stage folder of "
                 "its file (select: InT, reference: reference solutions, reflect: SFT(Reflect)). The "
                 "paper's entropies are of each model after SFT on its set (the base model "
                 "untuned), ours of the set under the model in the 'scored by' column.",
                 cols, tuple(rows))


# -- funnel -------------------------------------------------------------------------------


def funnel_cell(run: RunFolder, step: str, stage: str, key: str | None) -> Cell:
    if run.stats is None:
        return Cell.absent(run.stats_reason)
    counts = run.stats.get("counts") or {}
    path = shown(run.stats_path)
    if stage not in (counts.get("stages_finished") or []):
        return Cell.absent(f"{path}: the {stage} stage had not finished when stats ran")
    if key is None:  # not leaky: every proposal the filters did not reject
        rejected = counts.get("rejected")
        if counts.get("proposals") is None or not isinstance(rejected, dict):
            return Cell.absent(f"{path}: counts.proposals or counts.rejected is missing")
        return Cell.number(counts["proposals"] - sum(rejected.values()),
                           Source(path, "counts.proposals - sum(counts.rejected)"))
    value = counts.get(key)
    if value is None:
        return Cell.absent(f"{path}: counts.{key} is null")
    return Cell.number(value, Source(path, f"counts.{key}"))


def funnel_table(c: Collection) -> Table:
    runs = [r for r in c.runs if r.is_pipeline]
    cols = [Column("step", "step")]
    cols += [Column(f"run{i}", run.name, "count") for i, run in enumerate(runs)]
    cols.append(Column("paper", "paper", "count", paper=True))
    rows = []
    for step, label, stage, key in FUNNEL_STEPS:
        row = {"step": Cell.text(label), "paper": _paper(paper.FUNNEL.get(step))}
        for i, run in enumerate(runs):
            row[f"run{i}"] = funnel_cell(run, step, stage, key)
        rows.append(row)
    return Table("funnel", "Pipeline funnel",
                 "Counts after each step, from stats/stats.json (counts), one column per run folder "
                 "with InT data stages: "
                 "'not leaky' is counts.proposals minus every rejected proposal (the leak test is the "
                 "last filter); 'kept' is one intervention per attempt; 'verified' are those with at "
                 "least one correct continuation.",
                 tuple(cols), tuple(rows))


def other_benchmarks_table(c: Collection) -> Table | None:
    """pass@1 on the benchmarks outside the paper's columns (the running-sum miniature's
    held-out and easy sets), one row per run folder with an eval stage; None when no run
    has one, so a paper report keeps its five tables."""
    paper_names = {bench for bench, _, _ in MAIN_COLUMNS}
    runs = [r for r in c.runs if r.is_experiment and r.eval is not None]
    names = sorted({b for r in runs for b in r.eval.summaries} - paper_names)
    if not names:
        return None
    cols = (Column("experiment", "experiment"),
            *(Column(b, f"{b} pass@1", "rate") for b in names))
    rows = tuple({"experiment": Cell.text(r.name), **{b: pass_cell(r, b, 1) for b in names}}
                 for r in runs)
    return Table("other_benchmarks", "Other benchmarks: pass@1",
                 "Benchmarks of the eval stages outside the paper's columns, from "
                 "eval/summary_<benchmark>.json (pass_at_k.1); no paper figure exists for them.",
                 cols, rows)


def all_tables(c: Collection) -> tuple[Table, ...]:
    other = other_benchmarks_table(c)
    return (main_table(c), table1(c), table2(c), diagnostics_table(c), funnel_table(c),
            *((other,) if other is not None else ()))
