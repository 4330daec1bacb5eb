"""Final-answer extraction: the content of the last ``\\boxed{...}`` in a response.

Model text is untrusted and can be long (16k tokens) or adversarial (unbalanced or
deeply nested braces), so extraction is a single linear scan from the last marker,
never a regex over the whole text, and its result is bounded in size.
"""

from __future__ import annotations

import re

# Answers longer than this are not graded (the grader calls them unparsable).
MAX_ANSWER_CHARS = 1000

_MARKERS = ("\\boxed", "\\fbox")
# `\boxed 5`: a bare token after whitespace ends at whitespace or a math delimiter.
_BARE_TOKEN = re.compile(r"[^\s$\\]+")


def _last_marker(text: str) -> tuple[int, int]:
    """(start, end) of the last ``\\boxed`` / ``\\fbox`` that is a whole command."""
    best = (-1, -1)
    for marker in _MARKERS:
        end = len(text)
        while True:
            i = text.rfind(marker, 0, end)
            if i < 0:
                break
            j = i + len(marker)
            # `\boxedfoo` is another command, not `\boxed`.
            if j < len(text) and text[j].isalpha():
                end = i
                continue
            if i > best[0]:
                best = (i, j)
            break
    return best


def _braced(text: str, open_at: int) -> str | None:
    """Content of the brace group opening at ``open_at``; None when it never closes."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":  # `\{` and `\}` are literal braces, not grouping.
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` (or ``\\boxed 5``).

    Returns None when there is none, and when the last one never closes (a response
    cut off inside its answer has no answer; an earlier box is not its final answer).
    The content may be longer than ``MAX_ANSWER_CHARS``; callers decide what that
    means (see ``extract_answer``).
    """
    start, j = _last_marker(text)
    if start < 0:
        return None
    k = j
    while k < len(text) and text[k] in " \t":
        k += 1
    if k < len(text) and text[k] == "{":
        return _braced(text, k)
    if k > j:  # `\boxed 5`
        m = _BARE_TOKEN.match(text, k)
        return m.group(0) if m else None
    return None


def extract_answer(text: str) -> tuple[str | None, bool]:
    """(answer, too_long): the last boxed answer, stripped, and whether it is too long
    to grade. ``(None, False)`` means the response has no final answer."""
    answer = last_boxed(text)
    if answer is None:
        return None, False
    answer = answer.strip()
    if len(answer) > MAX_ANSWER_CHARS:
        return None, True
    return answer, False
