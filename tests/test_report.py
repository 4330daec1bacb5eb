"""`int-jax report` (int_jax/eval/report/): run folders written here with the real record
classes and the stages' own summary writers (the eval stage's `write_summaries`, the
stats stage's `run`), with counts chosen by hand; every number of every rendered table
(Markdown and CSV) is checked against a value computed here from those counts, never
read back from the report's inputs. Missing stages read as the reason in the cell; the
HTML page holds every table and every plot as a data URI; the PNGs load."""

import ast
import base64
import csv
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numerics
import pytest
from ml_collections import ConfigDict
from PIL import Image

from int_jax.config_io import save_config
from int_jax.data.records import Continuation, EvalSample, Problem, Segment, SFTExample, write_records
from int_jax.eval import paper_figures
from int_jax.eval.report import report_from_folders
from int_jax.eval.report.write import write_report
from int_jax.stages import evaluate, stats

from test_stages_pipeline import ROOT, load_config

K = 8
# run folder -> benchmark -> [(samples, correct) per problem]
BASE = {
    "imo_answerbench": [(K, 2), (K, 0), (K, 8)],
    "hmmt_nov_2025": [(K, 1), (K, 0)],
    "amo_bench": [(K, 3), (K, 0), (K, 0), (K, 1)],
    "apex_shortlist": [(K, 0), (K, 0)],  # a real zero: shown as 0.0%, not as missing
    "train": [(K, 4), (K, 6)],
}
INT_RL = {"imo_answerbench": [(4, 1), (4, 2)], "amo_bench": [(4, 1)]}  # K=4: no pass@8
SFT_EVAL = {"train": [(K, 2), (K, 0), (K, 8)]}
SUFFIX_EVAL = {"train": [(K, 5), (K, 1)]}
MAIN = [("imo_answerbench", 1), ("hmmt_nov_2025", 1), ("amo_bench", 8), ("apex_shortlist", 8), ("train", 1)]

# The pipeline run `int`: stage counters as the stages write them, and continuations.
ROLLOUT = dict(problems=6, hard_problems=4, attempts=24, correct=6, failed=18)
PROPOSE = dict(attempts=18, skipped_context=2, proposals=32)
FILTER = dict(parsed=28, parsed_strict=25, parsed_repaired=3, rejected_no_block=3, rejected_unparsable=1,
              rejected_location_out_of_range=2, rejected_leaky=5, leaky_substring=5, leaky_normalized=3,
              kept=3)
# condition -> intervention -> correct of M continuations
M = 4
CONTINUED = {
    "intervention": {"i1": 2, "i2": 0, "i3": 4},
    "problem": {"i1": 0, "i2": 1, "i3": 0},
    "prefix": {"i1": 0, "i2": 0, "i3": 0},
    "original": {"i1": 1, "i2": 0, "i3": 0},
}
PROBLEM_OF = {"i1": "p1", "i2": "p1", "i3": "p2"}
SELECTED = ["i1", "i3"]  # >= 1 correct continuation under the intervention
DIAG = {"select": dict(nll=0.3125, entropy=0.5, tokens=1234), "reference": dict(nll=1.75, entropy=0.875, tokens=99)}
GRPO_ROWS = [{"step": s, "reward/mean": 0.1 * s, "reward/frac_all_wrong": 0.5 - 0.05 * s,
              "rollout/response_len_mean": 100.0 + s, "train/loss": 1.0} for s in range(1, 6)]


# -- writing the run folders ---------------------------------------------------------------


def _write_eval(run: Path, benches: dict, model_path: str = "") -> None:
    d = run / "eval"
    d.mkdir(parents=True)
    samples, problems = [], []
    for bench, counts in benches.items():
        for i, (n, c) in enumerate(counts):
            pid = f"{bench}-{i}"
            problems.append(Problem(id=pid, problem=f"{pid}?", answer="1", meta={"eval": {
                "benchmark": bench, "category": None, "gold_unreadable": None}}))
            samples += [EvalSample(problem_id=pid, benchmark=bench, sample_index=j, text="t",
                                   grade="correct" if j < c else "wrong", num_tokens=10 + j,
                                   finish_reason="stop") for j in range(n)]
    write_records(d / "samples.jsonl", samples)
    write_records(d / "problems.jsonl", problems)
    config = load_config("eval.py", "tiny")
    config.model.hf_path = model_path
    config.eval.k, config.eval.bootstrap = max(n for c in benches.values() for n, _ in c), 100
    save_config(config, d)
    evaluate.write_summaries(config, d)
    (d / "manifest.json").write_text(json.dumps({"stage": "eval"}))


