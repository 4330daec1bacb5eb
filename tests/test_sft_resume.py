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

from hf_checkpoints import make_hf_checkpoint
from int_jax.data.records import write_records
from int_jax.data.toy_sft import toy_sft_examples
from int_jax.models import hf, qwen3
from int_jax.models.sharding import DEFAULT_RULES, MeshConfig, make_mesh
from int_jax.train import loop, optim, sft
from int_jax.train.metrics import read_metrics
from int_jax.train.state import ModelDef
from int_jax.train.step import TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8


@pytest.fixture(scope="module")
def small_run_inputs(tmp_path_factory):
    """A 1-layer, 8-wide Qwen3 with the real vocabulary (so the real tokenizer and
    chat template run) as an HF folder, and the toy SFT set as JSONL: the CLI path
    a user runs, with checkpoints of ~13 MB instead of the tiny preset's ~120 MB."""
    d = tmp_path_factory.mktemp("sft_inputs")
    make_hf_checkpoint(d / "hf", vocab_size=151936, hidden_size=8, intermediate_size=16,
                       num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4,
                       tie_word_embeddings=True)
    write_records(d / "train.jsonl", toy_sft_examples())
    return d


def _sft_cmd(out: Path, inputs: Path, export: bool = False) -> list[str]:
    return [sys.executable, "-m", "int_jax.cli", "sft", "--config=configs/sft.py:tiny",
            f"--config.model.hf_path={inputs / 'hf'}",
            f"--config.data.train_path={inputs / 'train.jsonl'}",
            f"--config.output_dir={out}", "--config.train.global_batch=2",
            "--config.train.micro_batch=1", f"--config.train.max_steps={STEPS}",
            "--config.train.save_every=1", "--config.train.keep=2",
            "--config.data.cutoff_len=128", "--config.train.progress=False",
            f"--config.train.export_hf={export}"]


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
def test_resume_after_sigkill_is_bitwise_identical(tmp_path, small_run_inputs):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # The uninterrupted run goes alongside the one to be killed (independent processes).
    ref_log = open(tmp_path / "straight.log", "w+")  # a file: a full pipe would stall it
    ref = subprocess.Popen(_sft_cmd(straight, small_run_inputs, export=True), cwd=ROOT,
                           env=_env(), stdout=ref_log, stderr=subprocess.STDOUT)
    proc = subprocess.Popen(_sft_cmd(killed, small_run_inputs), cwd=ROOT, env=_env(),
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
    ref.wait(timeout=300)
    ref_log.seek(0)
    assert ref.returncode == 0, ref_log.read()[-3000:]
    ref_log.close()

    subprocess.run(_sft_cmd(killed, small_run_inputs), cwd=ROOT, env=_env(), check=True,
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
    # The final safetensors export holds exactly the final checkpoint's weights.
    _, exported = ModelDef.split(hf.from_pretrained(straight / "hf"))
    assert sorted(exported) == sorted(a["params"])
    for name, x in exported.items():
        assert np.array_equal(np.asarray(x), np.asarray(a["params"][name])), name


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
    with pytest.raises(TrainingDiverged, match=r"step 3: loss is nan.*checkpoint \(step 2\)"):
        loop.train(qwen3.create(CFG), sft.sft_loss, tx, schedule, data, mesh, DEFAULT_RULES, opts)
    assert _committed_steps(tmp_path) == [1, 2]
    restored = ocp.StandardCheckpointer().restore(tmp_path / "checkpoints" / "2" / "state")
    assert int(restored["step"]) == 2
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored["params"]))
