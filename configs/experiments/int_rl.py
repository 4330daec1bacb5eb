"""+ InT + RL, the paper's method: self-proposed interventions, verified by
continuations, SFT on prefix + intervention, then GRPO, then eval (main table).

Stages: rollout -> propose -> filter -> continue -> select -> stats -> sft -> grpo -> eval.

Commands:

    int-jax pipeline --config=configs/experiments/int_rl.py:qwen3_4b_instruct_2507 \\
        --config.base_model=/path/to/Qwen3-4B-Instruct-2507 \\
        --config.problems.train=data/int_hard.jsonl --config.workdir=runs/int_rl
    int-jax demo --config=configs/demo.py:scripted   # once: the tiny run's problems and script
    int-jax pipeline --config=configs/experiments/int_rl.py:tiny   # CPU, a few minutes

Every value, the paper's with where we chose: configs/experiments/common.py (ROWS) and
the stage config files it builds on (configs/int.py, sft.py, grpo.py, eval.py).
"""

from pathlib import Path

from int_jax.config_io import import_config

# absl loads this file alone; common.py comes in by import (see import_config).
common = import_config("experiments.common", Path(__file__).resolve().parents[1])


def get_config(arg: str = "qwen3_4b_instruct_2507"):
    return common.experiment("int_rl", arg)
