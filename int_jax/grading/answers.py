"""Final-answer extraction: the content of the last ``\\boxed{...}`` in a response.

Model text is untrusted and can be long (16k tokens) or adversarial (unbalanced or
deeply nested braces), so extraction is a single linear scan from the last marker,
never a regex over the whole text, and its result is bounded in size.

Two readings of a response:

* the authors' last-box rule (the default): the answer is the last box;
* ``multi_box`` (``grading.multi_box``): the boxes that end the response, written
  next to each other (``\\boxed{-2} and \\boxed{1}``), are one answer list, and a
  "final answer is ..." sentence written *after* the last box is the answer (the box
  was a sub-result).

A gold answer is reference data, not model output: ``gold_answer`` reduces one given
as solution text to its final answer (its closing boxes as one list, else its "final
answer" sentence), whatever the switch.
"""

from __future__ import annotations

import re

# Answers longer than this are not graded (the grader calls them unparsable).
MAX_ANSWER_CHARS = 1000
# At most this many boxes are read as one answer list.
MAX_BOXES = 16
# Golds are read from their last this-many characters (a whole solution ends there).
MAX_GOLD_CHARS = 50_000

_MARKERS = ("\\boxed", "\\fbox")
# `\boxed 5`: a bare token after whitespace ends at whitespace or a math delimiter.
_BARE_TOKEN = re.compile(r"[^\s$\\]+")
# What may stand between two boxes of one answer: spacing, punctuation, math
# delimiters, `and` / `or`. Searched in a short window before a box (bounded).
_BETWEEN_BOXES = re.compile(
    r"(?:\s|[$,;.&]|\\[,;:! ]|\\q?quad(?![A-Za-z])|\\\\|\\[()\[\]]|"
    r"\\text\s*\{\s*(?:and|or|,)?\s*\}|(?<![A-Za-z])(?:and|or)(?![A-Za-z]))*\Z"
)
_BETWEEN_WINDOW = 120
# "final answer is", "Final Answer:", ...: the last one in a text starts its answer.
_FINAL_ANSWER = re.compile(r"final\s+answer\s*(?:is\b|:)\s*(?::\s*)?", re.IGNORECASE)
_STATEMENT_CHARS = 400


def _last_marker(text: str, end: int | None = None) -> tuple[int, int]:
    """(start, end) of the last ``\\boxed`` / ``\\fbox`` that is a whole command and
    starts before ``end``."""
    best = (-1, -1)
    for marker in _MARKERS:
        stop = len(text) if end is None else end
        while True:
            i = text.rfind(marker, 0, stop)
            if i < 0:
                break
            j = i + len(marker)
            # `\boxedfoo` is another command, not `\boxed`.
            if j < len(text) and text[j].isalpha():
                stop = i
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


def _box_at(text: str, start: int, j: int) -> tuple[str | None, int]:
    """(content, end) of the box whose marker spans ``text[start:j]``; end is the index
    after it. Content None when the box never closes or has no argument."""
    k = j
    while k < len(text) and text[k] in " \t":
        k += 1
    if k < len(text) and text[k] == "{":
        content = _braced(text, k)
        return content, (k + len(content) + 2 if content is not None else len(text))
    if k > j:  # `\boxed 5`
        m = _BARE_TOKEN.match(text, k)
        return (m.group(0), m.end()) if m else (None, len(text))
    return None, len(text)


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
    return _box_at(text, start, j)[0]


def _escaped(text: str, i: int) -> bool:
    """Is ``text[i]`` escaped (preceded by an odd run of backslashes)?"""
    n = 0
    while i - n - 1 >= 0 and text[i - n - 1] == "\\" and n < MAX_ANSWER_CHARS:
        n += 1
    return n % 2 == 1


