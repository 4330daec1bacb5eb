"""`int-jax grpo` SIGKILLed while sampling, during an update and during a checkpoint
save, resumed each time: the final train state (params, both Adam moments, step, rng)
equals an uninterrupted run's bit for bit, and every step trained on the same batch.

The runs go through the real command line (tests/grpo_kill_child.py: the real engine
on a 1-layer, 8-wide Qwen3 with the real vocabulary and chat template, a verifiable
reward instead of the grader), each in its own process with one CPU device. The
uninterrupted run also evaluates every 2 steps (the eval stage through the same
engine), which must change nothing it trains.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from hf_checkpoints import make_hf_checkpoint
from int_jax.stages import demo
from int_jax.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("grpo_inputs")
    make_hf_checkpoint(d / "hf", vocab_size=151936, hidden_size=8, intermediate_size=16,
                       num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4,
                       tie_word_embeddings=True)
    demo._write_jsonl(d / "problems.jsonl", demo.PROBLEMS)
    return d


def _cmd(mode: str, step: int, out: Path, inputs: Path, **extra) -> list[str]:
    flags = {"model.hf_path": inputs / "hf", "data.problems": inputs / "problems.jsonl",
             "output_dir": out, "grpo.n": 4, "grpo.prompts_per_step": 2,
             "grpo.prompts_per_update": 1, "grpo.max_new_tokens": 8, "grpo.max_prompt_len": 56,
             "sampler.max_len": 64, "sampler.max_prefill_length": 56,
             "train.steps": STEPS, "train.save_every": 1,
             "train.keep": STEPS + 1, "train.progress": False, "train.export_hf": False,
             "optim.lr": 1e-3, "run.progress": False, "run.fsync": False, **extra}
    return [sys.executable, str(ROOT / "tests" / "grpo_kill_child.py"), mode, str(step),
            "--config=configs/grpo.py:tiny", *(f"--config.{k}={v}" for k, v in flags.items())]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT / "tests"))
    env.pop("XLA_FLAGS", None)  # one device, as a user's run would have
    return env


def _committed(out: Path) -> list[int]:
    d = out / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def _run(cmd, expect_kill: bool):
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty child never blocks
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                              timeout=600)
        log.seek(0)
        text = log.read().decode(errors="replace")
    want = -signal.SIGKILL if expect_kill else 0
    assert proc.returncode == want, f"exit {proc.returncode}, wanted {want}:\n{text[-3000:]}"


def _state(out: Path):
    return ocp.StandardCheckpointer().restore(out / "checkpoints" / str(STEPS) / "state")


@pytest.mark.slow
def test_killed_while_sampling_updating_and_saving_resumes_bitwise(tmp_path, inputs):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    eval_flags = {"train.eval_every": 2, "eval.k": 2, "eval.max_new_tokens": 8,
                  "eval.benchmarks.demo.path": inputs / "problems.jsonl"}
    ref_log = open(tmp_path / "straight.log", "w+")
    ref = subprocess.Popen(_cmd("none", 0, straight, inputs, **eval_flags), cwd=ROOT, env=_env(),
                           stdout=ref_log, stderr=subprocess.STDOUT)
    try:
        _run(_cmd("sample", 1, killed, inputs), expect_kill=True)  # in step 2's decoding
        assert _committed(killed) in ([], [1])
        _run(_cmd("update", 2, killed, inputs), expect_kill=True)  # step 3, 2nd update
        assert _committed(killed)[-1] == 2
        _run(_cmd("save", 3, killed, inputs), expect_kill=True)  # checkpoint 3 half written
        assert _committed(killed)[-1] == 2, "the kill landed after the save had finished"
        _run(_cmd("none", 0, killed, inputs), expect_kill=False)
        ref.wait(timeout=600)
        ref_log.seek(0)
        assert ref.returncode == 0, ref_log.read()[-3000:]
    finally:
        if ref.poll() is None:
            ref.kill()
            ref.wait()
        ref_log.close()

    a, b = _state(straight), _state(killed)
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 20
    for x, y in zip(leaves_a, leaves_b):  # params, both Adam moments, step, rng
        assert np.array_equal(np.asarray(x), np.asarray(y))
    assert int(a["step"]) == STEPS * 2  # two updates per RL step
    ma, mb = read_metrics(straight / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert sorted(ma) == sorted(mb) == list(range(1, STEPS + 1))
    for s in ma:  # the same batch, rewards and loss at every step, before and after kills
        for key in ("batch_sha", "reward/mean", "train/loss", "train/grad_norm"):
            assert ma[s][key] == mb[s][key], (s, key)
    assert any(ma[s]["train/grad_norm"] > 0 for s in ma)  # the reward had signal
    # the held-out eval ran at steps 2 and 4 and reported pass@k
    for s in (2, 4):
        assert 0 <= ma[s]["eval/demo/pass_at_1"] <= 1 and "eval/demo/pass_at_2" in ma[s]
        assert (straight / "eval" / f"step_{s:06d}" / "eval" / "summary_demo.json").exists()
    done = json.loads((killed / "DONE").read_text())
    assert done["steps"] == STEPS and done["position"] == STEPS * 2
