"""Answer forms of olympiad golds that math-verify cannot compare by itself.

IMO-AnswerBench, AMO-Bench, HMMT and Apex golds write answer *sets* in ways that have
no sympy reading: a residue class (``n \\equiv 3 \\pmod 4`` for ``n = 4k+3``), a list
elided with ``\\ldots``, a tuple with several ``\\pm`` signs. Each ``compare_*`` here
takes the two cleaned answers (the response's and the gold's) and returns

* a ``Grade`` when the form is its business and it can decide;
* ``Grade.UNPARSABLE`` when the form is its business but the two cannot be compared
  (an elided list against a formula, a congruence against prose): undecided, never
  ``wrong``;
* None when neither answer is in its form (the caller compares them generically).

Only string and bounded integer work happens here; nothing is evaluated, every size
is capped, and every regex is anchored and linear in its (already bounded) input.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Callable

from int_jax.grading.grade import Grade

MAX_ITEMS = 64  # items of one answer list looked at
MAX_MODULUS = 10**6  # congruences compared modulo at most this
MAX_RESIDUES = 10**5  # residues listed when lifting to a common modulus
MAX_WRITTEN_OUT = 1000  # terms of a finite progression written out
MAX_PM = 4  # sign choices expanded per item (2**4 terms)

_OPEN, _CLOSE = "([{", ")]}"


def split_top(s: str, sep: str = ",") -> list[str]:
    """``s`` split on ``sep`` outside any bracket (half-open intervals count as one
    bracket pair); items stripped."""
    items, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif c == sep and depth == 0:
            items.append(s[start:i].strip())
            start = i + 1
    items.append(s[start:].strip())
    return items


def _balanced(s: str) -> bool:
    depth = 0
    for c in s:
        depth += (c in _OPEN) - (c in _CLOSE)
        if depth < 0:
            return False
    return depth == 0


_SET = re.compile(r"^(?:\\left)?\\\{(.*?)(?:\\right)?\\\}$", re.DOTALL)


def unwrap_set(s: str) -> str:
    """``\\{a, b\\}`` -> ``a, b`` (only when the braces enclose the whole answer)."""
    m = _SET.match(s.strip())
    return m.group(1).strip() if m and _balanced(m.group(1)) else s


# ---- integers -------------------------------------------------------------------

_INT = re.compile(r"[-+]?\d{1,9}")
_NUMBER = re.compile(r"[-+]?(?:\d{1,30}(?:\.\d{0,30})?|\.\d{1,30})")


def _int(s: str) -> int | None:
    t = s.replace(" ", "")
    return int(t) if _INT.fullmatch(t) else None


def _numbers(s: str) -> bool:
    """Is ``s`` a finite list of plain numbers (``3``, ``1, 2.5, -4``, ``\\{1, 2\\}``)?"""
    items = split_top(unwrap_set(s))
    return 0 < len(items) <= MAX_ITEMS and all(_NUMBER.fullmatch(x.replace(" ", "")) for x in items)


# ---- lists elided with \ldots ------------------------------------------------------

_ELLIPSIS = re.compile(r"\\(?:[lc]?dots[cbmoi]?|ldotp(?:\s*\\ldotp){2})|\.\s*\.\s*\.|…")


def elided_items(s: str) -> list[str | None] | None:
    """The items of a list with an ellipsis item (``1, 2, \\ldots, n``), the ellipsis
    as None; None when ``s`` is no such list."""
    items = split_top(unwrap_set(s))
    if not 2 <= len(items) <= MAX_ITEMS:
        return None
    marks = [_ELLIPSIS.fullmatch(x) is not None for x in items]
    if not any(marks):
        return None
    return [None if m else x for x, m in zip(items, marks)]


def write_out(s: str) -> str:
    """A finite arithmetic progression of integers written out: ``1, 2, \\ldots, 10``
    -> ``1, 2, 3, ..., 10`` (at most ``MAX_WRITTEN_OUT`` terms); anything else as is."""
    items = elided_items(s)
    if items is None or items.count(None) != 1:
        return s
    p = items.index(None)
    head, tail = items[:p], items[p + 1 :]
    if len(head) < 2 or len(tail) != 1:
        return s
    nums = [_int(x) for x in head + tail]  # type: ignore[arg-type]
    if any(v is None for v in nums):
        return s
    d = nums[1] - nums[0]
    if d == 0 or any(nums[i + 1] - nums[i] != d for i in range(len(head) - 1)):
        return s
    first, last = nums[0], nums[-1]
    steps, rem = divmod(last - nums[len(head) - 1], d)
    if rem or steps < 1 or (last - first) // d + 1 > MAX_WRITTEN_OUT:
        return s
    return ", ".join(str(v) for v in range(first, last + (1 if d > 0 else -1), d))


def compare_elided(answer: str, gold: str, same: Callable[[str, str], bool]) -> Grade | None:
    """Elided lists: equal when both elide at the same places and agree item by item
    (``same``); an infinite list (ending in an ellipsis) is not a finite list of
    numbers; anything else with an ellipsis cannot be decided here."""
    ea, eg = elided_items(answer), elided_items(gold)
    if ea is None and eg is None:
        return None
    if ea is not None and eg is not None:
        if len(ea) == len(eg) and all((x is None) == (y is None) for x, y in zip(ea, eg)):
            if all(x is None or same(x, y) for x, y in zip(ea, eg)):  # type: ignore[arg-type]
                return Grade.CORRECT
        return Grade.UNPARSABLE
    elided, plain = (ea, gold) if ea is not None else (eg, answer)
    if elided[-1] is None and _numbers(plain):
        return Grade.WRONG
    return Grade.UNPARSABLE


# ---- several \pm signs ---------------------------------------------------------------

_PM = re.compile(r"\\pm(?![A-Za-z])|\\mp(?![A-Za-z])|±|∓")


def _signs(item: str, choice: tuple[int, ...]) -> str:
    it = iter(choice)

    def put(m: re.Match) -> str:
        s = next(it)
        minus = m.group(0) in ("\\mp", "∓")
        return "+" if (s > 0) != minus else "-"

    return _PM.sub(put, item)


def pm_readings(s: str) -> list[str] | None:
    """The readings of an answer with ``\\pm`` that math-verify cannot expand: a tuple
    with ``\\pm`` (``(\\pm 1, 2)``) or an item with several (``\\pm 1 \\pm \\sqrt 2``),
    written out as lists. In a tuple, several signs read two ways: independent
    (``(\\pm 1, \\pm 1)`` is four pairs) or together (two pairs); elsewhere they are
    independent. None when ``s`` needs none of this."""
    items = split_top(unwrap_set(s))
    if len(items) > MAX_ITEMS:
        return None
    counts = [len(_PM.findall(x)) for x in items]
    tuples = [x.startswith(("(", "\\left(")) and x.endswith(")") and "," in x for x in items]
    if not any(c >= 2 or (c and t) for c, t in zip(counts, tuples)) or max(counts) > MAX_PM:
        return None
    if sum(2**c for c in counts) > MAX_ITEMS:
        return None
    independent: list[str] = []
    together: list[str] = []
    for x, c, t in zip(items, counts, tuples):
        every = [_signs(x, ch) for ch in itertools.product((1, -1), repeat=c)]
        independent += every
        together += [_signs(x, (1,) * c), _signs(x, (-1,) * c)] if (c >= 2 and t) else every
    readings = [", ".join(independent)]
    if together != independent:
        readings.append(", ".join(together))
    return readings


def compare_readings(answer: str, gold: str, same: Callable[[str, str], bool]) -> Grade | None:
    """Every reading of one against every reading of the other: all equal, correct;
    none, wrong; some, undecided (the ``\\pm`` is ambiguous)."""
    ra, rg = pm_readings(answer), pm_readings(gold)
    if ra is None and rg is None:
        return None
    verdicts = {same(x, y) for x in (ra or [answer]) for y in (rg or [gold])}
    if verdicts == {True}:
        return Grade.CORRECT
    return Grade.WRONG if verdicts == {False} else Grade.UNPARSABLE


# ---- congruences ---------------------------------------------------------------------

_VAR = r"[A-Za-z](?:_\{?[A-Za-z0-9]{1,8}\}?)?"
_RES = r"(?:(?:\\pm|\\mp|[-+])\s*)?\d{1,6}"
_MODULUS = (
    r"(?:\\pmod\s*\{?\s*(?P<m1>\d{1,6})\s*\}?"
    r"|\(\s*(?:\\bmod|\\mod|\\operatorname\{mod\}|mod)\s*\{?\s*(?P<m2>\d{1,6})\s*\}?\s*\)"
    r"|(?:\\bmod|\\mod|mod)\s*\{?\s*(?P<m3>\d{1,6})\s*\}?)"
)
_CONGRUENCE = re.compile(
    rf"^(?:(?:{_VAR}\s*)?(?:\\equiv|≡)\s*)?(?P<res>{_RES}(?:\s*,\s*{_RES}){{0,63}})\s*{_MODULUS}$"
)
_LINEAR = (
    re.compile(rf"^(?:{_VAR}\s*=\s*)?(?P<a>\d{{1,6}})\s*(?:\\cdot|\\times)?\s*[A-Za-z]"
               rf"\s*(?:(?P<sign>[-+])\s*(?P<b>\d{{1,6}}))?$"),
    re.compile(rf"^(?:{_VAR}\s*=\s*)?(?P<b>\d{{1,6}})\s*(?P<sign>[-+])\s*(?P<a>\d{{1,6}})"
               rf"\s*(?:\\cdot|\\times)?\s*[A-Za-z]$"),
)
_HAS_CONGRUENCE = re.compile(r"\\equiv|≡|\\pmod|\\bmod|(?<![A-Za-z])mod(?![A-Za-z])")


@dataclasses.dataclass(frozen=True)
class Classes:
    """A union of residue classes modulo ``modulus``; ``written``: the residues as
    written when the answer was one congruence (``9 \\pmod{11}`` -> (9,))."""

    modulus: int
    residues: frozenset[int]
    written: tuple[int, ...] = ()

    def lifted(self, modulus: int) -> frozenset[int] | None:
        """The same set as residues modulo a multiple of ``self.modulus``."""
        k = modulus // self.modulus
        if len(self.residues) * k > MAX_RESIDUES:
            return None
        return frozenset(r + i * self.modulus for r in self.residues for i in range(k))


def _union(parts: list[Classes]) -> Classes | None:
    modulus = 1
    for p in parts:
        modulus = math.lcm(modulus, p.modulus)
        if modulus > MAX_MODULUS:
            return None
    residues: set[int] = set()
    for p in parts:
        lifted = p.lifted(modulus)
        if lifted is None:
            return None
        residues |= lifted
    written = parts[0].written if len(parts) == 1 else ()
    return Classes(modulus, frozenset(residues), written)


def _one_class(item: str, linear: bool) -> Classes | None:
    m = _CONGRUENCE.match(item)
    if m:
        modulus = int(m.group("m1") or m.group("m2") or m.group("m3"))
        if modulus < 1:
            return None
        written: list[int] = []
        for r in split_top(m.group("res")):
            r = r.replace(" ", "")
            if r.startswith(("\\pm", "\\mp")):
                v = int(r[3:])
                written += [v, -v]
            else:
                written.append(int(r))
        return Classes(modulus, frozenset(v % modulus for v in written), tuple(written))
    if linear:
        for pattern in _LINEAR:
            m = pattern.match(item)
            if m:
                a = int(m.group("a"))
                b = int(m.group("b") or 0) * (-1 if m.group("sign") == "-" else 1)
                if a >= 1:
                    return Classes(a, frozenset({b % a}))
    return None


def parse_classes(s: str, linear: bool) -> Classes | None:
    """Residue classes written as congruences (``n \\equiv 1, 3 \\pmod 8``, several
    joined by commas) or, when ``linear``, as ``n = 4k+3`` / ``3 + 4k``; else None."""
    s = unwrap_set(s.strip())
    whole = _one_class(s, linear)
    if whole is not None:
        return whole
    items = split_top(s)
    if len(items) > MAX_ITEMS:
        return None
    parts = [_one_class(x, linear) for x in items]
    if not parts or any(p is None for p in parts):
        return None
    return _union(parts)  # type: ignore[arg-type]


def compare_congruence(answer: str, gold: str) -> Grade | None:
    """Residue classes, when either side writes a congruence: compared as sets of
    integers (``n \\equiv 3 \\pmod 4`` == ``n = 4k+3`` == ``n \\equiv -1 \\pmod 4``). A
    class against one number is right only when the number is its written residue
    (``9 \\pmod{11}`` for the remainder 9); against a finite list, wrong; against
    anything else, undecided."""
    if not (_HAS_CONGRUENCE.search(answer) or _HAS_CONGRUENCE.search(gold)):
        return None
    ca, cg = parse_classes(answer, linear=True), parse_classes(gold, linear=True)
    if ca is not None and cg is not None:
        modulus = math.lcm(ca.modulus, cg.modulus)
        if modulus > MAX_MODULUS:
            return Grade.UNPARSABLE
        la, lg = ca.lifted(modulus), cg.lifted(modulus)
        if la is None or lg is None:
            return Grade.UNPARSABLE
        return Grade.CORRECT if la == lg else Grade.WRONG
    if ca is None and cg is None:
        return Grade.UNPARSABLE
    cls, other, is_answer = (ca, gold, True) if ca is not None else (cg, answer, False)
    value = _int(other)
    if value is not None and len(cls.written) == 1:
        if is_answer and value == cls.written[0]:
            return Grade.CORRECT  # `9 \pmod{11}` for the remainder 9
        if (value - cls.written[0]) % cls.modulus == 0:
            return Grade.UNPARSABLE  # a number in the class: the class or the residue meant?
        return Grade.WRONG
    if _numbers(other):
        return Grade.WRONG  # a finite list is not a residue class
    return Grade.UNPARSABLE
