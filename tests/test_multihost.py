"""Multi-host for real: two processes on this machine joined by `jax.distributed` (CPU
collectives through gloo), four emulated devices each, started the way the launchers
start a pod's processes (INT_JAX_COORDINATOR_ADDRESS / NUM_PROCESSES / PROCESS_ID),
run `int-jax sft` and then `int-jax grpo` (tests/multihost_child.py: both commands in
one interpreter, so the pair costs one start-up); one process with eight devices runs
the same jobs. SFT: each process reads its own shard of the data. GRPO: each process
samples its block of a step's prompts on its own four devices and the update runs on
all eight. Checkpoints and the exported model land once, and the runs agree: the same
global batches (GRPO: the same samples and rewards), the same first loss up to
rounding, final weights within what rounding can move them."""

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
# configs/grpo.py:tiny shortened: 2 steps of 4 prompts x 4 samples, one update of all 16
# rows per step (16 rows split over 8 devices), 8 new tokens; lr 1e-4 as tiny's.
GRPO_STEPS, GRPO_LR, GRPO_NEW, GRPO_ROWS = 2, 1e-4, 8, 16
GRPO_PROMPT_LEN = 128  # configs/grpo.py:tiny grpo.max_prompt_len
GRPO = {"grpo.n": 4, "grpo.prompts_per_step": 4, "grpo.prompts_per_update": 4,
        "grpo.max_new_tokens": GRPO_NEW, "sampler.max_len": 256,
        "sampler.max_prefill_length": GRPO_PROMPT_LEN, "sampler.prefill_chunk": 128,
        "train.steps": GRPO_STEPS, "train.save_every": 1, "train.progress": False,
        "train.async_save": False, "run.progress": False}


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


def _jobs(out: Path, inputs: Path, distributed: bool) -> list:
    """`int-jax sft` then `int-jax grpo` (from the tiny preset's random weights)."""
    dist = {"model.distributed": True} if distributed else {}
    sft = {"output_dir": str(out / "sft"), "data.train_path": str(inputs / "sft.jsonl"),
           "train.micro_batch": 8, "train.progress": False, "train.async_save": False, **dist}
    grpo = {"output_dir": str(out / "grpo"), "data.problems": str(inputs / "problems.jsonl"),
            **GRPO, **dist}
    return [["sft", "configs/sft.py:tiny", sft], ["grpo", "configs/grpo.py:tiny", grpo]]


def _launch(out: Path, inputs: Path, devices: int, env_extra: dict | None = None):
    """The child, its output to a log file beside `out`: a file, not a pipe, which a
    process blocked in a collective would never drain while its peer waits to write."""
    argv = [sys.executable, str(ROOT / "tests" / "multihost_child.py"),
            json.dumps(_jobs(out, inputs, distributed=env_extra is not None))]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(env_extra or {})}
    log = out.parent / f"{out.name}{(env_extra or {}).get('INT_JAX_PROCESS_ID', '')}.log"
    with open(log, "w") as f:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT), log


def _finish(launched, what: str) -> None:
    proc, log = launched
    proc.wait(timeout=900)
    assert proc.returncode == 0, f"{what} failed:\n{log.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from int_jax.stages import demo

    tmp = tmp_path_factory.mktemp("multihost")
    _examples(tmp / "sft.jsonl")
    demo._write_jsonl(tmp / "problems.jsonl", demo.PROBLEMS)
    coordinator = {"INT_JAX_COORDINATOR_ADDRESS": f"localhost:{_free_port()}",
                   "INT_JAX_NUM_PROCESSES": "2"}
    # All three at once: the pair waits in collectives, the single process fills the gaps.
    hosts = [_launch(tmp / "two", tmp, 4, {**coordinator, "INT_JAX_PROCESS_ID": str(i)})
             for i in range(2)]
    single = _launch(tmp / "one", tmp, 8)
    try:
        for i, launched in enumerate(hosts):
            _finish(launched, f"process {i} of 2")
        _finish(single, "the single process")
    finally:  # one failed: the others would wait for it forever
        for proc, _ in (*hosts, single):
            if proc.poll() is None:
                proc.kill()
    return tmp / "one", tmp / "two"


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_train_on_the_same_global_batches_as_one(runs):
    one, two = (_metrics(r / "sft") for r in runs)
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
    one, two = (r / "sft" for r in runs)
    for run in (one, two):
        steps = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert steps == ["2", "4"], steps
        assert json.loads((run / "DONE").read_text()) == {"steps": STEPS}
        assert sorted(p.name for p in (run / "hf").glob("*.safetensors")) == ["model.safetensors"]
    _assert_exports_agree(one, two, updates=STEPS, lr=LR)


