"""`python -m int_jax.launch.gpu <action> ...`: GPUs, one node or many under SLURM.

    local   one process on this node driving all its GPUs (they are its JAX devices)
    slurm   an sbatch job of N nodes, one process per node (`srun`), joined by
            `jax.distributed` through INT_JAX_COORDINATOR_ADDRESS (the first node),
            INT_JAX_NUM_PROCESSES (SLURM_NNODES) and INT_JAX_PROCESS_ID (SLURM_PROCID),
            which `models.sharding.maybe_initialize_distributed` reads

`--dry-run` prints the command (and, for `slurm`, the whole job script) instead of
running it. Both check the command's memory plan on the node(s) first
(`plan_check.py`: `int-jax plan`, printed with its verdict; a plan that does not fit
stops here, before anything is written or run; `--skip-plan` skips the check) and add
the node's preset (`presets.GPU_NODES`: every GPU on fsdp, micro-batches of rows per
GPU).

    python -m int_jax.launch.gpu slurm --node 8xh200 --nodes 2 --partition gpu --dry-run \\
        -- pipeline --config=configs/experiments/int_rl.py:qwen3_4b_instruct_2507
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from int_jax.launch import plan_check
from int_jax.launch.presets import GPU_MEM_FRACTION, GPU_NODES, target
from int_jax.launch.shell import Shell, command_words, launcher_parser

MEM_FRACTION = str(GPU_MEM_FRACTION)  # XLA_PYTHON_CLIENT_MEM_FRACTION (the plan assumes it)


def _checked(a, sh: Shell, nodes: int) -> list[str]:
    """The command's words with the nodes' preset, once its memory plan fits."""
    return plan_check.prepare(a.command, target(a.node, nodes), distributed=a.action == "slurm",
                              skip_plan=a.skip_plan, out=sh.out,
                              who=f"int_jax.launch.gpu {a.action}")


def local(a, sh: Shell) -> None:
    words = _checked(a, sh, 1)
    sh.run(["env", f"XLA_PYTHON_CLIENT_MEM_FRACTION={MEM_FRACTION}", ".venv/bin/int-jax", *words])


def job_script(a, words: list[str]) -> str:
    node = GPU_NODES[a.node]
    per_task = ('export INT_JAX_PROCESS_ID="$SLURM_PROCID"; exec .venv/bin/int-jax '
                + shlex.join(words))
    lines = ["#!/usr/bin/env bash",
             f"#SBATCH --job-name={a.job_name}",
             f"#SBATCH --nodes={a.nodes}",
             "#SBATCH --ntasks-per-node=1",
             f"#SBATCH --gpus-per-node={node.gpus}",
             f"#SBATCH --cpus-per-task={a.cpus_per_task}",
             f"#SBATCH --time={a.time}",
             "#SBATCH --output=runs/slurm/%x-%j.out"]
    lines += [f"#SBATCH --partition={a.partition}"] if a.partition else []
    lines += [f"#SBATCH --account={a.account}"] if a.account else []
    lines += ["set -euo pipefail",
              'cd "$SLURM_SUBMIT_DIR"',
              "# Install once, on the first node (the checkout is on a shared filesystem).",
              "[ -x .venv/bin/int-jax ] || { make install && .venv/bin/pip install -q "
              f"'jax[{node.cuda_extra}]'; }}",
              f"export XLA_PYTHON_CLIENT_MEM_FRACTION={MEM_FRACTION}",
              'export INT_JAX_COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" '
              f'| head -n 1):{a.port}"',
              'export INT_JAX_NUM_PROCESSES="$SLURM_NNODES"',
              f"srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c {shlex.quote(per_task)}"]
    return "\n".join(lines) + "\n"


def slurm(a, sh: Shell) -> None:
    script = job_script(a, _checked(a, sh, a.nodes))
    path = Path("runs/slurm") / f"{a.job_name}.sbatch"
    if sh.dry_run:
        print(f"# {path}\n{script}", end="", file=sh.out)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
    sh.run(["sbatch", str(path)])


ACTIONS = {"local": local, "slurm": slurm}


def parser() -> argparse.ArgumentParser:
    p, subs = launcher_parser("python -m int_jax.launch.gpu", __doc__, ACTIONS)
    for name, s in subs.items():
        s.add_argument("--node", required=True, choices=sorted(GPU_NODES))
        if name == "slurm":
            s.add_argument("--nodes", type=int, required=True)
            s.add_argument("--job-name", default="int-jax")
            s.add_argument("--partition", default="")
            s.add_argument("--account", default="")
            s.add_argument("--time", default="24:00:00")
            s.add_argument("--cpus-per-task", type=int, default=32)
            s.add_argument("--port", type=int, default=7777, help="the coordinator's port on node 0")
        s.add_argument("--skip-plan", action="store_true", help=plan_check.SKIP_HELP)
        s.add_argument("command", nargs=argparse.REMAINDER,
                       help="-- <int-jax command and flags> (whose memory plan is checked)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    a.command, dry = command_words(a.command)
    a.dry_run = a.dry_run or dry
    if not a.command:
        raise SystemExit(f"int_jax.launch.gpu {a.action}: give the int-jax command after `--`, e.g. "
                         "`-- sft --config=configs/sft.py:qwen3_4b_instruct_2507`")
    if a.action == "slurm" and a.nodes < 1:
        raise SystemExit(f"--nodes must be >= 1, got {a.nodes}")
    ACTIONS[a.action](a, Shell(a.dry_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
