"""Is an extracted final answer equivalent to a gold answer?

math-verify (LaTeX -> sympy, then numeric/symbolic/set/interval comparison) does the
mathematics. This module is the normalisation layer around it, for what competition
gold answers look like and math-verify alone gets wrong:

* layout-only LaTeX (``$``, ``\\dfrac``, spacing, a trailing period) is removed first,
  and answers equal after that are correct without parsing;
* a trailing qualifier (``..., where c != -1``, ``for some a > 0``) is not part of the
  answer to compare;
* answers joined with words (``3 and 4``, ``P(x)=-1 or P(x)=x+1``) are lists;
* a leading quantifier (``all n >= 2``) and a trailing unit (``5 \\text{ cm}``) in
  the response are dropped (math-verify's own unit stripping is off: it reads the
  variable in ``2-2m`` as metres);
* prose golds (``odd n``, ``All powers of 2``, ``no solutions``) are compared as bags
  of words, never through the LaTeX parser, which would read ``odd n`` as ``o*d*d*n``;
* an interval is never equal to a finite set (``(1,2)`` vs ``\\{1,2\\}``).

Everything here runs in-process with no time limit: callers (``verify.py``) run it in
worker processes under a hard per-item deadline. Nothing is ever ``eval``-ed.
"""

from __future__ import annotations

import functools
import logging
import re

from latex2sympy2_extended.latex2sympy2 import NormalizationConfig
from math_verify import LatexExtractionConfig, parse, verify
from sympy import FiniteSet, Interval

from int_jax.grading.answers import last_boxed
from int_jax.grading.grade import Grade

# math-verify warns once that its signal timeouts are off; ours are enforced outside.
logging.getLogger("math_verify").setLevel(logging.ERROR)

# Unit stripping is off: it reads the variable in `2-2m` as metres and drops it.
_LATEX_CONFIG = (LatexExtractionConfig(
    boxed_match_priority=0,
    normalization_config=NormalizationConfig(basic_latex=True, units=False,
                                             malformed_operators=True, nits=True,
                                             boxed="all", equations=False),
),)

_LAYOUT = re.compile(r"\\displaystyle|\\[!,;:> ]|~|\\q?quad\b|\\\(|\\\)|\\\[|\\\]|\$")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|mbox|mathrm|operatorname)\s*\{([^{}]*)\}")
_CONNECTOR = re.compile(r"\\text\s*\{\s*(?:and|or)\s*\}|(?<![A-Za-z\\])(?:and|or)(?![A-Za-z])")
_QUALIFIER = re.compile(
    r"(?:,\s*|\s+|\(\s*)(?:where|for\s+some|for\s+all|for\s+any|for\s+every|for\s+each|"
    r"for|with|provided|when)(?![A-Za-z])",
    re.IGNORECASE,
)
_QUANTIFIER = re.compile(
    r"^(?:all|any|every|only)(?:\s+(?:positive|negative|nonnegative|non-negative|real|"
    r"natural|integers?|numbers?|values?|solutions?|pairs?|triples?|functions?|"
    r"polynomials?|of))*\s*(?:such\s+that|with|where|satisfying|:|are|is)?\s*",
    re.IGNORECASE,
)
# A unit word after a number: `5 \text{ cm}`, `12\text{ degrees}`, `3\,\mathrm{m}^2`.
_UNIT = re.compile(r"(?<=[0-9}])\s*\\(?:text|mathrm|mbox)\s*\{\s*[A-Za-z]+\s*\}(?:\^\{?[23]\}?)?\s*$")
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]+(?![A-Za-z])")
# Letter runs that are mathematics when written without a backslash.
_MATH_WORDS = frozenset(
    "sqrt frac infty cdot cdots ldots dots floor ceil binom pmod prod gcd lcm times circ "
    "sinh cosh tanh arcsin arccos arctan exp log sin cos tan cot sec csc mod max min".split()
)
_SHORT_PROSE = frozenset("all odd and the are any not yes set one two".split())
_STOP_WORDS = frozenset(
    "a an the all of and or is are be for such that with where which number numbers "
    "integer integers value values form".split()
)
_NOTHING = re.compile(
    r"^(?:none|no\b.*|empty\s*set|there\s+(?:are|is)\s+(?:none|no\b.*)|\\emptyset|"
    r"\\varnothing|\\\{\s*\\\}|∅)$",
    re.IGNORECASE,
)


