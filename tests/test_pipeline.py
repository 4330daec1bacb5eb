"""`int-jax pipeline` and the experiment configs (configs/experiments/): every row loads
for both models with its paper cell's deltas, the stage configs chain through one run
folder, reuse links another row's finished stages, and the tiny `int_rl` row runs end
to end through the CLI, is SIGKILLed mid-pipeline and rerun to the same outputs, and
the report over its run folder counts what its records hold."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from int_jax.config_io import import_config, load_config_file
from int_jax.data.records import (Continuation, EvalSample, Intervention, Problem, Proposal,
                                  Rollout, SFTExample, read_records)
from int_jax.stages import base, demo, pipeline

from test_stages_resume import _kill_midway

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "configs" / "experiments"
ROWS = ("base", "rl", "hint_rl", "sft_ref_rl", "sft_reflect_rl", "int_rl", "int_sft", "int_no_prefix",
        "int_with_suffix", "int_no_correctness_filter")
INT_JAX = str(Path(sys.executable).with_name("int-jax"))


def experiment(row: str, arg: str = "tiny"):
    return load_config_file(EXPERIMENTS / f"{row}.py", arg)


# -- the configs -------------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["qwen3_4b_instruct_2507", "tiny"])
def test_every_row_loads_with_its_paper_cell(arg):
    configs = {row: experiment(row, arg) for row in ROWS}
    for row, c in configs.items():
        assert c.experiment.row == row and c.experiment.model == arg and c.experiment.cell
        stages = tuple(c.experiment.stages)
        assert list(stages) == sorted(stages, key=pipeline.ORDER.index), row
        assert stages[-1] == "eval"
        assert c.sft.model.preset == c.int.model.preset == c.grpo.model.preset == arg
    w = {row: c.sft.data.weights for row, c in configs.items()}
    assert (w["int_rl"].prefix, w["int_rl"].suffix) == (1.0, 0.0)
    assert w["int_no_prefix"].prefix == 0.0 and w["int_with_suffix"].suffix == 1.0
    assert [r for r, c in configs.items() if not c.int.select.require_correct] == \
        ["int_no_correctness_filter"]
    assert [r for r, c in configs.items() if c.grpo.hint.mode != "off"] == ["hint_rl"]
    assert [r for r, c in configs.items() if "grpo" in c.experiment.stages] == \
        ["rl", "hint_rl", "sft_ref_rl", "sft_reflect_rl", "int_rl"]
    assert configs["sft_ref_rl"].experiment.sft_set == "reference"
    assert configs["sft_reflect_rl"].experiment.sft_set == "reflect"
    if arg != "tiny":  # the paper's values, from the stage config files
        c = configs["int_rl"]
        assert (c.sft.optim.lr, c.sft.train.epochs, c.sft.train.global_batch) == (1e-6, 4, 64)
        assert (c.grpo.grpo.n, c.grpo.grpo.prompts_per_step, c.grpo.train.steps) == (8, 32, 400)
        assert (c.eval.eval.k, c.int.rollout.n, c.int.continuation.m) == (128, 4, 32)
        assert c.workdir == "runs/int_rl"


def test_shared_module_is_imported_once():
    """common.py comes in by import: one module object however many rows load it."""
    a = load_config_file(EXPERIMENTS / "rl.py", "tiny")
    b = load_config_file(EXPERIMENTS / "int_rl.py", "tiny")
    assert a.int.to_dict() == b.int.to_dict()
    mods = [m for name, m in sys.modules.items() if name.endswith(".experiments.common")]
    assert len(mods) == 1


def test_config_files_load_each_other_by_import(monkeypatch):
    """demo.py, eval.py and grpo.py reach configs/int.py (and grpo.py eval.py) through
    `import_config`, as the experiment rows reach common.py: the one imported module,
    never a copy of the file executed by path."""
    calls = []
    for name in ("int", "eval"):
        module = import_config(name, ROOT / "configs")
        real = module.get_config
        monkeypatch.setattr(module, "get_config",
                            lambda arg, name=name, real=real: calls.append((name, arg)) or real(arg))
    for file, arg in (("demo.py", "scripted"), ("eval.py", "tiny"), ("grpo.py", "release")):
        load_config_file(ROOT / "configs" / file, arg)
    assert calls == [("int", "tiny"), ("int", "tiny"), ("eval", "paper"), ("int", "paper")]


def test_stage_configs_chain_through_the_run_folder(tmp_path):
    c = experiment("int_rl")
    c.workdir = str(tmp_path / "runs" / "int_rl")
    c.base_model = "/models/base"
    c.problems.train = "/data/hard.jsonl"
    s = pipeline.stage_configs(c)
    w = tmp_path / "runs" / "int_rl"
    assert tuple(s) == ("rollout", "propose", "filter", "continue", "select", "stats", "sft", "grpo",
                        "eval")
    assert (s["rollout"].run.root, s["rollout"].run.name) == (str(w.parent), "int_rl")
    assert s["rollout"].data.problems == "/data/hard.jsonl"
    assert s["rollout"].model.hf_path == s["sft"].model.hf_path == "/models/base"
    assert s["sft"].data.train_path == str(w / "select" / "sft.jsonl")
    assert s["sft"].output_dir == str(w / "sft")
    assert s["grpo"].model.hf_path == str(w / "sft" / "hf") and s["grpo"].output_dir == str(w / "grpo")
    assert s["grpo"].data.problems == "/data/hard.jsonl"
    assert s["eval"].model.hf_path == str(w / "grpo" / "hf")
    assert s["eval"].eval.benchmarks.train.path == "/data/hard.jsonl"

    b = experiment("base")
    b.base_model = "/models/base"
    assert tuple(pipeline.stage_configs(b)) == ("eval",)
    assert pipeline.stage_configs(b)["eval"].model.hf_path == "/models/base"

    h = experiment("sft_ref_rl")
    h.workdir, h.hard.pool = str(w), "/data/pool.jsonl"
    s = pipeline.stage_configs(h)
    assert tuple(s)[:2] == ("hard", "rollout")
    assert (s["hard"].data.problems, s["hard"].rollout.n, s["hard"].rollout.select_hard) == \
        ("/data/pool.jsonl", 4, True)
    assert Path(s["hard"].run.root) / s["hard"].run.name == w / "hard"
    assert s["rollout"].data.problems == s["grpo"].data.problems == str(w / "hard/rollout/hard.jsonl")
    assert s["sft"].data.train_path == str(w / "reference" / "sft.jsonl")

    # The row's seed shifts every stage's own seed (another run of the whole row).
    own = {n: (cfg.seed if n != "sft" else (cfg.data.seed, cfg.train.seed))
           for n, cfg in pipeline.stage_configs(experiment("int_rl")).items()}
    c.seed = 2
    s = pipeline.stage_configs(c)
    for stage in ("rollout", "select", "grpo", "eval"):
        assert s[stage].seed == own[stage] + 2, stage
    assert (s["sft"].data.seed, s["sft"].train.seed) == (own["sft"][0] + 2, own["sft"][1] + 2)

    bad = experiment("int_rl")
    bad.experiment.stages = ("sft", "rollout")
    with pytest.raises(ValueError, match="out of order"):
        pipeline.stage_configs(bad)


def test_reuse_links_the_stage_and_the_data_stages_before_it(tmp_path):
    other = tmp_path / "runs" / "int_rl"
    for stage in ("rollout", "propose", "filter", "continue", "select"):
        (other / stage).mkdir(parents=True)
        (other / stage / base.MANIFEST).write_text("{}")
    c = experiment("int_no_prefix")
    c.workdir = str(tmp_path / "runs" / "int_no_prefix")
    c.reuse.select = str(other)
    stages = tuple(pipeline.stage_configs(c))
    sources = pipeline.reused(c, stages)
    assert sources == {s: other / s for s in ("rollout", "propose", "filter", "continue", "select")}
    work = Path(c.workdir)
    for stage, source in sources.items():
        pipeline.link(work / stage, source)
        pipeline.link(work / stage, source)  # again: a no-op
        assert (work / stage).resolve() == source.resolve()
    with pytest.raises(base.StageError, match="not a finished stage"):
        pipeline.link(work / "sft", other / "sft")
    (work / "stats").mkdir()
    (other / "stats").mkdir()
    (other / "stats" / base.MANIFEST).write_text("{}")
    with pytest.raises(base.StageError, match="this row ran that stage itself"):
        pipeline.link(work / "stats", other / "stats")


# -- end to end --------------------------------------------------------------------------


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")


def _cli(tmp: Path, row: str, workdir: Path, *extra: str) -> list[str]:
    return [INT_JAX, "pipeline", f"--config=configs/experiments/{row}.py:tiny",
            f"--config.workdir={workdir}", f"--config.problems.train={tmp / 'problems.jsonl'}",
            f"--config.int.sampler.script={tmp / 'script.jsonl'}", "--config.int.run.progress=False",
            "--config.int.run.fsync=False", "--config.sft.train.progress=False",
            "--config.grpo.train.progress=False", "--config.grpo.train.steps=1",
            "--config.eval.eval.benchmarks.train.limit=3", *extra]


def _run(cmd: list[str]) -> str:
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


DATA_STAGES = ("rollout", "propose", "filter", "continue", "select", "eval")


def _outputs(work: Path) -> dict[str, bytes]:
    """What a run folder holds that must not depend on how it got there."""
    out = {}
    for stage in DATA_STAGES:
        for p in sorted((work / stage).glob("*.jsonl")):
            if p.name != base.LEDGER:
                out[f"{stage}/{p.name}"] = p.read_bytes()
        for p in sorted((work / stage).glob("summary_*.json")):
            out[f"{stage}/{p.name}"] = p.read_bytes()
    for stage in ("sft", "grpo"):
        out[f"{stage}/hf"] = (work / stage / "hf" / "model.safetensors").read_bytes()
        out[f"{stage}/DONE"] = (work / stage / "DONE").read_bytes()
    stats = json.loads((work / "stats" / "stats.json").read_text())
    out["stats"] = json.dumps([stats["counts"], stats["table1"]], sort_keys=True).encode()
    return out


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _check_report(work: Path, out: Path) -> None:
    _run([INT_JAX, "report", str(work), "--out", str(out)])
    for name in ("report.html", "main.md", "funnel.csv", "table1.csv"):
        assert (out / name).is_file(), name
    funnel = {r["step"]: r[work.name] for r in _csv(out / "funnel.csv")}
    rollouts = read_records(work / "rollout" / "rollouts.jsonl", Rollout)
    assert int(funnel["problems"]) == len(read_records(work / "rollout" / "problems.jsonl", Problem))
    assert int(funnel["attempts"]) == len(rollouts)
    assert int(funnel["failed attempts"]) == sum(not r.correct for r in rollouts)
    assert int(funnel["proposals"]) == len(read_records(work / "propose" / "proposals.jsonl", Proposal))
    kept = read_records(work / "filter" / "interventions.jsonl", Intervention)
    assert int(funnel["kept (first survivor per attempt)"]) == len(kept)
    conts = read_records(work / "continue" / "continuations.jsonl", Continuation)
    verified = {c.intervention_id for c in conts
                if c.condition == "intervention" and "correct" in c.grades}
    assert int(funnel["verified (>= 1 correct continuation)"]) == len(verified)
    sft = read_records(work / "select" / "sft.jsonl", SFTExample)
    assert int(funnel["SFT examples"]) == len(sft) > 0
    table1 = {r["conditioned on"]: r for r in _csv(out / "table1.csv")}
    mine = [c for c in conts if c.condition == "intervention"]
    row = table1["x + prefix + intervention"]
    assert int(row["interventions"]) == len(mine)
    assert int(row["continuations"]) == sum(len(c.grades) for c in mine)
    assert float(row["accuracy"]) == pytest.approx(
        sum(g == "correct" for c in mine for g in c.grades) / sum(len(c.grades) for c in mine))
    samples = read_records(work / "eval" / "samples.jsonl", EvalSample)
    per_problem = {}
    for s in samples:
        per_problem.setdefault(s.problem_id, []).append(s.grade == "correct")
    main = {r["experiment"]: r for r in _csv(out / "main.csv")}
    assert float(main[work.name]["training set pass@1"]) == pytest.approx(
        sum(sum(v) / len(v) for v in per_problem.values()) / len(per_problem))


@pytest.fixture(scope="module")
def finished_row(tmp_path_factory):
    """The tiny int_rl row run once, uninterrupted: (tmp folder, its run folder)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    demo._write_jsonl(tmp / "problems.jsonl", demo.PROBLEMS)
    demo._write_jsonl(tmp / "script.jsonl", demo.script_rules())
    straight = tmp / "a" / "int_rl"
    _run(_cli(tmp, "int_rl", straight))
    return tmp, straight


