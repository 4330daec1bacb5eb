"""+ SFT(Ref) + RL: SFT on the reference solutions of the hard problems, then
GRPO, then eval (main table, row '+ SFT(Ref) + RL').

Stages: rollout -> reference -> stats -> sft -> grpo -> eval.

Share the finished stages of another row instead of rerunning them (the same
settings are checked), e.g. `--config.reuse.rollout=runs/int_rl` (upstream stages are reused with it).

Commands:

    int-jax pipeline --config=configs/experiments/sft_ref_rl.py:qwen3_4b_instruct_2507 \\
        --config.base_model=/path/to/Qwen3-4B-Instruct-2507 \\
        --config.problems.train=data/int_hard.jsonl --config.workdir=runs/sft_ref_rl
    int-jax demo --config=configs/demo.py:scripted   # once: the tiny run's problems and script
    int-jax pipeline --config=configs/experiments/sft_ref_rl.py:tiny   # CPU, a few minutes

Every value, the paper's with where we chose: configs/experiments/common.py (ROWS) and
the stage config files it builds on (configs/int.py, sft.py, grpo.py, eval.py).
"""

from pathlib import Path

from int_jax.config_io import import_config

# absl loads this file alone; common.py comes in by import (see import_config).
common = import_config("experiments.common", Path(__file__).resolve().parents[1])


def get_config(arg: str = "qwen3_4b_instruct_2507"):
    return common.experiment("sft_ref_rl", arg)
