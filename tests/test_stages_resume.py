"""Kill-and-resume: a stage SIGKILLed at any point and run again writes exactly what
an uninterrupted run writes (no record lost, none duplicated)."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ml_collections import ConfigDict

from int_jax.data.records import Record
from int_jax.stages import base, continuation, demo, filter as filter_stage, propose, rollout
from int_jax.stages.base import Item, ItemResult, StageRun

from test_stages_pipeline import ROOT, scripted_config

INT_JAX = str(Path(sys.executable).with_name("int-jax"))


def _outputs(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.jsonl")) if p.name != base.LEDGER}


def _ledger_lines(directory: Path) -> int:
    path = directory / base.LEDGER
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _cli(stage: str, config: ConfigDict, **overrides) -> list[str]:
    flat = {"run.root": config.run.root, "run.name": config.run.name, "run.progress": False,
            "run.fsync": False, "data.problems": config.data.problems, "sampler.kind": "scripted",
            "sampler.script": config.sampler.script, **overrides}
    for section in ("rollout", "propose", "continuation", "reflect"):
        flat[f"{section}.max_new_tokens"] = 256
    flat["propose.guided_max_new_tokens"] = 256
    flat["propose.context_limit"] = flat["reflect.context_limit"] = 4096
    return [INT_JAX, stage, "--config=configs/int.py:tiny"] + [f"--config.{k}={v}" for k, v in flat.items()]


def _kill_midway(cmd: list[str], stage_dir: Path, after_commits: int, total: int,
                 env: dict | None = None):
    """Run `cmd`, SIGKILL it once `after_commits` batches are committed. `env`: extra
    variables; without it the child sees one CPU device (the scripted sampler needs no more)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env if env is not None else {"XLA_FLAGS": ""}))
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty child never blocks
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 180
        try:
            while _ledger_lines(stage_dir) < after_commits:
                if proc.poll() is not None:
                    err.seek(0)
                    raise AssertionError(f"stage exited early ({proc.returncode}): "
                                         f"{err.read().decode(errors='replace')[-2000:]}")
                assert time.monotonic() < deadline, "no commit within 180 s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    committed = _ledger_lines(stage_dir)
    assert after_commits <= committed < total, "the kill must land mid-stage"
    assert not (stage_dir / base.MANIFEST).exists()


def _config(tmp_path, name, copies):
    c = scripted_config(tmp_path, name)
    c.rollout.batch_size = 1
    c.continuation.batch_size = 1
    problems = [dict(p, id=f"{p['id']}-{i}") for i in range(copies) for p in demo.PROBLEMS]
    demo._write_jsonl(Path(c.data.problems), problems)
    demo._write_jsonl(Path(c.sampler.script), demo.script_rules())
    return c


def test_rollout_killed_and_resumed_equals_uninterrupted(tmp_path):
    straight = _config(tmp_path, "straight", copies=2)
    rollout.run(straight)
    killed = straight.copy_and_resolve_references()
    killed.run.name = "killed"
    d = base.stage_dir(killed, "rollout")
    _kill_midway(_cli("rollout", killed, **{"sampler.delay_s": 0.4, "rollout.batch_size": 1}),
                 d, after_commits=2, total=10)
    resumed = rollout.run(killed)
    assert _outputs(d) == _outputs(base.stage_dir(straight, "rollout"))
    ref = json.loads((base.stage_dir(straight, "rollout") / base.MANIFEST).read_text())
    assert resumed["counts"] == ref["counts"] and resumed["outputs"] == ref["outputs"]
    assert resumed["counts"]["rollout"]["attempts"] == 20  # 10 problems x n=2, none twice


