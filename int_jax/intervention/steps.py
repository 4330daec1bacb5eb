"""Attempts as numbered steps: a step is a block of text between blank lines.

The proposer names the first wrong step by its 1-based number and the guided
prefix is `steps[:location-1] + [intervention]`, so splitting must be
deterministic and `join_steps(split_steps(t))` must give back the attempt with
only its blank-line runs and outer whitespace normalised.
"""

from __future__ import annotations

import re
from typing import Sequence

STEP_SEPARATOR = "\n\n"
# A blank line is a line holding only whitespace; a run of them is one break.
_BREAK = re.compile(r"\n[ \t\f\v]*(?:\n[ \t\f\v]*)+")


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_steps(text: str) -> list[str]:
    """Non-empty steps of `text`, each stripped of surrounding whitespace."""
    if not isinstance(text, str):
        raise TypeError(f"split_steps expects a string, got {type(text).__name__}")
    parts = _BREAK.split(normalise_newlines(text))
    return [p.strip() for p in parts if p.strip()]


def join_steps(steps: Sequence[str]) -> str:
    """The inverse of `split_steps` on its own output."""
    return STEP_SEPARATOR.join(steps)


def number_steps(steps: Sequence[str]) -> str:
    """`Step 1: ...` blocks separated by blank lines, as shown to the proposer."""
    return STEP_SEPARATOR.join(f"Step {i}: {step}" for i, step in enumerate(steps, 1))


def guided_prefix(steps: Sequence[str], location: int, content: str) -> str:
    """The attempt up to the wrong step, with the wrong step replaced by `content`."""
    if not 1 <= location <= len(steps):
        raise ValueError(f"location {location} outside 1..{len(steps)}")
    return join_steps([*steps[: location - 1], content.strip()])


def split_at(steps: Sequence[str], location: int) -> tuple[str, str, str]:
    """(prefix, step, suffix): the steps before the 1-based `location`, the step
    there and the steps after it, each joined; the pieces a guided attempt is built
    from (continuations, SFT segments)."""
    if not 1 <= location <= len(steps):
        raise ValueError(f"location {location} outside 1..{len(steps)}")
    return join_steps(steps[:location - 1]), steps[location - 1], join_steps(steps[location:])
