"""+ Hint-guided RL: GRPO whose prompts carry the first half of the reference
solution (configs/grpo.py `,hint`: hint.mode=fixed, fraction 0.5; the paper gives
"part of the reference solution", we chose half), then eval (main table).

Stages: grpo -> eval.

Commands:

    int-jax pipeline --config=configs/experiments/hint_rl.py:qwen3_4b_instruct_2507 \\
        --config.base_model=/path/to/Qwen3-4B-Instruct-2507 \\
        --config.problems.train=data/int_hard.jsonl --config.workdir=runs/hint_rl
    int-jax demo --config=configs/demo.py:scripted   # once: the tiny run's problems and script
    int-jax pipeline --config=configs/experiments/hint_rl.py:tiny   # CPU, a few minutes

Every value, the paper's with where we chose: configs/experiments/common.py (ROWS) and
the stage config files it builds on (configs/int.py, sft.py, grpo.py, eval.py).
"""

from pathlib import Path

from int_jax.config_io import import_config

# absl loads this file alone; common.py comes in by import (see import_config).
common = import_config("experiments.common", Path(__file__).resolve().parents[1])


def get_config(arg: str = "qwen3_4b_instruct_2507"):
    return common.experiment("hint_rl", arg)
