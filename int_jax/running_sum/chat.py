"""How the miniature talks: its prompt templates and step format, as config values.

The toy's chats go through the real stages, so they are the project's own templates
and `StepFormat`, pointed at short files (`templates/`: a few hundred characters per
chat, so a character model reads them quickly) and a short step label. The base model
is trained on exactly these chats (`base_data.py`), and the toy configs set exactly
these values (`config_values`), so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from int_jax.intervention.prompts import PromptSet
from int_jax.intervention.steps import StepFormat

TEMPLATE_DIR = Path(__file__).parent / "templates"
# The problem prompt is the built-in raw problem (the authors' rollout prompt).
TEMPLATES = ("solve_with_reference", "verify_attempt", "reflect", "problem_with_hint")
STEP_LABEL = "S{i}:"
# normalized: the first step's guided prefix is the step itself (the authors' split
# puts a bare blank line before it, a text no trace starts with).
STEP_SPLIT = "normalized"


def prompt_paths() -> dict[str, str]:
    """`config.prompts` values: template name -> file ('' = built-in)."""
    paths = {name: "" for name in ("problem", *TEMPLATES)}
    paths.update({name: str(TEMPLATE_DIR / f"{name}.txt") for name in TEMPLATES})
    return paths


def step_values() -> dict:
    """`config.steps` values."""
    return dict(split=STEP_SPLIT, label=STEP_LABEL, double_newlines=True)


@functools.lru_cache(maxsize=1)
def prompt_set() -> PromptSet:
    return PromptSet.load(prompt_paths())


def step_format() -> StepFormat:
    v = step_values()
    return StepFormat(split_mode=v["split"], label=v["label"], double_newlines=v["double_newlines"])


def intervention_block(location: int, content: str) -> str:
    """The intervention block, in the form `intervention/parse.py` reads strictly."""
    return "<intervention>" + json.dumps({"location": location, "content": content}) + "</intervention>"


def checked_answer(steps: list[str], first_wrong: int, reference: list[str]) -> str:
    """The proposer's answer: the attempt's steps up to the first wrong one, each written
    out and judged against the reference's step ("ok", or "no, " and the reference's
    step), then the intervention block with that step as the fix.

    Why the written check: a block alone gives one location token of signal per example,
    which the 0.8M-parameter base did not learn from in two rounds of training (it
    guessed the location: 1.5 nats, a uniform pick among ~5 steps); checking step by
    step in writing, as a real proposer reasons before its block, gives a signal per step
    and puts each step next to its verdict."""
    fix = reference[first_wrong - 1]
    lines = [f"{labelled_step(k, steps[k - 1])} ok" for k in range(1, first_wrong)]
    lines.append(f"{labelled_step(first_wrong, steps[first_wrong - 1])} no, {fix}")
    return "\n".join(lines + [intervention_block(first_wrong, fix)])


def labelled_step(k: int, step: str) -> str:
    """Step `k` as a checked answer copies it: `S1: 47+8=55`."""
    return f"{STEP_LABEL.format(i=k)} {step}"


def copied_steps(steps: list[str]) -> str:
    """Steps one per line with their labels, as a checked answer copies them."""
    return "\n".join(labelled_step(k, step) for k, step in enumerate(steps, 1))
