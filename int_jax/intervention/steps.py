"""Attempts as numbered steps, and the guided prefix built from them.

The proposer names the first wrong step by its 1-based number, and the guided
prefix is "the steps before it + the intervention", so the split the proposer
saw and the split the prefix is cut from must be the same. `StepFormat` holds
that choice (`config.steps`):

* `split="authors"` (default, the authors' release): `text.split("\\n\\n")`,
  empty pieces kept and nothing stripped; the guided prefix is
  `"\\n\\n".join(steps[:loc-1]) + "\\n\\n" + content`, always with the separator
  (also before step 1), and lone newlines inside the intervention doubled
  (`double_newlines`) so it reads as steps of the same kind.
* `split="normalized"` (ours): CRLF folded, runs of blank lines are one break,
  every step stripped and empty ones dropped; the prefix separator appears only
  between steps.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

STEP_SEPARATOR = "\n\n"
SPLIT_MODES = ("authors", "normalized")
# A blank line is a line holding only whitespace; a run of them is one break.
_BREAK = re.compile(r"\n[ \t\f\v]*(?:\n[ \t\f\v]*)+")
_LONE_NEWLINE = re.compile(r"(?<!\n)\n(?!\n)")


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_steps(text: str) -> list[str]:
    """Non-empty steps of `text`, each stripped of surrounding whitespace (ours)."""
    if not isinstance(text, str):
        raise TypeError(f"split_steps expects a string, got {type(text).__name__}")
    parts = _BREAK.split(normalise_newlines(text))
    return [p.strip() for p in parts if p.strip()]


def join_steps(steps: Sequence[str]) -> str:
    """The inverse of `split_steps` on its own output (and of the authors' split)."""
    return STEP_SEPARATOR.join(steps)


def _check_location(steps: Sequence[str], location: int) -> None:
    if not 1 <= location <= len(steps):
        raise ValueError(f"location {location} outside 1..{len(steps)}")


@dataclasses.dataclass(frozen=True)
class StepFormat:
    """How an attempt is cut into steps, shown to the proposer, and re-joined."""

    split_mode: str = "authors"
    label: str = "**Substep {i}:**"  # `{i}` is the 1-based step number
    double_newlines: bool = True

    def __post_init__(self):
        if self.split_mode not in SPLIT_MODES:
            raise ValueError(f"config.steps.split={self.split_mode!r}; choose one of {SPLIT_MODES}")
        if "{i}" not in self.label:
            raise ValueError(f"config.steps.label={self.label!r} must contain '{{i}}' (the step number)")

    @classmethod
    def from_config(cls, section) -> "StepFormat":
        """From `config.steps` (split, label, double_newlines)."""
        return cls(split_mode=str(section.split), label=str(section.label),
                   double_newlines=bool(section.double_newlines))

    @property
    def authors(self) -> bool:
        return self.split_mode == "authors"

    def split(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"split expects a string, got {type(text).__name__}")
        return text.split(STEP_SEPARATOR) if self.authors else split_steps(text)

    def number(self, steps: Sequence[str]) -> str:
        """The labelled steps, separated by blank lines, as the proposer sees them."""
        return STEP_SEPARATOR.join(f"{self.label.replace('{i}', str(i))} {step}"
                                   for i, step in enumerate(steps, 1))

    def intervention_text(self, content: str) -> str:
        """The intervention as it stands in the guided attempt."""
        if self.double_newlines:
            content = _LONE_NEWLINE.sub(STEP_SEPARATOR, content)
        return content if self.authors else content.strip()

    def split_at(self, steps: Sequence[str], location: int) -> tuple[str, str, str]:
        """(prefix, step, suffix) around the 1-based `location`: the text before the step
        (its separator included), the step, and the text after it (separator first).
        `prefix + step + suffix` is the attempt again, except that the authors' prefix
        of step 1 is a bare separator (their construction)."""
        _check_location(steps, location)
        before, after = steps[:location - 1], steps[location:]
        prefix = join_steps(before) + STEP_SEPARATOR if (before or self.authors) else ""
        suffix = STEP_SEPARATOR + join_steps(after) if after else ""
        return prefix, steps[location - 1], suffix

    def guided_prefix(self, steps: Sequence[str], location: int, content: str) -> str:
        """The attempt up to the wrong step, with the wrong step replaced by `content`."""
        return self.split_at(steps, location)[0] + self.intervention_text(content)
