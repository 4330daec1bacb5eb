"""`int-jax eval` (int_jax/stages/evaluate.py): the scripted sampler decides which
samples are right, so every figure of the summaries is checked against the records
(pass@k by a direct float64 binomial computation here, independent of passk.py); a
gold the grader cannot read is counted and listed, never scored; a SIGKILLed run,
rerun, writes what an uninterrupted one writes; and the tiny random Qwen3 runs the
stage end to end through the real JetStream engine, one prefill per problem."""

import collections
import json
import math
import statistics
import sys
from pathlib import Path

import numerics
import pytest
from ml_collections import ConfigDict

from int_jax.config_io import save_config
from int_jax.data.records import EvalSample, Problem, read_records
from int_jax.stages import base, demo, evaluate

from test_stages_pipeline import ROOT, load_config
from test_stages_resume import _kill_midway, _outputs

K, MAX_NEW = 4, 64
RIGHT, WRONG, NONE = "So \\boxed{%s}.", "It is \\boxed{%s}.", "I cannot finish."
UNREADABLE_GOLD = "\\mathcal{Q}\\#"
# alpha (Problem JSONL): problem -> (gold, the K samples the script writes).
ALPHA = {
    "a-half": ("5", [RIGHT % 5, WRONG % 4, NONE, RIGHT % 5]),
    "a-none": ("7", [WRONG % 8, WRONG % 6, NONE, WRONG % "x"]),
    "a-all": ("12", [RIGHT % 12] * K),
    "a-long": ("9", ["word " * 100 + RIGHT % 9, RIGHT % 9]),  # sample 0 and 2: cut at MAX_NEW
    "a-gold": (UNREADABLE_GOLD, [RIGHT % 3] * K),
}
# imo (the IMO-AnswerBench loader on its test fixture; categories Algebra / Number theory).
IMO = {
    "27x^3 = 12x": ["\\boxed{-\\frac{2}{3}, 0, \\frac{2}{3}}", WRONG % 0, WRONG % 0, WRONG % 0],
    "smallest prime greater than 7": [RIGHT % 11, RIGHT % 11, WRONG % 13, RIGHT % 11],
    "P(x)^2": [WRONG % "P(x)=x", NONE],
}


def _config(tmp: Path, name: str) -> ConfigDict:
    c = load_config("eval.py", "tiny")
    c.run.root, c.run.name, c.run.progress, c.run.fsync = str(tmp / "runs"), name, False, False
    c.sampler.kind, c.sampler.script = "scripted", str(tmp / "script.jsonl")
    c.eval.k, c.eval.max_new_tokens, c.eval.batch_size, c.eval.bootstrap = K, MAX_NEW, 1, 300
    c.eval.benchmarks = ConfigDict({
        "alpha": dict(path=str(tmp / "alpha.jsonl"), loader="", category="", limit=0),
        "imo": dict(path=str(ROOT / "tests/fixtures/imo_answerbench_sample.csv"),
                    loader="imo_answerbench", category="", limit=0),
    })
    return c


def _write_inputs(tmp: Path) -> None:
    problems = [{"id": pid, "problem": f"Problem {pid}: find the value.", "answer": gold}
                for pid, (gold, _) in ALPHA.items()]
    rules = [{"contains": f"Problem {pid}:", "outputs": outs} for pid, (_, outs) in ALPHA.items()]
    rules += [{"contains": key, "outputs": outs} for key, outs in IMO.items()]
    demo._write_jsonl(tmp / "alpha.jsonl", problems)
    demo._write_jsonl(tmp / "script.jsonl", rules)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    _write_inputs(tmp)
    config = _config(tmp, "straight")
    manifest = evaluate.run(config)
    d = base.stage_dir(config, "eval")
    summaries = {b: json.loads(evaluate.summary_path(d, b).read_text()) for b in ("alpha", "imo")}
    return config, manifest, summaries, read_records(d / "samples.jsonl", EvalSample)


def _direct_pass_at_k(counts: dict[str, tuple[int, int]], k: int) -> float:
    """Mean over problems of 1 - C(n-c, k) / C(n, k), in exact integers, then float64."""
    return sum(1 - math.comb(n - c, k) / math.comb(n, k) for n, c in counts.values()) / len(counts)


def _counts(samples, benchmark: str) -> dict[str, tuple[int, int]]:
    nc = collections.defaultdict(lambda: [0, 0])
    for s in samples:
        if s.benchmark == benchmark:
            nc[s.problem_id][0] += 1
            nc[s.problem_id][1] += s.grade == "correct"
    return {p: tuple(v) for p, v in nc.items()}


