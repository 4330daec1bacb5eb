"""The base model's training data: what a model that makes the toy's realistic mistakes
has seen, as SFT examples in the very chats the pipeline's stages send.

Kinds (shares in `config.base.shares`):
* `trace`: the problem alone -> an attempt with dropped carries (`traces.py`). This is
  where the base model's imperfection comes from.
* `guided`: turn 1 of the proposer chat (problem + reference) -> a solution that
  follows the reference.
* `verify`: the proposer chat (turn 1, its guided solution, then a failed attempt in
  labelled steps) -> the attempt checked step by step against the reference up to the
  true first wrong step (`checker.py`), then the intervention block naming it with the
  reference's step there (`chat.checked_answer`). Most failed attempts are dropped
  carries; a share (`other_errors`) have a step off by another amount, so the model
  learns to compare with the reference rather than to look for carries.
* `copy`: labelled steps with random totals -> the same steps as the checked answer
  writes them (`S1: 47+8=61`). Pretraining, not a pipeline chat: a checked answer copies
  the attempt's steps, and a step that is computable from the problem teaches a model
  to compute it, not to copy; only totals it cannot compute make it attend back to them.
* `reflect`, `hint`: small shares of the SFT(Reflect) and hint-guided RL prompts, so
  those baselines have answers to work from: a correct rewrite; the hint's steps
  followed by the model's own (dropped carries again).

Problems are drawn over the whole difficulty range (1-10 operands, any carry share),
from a seed distinct from the committed problem sets'.
"""

from __future__ import annotations

import random

from int_jax.data.records import Problem, Segment, SFTExample
from int_jax.intervention.prompts import hint_prefix
from int_jax.running_sum import chat, checker, traces
from int_jax.running_sum.problems import (STEP_SEPARATOR, Difficulty, draw, make_problem,
                                          reference_steps, step_text)

KINDS = ("trace", "guided", "verify", "copy", "reflect", "hint")
COPY_PROMPT = "Copy:\n"
VERIFY_ANSWERS = ("checked", "block")  # `chat.checked_answer`, `chat.intervention_block`


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


def attempt_to_verify(start: int, operands: list[int], rng: random.Random, drop: float,
                      other_errors: float) -> str | None:
    """A failed attempt as the proposer is taught on them: with chance `other_errors` one
    whose first error is not a carry (`other_error`), else dropped carries (at chance
    0.5 or more, so failures come quickly); None when the problem cannot fail so."""
    if rng.random() < other_errors:
        return other_error(start, operands, rng, drop)
    return traces.failed_attempt(start, operands, rng, max(drop, 0.5))


def verify_chat(problem: Problem, steps: list[str]) -> list[dict]:
    """The proposer chat on `steps`, its first turn answered by the reference."""
    reference = problem.reference_solution
    return chat.prompt_set().proposal_chat(problem.problem, reference, reference,
                                           chat.step_format().number(steps))


def random_step(rng: random.Random) -> str:
    """`left+operand=total` with the total off by up to 20 half the time."""
    left, operand = rng.randint(1, 400), rng.randint(1, 39)
    off = rng.choice([d for d in range(-20, 21) if d]) if rng.random() < 0.5 else 0
    return step_text(left, operand, max(0, left + operand + off))


def example(kind: str, index: int, rng: random.Random, drop: float,
            other_errors: float, verify_answer: str = "checked") -> SFTExample | None:
    """One example of `kind`, or None when the drawn problem cannot make one (no
    carry to drop for a failed attempt). `verify_answer`: "checked" (the attempt
    checked step by step in writing, then the block: `chat.checked_answer`) or "block"
    (the block alone)."""
    prompts, fmt = chat.prompt_set(), chat.step_format()
    if kind == "copy":
        steps = [random_step(rng) for _ in range(rng.randint(1, 10))]
        return _sft(index, kind, [{"role": "user", "content": COPY_PROMPT + fmt.number(steps)}],
                    chat.copied_steps(steps))
    start, operands = draw(rng, _mixed(rng))
    problem = make_problem(f"base-{index}", start, operands)
    reference = problem.reference_solution
    if kind == "trace":
        return _sft(index, kind, prompts.problem_chat(problem.problem),
                    traces.attempt(start, operands, rng, drop))
    if kind == "guided":
        return _sft(index, kind, prompts.solve_chat(problem.problem, reference), reference)
    failed = attempt_to_verify(start, operands, rng, drop, other_errors)
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
        messages = verify_chat(problem, steps)
        reference_list = reference_steps(start, operands)
        answer = (chat.checked_answer(steps, first, reference_list) if verify_answer == "checked"
                  else chat.intervention_block(first, reference_list[first - 1]))
        return _sft(index, kind, messages, answer)
    raise ValueError(f"unknown base example kind {kind!r}; known: {KINDS}")


def _sft(index: int, kind: str, messages, response: str) -> SFTExample:
    return SFTExample(id=f"base-{index}/{kind}", problem_id=f"base-{index}", messages=messages,
                      segments=[Segment("response", response)], meta={"kind": kind})


def examples(n: int, shares: dict[str, float], seed: int, drop: float,
             other_errors: float, verify_answer: str = "checked") -> list[SFTExample]:
    """`n` examples, kinds drawn by `shares` (normalised)."""
    unknown = sorted(set(shares) - set(KINDS))
    if unknown:
        raise ValueError(f"config.base.shares: unknown kind(s) {unknown}; known: {KINDS}")
    if verify_answer not in VERIFY_ANSWERS:
        raise ValueError(f"config.base.verify_answer={verify_answer!r}; known: {VERIFY_ANSWERS}")
    kinds = [k for k in KINDS if shares.get(k, 0) > 0]
    weights = [float(shares[k]) for k in kinds]
    rng = random.Random(f"base:{seed}")
    out: list[SFTExample] = []
    while len(out) < n:
        kind = rng.choices(kinds, weights)[0]
        ex = example(kind, len(out), rng, drop, other_errors, verify_answer)
        if ex is not None:
            out.append(ex)
    return out
