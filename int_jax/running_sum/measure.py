"""What the domain knows that the pipeline does not: accuracy by difficulty and whether
proposed locations are the true first errors (`checker.py`), read from a run folder.

Used by `int-jax running-sum measure RUN_DIR` and the toy's slow test.
"""

from __future__ import annotations

import collections
from pathlib import Path

from int_jax.data.records import Problem, Proposal, Rollout, iter_records
from int_jax.running_sum.checker import CORRECT, MISSING, check_attempt
from int_jax.running_sum.problems import operands_of


def _records(path: Path, cls):
    return list(iter_records(path, cls)) if path.exists() else []


def measure(run: str | Path) -> dict:
    """Counts from `<run>/rollout` and `<run>/filter/checks.jsonl`:

    * per difficulty: attempts, correct (the grader's verdict) and the checker's;
    * over parsed proposals: located at the true first wrong step, at some wrong step,
      at a correct one; and the expected first two counts of a proposer that names one
      of the attempt's steps at random (`*_by_chance`: most steps of a failed hard
      attempt are wrong, so "some wrong step" is easy to hit)."""
    run = Path(run)
    problems = {p.id: p for p in _records(run / "rollout" / "problems.jsonl", Problem)}
    rollouts = {r.id: r for r in _records(run / "rollout" / "rollouts.jsonl", Rollout)}
    by_difficulty: dict = collections.defaultdict(collections.Counter)
    checks = {}
    for r in rollouts.values():
        p = problems[r.problem_id]
        start, operands = operands_of(p)
        checks[r.id] = check_attempt(start, operands, r.completion)
        c = by_difficulty[(p.meta or {}).get("difficulty", "")]
        c["attempts"] += 1
        c["correct"] += int(r.correct)
        c["checker_correct"] += int(checks[r.id].answer_correct)
    located = collections.Counter()
    for q in _records(run / "filter" / "checks.jsonl", Proposal):
        located["proposals"] += 1
        if q.location is None:
            continue
        located["parsed"] += 1
        check = checks[q.rollout_id]
        verdicts = check.verdicts
        located["first_wrong"] += int(q.location == check.first_wrong)
        located["at_wrong_step"] += int(1 <= q.location <= len(verdicts)
                                        and verdicts[q.location - 1] != CORRECT)
        located["at_correct_step"] += int(1 <= q.location <= len(verdicts)
                                          and verdicts[q.location - 1] == CORRECT)
        # What naming a step of the attempt at random would score, to read the two above by.
        own = [v for v in verdicts if v != MISSING]  # the attempt's steps
        if own:
            located["first_wrong_by_chance"] += 1 / len(own)
            located["at_wrong_step_by_chance"] += sum(v != CORRECT for v in own) / len(own)
    return {"accuracy": {k: dict(v) for k, v in sorted(by_difficulty.items())},
            "locations": {k: round(v, 1) if isinstance(v, float) else v
                          for k, v in located.items()}}
