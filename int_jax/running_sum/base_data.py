"""The base model's training data: what a model that makes the toy's realistic mistakes
has seen, as SFT examples in the very chats the pipeline's stages send.

Kinds (shares in `config.base.shares`):
* `trace`: the problem alone -> an attempt with dropped carries (`traces.py`). This is
  where the base model's imperfection comes from.
* `guided`: turn 1 of the proposer chat (problem + reference) -> a solution that
  follows the reference.
* `verify`: the proposer chat (turn 1, its guided solution, then a failed attempt in
  labelled steps) -> the intervention block naming the true first wrong step
  (`checker.py`) and the reference's step there. Most failed attempts are dropped
  carries; a share (`other_errors`) have a step off by another amount, so the model
  learns to compare with the reference rather than to look for carries.
* `reflect`, `hint`: small shares of the SFT(Reflect) and hint-guided RL prompts, so
  those baselines have answers to work from: a correct rewrite; the hint's steps
  followed by the model's own (dropped carries again).

Problems are drawn over the whole difficulty range (1-10 operands, any carry share),
from a seed distinct from the committed problem sets'.
"""

from __future__ import annotations

import random

from int_jax.data.records import Segment, SFTExample
from int_jax.intervention.prompts import hint_prefix
from int_jax.running_sum import chat, checker, traces
from int_jax.running_sum.problems import (STEP_SEPARATOR, Difficulty, draw, make_problem,
                                          reference_steps, step_text)

KINDS = ("trace", "guided", "verify", "reflect", "hint")


def _mixed(rng: random.Random) -> Difficulty:
    return Difficulty("mixed", 1, 10, carry_share=rng.random())


def other_error(start: int, operands: list[int], rng: random.Random, drop: float) -> str | None:
    """An attempt whose first error is a step off by 1-20 (not a dropped carry), with
    dropped carries before none of it and possibly after it."""
    if not operands:
        return None
    at = rng.randrange(len(operands))
    steps = reference_steps(start, operands)[:at]
    left = start + sum(operands[:at])
    wrong = left + operands[at] + rng.choice([d for d in range(-20, 21) if d])
    if wrong < 0:
        return None
    steps.append(step_text(left, operands[at], wrong))
    steps += traces.attempt_steps(start, operands, rng, drop, total=wrong, first=at + 1)
    return STEP_SEPARATOR.join(steps)


def example(kind: str, index: int, rng: random.Random, drop: float,
            other_errors: float) -> SFTExample | None:
    """One example of `kind`, or None when the drawn problem cannot make one (no
    carry to drop for a failed attempt)."""
    prompts, fmt = chat.prompt_set(), chat.step_format()
    start, operands = draw(rng, _mixed(rng))
    problem = make_problem(f"base-{index}", start, operands)
    reference = problem.reference_solution
    if kind == "trace":
        return _sft(index, kind, prompts.problem_chat(problem.problem),
                    traces.attempt(start, operands, rng, drop))
    if kind == "guided":
        return _sft(index, kind, prompts.solve_chat(problem.problem, reference), reference)
    failed = (other_error(start, operands, rng, drop) if rng.random() < other_errors
              else traces.failed_attempt(start, operands, rng, max(drop, 0.5)))
    if kind == "hint":
        hint = hint_prefix(reference, 0.5)
        known = fmt.split(hint)
        return _sft(index, kind, prompts.hint_chat(problem.problem, hint),
                    STEP_SEPARATOR.join(traces.continued(start, operands, known, rng, drop)))
    if failed is None:
        return None
    if kind == "reflect":
        return _sft(index, kind, prompts.reflect_chat(problem.problem, reference, failed), reference)
    if kind == "verify":
        steps = fmt.split(failed)
        first = checker.check_steps(start, operands, steps).first_wrong
        messages = prompts.proposal_chat(problem.problem, reference, reference, fmt.number(steps))
        return _sft(index, kind, messages,
                    chat.intervention_block(first, reference_steps(start, operands)[first - 1]))
    raise ValueError(f"unknown base example kind {kind!r}; known: {KINDS}")


def _sft(index: int, kind: str, messages, response: str) -> SFTExample:
    return SFTExample(id=f"base-{index}/{kind}", problem_id=f"base-{index}", messages=messages,
                      segments=[Segment("response", response)], meta={"kind": kind})


def examples(n: int, shares: dict[str, float], seed: int, drop: float,
             other_errors: float) -> list[SFTExample]:
    """`n` examples, kinds drawn by `shares` (normalised)."""
    unknown = sorted(set(shares) - set(KINDS))
    if unknown:
        raise ValueError(f"config.base.shares: unknown kind(s) {unknown}; known: {KINDS}")
    kinds = [k for k in KINDS if shares.get(k, 0) > 0]
    weights = [float(shares[k]) for k in kinds]
    rng = random.Random(f"base:{seed}")
    out: list[SFTExample] = []
    while len(out) < n:
        kind = rng.choices(kinds, weights)[0]
        ex = example(kind, len(out), rng, drop, other_errors)
        if ex is not None:
            out.append(ex)
    return out