def _box_before(text: str, start: int) -> tuple[str, int] | None:
    """The box that ends right before ``start`` with only separators (spacing,
    punctuation, `and`) between: (content, its marker's start), else None. Costs
    O(that box's length), bounded by ``MAX_ANSWER_CHARS``."""
    lo = max(0, start - _BETWEEN_WINDOW)
    m = _BETWEEN_BOXES.search(text, lo, start)
    p = m.start() if m else start
    if p == 0 or text[p - 1] != "}" or _escaped(text, p - 1):
        return None
    depth, i = 0, p - 1
    floor = max(0, p - 1 - MAX_ANSWER_CHARS - 2)
    while i >= floor:
        c = text[i]
        if c in "{}" and not _escaped(text, i):
            depth += 1 if c == "}" else -1
            if depth == 0:
                break
        i -= 1
    else:
        return None
    k = i
    while k > 0 and text[k - 1] in " \t":
        k -= 1
    for marker in _MARKERS:
        if text.endswith(marker, 0, k):
            content = _braced(text, i)
            if content is not None and i + len(content) + 2 == p:
                return content, k - len(marker)
    return None


def boxed_group(text: str) -> list[str] | None:
    """The boxes that end ``text``'s last box run, in order: the last box and the ones
    written right before it with only spacing, punctuation or `and` between
    (``\\boxed{1}\\boxed{2}``, ``\\boxed{-2} \\quad\\text{and}\\quad \\boxed{1}``).
    None when there is no box or the last one never closes."""
    start, j = _last_marker(text)
    if start < 0:
        return None
    last = _box_at(text, start, j)[0]
    if last is None:
        return None
    group = [last]
    size = len(last)
    while len(group) < MAX_BOXES:
        prev = _box_before(text, start)
        if prev is None or size + len(prev[0]) > MAX_ANSWER_CHARS:
            break
        group.append(prev[0])
        size += len(prev[0])
        start = prev[1]
    return group[::-1]


def final_answer_statement(text: str) -> str | None:
    """The answer stated in the text's last "final answer is ..." / "Final Answer:"
    sentence (up to its end, math spans kept whole), or None."""
    match = None
    for match in _FINAL_ANSWER.finditer(text):
        pass
    if match is None:
        return None
    i, n = match.end(), min(len(text), match.end() + _STATEMENT_CHARS)
    in_math = False
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] == "$":
            i += 2
            continue
        if c == "$":
            in_math = not in_math
        elif c == "\n" and not in_math:
            break
        elif c == "." and not in_math and (i + 1 >= len(text) or text[i + 1].isspace()):
            break
        i += 1
    value = text[match.end() : i].replace('\\"', '"').strip().strip('"“”\'`').strip()
    return value or None


def _join(parts: list[str]) -> str:
    return ", ".join(p.strip() for p in parts)


def _statement_after_last_box(text: str) -> str | None:
    """A "final answer" sentence after the last box that states something (a digit
    or math), read from the response's tail only."""
    start, j = _last_marker(text)
    if start < 0:
        return None
    end = _box_at(text, start, j)[1]
    tail = text[max(end, len(text) - 3 * MAX_ANSWER_CHARS) :]
    value = final_answer_statement(tail)
    if value and re.search(r"[0-9$\\]", value):
        return value
    return None


def response_answer(text: str, multi_box: bool = False) -> str | None:
    """The response's final answer, unstripped and unbounded (see module doc)."""
    if not multi_box:
        return last_boxed(text)
    group = boxed_group(text)
    if group is None:
        return None
    return _statement_after_last_box(text) or _join(group)


def extract_answer(text: str, multi_box: bool = False) -> tuple[str | None, bool]:
    """(answer, too_long): the response's final answer, stripped, and whether it is
    too long to grade. ``(None, False)`` means the response has no final answer.
    ``multi_box``: read closing box runs and a later "final answer" sentence (module
    doc); default the authors' last box."""
    answer = response_answer(text, multi_box)
    if answer is None:
        return None, False
    answer = answer.strip()
    if len(answer) > MAX_ANSWER_CHARS:
        return None, True
    return answer, False


def gold_answer(gold: str) -> str:
    """A gold reduced to its final answer: its closing box run (several boxes: one
    list), else its "final answer" sentence when it has one, else itself."""
    text = gold[-MAX_GOLD_CHARS:]
    if "\\boxed" in text or "\\fbox" in text:
        group = boxed_group(text)
        if group:
            return _join(group)
    if "answer" in text.lower():
        value = final_answer_statement(text)
        if value:
            return value
    return gold
