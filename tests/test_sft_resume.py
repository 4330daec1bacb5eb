"""Exact resume after SIGKILL, and a NaN loss stopping the run with checkpoints intact."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from ml_collections import ConfigDict

from int_jax.models import qwen3
from int_jax.models.sharding import DEFAULT_RULES, MeshConfig, make_mesh
from int_jax.train import loop, optim, sft
from int_jax.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8


def _sft_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "int_jax.cli", "sft", "--config=configs/sft.py:tiny",
            f"--config.output_dir={out}", "--config.train.global_batch=2",
            "--config.train.micro_batch=1", f"--config.train.max_steps={STEPS}",
            "--config.train.save_every=1", "--config.train.keep=2",
            "--config.data.cutoff_len=128", "--config.train.progress=False",
            "--config.train.export_hf=False"]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one device, as a user's run would have
    return env


def _final_state(out: Path):
    return ocp.StandardCheckpointer().restore(out / "checkpoints" / str(STEPS) / "state")


def _committed_steps(out: Path) -> list[int]:
    d = out / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_sft_cmd(straight), cwd=ROOT, env=_env(), check=True,
                   capture_output=True, timeout=300)

    proc = subprocess.Popen(_sft_cmd(killed), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = _committed_steps(killed)
        if steps and steps[-1] >= STEPS // 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = _committed_steps(killed)[-1]
    assert STEPS // 2 <= killed_at < STEPS

    subprocess.run(_sft_cmd(killed), cwd=ROOT, env=_env(), check=True,
                   capture_output=True, timeout=300)

    a, b = _final_state(straight), _final_state(killed)
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 20
    for x, y in zip(leaves_a, leaves_b):  # params, both Adam moments, step, rng
        assert np.array_equal(np.asarray(x), np.asarray(y))
    assert int(a["step"]) == STEPS
    # Data order: the same batch at every step, before and after the kill.
    ma, mb = read_metrics(straight / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert sorted(ma) == sorted(mb) == list(range(1, STEPS + 1))
    assert [ma[s]["batch_sha"] for s in ma] == [mb[s]["batch_sha"] for s in ma]
    assert [ma[s]["loss"] for s in ma] == [mb[s]["loss"] for s in ma]


CFG = qwen3.Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1,
                        num_heads=2, num_kv_heads=1, head_dim=16)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    batches = []
    for i in range(6):
        b = {"ids": rng.integers(1, 64, (1, 2, 8)).astype(np.int32),
             "loss_weights": np.ones((1, 2, 8), np.float32),
             "segment_ids": np.ones((1, 2, 8), np.int32),
             "positions": np.tile(np.arange(8, dtype=np.int32), (1, 2, 1))}
        if i == 2:
            b["loss_weights"][0, 0, 3] = np.nan  # a poisoned batch at step 3
        batches.append(b)
    data = iter(grain.MapDataset.source(batches).to_iter_dataset())
    mesh = make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    opt = ConfigDict(dict(lr=1e-3, warmup_ratio=0.0, min_lr_ratio=0.1, weight_decay=0.0,
                          b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0))
    tx, schedule = optim.make_optimizer(opt, 6)
    opts = loop.LoopOptions(total_steps=6, workdir=tmp_path, save_every=1, tensorboard=False,
                            progress=False, async_save=False)
    with pytest.raises(loop.TrainingDiverged, match=r"step 3: loss is nan.*checkpoint \(step 2\)"):
        loop.train(qwen3.create(CFG), sft.sft_loss, tx, schedule, data, mesh, DEFAULT_RULES, opts)
    assert _committed_steps(tmp_path) == [1, 2]
    restored = ocp.StandardCheckpointer().restore(tmp_path / "checkpoints" / "2" / "state")
    assert int(restored["step"]) == 2
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored["params"]))