def test_continue_killed_and_resumed_equals_uninterrupted(tmp_path):
    straight = _config(tmp_path, "straight", copies=1)
    for module in (rollout, propose, filter_stage):
        module.run(straight)
    killed = straight.copy_and_resolve_references()
    killed.run.name = "killed"
    for stage in ("rollout", "propose", "filter"):
        shutil.copytree(base.stage_dir(straight, stage), base.stage_dir(killed, stage))
    continuation.run(straight)
    d = base.stage_dir(killed, "continue")
    _kill_midway(_cli("continue", killed, **{"sampler.delay_s": 0.1, "continuation.batch_size": 1}),
                 d, after_commits=2, total=6)
    resumed = continuation.run(killed)
    assert _outputs(d) == _outputs(base.stage_dir(straight, "continue"))
    assert resumed["counts"]["continue"]["interventions"] == 6


# -- the recovery mechanism itself, at the byte level -------------------------------


@dataclasses.dataclass
class Seeded(Record):
    id: str
    seed: int


@dataclasses.dataclass
class Numbered(Record):
    id: str
    j: int


def _toy_stage(tmp_path):
    c = ConfigDict(dict(run=dict(root=str(tmp_path), name="toy", progress=False, fsync=False),
                        toy=dict(k=1)))
    return c


def _toy_run(config, crash_after=None, record=None):
    stage = StageRun(config, "toy", {"a.jsonl": Seeded, "b.jsonl": Numbered}, ("toy",))
    stage.begin()
    calls = []

    def process(batch, seed):
        calls.append([it.key for it in batch])
        if crash_after is not None and len(calls) > crash_after:
            raise KeyboardInterrupt
        return [ItemResult({"a.jsonl": [record or Seeded(it.key, seed)],
                            "b.jsonl": [Numbered(it.key, j) for j in range(int(it.key) % 3)]},
                           counters={"items": 1}) for it in batch]

    stage.run_pass("p", [Item(str(i)) for i in range(10)], process, batch_size=3)
    return stage, calls


def test_torn_output_and_torn_ledger_are_rolled_back(tmp_path):
    ref_cfg = _toy_stage(tmp_path / "ref")
    ref, _ = _toy_run(ref_cfg)
    ref.finish()
    cfg = _toy_stage(tmp_path / "crash")
    with pytest.raises(KeyboardInterrupt):
        _toy_run(cfg, crash_after=2)
    d = base.stage_dir(cfg, "toy")
    # Simulate dying inside the next commit: half a record in each output, half a ledger line.
    with open(d / "a.jsonl", "ab") as f:
        f.write(b'{"id":"6","se')
    with open(d / "b.jsonl", "ab") as f:
        f.write(b'{"id":"6","j":0}\n{"id')
    with open(d / base.LEDGER, "ab") as f:
        f.write(b'{"pass":"p","keys":["6"')
    stage, calls = _toy_run(cfg)
    assert calls == [["6", "7", "8"], ["9"]]  # only unfinished batches are redone
    manifest = stage.finish()
    assert _outputs(d) == _outputs(base.stage_dir(ref_cfg, "toy"))
    assert manifest["counts"] == {"p": {"items": 10}}


def test_partial_run_with_another_config_is_refused(tmp_path):
    cfg = _toy_stage(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _toy_run(cfg, crash_after=1)
    cfg.toy.k = 2
    with pytest.raises(base.StageError, match="different config"):
        _toy_run(cfg)


def test_output_shorter_than_ledger_is_an_error(tmp_path):
    cfg = _toy_stage(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        _toy_run(cfg, crash_after=2)
    a = base.stage_dir(cfg, "toy") / "a.jsonl"
    a.write_bytes(a.read_bytes()[:5])
    with pytest.raises(base.StageError, match="changed outside the pipeline"):
        _toy_run(cfg)


def test_an_output_holds_only_its_declared_record_type(tmp_path):
    cfg = _toy_stage(tmp_path)
    with pytest.raises(base.StageError, match="a.jsonl holds Seeded records, got Numbered"):
        _toy_run(cfg, record=Numbered("0", 1))
    assert (base.stage_dir(cfg, "toy") / "a.jsonl").read_bytes() == b""  # nothing committed