def test_summary_counts_equal_the_records(scripted):
    config, manifest, summaries, samples = scripted
    assert manifest["outputs"]["samples.jsonl"]["records"] == len(samples) == 8 * K
    assert manifest["outputs"]["problems.jsonl"]["records"] == 8
    for bench, n_problems in (("alpha", 5), ("imo", 3)):
        mine = [s for s in samples if s.benchmark == bench]
        s = summaries[bench]
        assert (s["problems"], s["samples"], s["samples_per_problem"]) == (n_problems, len(mine), K)
        assert sorted((x.problem_id, x.sample_index) for x in mine) == sorted(
            (p, j) for p in _counts(samples, bench) for j in range(K))  # none lost, none twice
        assert s["grades"] == dict(collections.Counter(x.grade for x in mine))
        assert s["truncated"] == sum(x.finish_reason == "length" for x in mine)
        assert s["truncation_rate"] == pytest.approx(s["truncated"] / len(mine))
        assert s["mean_response_tokens"] == pytest.approx(statistics.mean(x.num_tokens for x in mine))
        counts = manifest["counts"][bench]
        assert counts["samples"] == len(mine) and counts["problems"] == n_problems
        assert counts["correct"] == sum(x.grade == "correct" for x in mine)
    alpha = [s for s in samples if s.problem_id == "a-long"]
    assert [s.finish_reason for s in alpha] == ["length", "stop", "length", "stop"]
    assert all(s.num_tokens == MAX_NEW for s in alpha if s.finish_reason == "length")
    assert summaries["alpha"]["truncated"] == 2
    assert {s.grade for s in samples if s.problem_id == "a-half"} == {"correct", "wrong", "no_answer"}


def test_pass_at_k_equals_a_direct_computation_from_the_records(scripted):
    _, _, summaries, samples = scripted
    for bench, unscored in (("alpha", {"a-gold"}), ("imo", set())):
        counts = {p: nc for p, nc in _counts(samples, bench).items() if p not in unscored}
        s = summaries[bench]
        assert s["scored_problems"] == len(counts)
        assert list(s["pass_at_k"]) == ["1", "2", "4"]
        for k in (1, 2, 4):
            got, want = s["pass_at_k"][str(k)], _direct_pass_at_k(counts, k)
            assert abs(got - want) <= numerics.mean_pass_at_k_tol(counts), (k, got, want)
            lo, hi = s["ci"][str(k)]
            assert 0.0 <= lo <= hi <= 1.0
        assert s["pass_at_1"] == s["pass_at_k"]["1"]
        assert s["mean_at_k"] == pytest.approx(statistics.mean(c / n for n, c in counts.values()))
        assert s["coverage"] == pytest.approx(statistics.mean(c > 0 for _, c in counts.values()))
    # alpha by hand: 2/4, 0/4, 4/4, 2/4 correct (a-gold left out)
    assert summaries["alpha"]["pass_at_k"]["1"] == pytest.approx((0.5 + 0 + 1 + 0.5) / 4)
    assert summaries["alpha"]["coverage"] == pytest.approx(3 / 4)


def test_unreadable_gold_is_counted_and_listed_not_scored(scripted):
    config, manifest, summaries, samples = scripted
    s = summaries["alpha"]
    assert s["unscored_problems"] == 1 and s["scored_problems"] == 4
    (entry,) = s["unscored"]
    assert entry["id"] == "a-gold" and entry["answer"] == UNREADABLE_GOLD
    assert "cannot parse" in entry["reason"] and entry["samples"] == K
    assert summaries["imo"]["unscored_problems"] == 0
    assert manifest["counts"]["alpha"]["gold_unreadable"] == 1
    # its samples are still recorded, graded as the grader sees them
    assert [x.grade for x in samples if x.problem_id == "a-gold"] == ["unparsable"] * K
    d = base.stage_dir(config, "eval")
    seen = {p.id: p.meta["eval"] for p in read_records(d / "problems.jsonl", Problem)}
    assert seen["a-gold"]["gold_unreadable"] and not seen["a-half"]["gold_unreadable"]


@pytest.mark.parametrize("gold, readable", [
    ("55", True), ("\\boxed{-2, 2}", True), ("odd $n$", True), ("n \\equiv 3 \\pmod 4", True),
    ("1, 3, 5, \\ldots", True), ("(\\pm 1, \\pm 1)", True), ("The answer is \\boxed{7}.", True),
    (UNREADABLE_GOLD, False), ("x^{2} @@ y", False), ("1, \\ldots, \\mathcal{Q}\\#", False),
])
def test_gold_unreadable(gold, readable):
    assert (evaluate.gold_unreadable(gold) is None) == readable


