"""The outcome of grading one response against one gold answer."""

from __future__ import annotations

import enum


class Grade(str, enum.Enum):
    """Why a response did or did not earn the reward.

    Only ``CORRECT`` earns it; the other values say why not, so rollouts and eval
    reports can tell a wrong answer from a missing, unreadable or too-slow one.
    """

    CORRECT = "correct"
    WRONG = "wrong"
    NO_ANSWER = "no_answer"  # no final \boxed{...} in the response
    # an answer, but too long, not readable as math, or in a form the grader cannot
    # compare with the gold's (an elided list against a formula): undecided, not wrong
    UNPARSABLE = "unparsable"
    TIMEOUT = "timeout"  # grading ran past its time limit (or its worker died)

    @property
    def is_correct(self) -> bool:
        return self is Grade.CORRECT