def _manifest(run: Path, stage: str, counts: dict, **extra) -> None:
    (run / stage).mkdir(parents=True, exist_ok=True)
    (run / stage / "manifest.json").write_text(json.dumps({"stage": stage, "counts": counts, **extra}))


def _write_pipeline(root: Path) -> None:
    run = root / "int"
    _manifest(run, "rollout", {"rollout": ROLLOUT})
    _manifest(run, "propose", {"guided": {"guided": 16}, "propose": PROPOSE}, left_out={})
    _manifest(run, "filter", {"filter": FILTER})
    _manifest(run, "continue", {})
    conts = [Continuation(id=f"{iv}/{cond}", intervention_id=iv, problem_id=PROBLEM_OF[iv], condition=cond,
                          grades=["correct"] * c + ["wrong"] * (M - c), answers=[None] * M,
                          completion_tokens=[5] * M, finish_reasons=["stop"] * M)
             for cond, per in CONTINUED.items() for iv, c in per.items()]
    write_records(run / "continue" / "continuations.jsonl", conts)
    _manifest(run, "select", {"select": {"kept": len(SELECTED)}})
    write_records(run / "select" / "sft.jsonl", [
        SFTExample(id=f"{iv}/sft", problem_id=PROBLEM_OF[iv], messages=[{"role": "user", "content": "x"}],
                   segments=[Segment("intervention", "y")], intervention_id=iv) for iv in SELECTED])
    pipeline = load_config("int.py", "tiny")
    pipeline.run.root, pipeline.run.name = str(root), "int"
    save_config(pipeline, run / "select")  # select.require_correct: True
    stats.run(pipeline)


def _write_sft(folder: Path, ablation: str, train_path: Path) -> None:
    config = load_config("sft.py", "tiny" + (f",{ablation}" if ablation else ""))
    config.output_dir, config.data.train_path = str(folder), str(train_path)
    save_config(config, folder)
    (folder / "DONE").write_text('{"steps": 2}\n')


