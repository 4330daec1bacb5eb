"""The exact checker: the true first wrong step of any attempt, and its final answer.

The chain is deterministic: after steps 1..k-1 done right the running total is known,
so the correct step k is fixed (`problems.reference_steps`). A step is *wrong* when its
text differs from that correct step. After the first wrong step every later step is
wrong too (its left operand is off), even when it adds its own numbers right; such a
step is `propagated`, and only a step that is wrong *given its own left operand* is an
`own_error`. The first wrong step is always an own error, and it is the step an
intervention must name: `first_wrong`.

Steps are cut with the toy's step format (`split="normalized"`: blank-line runs,
stripped), so step numbers are the ones the proposer saw.
"""

from __future__ import annotations

import dataclasses
import re

from int_jax.intervention.steps import split_steps
from int_jax.running_sum.problems import reference_steps

STEP_JOIN = "\n\n"
_STEP = re.compile(r"^(\d{1,4})\+(\d{1,4})=(\d{1,4})$")
_BOXED = re.compile(r"^\\boxed\{(\d{1,4})\}$")

CORRECT, OWN_ERROR, PROPAGATED, MISSING, EXTRA = "correct", "own_error", "propagated", "missing", "extra"


@dataclasses.dataclass(frozen=True)
class Check:
    """What the checker knows of one attempt."""

    verdicts: tuple[str, ...]  # per step of the attempt (and `missing` for absent ones)
    first_wrong: int | None  # 1-based; None when every step matches the reference
    answer_correct: bool  # the attempt's last boxed number is the true total (the grader's rule)

    @property
    def steps_wrong(self) -> tuple[int, ...]:
        return tuple(i for i, v in enumerate(self.verdicts, 1) if v != CORRECT)


_ANY_BOXED = re.compile(r"\\boxed\{\s*(\d{1,6})\s*\}")


def check_steps(start: int, operands: list[int], steps: list[str]) -> Check:
    """Verdict per step: `correct` (equals the reference step), `own_error` (wrong given
    its own left operand, or not a step of the right shape), `propagated` (right
    arithmetic on a left operand that an earlier wrong step made wrong), `extra` (past
    the reference's last step), `missing` (a reference step the attempt lacks)."""
    reference = reference_steps(start, operands)
    verdicts: list[str] = []
    previous: int | None = start  # the attempt's own running total before this step
    for i, step in enumerate(steps):
        if i >= len(reference):
            verdicts.append(EXTRA)
            continue
        if step == reference[i]:
            verdicts.append(CORRECT)
        elif i < len(operands):
            m = _STEP.match(step)
            consistent = (m is not None and previous is not None
                          and int(m.group(1)) == previous and int(m.group(2)) == operands[i]
                          and int(m.group(3)) == previous + operands[i])
            wrong_before = any(v != CORRECT for v in verdicts)
            verdicts.append(PROPAGATED if consistent and wrong_before else OWN_ERROR)
        else:  # the answer step
            m = _BOXED.match(step)
            consistent = m is not None and previous is not None and int(m.group(1)) == previous
            wrong_before = any(v != CORRECT for v in verdicts)
            verdicts.append(PROPAGATED if consistent and wrong_before else OWN_ERROR)
        m = _STEP.match(step)
        previous = int(m.group(3)) if m else None
    verdicts += [MISSING] * (len(reference) - len(steps))
    first = next((i for i, v in enumerate(verdicts, 1) if v != CORRECT), None)
    boxed = _ANY_BOXED.findall(STEP_JOIN.join(steps))
    answer = bool(boxed) and int(boxed[-1]) == start + sum(operands)  # the grader's rule: the last box
    return Check(verdicts=tuple(verdicts), first_wrong=first, answer_correct=answer)


def check_attempt(start: int, operands: list[int], text: str) -> Check:
    """`check_steps` on an attempt's text, cut into steps as the toy's pipeline cuts it."""
    return check_steps(start, operands, split_steps(text))
