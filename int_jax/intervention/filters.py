"""Which parsed proposals become interventions, and why the others did not.

A proposal survives when it parsed, names a step of the attempt, has non-empty
content of bounded length, and does not leak the gold answer. Two leak tests
(`filter.leak_test`):

* `substring` (the authors'): the gold answer, outer whitespace stripped, is a
  substring of the content; gold `2` is found in "12 ways" too.
* `normalized` (ours): raw text and a normalised form are compared
  (`\\dfrac{1}{2}`, `\\frac12` and `1/2` all read `1/2`; `$`, `\\left`, spacing
  and `\\text{}` wrappers are dropped), whole tokens only, so gold `2` is found
  in "so x = 2." but not in "12 ways", and `\\frac{1}{2}` is found as "1/2".

Reasons are fixed strings so that stage counters and stats agree.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

from int_jax.intervention.parse import ParseResult

NO_BLOCK = "no_block"
UNPARSABLE = "unparsable"
LOCATION_OUT_OF_RANGE = "location_out_of_range"
EMPTY_CONTENT = "empty_content"
CONTENT_TOO_LONG = "content_too_long"
LEAKY = "leaky"
REASONS = (NO_BLOCK, UNPARSABLE, LOCATION_OUT_OF_RANGE, EMPTY_CONTENT, CONTENT_TOO_LONG, LEAKY)

LEAK_TESTS = ("substring", "normalized")

MAX_CONTENT_CHARS = 4000
# Normalisation runs on at most this much text (content is length-checked before).
_MAX_NORMALISE_CHARS = 20_000

_UNICODE = {"\u2212": "-", "\u2013": "-", "\u00d7": "*", "\u22c5": "*", "\u00b7": "*",
            "\u00f7": "/", "\u221a": "\\sqrt", "\u03c0": "\\pi", "\u2264": "\\le", "\u2265": "\\ge"}
_DROP = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg|displaystyle|textstyle)(?![A-Za-z])"
                   r"|\\[,;:! ]|\\q?quad(?![A-Za-z])|\$|\\\(|\\\)|\\\[|\\\]|~")
_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mathit|operatorname|boxed|mbox)"
                       r"(?![A-Za-z])\s*")
_SYNONYMS = [
    (re.compile(r"\\[dt]frac(?![A-Za-z])"), r"\\frac"),
    (re.compile(r"\\(?:cdot|times)(?![A-Za-z])"), "*"),
    (re.compile(r"\\(?:leq|leqslant)(?![A-Za-z])"), r"\\le"),
    (re.compile(r"\\(?:geq|geqslant)(?![A-Za-z])"), r"\\ge"),
    (re.compile(r"\\%"), "%"),
]
_SPACE = re.compile(r"\s+")
_SPACE_AROUND_SYMBOL = re.compile(r" ?([^\w ]) ?")
_ATOM = re.compile(r"^[\w.]+$")


def _group(s: str, i: int) -> tuple[str, int] | None:
    """The argument starting at `i`: a brace group or one character; (text, end)."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return None
    if s[i] != "{":
        return s[i], i + 1
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return s[i + 1:j], j + 1
    return None


def _rewrite_commands(s: str, command: str, arity: int, render, max_rewrites: int = 200) -> str:
    """Replace `\\command{a}{b}` by `render(a, b)`, innermost (last) first."""
    for _ in range(max_rewrites):
        at = s.rfind(command)
        while at >= 0 and at + len(command) < len(s) and s[at + len(command)].isalpha():
            at = s.rfind(command, 0, at)
        if at < 0:
            break
        args, end = [], at + len(command)
        for _ in range(arity):
            got = _group(s, end)
            if got is None:
                break
            args.append(got[0])
            end = got[1]
        if len(args) < arity:  # malformed: drop the command name, keep the rest
            s = s[:at] + s[at + len(command):]
            continue
        s = s[:at] + render(*args) + s[end:]
    return s


def _paren(x: str) -> str:
    return x if _ATOM.match(x) else f"({x})"


