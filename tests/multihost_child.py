"""One process of tests/test_multihost.py: `python multihost_child.py JOBS`, JOBS a JSON
list of [command, config spec, {key: value}]. Each job runs as `int-jax <command>
--config=<spec> --config.<key>=<value> ...` runs it (the config file's `get_config`,
the overrides, the command's entry in int_jax/cli.py COMMANDS), one after the other in
one interpreter, so SFT and GRPO share one start-up and one `jax.distributed` connection
(made by the first command, from INT_JAX_COORDINATOR_ADDRESS / NUM_PROCESSES /
PROCESS_ID, when `model.distributed` is set).

GRPO's reward is a verifiable one instead of the grader (a random tiny model never
writes a right answer): 1 when a completion's first token id is divisible by 3, as in
tests/grpo_kill_child.py, so groups differ and the update has a gradient.
"""

import importlib
import json
import sys

import numpy as np

from int_jax import cli
from int_jax.config_io import load_config_file
from int_jax.stages import grpo as grpo_stage


def first_token_reward(ctx, problems):
    def reward(items, completions):
        return np.array([[float(c.tokens[0] % 3 == 0) for c in cs] for cs in completions])
    return reward


grpo_stage.make_reward_fn = first_token_reward


def override(config, key: str, value) -> None:
    *path, name = key.split(".")
    node = config
    for part in path:
        node = node[part]
    node[name] = value


for command, spec, overrides in json.loads(sys.argv[1]):
    path, _, arg = spec.partition(":")
    config = load_config_file(path, arg or None)
    for key, value in overrides.items():
        override(config, key, value)
    module, fn = cli.COMMANDS[command].target.split(":")
    code = getattr(importlib.import_module(module), fn)(config, [])
    if code:
        sys.exit(code)
