"""`int-jax demo --config=configs/demo.py[:model|scripted]` (`make demo`).

`model`: the random tiny Qwen3 through the JetStream engine; `scripted`: the
success path replayed by the ScriptedSampler. Outputs: runs/demo[-scripted]/.
configs/int.py's `tiny` config with these changes.
"""

from pathlib import Path

from int_jax.config_io import import_config

RUN_NAMES = {"model": "demo", "scripted": "demo-scripted"}  # arg -> run folder name


def get_config(arg: str = "model"):
    if arg not in RUN_NAMES:
        raise ValueError(f"configs/demo.py: unknown arg {arg!r}; use 'model' or 'scripted'")
    # configs/int.py, by import (absl loads this file alone; see import_config).
    c = import_config("int", Path(__file__).resolve().parent).get_config("tiny")
    c.run.name = RUN_NAMES[arg]
    root = f"{c.run.root}/{c.run.name}"
    c.data.problems = f"{root}/problems.jsonl"
    if arg == "scripted":
        # The script's outputs are longer than the tiny model's budgets.
        c.sampler.kind = "scripted"
        c.sampler.script = f"{root}/script.jsonl"
        for section in (c.rollout, c.propose, c.continuation, c.reflect):
            section.max_new_tokens = 256
        c.propose.guided_max_new_tokens = 256
        c.propose.context_limit = c.reflect.context_limit = 4096
    return c
