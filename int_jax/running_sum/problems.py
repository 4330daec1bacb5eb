"""Running-sum problems, their reference solutions and the difficulty knob.

A problem is a start number and a list of operands ("Add 47+8+5+9+36."); its reference
solution is one step per addition, `left+operand=total`, separated by blank lines (the
steps config `split` cuts there, so step k of the solution is addition k), then the
boxed total as the last step. Difficulty is the number of operands and the share of
*carry* steps (the units digits sum to 10 or more): the base model drops carries, so
carries are what make a problem hard.
"""

from __future__ import annotations

import dataclasses
import random

from int_jax.data.records import Problem

STEP_SEPARATOR = "\n\n"  # the steps config's separator (intervention/steps.py)
MAX_TOTAL = 999  # totals stay within three digits


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """How a problem set is drawn: operand count range and the chance of a carry step."""

    name: str
    min_operands: int
    max_operands: int
    carry_share: float  # chance that a step is a carry step
    start_max: int = 99  # start number in [10, start_max]
    operand_max: int = 39  # operands in [1, operand_max]

    def __post_init__(self):
        if not 1 <= self.min_operands <= self.max_operands:
            raise ValueError(f"difficulty {self.name}: operands {self.min_operands}.."
                             f"{self.max_operands} is not a range of positive counts")
        if not 0.0 <= self.carry_share <= 1.0:
            raise ValueError(f"difficulty {self.name}: carry_share {self.carry_share} outside [0, 1]")


EASY = Difficulty("easy", 2, 4, carry_share=0.0)
HARD = Difficulty("hard", 6, 10, carry_share=0.9)  # about 3 carry steps in 4: a carry
# lowers the units digit, so runs of carries are short whatever the share asked for
DIFFICULTIES = {d.name: d for d in (EASY, HARD)}


def is_carry(left: int, operand: int) -> bool:
    """A step carries when the units digits of its two numbers sum to 10 or more."""
    return left % 10 + operand % 10 >= 10


def step_text(left: int, operand: int, total: int) -> str:
    return f"{left}+{operand}={total}"


def answer_step(total: int) -> str:
    return f"\\boxed{{{total}}}"


def problem_text(start: int, operands: list[int]) -> str:
    return "Add " + "+".join(str(x) for x in [start, *operands]) + "."


def reference_steps(start: int, operands: list[int]) -> list[str]:
    """The correct chain: one step per operand, then the boxed total."""
    steps, total = [], start
    for x in operands:
        steps.append(step_text(total, x, total + x))
        total += x
    return steps + [answer_step(total)]


def _operand(rng: random.Random, left: int, carry: bool, d: Difficulty) -> int | None:
    """An operand that makes the step a carry step or not, or None when none fits."""
    fits = [x for x in range(1, d.operand_max + 1)
            if is_carry(left, x) == carry and left + x <= MAX_TOTAL]
    # A total ending in 0 cannot carry next, one ending in 9 can hardly avoid it: prefer
    # totals ending in 5-9 where carries are wanted, in 0-4 where they are not, so
    # operands stay varied (not only ...0 and ...1) whichever kind the next step is.
    wants_carries = d.carry_share >= 0.5
    free = [x for x in fits if ((left + x) % 10 >= 5) == wants_carries]
    pool = free or fits
    return rng.choice(pool) if pool else None


def draw(rng: random.Random, d: Difficulty) -> tuple[int, list[int]]:
    """A start number and operands: each step is a carry step with chance `carry_share`
    (the other kind when that one cannot be had: a units digit 0 cannot carry)."""
    start = rng.randint(10, d.start_max)
    operands, total = [], start
    for _ in range(rng.randint(d.min_operands, d.max_operands)):
        want = rng.random() < d.carry_share
        x = _operand(rng, total, want, d)
        if x is None:
            x = _operand(rng, total, not want, d)
        if x is None:  # only when the total is at MAX_TOTAL: stop early
            break
        operands.append(x)
        total += x
    return start, operands


def make_problem(pid: str, start: int, operands: list[int], difficulty: str = "") -> Problem:
    steps = reference_steps(start, operands)
    total = start + sum(operands)
    carries = 0
    left = start
    for x in operands:
        carries += is_carry(left, x)
        left += x
    return Problem(id=pid, problem=problem_text(start, operands), answer=str(total),
                   reference_solution=STEP_SEPARATOR.join(steps), source="running_sum",
                   meta=dict(difficulty=difficulty, start=start, operands=list(operands),
                             carries=carries))


def problem_set(name: str, difficulty: Difficulty, n: int, seed: int,
                exclude: frozenset[str] = frozenset()) -> list[Problem]:
    """`n` distinct problems of one difficulty (texts in `exclude` are skipped, so a
    held-out set never repeats a training problem)."""
    rng = random.Random(f"{name}:{seed}")
    seen = set(exclude)
    out: list[Problem] = []
    for _ in range(100 * n):
        if len(out) == n:
            break
        start, operands = draw(rng, difficulty)
        text = problem_text(start, operands)
        if text in seen:
            continue
        seen.add(text)
        out.append(make_problem(f"{name}-{len(out):04d}", start, operands, difficulty.name))
    if len(out) < n:
        raise ValueError(f"problem set {name}: only {len(out)} distinct problems of {n}")
    return out


def operands_of(problem: Problem) -> tuple[int, list[int]]:
    """(start, operands) of a running-sum problem, from its meta or its text."""
    meta = problem.meta or {}
    if "start" in meta and "operands" in meta:
        return int(meta["start"]), [int(x) for x in meta["operands"]]
    text = problem.problem.strip()
    if not (text.startswith("Add ") and text.endswith(".")):
        raise ValueError(f"problem {problem.id!r}: not a running-sum problem: {text[:60]!r}")
    numbers = text[4:-1].split("+")
    if not all(x.isdigit() for x in numbers) or len(numbers) < 2:
        raise ValueError(f"problem {problem.id!r}: not a running-sum problem: {text[:60]!r}")
    return int(numbers[0]), [int(x) for x in numbers[1:]]