def clean(s: str) -> str:
    """Remove layout-only LaTeX and one trailing period; collapse whitespace."""
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _LAYOUT.sub(" ", s)
    s = re.sub(r"\s+", " ", s).strip()
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    return s


def _unwrap_text(s: str) -> str:
    return _TEXT_CMD.sub(lambda m: f" {m.group(1)} ", s)


def is_prose(s: str) -> bool:
    """True when the answer is words (``odd n``), not a formula."""
    for w in _WORD.findall(_unwrap_text(s)):
        lw = w.lower()
        if lw in _SHORT_PROSE or (len(w) >= 4 and lw not in _MATH_WORDS):
            return True
    return False


def main_part(s: str) -> str:
    """The answer without a trailing qualifier (``..., where c != -1``)."""
    m = _QUALIFIER.search(s)
    if m is None or m.start() == 0:
        return s
    head = s[: m.start()].rstrip(" ,")
    return head if head and not is_prose(head) else s


def _as_list(s: str) -> str:
    s = _CONNECTOR.sub(",", s)
    s = re.sub(r",(\s*,)+", ",", s)
    return s.strip(" ,")


def _strip_quantifier(s: str) -> str:
    unwrapped = _unwrap_text(s).strip()
    m = _QUANTIFIER.match(unwrapped)
    if m is None or m.end() == 0 or m.end() == len(unwrapped):
        return s
    return unwrapped[m.end() :]


def _strip_unit(s: str) -> str:
    return _UNIT.sub("", s)


def bag_of_words(s: str) -> tuple[str, ...]:
    """Order-free canonical form of a prose answer (``odd n`` == ``n odd``)."""
    s = re.sub(r"\s+", " ", _unwrap_text(s)).strip().lower()
    if _NOTHING.match(s):
        return ("∅",)
    out = []
    for t in re.split(r"[\s,;]+", s):
        t = re.sub(r"^[a-z]\s*=\s*", "", t.strip(".:"))
        if not t or t in _STOP_WORDS or re.fullmatch(r"[a-z]|[=<>]", t):
            continue
        if len(t) >= 4 and t.isalpha() and t.endswith("s"):
            t = t[:-1]
        out.append(t)
    return tuple(sorted(out))


@functools.lru_cache(maxsize=16384)
def parse_math(s: str) -> tuple:
    """math-verify's parse of ``\\boxed{s}``: sympy objects (and their source strings).

    Cached: every rollout of a problem shares its gold, and many share an answer.
    """
    return tuple(
        parse(
            "\\boxed{" + s + "}",
            extraction_config=_LATEX_CONFIG,
            fallback_mode="no_fallback",
            parsing_timeout=None,
        )
    )


def _kinds_clash(gold: tuple, answer: tuple) -> bool:
    """An interval is not a finite set, although math-verify compares their ends."""
    g, a = gold[0], answer[0]
    return (isinstance(g, Interval) and isinstance(a, FiniteSet)) or (
        isinstance(g, FiniteSet) and isinstance(a, Interval)
    )


def equivalent(answer: str, gold: str) -> Grade:
    """Grade an extracted answer against a gold answer (no time limit; see module doc)."""
    if "\\boxed" in gold or "\\fbox" in gold:  # some datasets box their golds
        gold = last_boxed(gold) or gold
    a, g = clean(answer), clean(gold)
    if not a:
        return Grade.NO_ANSWER
    if a.replace(" ", "") == g.replace(" ", ""):
        return Grade.CORRECT
    g_main = main_part(g)
    if is_prose(g_main):
        return Grade.CORRECT if bag_of_words(a) == bag_of_words(g) else Grade.WRONG
    gold_parsed = parse_math(_as_list(g_main))
    answer_parsed = parse_math(_as_list(main_part(_strip_unit(_strip_quantifier(a)))))
    if not answer_parsed:
        return Grade.UNPARSABLE
    if not gold_parsed or _kinds_clash(gold_parsed, answer_parsed):
        return Grade.WRONG
    ok = verify(list(gold_parsed), list(answer_parsed), timeout_seconds=None)
    return Grade.CORRECT if ok else Grade.WRONG
