"""Attempts the way the base model should make them: right, except that a carry is
sometimes dropped.

The base model's one systematic, realistic error: at a carry step (the units digits
sum to 10 or more) it writes the total without the carry (`47+8=45`) with chance
`drop`; every later step then continues, arithmetically right, from the wrong total,
and the boxed answer is that wrong total. So a problem with c carry steps is solved
with chance (1 - drop)^c: easy problems (no carries) always, hard ones (8 carries,
drop 0.35) about 3% of the time. Whether a step carries is judged on the attempt's own
running total, as a model that copies its previous result would.
"""

from __future__ import annotations

import random

from int_jax.running_sum.problems import STEP_SEPARATOR, answer_step, is_carry, step_text

DROP = 0.35  # chance of dropping a carry: the base model's error rate per carry step


def dropped(left: int, operand: int) -> int:
    """The total of a carry step written without its carry: the sum less ten."""
    return left + operand - 10


def attempt_steps(start: int, operands: list[int], rng: random.Random, drop: float = DROP,
                  total: int | None = None, first: int = 0) -> list[str]:
    """Steps `first`.. of an attempt from running total `total` (default: the start), each
    carry dropped with chance `drop`; the boxed total last."""
    if not 0.0 <= drop <= 1.0:
        raise ValueError(f"drop={drop}: a probability in [0, 1]")
    steps = []
    total = start if total is None else total
    for x in operands[first:]:
        new = dropped(total, x) if is_carry(total, x) and rng.random() < drop else total + x
        steps.append(step_text(total, x, new))
        total = new
    return steps + [answer_step(total)]


def attempt(start: int, operands: list[int], rng: random.Random, drop: float = DROP) -> str:
    return STEP_SEPARATOR.join(attempt_steps(start, operands, rng, drop))


def failed_attempt(start: int, operands: list[int], rng: random.Random, drop: float = DROP,
                   tries: int = 200) -> str | None:
    """An attempt with at least one dropped carry (None when the problem has no carry
    step or none was drawn in `tries`)."""
    for _ in range(tries):
        steps = attempt_steps(start, operands, rng, drop)
        if steps[-1] != answer_step(start + sum(operands)):
            return STEP_SEPARATOR.join(steps)
    return None


def continued(start: int, operands: list[int], known: list[str], rng: random.Random,
              drop: float = DROP) -> list[str]:
    """`known` correct leading steps (a hint) followed by the model's own steps from there."""
    total = start + sum(operands[:len(known)])
    return list(known) + attempt_steps(start, operands, rng, drop, total=total, first=len(known))
