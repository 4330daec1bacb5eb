"""Grade model responses against gold answers: ``grade`` and ``grade_batch``.

The final answer is the last ``\\boxed{...}`` (``answers.py``), extracted here in the
calling process by a linear scan, so only short answers travel to the grading worker
processes (``pool.py``), where math-verify plus our normalisation
(``equivalence.py``) decide equivalence under a hard per-item time limit.

Choice for in-process callers: ``grade`` and ``grade_batch`` without an explicit pool
use one module-level ``GraderPool`` started on first use (``os.cpu_count()`` workers,
closed at exit, rebuilt after a fork). So every call, even a single ``grade`` from a
stage's inner loop, is bounded in time and can never hang or crash its caller.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterable

from int_jax.grading.answers import extract_answer
from int_jax.grading.grade import Grade
from int_jax.grading.pool import GraderPool

__all__ = ["DEFAULT_TIMEOUT_S", "Grade", "GraderPool", "grade", "grade_batch", "default_pool"]

DEFAULT_TIMEOUT_S = 5.0

_default: GraderPool | None = None
_default_lock = threading.Lock()


def default_pool() -> GraderPool:
    """The shared pool (started lazily; replaced if closed or if we are a forked child)."""
    global _default
    with _default_lock:
        if _default is None or not _default.usable:
            _default = GraderPool()
        return _default


@atexit.register
def _close_default() -> None:
    if _default is not None:
        _default.close()


def grade_batch(
    pairs: Iterable[tuple[str, str]],
    *,
    workers: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    pool: GraderPool | None = None,
    multi_box: bool = False,
) -> list[Grade]:
    """Grade (response, gold) pairs; one ``Grade`` per pair, in input order.

    ``workers`` sizes a pool for this call only (default: the shared pool). Each
    distinct (answer, gold) is graded once; a pair whose grading runs past
    ``timeout_s`` (+ the pool's grace) is graded ``Grade.TIMEOUT``. ``multi_box``
    (``grading.multi_box``): a response's closing boxes are one answer list and a
    "final answer" sentence after its last box wins; default the authors' last box
    (``answers.py``).
    """
    pairs = list(pairs)
    grades: list[Grade | None] = [None] * len(pairs)
    todo: dict[tuple[str, str], list[int]] = {}
    for i, (response, gold) in enumerate(pairs):
        answer, too_long = extract_answer(response, multi_box)
        if too_long:
            grades[i] = Grade.UNPARSABLE
        elif not answer:
            grades[i] = Grade.NO_ANSWER
        else:
            todo.setdefault((answer, gold), []).append(i)
    if todo:
        keys = list(todo)
        if pool is None and workers is not None:
            with GraderPool(workers) as own:
                results = own.grade_answers(keys, timeout_s)
        else:
            results = (pool or default_pool()).grade_answers(keys, timeout_s)
        for key, result in zip(keys, results):
            for i in todo[key]:
                grades[i] = result
    return grades  # type: ignore[return-value]


def grade(response: str, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
          multi_box: bool = False) -> Grade:
    """Grade one response (through the shared pool, so it is time-bounded)."""
    return grade_batch([(response, gold)], timeout_s=timeout_s, multi_box=multi_box)[0]


