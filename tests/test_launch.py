"""Launchers' dry runs: the exact commands a TPU slice or a SLURM job would get, and the
multi-host start-up contract they rely on."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from int_jax.launch import gpu, tpu
from int_jax.launch.presets import GPU_NODES, TPU_SLICES
from int_jax.models import sharding

ROOT = Path(__file__).resolve().parent.parent
WHERE = ["--name", "int-v5p", "--zone", "us-east5-a", "--project", "proj"]
CMD = ["pipeline", "--config=configs/experiments/int_rl.py:qwen3_4b_instruct_2507",
       "--config.base_model=/data/Qwen3 4B"]


@pytest.fixture(autouse=True)
def at_the_repository_root(monkeypatch):
    """Launchers run from the checkout's root (the scripts cd there): config paths too."""
    monkeypatch.chdir(ROOT)


@pytest.fixture(autouse=True)
def nothing_runs(monkeypatch):
    """A dry run must print, never execute: any real call fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a dry run tried to execute {args}")
    monkeypatch.setattr("int_jax.launch.shell.execute", refuse)


def dry(module, argv, capsys) -> list[str]:
    """The printed commands of a dry run (its plan verdict, a `# plan:` line, left out)."""
    assert module.main([argv[0], "--dry-run", *argv[1:]]) == 0
    return [line for line in capsys.readouterr().out.splitlines()
            if not line.startswith("# plan: ")]


def preset_words(devices: int, distributed: bool, reserve_gib: int):
    """The words a launcher adds to the pipeline command CMD (int_rl: sections eval,
    grpo, int, sft), by hand: every chip on fsdp, one row per chip per micro-batch, GRPO's
    sampler reserve."""
    out = []
    for section in ("eval", "grpo", "int", "sft"):
        out += [f"--config.{section}.model.mesh.data=1",
                f"--config.{section}.model.mesh.fsdp={devices}",
                f"--config.{section}.model.mesh.tensor=1"]
        out += [f"--config.{section}.model.distributed=True"] if distributed else []
        out += {"sft": [f"--config.sft.train.micro_batch={devices}"],
                "grpo": [f"--config.grpo.grpo.micro_batch={devices}",
                         f"--config.grpo.sampler.kv_reserve_bytes={reserve_gib << 30}"],
                }.get(section, [])
    return out


def ssh_command(line: str) -> tuple[list[str], list[str]]:
    """(gcloud argv, the words of the remote int-jax call) of one printed ssh line."""
    argv = shlex.split(line)
    remote = next(a for a in argv if a.startswith("--command="))[len("--command="):]
    return argv, shlex.split(remote.split(".venv/bin/int-jax ", 1)[1])


@pytest.mark.parametrize("name", sorted(TPU_SLICES))
def test_tpu_run_sends_one_command_to_every_worker(name, capsys):
    # The settings per slice (the plan's verdicts: tests/test_plan.py, and below).
    (line,) = dry(tpu, ["run", *WHERE, "--slice", name, "--skip-plan", "--", *CMD], capsys)
    argv, words = ssh_command(line)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "int-v5p"]
    assert "--worker=all" in argv and "--zone=us-east5-a" in argv and "--project=proj" in argv
    s = TPU_SLICES[name]
    assert words == [*CMD, *preset_words(s.chips, True, s.train.grpo_reserve_gib)]
    assert line.count("cd int-jax && ") == 1


@pytest.mark.parametrize("module,argv", [
    (tpu, ["run", *WHERE, "--slice", "v5p-8", "--", "sft", "--dry-run"]),
    (gpu, ["slurm", "--node", "8xh200", "--nodes", "2", "--", "sft", "--dry-run"]),
])
def test_a_dry_run_flag_typed_after_the_command_still_only_prints(module, argv, capsys):
    assert module.main(argv) == 0
    out = capsys.readouterr().out
    assert "--dry-run" not in out and "int-jax sft" in out


def test_tpu_lifecycle_commands(capsys):
    (create,) = dry(tpu, ["create", *WHERE, "--slice", "v6e-64", "--spot", "--skip-plan"],
                    capsys)
    assert shlex.split(create) == ["gcloud", "compute", "tpus", "tpu-vm", "create", "int-v5p",
                                   "--zone=us-east5-a", "--project=proj",
                                   "--accelerator-type=v6e-64", "--version=v2-alpha-tpuv6e", "--spot"]
    (queued,) = dry(tpu, ["create", *WHERE, "--slice", "v5p-128", "--queued", "--skip-plan"],
                    capsys)
    assert shlex.split(queued)[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create",
                                       "int-v5p"]
    assert "--node-id=int-v5p" in queued and "--runtime-version=v2-alpha-tpuv5" in queued
    (setup,) = dry(tpu, ["setup", *WHERE, "--repo-url", "https://example.org/int-jax.git",
                         "--ref", "v1"], capsys)
    assert "--worker=all" in setup and "git checkout -q v1" in setup and "jax[tpu]" in setup
    up = dry(tpu, ["upload", *WHERE, "--run", "runs/int_rl", "--bucket", "gs://b/x"], capsys)
    assert shlex.split(up[0]) == ["gsutil", "-m", "rsync", "-r", "runs/int_rl", "gs://b/x/runs/int_rl"]
    assert "--worker=all" in up[1] and "gs://b/x/runs/int_rl int-jax/runs/int_rl" in up[1]
    down = dry(tpu, ["download", *WHERE, "--run", "runs/int_rl", "--bucket", "gs://b"], capsys)
    assert "--worker=0" in down[0] and "int-jax/runs/int_rl gs://b/runs/int_rl" in down[0]
    assert shlex.split(down[1]) == ["gsutil", "-m", "rsync", "-r", "gs://b/runs/int_rl", "runs/int_rl"]
    (delete,) = dry(tpu, ["delete", *WHERE, "--queued"], capsys)
    assert shlex.split(delete)[3:6] == ["queued-resources", "delete", "int-v5p"]


@pytest.mark.parametrize("argv,message", [
    (["run", "--name", "n", "--project", "p", "--slice", "v5p-8", "--", "sft"], "--zone"),
    (["create", *WHERE, "--slice", "v5p-9"], "invalid choice: 'v5p-9'"),
    (["upload", *WHERE, "--run", "runs/x"], "--bucket"),
])
def test_tpu_missing_or_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        tpu.main([argv[0], "--dry-run", *argv[1:]])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_tpu_run_without_a_command_and_a_bad_bucket_fail_clearly():
    with pytest.raises(SystemExit, match="give the int-jax command after `--`"):
        tpu.main(["run", *WHERE, "--slice", "v5p-8", "--dry-run"])
    with pytest.raises(SystemExit, match="must be a gs:// URL"):
        tpu.main(["upload", *WHERE, "--run", "runs/x", "--bucket", "b", "--dry-run"])


def test_gpu_local_uses_every_gpu_of_the_node(capsys):
    (line,) = dry(gpu, ["local", "--node", "8xh100", "--", *CMD], capsys)
    assert shlex.split(line) == ["env", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.92", ".venv/bin/int-jax",
                                 *CMD, *preset_words(8, False, GPU_NODES["8xh100"].train.grpo_reserve_gib)]


def test_slurm_job_runs_the_same_command_once_per_node(capsys):
    lines = dry(gpu, ["slurm", "--node", "8xh200", "--nodes", "4", "--partition", "gpu",
                      "--port", "9000", "--skip-plan", "--", *CMD], capsys)
    script = "\n".join(lines)
    assert "#SBATCH --nodes=4" in script and "#SBATCH --ntasks-per-node=1" in script
    assert "#SBATCH --gpus-per-node=8" in script and "#SBATCH --partition=gpu" in script
    assert ('export INT_JAX_COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" '
            '| head -n 1):9000"') in script
    assert 'export INT_JAX_NUM_PROCESSES="$SLURM_NNODES"' in script
    srun = next(line for line in lines if line.startswith("srun "))
    inner = shlex.split(srun)[-1]  # what each task's bash runs
    assert inner.startswith('export INT_JAX_PROCESS_ID="$SLURM_PROCID"; exec .venv/bin/int-jax ')
    words = shlex.split(inner.split(".venv/bin/int-jax ", 1)[1])
    assert words == [*CMD, *preset_words(32, True, GPU_NODES["8xh200"].train.grpo_reserve_gib)]
    assert lines[-1] == "sbatch runs/slurm/int-jax.sbatch"
    # The script is valid bash.
    script_text = script.split("\n", 1)[1] + "\n"
    assert subprocess.run(["bash", "-n"], input=script_text, text=True).returncode == 0


def test_gpu_missing_arguments_are_named(capsys):
    with pytest.raises(SystemExit) as e:
        gpu.main(["slurm", "--node", "8xh200", "--dry-run", "--", "sft"])
    assert e.value.code == 2 and "--nodes" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="give the int-jax command"):
        gpu.main(["local", "--node", "8xh200", "--dry-run"])


def test_distributed_start_up_reads_the_launchers_variables(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for k in sharding.DISTRIBUTED_ENV:
        monkeypatch.delenv(k, raising=False)
    sharding.maybe_initialize_distributed(True)
    assert calls == [{}]  # nothing set: JAX detects the cluster itself
    monkeypatch.setenv("INT_JAX_COORDINATOR_ADDRESS", "node0:7777")
    with pytest.raises(ValueError, match="INT_JAX_NUM_PROCESSES, INT_JAX_PROCESS_ID not"):
        sharding.maybe_initialize_distributed(True)
    monkeypatch.setenv("INT_JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("INT_JAX_PROCESS_ID", "2")
    sharding.maybe_initialize_distributed(True)
    assert calls[-1] == {"coordinator_address": "node0:7777", "num_processes": 4, "process_id": 2}
    sharding.maybe_initialize_distributed(False)
    assert len(calls) == 2


def test_the_launch_script_runs_the_module_and_its_plan():
    out = subprocess.run(["launch/tpu/slice.sh", "run", *WHERE, "--slice", "v5p-8", "--dry-run",
                          "--", "stats", "--config=configs/int.py:paper"], cwd=ROOT,
                         env={**os.environ, "PYTHON": sys.executable},
                         capture_output=True, text=True, timeout=180)
    verdict, command = out.stdout.splitlines()
    assert out.returncode == 0 and command.startswith("gcloud compute tpus tpu-vm ssh"), out.stderr
    assert verdict.startswith("# plan: .venv/bin/int-jax plan v5p-8 --config=configs/int.py:paper")
    assert verdict.endswith(": fits") and "memory plan on v5p-8: 4 devices" in out.stderr


SFT = ["sft", "--config=configs/sft.py:qwen3_4b_instruct_2507"]


def test_a_fitting_preset_prints_its_plan_then_proceeds(capsys):
    assert tpu.main(["create", *WHERE, "--slice", "v5p-8", "--dry-run", "--", *SFT]) == 0
    out = capsys.readouterr().out.splitlines()
    # v5p-8: 4 chips, one 16K-token row per chip per micro-batch.
    plan = [".venv/bin/int-jax", "plan", "v5p-8", SFT[1], "--config.model.mesh.data=1",
            "--config.model.mesh.fsdp=4", "--config.model.mesh.tensor=1",
            "--config.model.distributed=True", "--config.train.micro_batch=4"]
    assert out[0] == f"# plan: {shlex.join(plan)}: fits"
    assert out[1].startswith("gcloud compute tpus tpu-vm create int-v5p ") and len(out) == 2


# No remat at 16K tokens: every layer keeps all of its activations (~19 GiB per row).
NO_REMAT = [*SFT, "--config.model.remat=none"]


@pytest.mark.parametrize("module,argv,target", [
    (tpu, ["create", *WHERE, "--slice", "v6e-8", "--", *NO_REMAT], "v6e-8"),
    (tpu, ["run", *WHERE, "--slice", "v6e-8", "--", *NO_REMAT], "v6e-8"),
    (gpu, ["slurm", "--node", "8xh100", "--nodes", "1", "--", *NO_REMAT], "8xh100"),
    (gpu, ["local", "--node", "8xh100", "--", *NO_REMAT], "8xh100"),
])
def test_a_plan_that_does_not_fit_stops_before_any_command(module, argv, target, capsys):
    with pytest.raises(SystemExit) as e:
        module.main([argv[0], "--dry-run", *argv[1:]])
    message = str(e.value.code)
    assert f"the memory plan on {target} does not fit, so nothing was created or run" in message
    assert "the train step needs" in message and "--skip-plan" in message
    assert capsys.readouterr().out == ""  # no gcloud, sbatch or srun line, no job script


def test_the_gpu_script_stops_on_a_plan_that_does_not_fit():
    # 12 rows per micro-batch split neither the 64 rows of an update nor over 8 GPUs: the
    # plan refuses before compiling anything (the memory cases are above, in-process).
    out = subprocess.run(["launch/gpu/job.sh", "local", "--node", "8xh100", "--dry-run", "--",
                          *SFT, "--config.train.micro_batch=12"], cwd=ROOT,
                         env={**os.environ, "PYTHON": sys.executable},
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 1 and out.stdout == ""
    assert "the memory plan on 8xh100 does not fit, so nothing was created or run" in out.stderr
    assert "config.train.micro_batch=12 does not divide the 64 rows" in out.stderr


def test_skip_plan_launches_without_the_check(capsys):
    assert gpu.main(["local", "--node", "8xh100", "--dry-run", "--skip-plan", "--",
                     *NO_REMAT]) == 0
    verdict, command = capsys.readouterr().out.splitlines()
    assert verdict.startswith("# plan: .venv/bin/int-jax plan 8xh100 --config=configs/sft.py:")
    assert verdict.endswith(": skipped (--skip-plan)")
    assert command.startswith("env XLA_PYTHON_CLIENT_MEM_FRACTION=0.92 .venv/bin/int-jax sft ")
    with pytest.raises(SystemExit, match="or --skip-plan"):
        tpu.main(["create", *WHERE, "--slice", "v5p-8", "--dry-run"])