@pytest.mark.slow
def test_tiny_row_end_to_end_killed_and_rerun(finished_row):
    tmp, straight = finished_row
    killed = tmp / "b" / "int_rl"
    for path in ("pipeline_config.json", "pipeline.jsonl", "pipeline.log", "sft/checkpoints",
                 "sft/metrics.jsonl", "grpo/checkpoints", "grpo/metrics.jsonl", "eval/manifest.json",
                 "stats/stats.md", "select/run_config.json"):
        assert (straight / path).exists(), path

    # SIGKILL inside the continue stage (a throttle makes it slow; delay_s is not a setting
    # of the outputs), then the same command without it.
    # 6 interventions in batches of 2: 3 commits; the kill lands after the first.
    _kill_midway(_cli(tmp, "int_rl", killed, "--config.int.sampler.delay_s=0.3"),
                 killed / "continue", after_commits=1, total=3)
    assert (killed / "filter" / base.MANIFEST).exists()
    assert not (killed / "continue" / base.MANIFEST).exists() and not (killed / "sft").exists()
    _run(_cli(tmp, "int_rl", killed))
    assert _outputs(killed) == _outputs(straight)
    events = [json.loads(line) for line in (killed / "pipeline.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in events if e["event"] == "skipped"] == ["rollout", "propose", "filter"]

    # Finished: a rerun skips every stage and changes nothing.
    before = _outputs(killed)
    out = _run(_cli(tmp, "int_rl", killed))
    assert _outputs(killed) == before
    for stage in ("rollout", "propose", "filter", "continue", "select", "sft", "grpo", "eval"):
        assert f"  {stage:<10} skipped" in out, stage

    _check_report(killed, tmp / "report")


@pytest.mark.slow
def test_a_row_reuses_another_rows_finished_stages(finished_row):
    """int_sft takes int_rl's finished SFT (and the data stages before it): only stats
    and eval run in its folder, eval on the linked checkpoint."""
    tmp, straight = finished_row
    int_sft = tmp / "a" / "int_sft"
    out = _run(_cli(tmp, "int_sft", int_sft, f"--config.reuse.sft={straight}"))
    for stage in ("rollout", "propose", "filter", "continue", "select", "sft"):
        assert f"  {stage:<10} reused" in out and (int_sft / stage).is_symlink(), stage
    assert not (int_sft / "stats").is_symlink() and (int_sft / "eval" / base.MANIFEST).exists()
    assert json.loads((int_sft / "eval" / "run_config.json").read_text())["model"]["hf_path"] == \
        str(int_sft / "sft" / "hf")
    # A row whose settings differ from the reused stage's is refused, naming the folder.
    r = subprocess.run(_cli(tmp, "int_sft", tmp / "c" / "int_sft", f"--config.reuse.sft={straight}",
                            "--config.sft.optim.lr=0.5"),
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "finished with other settings" in r.stderr, r.stderr[-2000:]
