"""`int-jax grpo` through the real command line, with a verifiable reward and a fault
point: `python grpo_kill_child.py MODE STEP [int-jax grpo flags...]`.

MODE none: run as is. sample: SIGKILL inside the engine's third decode step of RL step
STEP (0-based), while a JetStream thread is sampling. update: SIGKILL right after the
second optimizer update of RL step STEP is dispatched (the step half applied, nothing
saved). save: SIGKILL right after checkpoint STEP's asynchronous save has started
(orbax still writing it).

The reward replaces the grader (a random tiny model never writes a right answer): 1
when the completion's first token id is divisible by 3, so every run learns something
and a resume that diverged would show. `grpo` is added to the command table here the
way int_jax/cli.py lists commands.
"""

import os
import signal
import sys

import numpy as np

from int_jax import cli
from int_jax.stages import grpo as stage
from int_jax.train import checkpoint as checkpoint_lib
from int_jax.train import learner as learner_lib
from int_jax.train import step as step_lib

MODE, STEP = sys.argv[1], int(sys.argv[2])
current = {"step": -1}


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def reward_fn(ctx, problems):
    def reward(items, completions):
        return np.array([[1.0 if c.tokens[0] % 3 == 0 else 0.0 for c in cs] for cs in completions])
    return reward


stage.make_reward_fn = reward_fn
_step = learner_lib.Learner.step


def step(self, s):
    current["step"] = s
    return _step(self, s)


learner_lib.Learner.step = step

if MODE == "sample":
    _build = stage.build_sampler

    def build_sampler(config, tokenizer, model=None, mesh=None):
        sampler = _build(config, tokenizer, model=model, mesh=mesh)
        engine, calls = sampler.engine, {"n": 0}
        decode = engine.generate

        def generate(*args, **kwargs):  # called by the Driver's generate thread
            if current["step"] == STEP:
                calls["n"] += 1
                if calls["n"] == 3:
                    die()
            return decode(*args, **kwargs)

        engine.generate = generate
        return sampler

    stage.build_sampler = build_sampler
elif MODE == "update":
    _update, updates = step_lib.Trainer.update, {"n": 0}

    def update(self, local):
        out = _update(self, local)
        if current["step"] == STEP:
            updates["n"] += 1
            if updates["n"] == 2:
                die()
        return out

    step_lib.Trainer.update = update
elif MODE == "save":
    _save = checkpoint_lib.Checkpointer.save

    def save(self, step, *args, **kwargs):
        _save(self, step, *args, **kwargs)
        if step == STEP:
            die()

    checkpoint_lib.Checkpointer.save = save
elif MODE != "none":
    raise SystemExit(f"unknown mode {MODE!r}")

cli.main(["int-jax", "grpo", *sys.argv[3:]])
