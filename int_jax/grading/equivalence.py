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
* an interval is never equal to a finite set (``(1,2)`` vs ``\\{1,2\\}``); an
  inequality in the response is compared with an interval gold as a set;
* thousands separators (``32,\\!349``, ``32{,}349``, ``32\\,349``: groups of three
  digits only; ``32, 349`` stays a list), a currency ``\\$`` and a unit after a number
  (``\\textnormal{ miles}``, or a plain word in the gold: ``$125$ miles``) are dropped;
* a gold given as solution text is reduced to its final answer (``answers.gold_answer``);
* olympiad forms math-verify cannot read (congruences, elided lists, tuples with
  several ``\\pm``) go through ``forms.py``;
* where the grader cannot decide (a gold it cannot parse, prose against a formula,
  an elided list against a formula) the grade is ``unparsable``, never ``wrong``.

Everything here runs in-process with no time limit: callers (``verify.py``) run it in
worker processes under a hard per-item deadline. Nothing is ever ``eval``-ed.
"""

from __future__ import annotations

import functools
import logging
import re

from latex2sympy2_extended.latex2sympy2 import NormalizationConfig
from math_verify import LatexExtractionConfig, parse, verify
from sympy import And, FiniteSet, Interval, Or, Symbol, Union
from sympy.core.relational import Equality, Relational

from int_jax.grading import forms
from int_jax.grading.answers import gold_answer
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
_TEXT_CMD = re.compile(
    r"\\(?:text|textnormal|textbf|textit|textrm|textup|mbox|mathrm|operatorname)\s*\{([^{}]*)\}")
# Thousands separators: `,\!`, `{,}` or a thin space `\,` between groups of three digits.
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:(?:,\s*\\!|\{,\}|\\,)\s*\d{3})+(?![\d])")
_SEPARATOR = re.compile(r",\s*\\!|\{,\}|\\,|\s")
_CONNECTOR = re.compile(r"\\text\s*\{\s*(?:and|or)\s*\}|(?<![A-Za-z\\])(?:and|or)(?![A-Za-z])")
_QUALIFIER = re.compile(
    r"(?:,\s*|\s+|\(\s*)(?:where|for\s+some|for\s+all|for\s+any|for\s+every|for\s+each|"
    r"for|with|provided|when)(?![A-Za-z])",
    re.IGNORECASE,
)
_QUANTIFIER = re.compile(
    r"^(?:(?:all|any|every|each|only)(?![A-Za-z])(?:\s+(?:positive|negative|nonnegative|"
    r"non-negative|real|natural|integers?|numbers?|values?|solutions?|pairs?|triples?|"
    r"functions?|polynomials?|of)(?![A-Za-z]))*\s*)?"
    # `all n such that ...`: the variable goes with the quantifier
    r"(?:[A-Za-z](?:_\{?\w{1,8}\}?)?\s+(?:such\s+that|for\s+which|satisfying|so\s+that)"
    r"(?![A-Za-z])\s*|(?:(?:such\s+that|with|where|satisfying|are|is)(?![A-Za-z])|:)?\s*)",
    re.IGNORECASE,
)
# A unit word after a number: `5 \text{ cm}`, `12\text{ degrees}`, `3\,\mathrm{m}^2`.
_UNIT = re.compile(r"(?<=[0-9}])\s*\\(?:text|textnormal|mathrm|mbox)\s*\{\s*[A-Za-z]+\s*\}"
                   r"(?:\^\{?[23]\}?)?\s*$")
# A plain unit after a lone number (a gold written `$125$ miles`): one or two words.
_PLAIN_UNIT = re.compile(r"^(?P<number>[-+]?\d[\d.]*(?:\s*\\%)?)\s+(?P<unit>[A-Za-z]+(?: [A-Za-z]+)?)"
                         r"(?:\^\{?[23]\}?)?$")
_NOT_UNITS = frozenset("and or for where with when if such that all is are but not only each "
                       "every any some".split())
# Two- and three-letter units; a longer unit is any word that is not mathematics
# (`2 ab` is a product, not a unit).
_SHORT_UNITS = frozenset("cm mm km ft yd mi kg mg lb lbs oz hr hrs min mins sec secs mph kph "
                         "deg rad sq cu usd".split())
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
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\$", " ")
    s = _THOUSANDS.sub(lambda m: _SEPARATOR.sub("", m.group(0)), s)
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


def _is_unit_word(w: str) -> bool:
    if w in _NOT_UNITS or w in _MATH_WORDS:
        return False
    return w in _SHORT_UNITS or len(w) >= 4


def _strip_unit(s: str) -> str:
    m = _PLAIN_UNIT.match(s)
    if m and all(_is_unit_word(w) for w in m.group("unit").lower().split()):
        return m.group("number")
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


def _inequality_for_interval(gold, answer) -> bool:
    """An inequality (or a chain of them) in the response against an interval gold:
    math-verify compares them as sets only when told to (not for equations:
    ``x^2 = 4`` is not the answer ``\\{-2, 2\\}``)."""
    if not isinstance(gold, (Interval, Union)):
        return False
    atoms = answer.args if isinstance(answer, (And, Or)) else (answer,)
    return all(isinstance(r, Relational) and not isinstance(r, Equality) for r in atoms)


def _inequalities_as_union(gold, answer):
    """``x < 0 \\text{ or } x > 1`` (read as a list of inequalities) against an interval
    gold: the union of their sets, when each is a bound on one and the same variable;
    else None."""
    if not isinstance(gold, (Interval, Union)) or not isinstance(answer, FiniteSet):
        return None
    symbols = set()
    for r in answer.args:
        if not isinstance(r, Relational) or isinstance(r, Equality):
            return None
        lone = [side for side in (r.lhs, r.rhs) if isinstance(side, Symbol)]
        if len(lone) != 1 or r.free_symbols != {lone[0]}:
            return None
        symbols.add(lone[0])
    if len(symbols) != 1:
        return None
    return Union(*(r.as_set() for r in answer.args))


def _same_text(a: str, g: str) -> bool:
    return a.replace(" ", "") == g.replace(" ", "")


def _compare_math(a: str, g: str) -> Grade:
    """math-verify on two answers; undecided when either does not parse."""
    gold_parsed, answer_parsed = parse_math(g), parse_math(a)
    if not answer_parsed or not gold_parsed:
        return Grade.UNPARSABLE
    if _kinds_clash(gold_parsed, answer_parsed):
        return Grade.WRONG
    union = _inequalities_as_union(gold_parsed[0], answer_parsed[0])
    if union is not None:
        answer_parsed = (union,)
    ok = verify(list(gold_parsed), list(answer_parsed), timeout_seconds=None,
                allow_set_relation_comp=_inequality_for_interval(gold_parsed[0], answer_parsed[0]))
    return Grade.CORRECT if ok else Grade.WRONG


def _same_math(a: str, g: str) -> bool:
    return _same_text(a, g) or _compare_math(a, g) is Grade.CORRECT


def _compare_prose(a: str, g: str) -> Grade:
    """A prose gold: equal bags of words are correct; another prose answer, a number
    or a lone variable is wrong; a formula (``2^k`` for ``all powers of 2``) cannot
    be compared with words here, so it is undecided."""
    if bag_of_words(a) == bag_of_words(g):
        return Grade.CORRECT
    if is_prose(a) or not re.search(r"[A-Za-z]", a) or re.fullmatch(r"\s*[A-Za-z]\s*", a):
        return Grade.WRONG
    return Grade.UNPARSABLE


def equivalent(answer: str, gold: str) -> Grade:
    """Grade an extracted answer against a gold answer (no time limit; see module doc)."""
    gold = gold_answer(gold)  # a boxed gold, or one given as solution text
    a, g = clean(answer), clean(gold)
    if not a:
        return Grade.NO_ANSWER
    if _same_text(a, g):
        return Grade.CORRECT
    a_main = main_part(_strip_unit(_strip_quantifier(a)))
    g_main = main_part(_strip_unit(_strip_quantifier(g)))
    if _same_text(a_main, g_main):
        return Grade.CORRECT
    if is_prose(g_main):
        return _compare_prose(a, g)
    al, gl = _as_list(a_main), _as_list(g_main)
    verdict = forms.compare_congruence(_unwrap_text(al), _unwrap_text(gl))
    if verdict is not None:
        return verdict
    al, gl = forms.write_out(al), forms.write_out(gl)
    verdict = forms.compare_elided(al, gl, _same_math)
    if verdict is None:
        verdict = forms.compare_readings(al, gl, _same_math)
    return verdict if verdict is not None else _compare_math(al, gl)
