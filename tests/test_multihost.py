"""Multi-host for real: two processes on this machine joined by `jax.distributed` (CPU
collectives through gloo), four emulated devices each, started the way the launchers
start a pod's processes (INT_JAX_COORDINATOR_ADDRESS / NUM_PROCESSES / PROCESS_ID),
run `int-jax sft`; one process with eight devices runs the same job. Each process reads
its own shard of the data, the checkpoints and the exported model land once, and the
runs agree: the same global batches, the same first loss up to rounding, final weights
within what rounding can move them."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import numerics
from int_jax.data.records import Segment, SFTExample, write_records

ROOT = Path(__file__).resolve().parents[1]
LR, STEPS = 1e-4, 4  # configs/sft.py:tiny's lr; 16 examples in global batches of 8, 2 epochs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _examples(path: Path) -> None:
    """16 examples of distinct lengths: a batch's token count names its examples, so a
    process that read another shard than it should would change the counts."""
    rng = np.random.default_rng(0)
    words = ["carry", "the", "one", "add", "seven", "then", "so", "hence"]
    write_records(path, [SFTExample(
        id=f"e{i}", problem_id=f"p{i}",
        messages=[{"role": "user", "content": f"Compute {i} + {2 * i}."}],
        segments=[Segment("prefix", " ".join(rng.choice(words, 3 + 5 * i)) + "\n\n"),
                  Segment("intervention", " ".join(rng.choice(words, 2 + 3 * i)))])
        for i in range(16)])


def _sft(out: Path, data: Path, devices: int, env_extra: dict | None = None):
    argv = [sys.executable, "-m", "int_jax.cli", "sft", "--config=configs/sft.py:tiny",
            f"--config.output_dir={out}", f"--config.data.train_path={data}",
            "--config.train.micro_batch=8", "--config.train.progress=False",
            "--config.train.async_save=False"]
    if env_extra:
        argv.append("--config.model.distributed=True")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(env_extra or {})}
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc, what: str) -> None:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"{what} failed:\n{out[-3000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multihost")
    data = tmp / "sft.jsonl"
    _examples(data)
    coordinator = {"INT_JAX_COORDINATOR_ADDRESS": f"localhost:{_free_port()}",
                   "INT_JAX_NUM_PROCESSES": "2"}
    hosts = [_sft(tmp / "two", data, 4, {**coordinator, "INT_JAX_PROCESS_ID": str(i)})
             for i in range(2)]
    for i, p in enumerate(hosts):
        _finish(p, f"process {i} of 2")
    _finish(_sft(tmp / "one", data, 8), "the single process")
    return tmp / "one", tmp / "two"


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_train_on_the_same_global_batches_as_one(runs):
    one, two = (_metrics(r) for r in runs)
    assert [m["step"] for m in two] == list(range(1, STEPS + 1))  # logged once, by process 0
    counts = [(m["tokens"], m["trained_tokens"]) for m in one]
    assert [(m["tokens"], m["trained_tokens"]) for m in two] == counts
    assert len(set(counts)) == STEPS  # the counts do tell the batches apart
    # Step 1 runs the same weights on the same batch: the losses differ by rounding only,
    # bounded as in test_sft_train (two fp32 forwards, log-softmax, a weighted mean).
    from int_jax.models import qwen3

    model = qwen3.create(qwen3.PRESETS["tiny"], seed=0)
    t = 512  # configs/sft.py:tiny cutoff_len: the padded row length
    logit_tol = numerics.qwen3_logit_tol(model, kv_len=t, max_position=t - 1)
    loss = one[0]["loss"]
    tol = (numerics.log_softmax_tol(logit_tol, numerics.qwen3_logit_magnitude(model),
                                    model.config.vocab_size)
           + 2 * numerics.gamma(8 * t + 1) * loss)
    assert abs(two[0]["loss"] - loss) <= tol, (two[0]["loss"], loss, tol)


@pytest.mark.slow
def test_checkpoints_and_the_exported_model_land_once_and_agree(runs):
    from safetensors.numpy import load_file

    one, two = runs
    for run in runs:
        steps = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert steps == ["2", "4"], steps
        assert json.loads((run / "DONE").read_text()) == {"steps": STEPS}
        assert sorted(p.name for p in (run / "hf").glob("*.safetensors")) == ["model.safetensors"]
    a, b = load_file(one / "hf" / "model.safetensors"), load_file(two / "hf" / "model.safetensors")
    assert sorted(a) == sorted(b)
    # AdamW moves a weight by at most lr (1 - b1) / sqrt(1 - b2) per step (Kingma & Ba,
    # section 2.1, for 1 - b1 > sqrt(1 - b2)); weight decay is 0. Two runs whose
    # gradients differ by rounding alone differ by at most twice that over the run.
    b1, b2 = 0.9, 0.999
    bound = 2 * STEPS * LR * (1 - b1) / math.sqrt(1 - b2)
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    assert worst <= bound, (worst, bound)