def _build(tmp: Path) -> None:
    runs = tmp / "runs"
    _write_eval(runs / "base", BASE)
    _write_pipeline(runs)
    _write_eval(runs / "int_rl", INT_RL)
    _write_eval(runs / "sft_eval", SFT_EVAL, model_path=str(tmp / "sft" / "int" / "hf"))
    _write_eval(runs / "sft_suffix_eval", SUFFIX_EVAL, model_path="sft/suffix/hf")  # relative
    (runs / "pending" / "rollout").mkdir(parents=True)  # started, nothing finished
    (runs / "late" / "eval").mkdir(parents=True)  # eval started, no manifest yet
    select = runs / "int" / "select" / "sft.jsonl"
    _write_sft(tmp / "sft" / "int", "", select)
    _write_sft(tmp / "sft" / "suffix", "suffix_cloning", select)
    _write_sft(tmp / "sft" / "ref", "", runs / "int" / "reference" / "sft.jsonl")
    diag = tmp / "diag"
    diag.mkdir()
    (diag / "diagnostics.json").write_text(json.dumps({
        str(runs / "int" / stage / "sft.jsonl"): {"all": d, "intervention": {**d, "nll": 9.0}}
        for stage, d in DIAG.items()}))
    save_config(load_config("diagnostics.py", "tiny"), diag)
    (tmp / "grpo" / "eval" / "step_2" / "eval").mkdir(parents=True)  # its held-out evals: no eval stage
    lines = [json.dumps(r) for r in GRPO_ROWS]
    lines.insert(2, json.dumps({**GRPO_ROWS[2], "reward/mean": -1.0}))  # killed after step 3; re-logged
    (tmp / "grpo" / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 6, "reward/me')  # torn tail


FOLDERS = ["runs", "sft/int", "sft/ref", "diag", "grpo"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    here = os.getcwd()
    os.chdir(tmp)  # paths in the report read relative to the working directory
    try:
        _build(tmp)
        report = report_from_folders(FOLDERS)
        write_report(report, "out")
    finally:
        os.chdir(here)
    return tmp, report, tmp / "out"


# -- reading the outputs back ---------------------------------------------------------------


def _md_rows(text: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    split = lambda ln: [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln)[1:-1]]
    head = split(lines[0])
    return [dict(zip(head, split(ln))) for ln in lines[2:]]


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _tables(out: Path, key: str) -> tuple[list[dict], list[dict]]:
    return _md_rows((out / f"{key}.md").read_text()), _csv_rows((out / f"{key}.csv").read_text())


def _pass_at_k(counts, k) -> float:
    return statistics.fmean(1 - math.comb(n - c, k) / math.comb(n, k) for n, c in counts)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _check_number(md: str, cv: str, value: float, kind: str = "rate") -> None:
    shown = {"rate": _pct(value), "count": str(value), "float": f"{value:.3f}"}[kind]
    assert md == shown, (md, shown)
    assert float(cv) == value, (cv, value)  # the CSV writes repr(float): it reads back exactly


def _by(rows, col, value):
    return next(r for r in rows if r[col] == value)


# The paper's figures as printed by their source (int_jax/eval/paper_figures.py names it): the
# main table and two Table 1 rows from the authors' project page, entropies from their figure.
PAGE = "https://intervention-training.github.io/"
PAPER_MAIN = {  # row -> (IMO, HMMT, AMO pass@8, Apex pass@8, D_train, Average), percent
    "Base": ("11.68", "41.61", "26.24", "20.79", "5.53", "21.17"),
    "+RL": ("23.46", "46.46", "35.21", "22.72", "13.47", "28.26"),
    "+Hint-guided RL": ("16.89", "47.27", "33.34", "22.23", "23.06", "28.56"),
    "+SFT(Ref)+RL": ("11.56", "27.45", "25.19", "20.51", "19.07", "20.76"),
    "+SFT(Reflect)+RL": ("15.53", "38.65", "36.72", "23.93", "23.19", "27.6"),
    "InT + RL": ("25.62", "49.77", "36.16", "28.22", "28.83", "33.72"),
}
PAPER_T1 = {"original": {"coverage": 29 / 334, "accuracy": "0.0713"},
            "intervention": {"coverage": 80 / 334, "accuracy": "1.56"}}
PAPER_ENTROPY = {"InT": 0.26, "base": 0.29, "reference solutions": 1.66, "SFT(Reflect)": 0.43}


def _check_paper_rate(md: str, cv: str, value, col: str, sources: str, where: str) -> None:
    """A paper rate: printed as published (percent), written as the fraction, sourced."""
    if isinstance(value, str):  # as printed: shown as printed, stored / 100
        assert md == f"{value}%", (md, value)
        # The stored fraction (a decimal literal: one rounding) against the printed percent
        # (a literal and a division: two): 3 float64 roundings, relative.
        want = float(value) / 100
        assert abs(float(cv) - want) <= 3 * numerics.U64 * want, (cv, value)
    else:  # a count ratio (coverage n / 334)
        assert md == f"{100 * value:g}%", (md, value)
        assert float(cv) == value, (cv, value)  # the same division, read back exactly
    assert f"{col}=paper: " in sources and where in sources, (col, sources)


# -- the tables -----------------------------------------------------------------------------


def test_main_table_numbers(made):
    _, _, out = made
    md, cv = _tables(out, "main")
    base_md, base_cv = _by(md, "experiment", "base"), _by(cv, "experiment", "base")
    titles = {"imo_answerbench": "IMO-AnswerBench", "hmmt_nov_2025": "HMMT Nov'25", "amo_bench": "AMO-Bench",
              "apex_shortlist": "Apex Shortlist", "train": "training set"}
    values = []
    for bench, k in MAIN:
        col = f"{titles[bench]} pass@{k}"
        v = _pass_at_k(BASE[bench], k)
        values.append(v)
        _check_number(base_md[col], base_cv[col], v)
        assert f"{col}=runs/base/eval/summary_{bench}.json: pass_at_k.{k}" in base_cv["sources"]
        _check_paper_rate(base_md[f"{col} (paper)"], base_cv[f"{col} (paper)"],
                          PAPER_MAIN["Base"][[b for b, _ in MAIN].index(bench)], f"{col} (paper)",
                          base_cv["sources"], PAGE)
    _check_paper_rate(base_md["average (paper)"], base_cv["average (paper)"], PAPER_MAIN["Base"][5],
                      "average (paper)", base_cv["sources"], "column 'Average'")
    assert base_md[titles["apex_shortlist"] + " pass@8"] == "0.0%"
    _check_number(base_md["average"], base_cv["average"], statistics.fmean(values))
    assert base_md["paper row"] == "Base" and base_cv["missing"] == ""

    rl_md, rl_cv = _by(md, "experiment", "int_rl"), _by(cv, "experiment", "int_rl")
    assert rl_md["paper row"] == "InT + RL"
    _check_paper_rate(rl_md["IMO-AnswerBench pass@1 (paper)"], rl_cv["IMO-AnswerBench pass@1 (paper)"],
                      PAPER_MAIN["InT + RL"][0], "IMO-AnswerBench pass@1 (paper)", rl_cv["sources"],
                      "row '+ InT + RL (Ours)', column 'IMO-AnswerBench'")
    _check_number(rl_md["IMO-AnswerBench pass@1"], rl_cv["IMO-AnswerBench pass@1"],
                  _pass_at_k(INT_RL["imo_answerbench"], 1))
    assert rl_md["AMO-Bench pass@8"].startswith("— (runs/int_rl/eval/summary_amo_bench.json has pass@k up to k=4")
    assert rl_cv["AMO-Bench pass@8"] == "" and "AMO-Bench pass@8: runs/int_rl/eval/summary_amo_bench.json" \
        in rl_cv["missing"]
    assert "no hmmt_nov_2025 summary in runs/int_rl/eval" in rl_md["HMMT Nov'25 pass@1"]
    assert rl_md["average"].startswith("— (needs all five columns; missing: HMMT Nov'25, AMO-Bench")

    sft_md, sft_cv = _by(md, "experiment", "sft_eval"), _by(cv, "experiment", "sft_eval")
    _check_number(sft_md["training set pass@1"], sft_cv["training set pass@1"], _pass_at_k(SFT_EVAL["train"], 1))
    for bench, k in MAIN[:4]:
        col = f"{titles[bench]} pass@{k}"
        assert sft_md[col] == f"— (no {bench} summary in runs/sft_eval/eval (benchmarks there: train))"
        assert sft_cv[col] == "" and f"{col}: no {bench} summary" in sft_cv["missing"]
    assert sft_md["paper row"].startswith("— (no paper row")
    # a run folder with data stages only is no experiment; one with an unfinished eval is
    assert {r["experiment"] for r in md} >= {"base", "int_rl", "sft_eval", "sft_suffix_eval", "late"}
    assert not {"int", "pending"} & {r["experiment"] for r in md}
    late = _by(md, "experiment", "late")
    assert late["IMO-AnswerBench pass@1"] == "— (the eval stage in runs/late has not finished (no eval/manifest.json))"
    # paper rows no folder stands for keep the paper's layout
    paper_cols = [f"{titles[b]} pass@{k} (paper)" for b, k in MAIN] + ["average (paper)"]
    for row in ("+RL", "+Hint-guided RL", "+SFT(Ref)+RL", "+SFT(Reflect)+RL"):
        r, r_cv = _by(md, "paper row", row), _by(cv, "paper row", row)
        assert r["experiment"].startswith("— (no run folder named")
        for col, printed in zip(paper_cols, PAPER_MAIN[row]):
            _check_paper_rate(r[col], r_cv[col], printed, col, r_cv["sources"], PAGE)
    assert len(md) == len(cv) == 5 + 4  # the GRPO output's eval/step_2/ is no experiment row


def test_table1_numbers(made):
    _, _, out = made
    md, cv = _tables(out, "table1")
    rows_md = [r for r in md if r["run"] == "int"]
    rows_cv = [r for r in cv if r["run"] == "int"]
    assert [r["conditioned on"] for r in rows_md] == [
        "x", "x + prefix", "x + prefix + original step", "x + prefix + intervention"]
    for r_md, r_cv, cond in zip(rows_md, rows_cv, ("problem", "prefix", "original", "intervention")):
        per = CONTINUED[cond]
        problems = {}
        for iv, c in per.items():
            problems[PROBLEM_OF[iv]] = problems.get(PROBLEM_OF[iv], 0) + c
        _check_number(r_md["interventions"], r_cv["interventions"], len(per), "count")
        _check_number(r_md["continuations"], r_cv["continuations"], M * len(per), "count")
        _check_number(r_md["accuracy"], r_cv["accuracy"], sum(per.values()) / (M * len(per)))
        _check_number(r_md["coverage (interventions)"], r_cv["coverage (interventions)"],
                      sum(c > 0 for c in per.values()) / len(per))
        _check_number(r_md["coverage (problems)"], r_cv["coverage (problems)"],
                      sum(c > 0 for c in problems.values()) / len(problems))
        if cond in PAPER_T1:  # the two rows the authors' page prints
            for key in ("accuracy", "coverage"):
                _check_paper_rate(r_md[f"{key} (paper)"], r_cv[f"{key} (paper)"], PAPER_T1[cond][key],
                                  f"{key} (paper)", r_cv["sources"], PAGE)
        else:
            assert r_md["accuracy (paper)"] == r_md["coverage (paper)"] == "not recorded"
        assert f"accuracy=runs/int/stats/stats.json: table1.{cond}.accuracy" in r_cv["sources"]
    assert [r["run"] for r in md] == ["int"] * 4 + ["pending"]  # folders with data stages
    pending_md, pending_cv = _by(md, "run", "pending"), _by(cv, "run", "pending")
    for col in ("interventions", "continuations", "accuracy", "coverage (interventions)", "coverage (problems)"):
        assert pending_md[col] == "— (no stats stage in runs/pending)" and pending_cv[col] == ""
        assert f"{col}: no stats stage in runs/pending" in pending_cv["missing"]


def test_funnel_numbers(made):
    _, _, out = made
    md, cv = _tables(out, "funnel")
    want = {
        "problems": ROLLOUT["problems"], "attempts": ROLLOUT["attempts"], "failed attempts": ROLLOUT["failed"],
        "proposals": PROPOSE["proposals"], "parsed": FILTER["parsed"],
        "not leaky (passed every filter)": PROPOSE["proposals"] - sum(
            v for k, v in FILTER.items() if k.startswith("rejected_")),
        "kept (first survivor per attempt)": FILTER["kept"],
        "verified (>= 1 correct continuation)": sum(c > 0 for c in CONTINUED["intervention"].values()),
        "SFT examples": len(SELECTED),
    }
    assert [r["step"] for r in md] == list(want)
    assert list(md[0]) == ["step", "int", "pending", "paper", "sources"]  # folders with data stages
    for r_md, r_cv in zip(md, cv):
        _check_number(r_md["int"], r_cv["int"], want[r_md["step"]], "count")
        assert r_md["pending"] == "— (no stats stage in runs/pending)" and r_cv["pending"] == ""
        assert r_md["paper"] == "not recorded"
    assert want["not leaky (passed every filter)"] == 21


def test_table2_numbers(made):
    _, report, out = made
    md, cv = _tables(out, "table2")
    assert [r["SFT variant"] for r in md] == [
        "InT", "SFT(Ref)", "InT with suffix cloning", "InT without prefix cloning", "InT without correctness filter"]
    for variant, run, counts in (("InT", "sft_eval", SFT_EVAL["train"]),
                                 ("InT with suffix cloning", "sft_suffix_eval", SUFFIX_EVAL["train"])):
        r_md, r_cv = _by(md, "SFT variant", variant), _by(cv, "SFT variant", variant)
        assert r_md["eval run"] == run
        _check_number(r_md["accuracy (pass@1)"], r_cv["accuracy (pass@1)"], _pass_at_k(counts, 1))
        _check_number(r_md["coverage"], r_cv["coverage"], sum(c > 0 for _, c in counts) / len(counts))
        _check_number(r_md["samples per problem"], r_cv["samples per problem"], K, "count")
        assert r_md["coverage (paper)"] == "not recorded"
    ref = _by(md, "SFT variant", "SFT(Ref)")
    assert ref["coverage"] == "— (no eval run among the folders given evaluated sft/ref/hf)"
    gone = _by(md, "SFT variant", "InT without prefix cloning")
    assert gone["accuracy (pass@1)"] == "— (no SFT output of this variant among the folders given)"
    # the suffix-cloning output was not given: found through its eval stage's model.hf_path
    assert any("read the SFT output sft/suffix" in n for n in report.notes)


def test_diagnostics_numbers(made):
    _, _, out = made
    md, cv = _tables(out, "diagnostics")
    assert [r["SFT set"] for r in md] == ["InT", "reference solutions", "base", "SFT(Reflect)"]
    for (stage, d), r_md, r_cv in zip(DIAG.items(), md, cv):
        assert r_md["file"] == f"runs/int/{stage}/sft.jsonl"
        _check_number(r_md["NLL"], r_cv["NLL"], d["nll"], "float")
        _check_number(r_md["entropy"], r_cv["entropy"], d["entropy"], "float")
        _check_number(r_md["tokens"], r_cv["tokens"], d["tokens"], "count")
        assert r_md["scored by"] == "random tiny (no checkpoint)"
    # the paper's figure gives next-token entropies (no NLL values): InT 0.26, base 0.29
    assert {name: figs["entropy"].value for name, figs in paper_figures.DIAGNOSTICS.items()} == PAPER_ENTROPY
    for r_md, r_cv in zip(md, cv):
        want = PAPER_ENTROPY[r_md["SFT set"]]
        assert r_md["entropy (paper)"] == f"{want:g}" and float(r_cv["entropy (paper)"]) == want
        assert "entropy (paper)=paper: the authors' figure of next-token entropy" in r_cv["sources"]
        assert r_md["NLL (paper)"] == r_cv["NLL (paper)"] == "not recorded"
    assert md[2]["NLL"] == "— (no diagnostics of a base SFT set among the folders given)"


def test_every_number_names_its_source_file(made):
    tmp, report, _ = made
    for table in report.tables:
        for row in table.rows:
            for col in table.columns:
                cell = table.cell(row, col)
                if isinstance(cell.value, (int, float)) and not col.paper:
                    assert cell.sources, (table.key, col.key)
                    for s in cell.sources:
                        assert (tmp / s.path).is_file(), (table.key, col.key, s)
                if isinstance(cell.value, (int, float)) and col.paper:
                    assert cell.paper  # a paper figure always says where it is from


# -- plots and the page ---------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.images, self.links, self.figure = [], {}, [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append(a.get("id"))
        elif tag == "figure":
            self.figure = a.get("id")
        elif tag == "img":
            self.images[self.figure] = a["src"]
        for key in ("src", "href"):
            if key in a and tag != "img":
                self.links.append(a[key])
        if tag in ("script", "link", "iframe"):
            self.links.append(tag)


def test_html_page_holds_every_table_and_plot(made):
    _, report, out = made
    page = _Page()
    page.feed((out / "report.html").read_text())
    assert page.tables == ["folders"] + [t.key for t in report.tables]
    drawn = [f.key for f in report.figures if f.drawn]
    assert sorted(page.images) == sorted(f"figure-{k}" for k in drawn)
    for key in drawn:
        src = page.images[f"figure-{key}"]
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (out / "plots" / f"{key}.png").read_bytes()
    assert all(link.startswith("#") for link in page.links), page.links  # nothing external
    assert set(drawn) == {"passk_imo_answerbench", "passk_hmmt_nov_2025", "passk_amo_bench",
                          "passk_apex_shortlist", "passk_train", "grpo_reward", "grpo_all_wrong",
                          "grpo_length", "funnel"}


def test_pngs_are_valid(made):
    _, report, out = made
    for f in report.figures:
        path = out / "plots" / f"{f.key}.png"
        assert path.exists() == f.drawn
        if f.drawn:
            with Image.open(path) as im:
                im.load()
                assert im.format == "PNG" and im.size[0] > 0 and im.size[1] > 0


def test_plot_data(made):
    _, report, _ = made
    figs = {f.key: f for f in report.figures}
    amo = {s.label: s for s in figs["passk_amo_bench"].series}
    assert set(amo) == {"base", "int_rl"} and amo["base"].x == (1, 2, 4, 8) and amo["int_rl"].x == (1, 2, 4)
    for k, y in zip(amo["base"].x, amo["base"].y):
        assert abs(y - _pass_at_k(BASE["amo_bench"], k)) <= numerics.mean_pass_at_k_tol(
            BASE["amo_bench"]), k
    assert all(lo <= y <= hi for lo, y, hi in zip(amo["base"].lo, amo["base"].y, amo["base"].hi))
    (reward,) = figs["grpo_reward"].series
    assert reward.x == (1, 2, 3, 4, 5)  # the re-logged step 3 replaces the first; the torn line is dropped
    assert reward.y == pytest.approx([0.1 * s for s in range(1, 6)])
    assert reward.label == "grpo (reward/mean)"
    assert figs["grpo_all_wrong"].series[0].y[0] == pytest.approx(0.45)
    assert figs["grpo_length"].series[0].y[-1] == pytest.approx(105.0)


def test_missing_grpo_and_stages_render_reasons(tmp_path):
    _write_eval(tmp_path / "only", {"train": [(2, 1)]})
    report = report_from_folders([tmp_path / "only"])
    write_report(report, tmp_path / "out")
    figs = {f.key: f for f in report.figures}
    for key in ("grpo_reward", "grpo_all_wrong", "grpo_length"):
        assert not figs[key].drawn and figs[key].reason.startswith("no GRPO run found")
    assert not figs["funnel"].drawn and not figs["passk_amo_bench"].drawn
    page = (tmp_path / "out" / "report.html").read_text()
    assert "no GRPO run found" in page and "no run folder holds an eval summary of amo_bench" in page
    md = _md_rows((tmp_path / "out" / "main.md").read_text())
    assert "needs all five columns" in md[0]["average"]


def test_cli_writes_the_report_without_importing_jax(made, tmp_path):
    tmp, _, out = made
    code = ("import sys\nfrom int_jax.cli import main\ntry:\n    main(['int-jax', 'report', *sys.argv[2:]])\n"
            "except SystemExit as e:\n    code = e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'torch'))\n"
            "open(sys.argv[1], 'w').write(repr((code, heavy)))\n")
    result = tmp_path / "result.txt"
    r = subprocess.run([sys.executable, "-c", code, str(result), *FOLDERS, "--out", str(tmp_path / "cli")],
                       cwd=tmp, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert ast.literal_eval(result.read_text()) == (0, [])
    assert "written: " in r.stdout
    for name in ("main.md", "table1.csv", "report.html", "plots/funnel.png"):
        assert (tmp_path / "cli" / name).is_file()
    assert (tmp_path / "cli" / "main.md").read_text() == (out / "main.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "int_jax.cli", "report", "nowhere"], cwd=tmp,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert bad.returncode == 2 and bad.stderr.strip() == "int-jax report: nowhere: no such run folder"


def test_stale_stats_are_noted_and_an_empty_table1_says_why(made, tmp_path):
    tmp, _, _ = made
    import shutil

    shutil.copytree(tmp / "runs" / "int", tmp_path / "int")
    _manifest(tmp_path / "int", "filter", {"filter": {**FILTER, "kept": 4}})  # filter rerun after stats
    stats_json = tmp_path / "int" / "stats" / "stats.json"
    data = json.loads(stats_json.read_text())
    stats_json.write_text(json.dumps({**data, "table1": {}}))  # nothing survived the filters
    report = report_from_folders([tmp_path / "int"])
    (note,) = report.notes
    assert "stats/stats.json describes the filter stage's manifest" in note and "rerun `int-jax stats`" in note
    (row,) = next(t for t in report.tables if t.key == "table1").rows
    assert row["accuracy"].missing and "no intervention survived the filters" in row["accuracy"].reason


def test_grpo_metric_names_fall_back_to_patterns():
    from int_jax.eval.report.figures import GRPO_METRICS, metric_name

    rows = {1: {"step": 1, "reward/all_wrong_share": 0.5, "rollout/response_len_max": 9,
                "rollout/len_mean_tokens": 7.0}}
    _, _, exact, patterns = GRPO_METRICS["grpo_all_wrong"]
    assert metric_name(rows, exact, patterns) == "reward/all_wrong_share"
    _, _, exact, patterns = GRPO_METRICS["grpo_length"]
    assert metric_name(rows, exact, patterns) == "rollout/len_mean_tokens"  # never the max
    _, _, exact, patterns = GRPO_METRICS["grpo_reward"]
    assert metric_name(rows, exact, patterns) is None