def normalise_math(text: str) -> str:
    """A canonical spelling of a short math expression, for substring comparison."""
    s = text[:_MAX_NORMALISE_CHARS]
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    for pattern, repl in _SYNONYMS:
        s = pattern.sub(repl, s)
    s = _DROP.sub(" ", s)
    s = _WRAPPERS.sub("", s)
    s = _rewrite_commands(s, "\\frac", 2, lambda a, b: f"{_paren(a)}/{_paren(b)}")
    s = _rewrite_commands(s, "\\sqrt", 1, lambda a: f"sqrt({a})")
    s = s.replace("{", "").replace("}", "")
    s = _SPACE.sub(" ", s).strip()
    s = _SPACE_AROUND_SYMBOL.sub(r"\1", s)
    return s.rstrip(".").strip().lower()


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def contains_token(haystack: str, needle: str) -> bool:
    """`needle` occurs in `haystack` not glued to letters/digits on either side
    (nor to a decimal point between digits: `2` is not in `2.5`)."""
    if not needle:
        return False
    start = 0
    while True:
        i = haystack.find(needle, start)
        if i < 0:
            return False
        j = i + len(needle)
        before = haystack[i - 1] if i > 0 else ""
        after = haystack[j] if j < len(haystack) else ""
        ok = True
        if before and _is_word_char(needle[0]) and _is_word_char(before):
            ok = False
        if after and _is_word_char(needle[-1]) and _is_word_char(after):
            ok = False
        if needle[0].isdigit() and before == "." and i > 1 and haystack[i - 2].isdigit():
            ok = False
        if needle[-1].isdigit() and after == "." and j + 1 < len(haystack) \
                and haystack[j + 1].isdigit():
            ok = False
        if ok:
            return True
        start = i + 1


def contains_gold(content: str, gold: str) -> bool:
    """The authors' leak test: the gold answer is a substring of `content`."""
    gold = (gold or "").strip()
    return bool(gold) and gold in content


def is_leaky(content: str, gold: str) -> bool:
    """Our leak test: the gold answer appears in `content` as whole tokens, verbatim or
    after normalisation."""
    gold_raw = (gold or "").strip().rstrip(".").strip()
    if not gold_raw:
        return False
    if contains_token(content, gold_raw):
        return True
    gold_norm = normalise_math(gold_raw)
    return bool(gold_norm) and contains_token(normalise_math(content), gold_norm)


def leaks(content: str, gold: str, leak_test: str) -> bool:
    """`content` gives the gold answer away under `leak_test` (one of `LEAK_TESTS`)."""
    if leak_test == "substring":
        return contains_gold(content, gold)
    if leak_test == "normalized":
        return is_leaky(content, gold)
    raise ValueError(f"config.filter.leak_test={leak_test!r}; choose one of {LEAK_TESTS}")


def rejection(parsed: ParseResult, n_steps: int, gold: str,
              max_content_chars: int = MAX_CONTENT_CHARS,
              leak_test: str = "substring") -> str | None:
    """The reason a proposal is dropped (one of `REASONS`), or None when it survives."""
    if not parsed.ok:
        return parsed.error if parsed.error in (NO_BLOCK, UNPARSABLE) else UNPARSABLE
    if not 1 <= parsed.location <= n_steps:
        return LOCATION_OUT_OF_RANGE
    content = parsed.content.strip()
    if not content:
        return EMPTY_CONTENT
    if len(content) > max_content_chars:
        return CONTENT_TOO_LONG
    if leaks(content, gold, leak_test):
        return LEAKY
    return None


@dataclasses.dataclass(frozen=True)
class Verdict:
    index: int  # proposal number within its attempt
    reason: str | None  # None: survived


def first_survivor(verdicts: Iterable[Verdict]) -> int | None:
    """Index of the first surviving proposal of one attempt (proposal order), if any."""
    for v in sorted(verdicts, key=lambda v: v.index):
        if v.reason is None:
            return v.index
    return None


def count_reasons(reasons: Sequence[str | None]) -> dict[str, int]:
    counts = {r: 0 for r in REASONS}
    for r in reasons:
        if r is not None:
            counts[r] += 1
    return counts
