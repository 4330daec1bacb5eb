"""SFT ablation (Table 2) 'without prefix cloning': InT's SFT set with the prefix as
context only (loss weight 0), the SFT checkpoint evaluated, no RL.

Stages: rollout -> ... -> select -> stats -> sft -> eval.

Share the finished stages of another row instead of rerunning them (the same
settings are checked), e.g. `--config.reuse.select=runs/int_rl` (upstream stages are reused with it).

Commands:

    int-jax pipeline --config=configs/experiments/int_no_prefix.py:qwen3_4b_instruct_2507 \\
        --config.base_model=/path/to/Qwen3-4B-Instruct-2507 \\
        --config.problems.train=data/int_hard.jsonl --config.workdir=runs/int_no_prefix
    int-jax demo --config=configs/demo.py:scripted   # once: the tiny run's problems and script
    int-jax pipeline --config=configs/experiments/int_no_prefix.py:tiny   # CPU, a few minutes

Every value, the paper's with where we chose: configs/experiments/common.py (ROWS) and
the stage config files it builds on (configs/int.py, sft.py, grpo.py, eval.py).
"""

from pathlib import Path

from int_jax.config_io import import_config

# absl loads this file alone; common.py comes in by import (see import_config).
common = import_config("experiments.common", Path(__file__).resolve().parents[1])


def get_config(arg: str = "qwen3_4b_instruct_2507"):
    return common.experiment("int_no_prefix", arg)