def test_categories_from_the_benchmark(scripted):
    _, manifest, summaries, samples = scripted
    assert manifest["benchmarks"]["imo"]["category"] == "Category"
    assert "categories" not in summaries["alpha"]
    cats = summaries["imo"]["categories"]
    assert set(cats) == {"Algebra", "Number theory"}
    counts = _counts(samples, "imo")
    algebra = {p: nc for p, nc in counts.items() if "algebra" in p}
    assert cats["Algebra"]["problems"] == 2
    assert abs(cats["Algebra"]["pass_at_k"]["1"] - _direct_pass_at_k(algebra, 1)) <= \
        numerics.mean_pass_at_k_tol(algebra)
    assert cats["Number theory"]["pass_at_k"]["1"] == pytest.approx(3 / 4)


def test_finished_stage_is_skipped(scripted, capsys):
    config, manifest, _, _ = scripted
    d = base.stage_dir(config, "eval")
    before = _outputs(d)
    assert evaluate.run(config) == manifest
    assert "already complete" in capsys.readouterr().out
    assert _outputs(d) == before


def test_killed_mid_benchmark_and_rerun_loses_and_duplicates_nothing(scripted, tmp_path):
    config, manifest, summaries, _ = scripted
    killed = config.copy_and_resolve_references()
    killed.run.name, killed.sampler.delay_s = "killed", 0.3  # delay_s: not in the fingerprint
    saved = save_config(killed, tmp_path)
    d = base.stage_dir(killed, "eval")
    code = ("import sys; from int_jax.config_io import load_saved_config; "
            "from int_jax.stages import evaluate; evaluate.run(load_saved_config(sys.argv[1]))")
    # alpha (5 problems, one per commit) comes first: the kill lands inside it.
    _kill_midway([sys.executable, "-c", code, str(saved)], d, after_commits=2, total=8)
    killed.sampler.delay_s = 0.0
    resumed = evaluate.run(killed)
    straight = base.stage_dir(config, "eval")
    assert _outputs(d) == _outputs(straight)
    assert resumed["counts"] == manifest["counts"] and resumed["outputs"] == manifest["outputs"]
    for b, s in summaries.items():
        assert json.loads(evaluate.summary_path(d, b).read_text()) == s


def test_config_errors_name_the_setting(tmp_path):
    c = _config(tmp_path, "bad")
    c.eval.benchmarks.alpha.path = str(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match=r"config\.eval\.benchmarks\.alpha\.path"):
        evaluate.run(c)
    _write_inputs(tmp_path)
    c.eval.benchmarks.alpha.path = str(tmp_path / "alpha.jsonl")
    c.eval.benchmarks.alpha.loader = "nope"
    with pytest.raises(ValueError, match=r"config\.eval\.benchmarks\.alpha\.loader='nope'"):
        evaluate.run(c)
    c.eval.benchmarks.alpha.loader = ""
    c.eval.ks = (1, 8)
    with pytest.raises(ValueError, match=r"config\.eval\.ks"):
        evaluate.run(c)
    assert not base.stage_dir(c, "eval").exists()  # nothing written before the checks pass


def test_tiny_model_through_the_engine(tmp_path):
    """K samples of each problem share one prefill: the engine prefills each prompt
    once and reuses it for the other K - 1 requests."""
    c = load_config("eval.py", "tiny")
    c.run.root, c.run.name, c.run.progress, c.run.fsync = str(tmp_path / "runs"), "e2e", False, False
    problems = tmp_path / "problems.jsonl"
    demo._write_jsonl(problems, demo.PROBLEMS[:2])
    c.eval.benchmarks.demo.path = str(problems)
    c.eval.k, c.eval.max_new_tokens, c.eval.batch_size, c.eval.bootstrap = 3, 6, 2, 50
    c.sampler.buckets, c.sampler.max_len, c.sampler.max_prefill_length = (64,), 128, 64
    manifest = evaluate.run(c)
    d = base.stage_dir(c, "eval")
    samples = read_records(d / "samples.jsonl", EvalSample)
    summary = json.loads(evaluate.summary_path(d, "demo").read_text())
    assert len(samples) == summary["samples"] == 6 and summary["problems"] == 2
    assert all(s.finish_reason in ("stop", "length") and 1 <= s.num_tokens <= 6 for s in samples)
    assert summary["grades"] == dict(collections.Counter(s.grade for s in samples))
    counts = _counts(samples, "demo")
    assert abs(summary["pass_at_k"]["1"] - _direct_pass_at_k(counts, 1)) <= \
        numerics.mean_pass_at_k_tol(counts)
    assert manifest["prefill"] == {"prompts_prefilled": 2, "prefills_reused": 4}