def _assert_exports_agree(one: Path, two: Path, *, updates: int, lr: float) -> None:
    """The two runs' hf/ exports hold the same weights up to rounding. AdamW moves a
    weight by at most lr (1 - b1) / sqrt(1 - b2) per update (Kingma & Ba, section 2.1,
    for 1 - b1 > sqrt(1 - b2)); weight decay is 0. Two runs whose gradients differ by
    rounding alone differ by at most twice that over the run."""
    from safetensors.numpy import load_file

    a, b = load_file(one / "hf" / "model.safetensors"), load_file(two / "hf" / "model.safetensors")
    assert sorted(a) == sorted(b)
    b1, b2 = 0.9, 0.999
    bound = 2 * updates * lr * (1 - b1) / math.sqrt(1 - b2)
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    assert worst <= bound, (worst, bound)


def _tiny_model():
    from int_jax.models import qwen3

    return qwen3.create(qwen3.PRESETS["tiny"], seed=0)  # configs/grpo.py:tiny's start weights


@pytest.mark.slow
def test_two_processes_run_grpo_on_the_samples_of_one(runs):
    """Each process samples its two prompts' groups on its own four devices with the
    tags one process gives them, so the samples are one process's: same tokens, masks
    and advantages (batch_sha), same rewards.

    Could rounding flip a sampled token? The sampler draws argmax(z / t + Gumbel noise);
    layouts whose logits differ by at most e change a draw only when its top two
    perturbed logits lie within 2 e / t, and that gap has density at most 1 (an
    Exp(1)-like spacing), so a token flips with probability <= 2 e / t (t = 1 here).
    Worst case (tests/numerics.py, linear in the chain length K = 2912): e = 6.3e-4, so
    <= 0.32 over the run's 256 tokens, which settles nothing. With roundings of random
    sign (growing like sqrt(K) u, numerics' docstring) e = 1.2e-5: under 1% over the run.
    The run measures its premise: train/mismatch_logp_abs_max compares the sampler's
    logprobs (its layout: 8 or 4 devices) with the trainer's (8 devices) at the same
    weights, and 2 x that x 256 must stay under 1%. Step 2 samples from weights one
    update apart by rounding: the same argument, that difference included."""
    one, two = (_metrics(r / "grpo") for r in runs)
    assert [m["step"] for m in two] == list(range(1, GRPO_STEPS + 1))  # process 0 alone
    for a, b in zip(one, two, strict=True):
        assert b["batch_sha"] == a["batch_sha"], (a["step"], a["batch_sha"], b["batch_sha"])
        for key in ("reward/mean", "reward/frac_all_wrong", "rollout/tokens",
                    "rollout/response_len_max", "rollout/groups"):
            assert b[key] == a[key], (key, a[key], b[key])
        assert a["rollout/groups"] == 4
    assert one[0]["train/grad_norm"] > 0  # the groups differ: there was something to learn
    # Step 1: the same weights, the same batch: the losses differ by rounding only, bounded
    # as in test_grpo_learner's sharded step. Every |advantage| <= 1 (rewards in {0, 1}),
    # so the magnitude of the sequence-mean loss is <= 1 + rho; rows of <= 128 + 8 tokens.
    # (With rho = 1 it is -sum of each group's advantages / rows = 0 up to rounding: the
    # samples' equality above is the substantive check, this one bounds the rounding.)
    model = _tiny_model()
    t, vocab = GRPO_PROMPT_LEN + GRPO_NEW, model.config.vocab_size
    score = numerics.qwen3_score_bound(model)
    logit_tol = numerics.qwen3_logit_tol(model, t)
    d = numerics.log_softmax_tol(logit_tol, numerics.qwen3_logit_magnitude(model), vocab)
    rho = d * (1 + d) + 2 * numerics.U32
    mag = 1 + rho
    k_loss = numerics.qwen3_forward_chain(model.config, t, t - 1, score) + vocab + GRPO_ROWS * t
    tol = numerics.reduction_tol(k_loss, mag) + rho * mag
    assert abs(two[0]["train/loss"] - one[0]["train/loss"]) <= tol, (
        two[0]["train/loss"], one[0]["train/loss"], tol)
    tokens = 16 * GRPO_NEW * GRPO_STEPS
    measured = max(m["train/mismatch_logp_abs_max"] for m in one + two)
    assert 2 * measured * tokens < 0.01, measured  # the flip argument's premise


@pytest.mark.slow
def test_grpo_checkpoints_and_the_exported_model_land_once_and_agree(runs):
    one, two = (r / "grpo" for r in runs)
    done = json.loads((one / "DONE").read_text())
    assert done["steps"] == GRPO_STEPS and done["optimizer_steps"] == GRPO_STEPS
    assert json.loads((two / "DONE").read_text()) == done  # same data position and counters
    for run in (one, two):
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1", "2"]
        assert sorted(p.name for p in (run / "hf").glob("*.safetensors")) == ["model.safetensors"]
        assert len((run / "metrics.jsonl").read_text().splitlines()) == GRPO_STEPS
    _assert_exports_agree(one, two, updates=GRPO_STEPS, lr=GRPO_LR)  # one update per step
