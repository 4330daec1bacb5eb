"""Olympiad answer forms (grading/forms.py): congruences, elided lists, several \\pm;
undecided is `unparsable`, never `wrong`; every check bounded in size and time."""

import time

import pytest

from int_jax.grading import forms
from int_jax.grading.equivalence import clean, equivalent
from int_jax.grading.grade import Grade

C, W, U = Grade.CORRECT, Grade.WRONG, Grade.UNPARSABLE


def test_split_top_respects_brackets_and_half_open_intervals():
    assert forms.split_top(r"(1,2), [3,4), \{5, 6\}, 7") == ["(1,2)", "[3,4)", r"\{5, 6\}", "7"]
    assert forms.unwrap_set(r"\{1, 2\}") == "1, 2"
    assert forms.unwrap_set(r"\{1\} \cup \{2\}") == r"\{1\} \cup \{2\}"  # not one set


@pytest.mark.parametrize("text, modulus, residues", [
    (r"n \equiv 3 \pmod 4", 4, {3}),
    (r"n \equiv 3 \pmod{4}", 4, {3}),
    (r"x \equiv -1 \ (\bmod 4)", 4, {3}),
    (r"n \equiv 1, 3 \pmod 8", 8, {1, 3}),
    (r"n \equiv \pm 1 \pmod 6", 6, {1, 5}),
    ("n = 4k+3", 4, {3}),
    ("3 + 4m", 4, {3}),
    (r"4k+1, 4k+3", 4, {1, 3}),
    (r"n \equiv 1 \pmod 2, n \equiv 2 \pmod 4", 4, {1, 2, 3}),
])
def test_parse_classes(text, modulus, residues):
    c = forms.parse_classes(clean(text), linear=True)
    assert c is not None and c.modulus == modulus and c.residues == residues


def test_parse_classes_refuses_what_it_cannot_read():
    assert forms.parse_classes("n = 4k+3", linear=False) is None  # linear only next to a congruence
    assert forms.parse_classes(r"n^2 \equiv 1 \pmod 8", linear=True) is None
    assert forms.parse_classes(r"n = -4k+3", linear=True) is None
    # lcm beyond the cap: no class (the caller says unparsable)
    assert forms.parse_classes(r"n \equiv 1 \pmod{999983}, n \equiv 1 \pmod{999979}", linear=True) is None
    assert equivalent(r"n \equiv 1 \pmod{999983}", r"n \equiv 1 \pmod{999979}") is U


def test_write_out_finite_progressions_only():
    assert forms.write_out(r"1, 2, \ldots, 5") == "1, 2, 3, 4, 5"
    assert forms.write_out(r"10, 8, \dots, 2") == "10, 8, 6, 4, 2"
    assert forms.write_out(r"1, 3, \ldots, 8") == r"1, 3, \ldots, 8"  # 8 is not in the progression
    assert forms.write_out(r"1, 2, \ldots, n") == r"1, 2, \ldots, n"
    assert forms.write_out(r"1, 2, \ldots") == r"1, 2, \ldots"  # infinite
    huge = r"1, 2, \ldots, 1000000000"
    assert forms.write_out(huge) == huge  # more than MAX_WRITTEN_OUT terms: left alone


def test_pm_readings():
    assert forms.pm_readings(r"1 \pm \sqrt{2}") is None  # math-verify expands one sign itself
    assert forms.pm_readings(r"(\pm 1, 2)") == ["(+ 1, 2), (- 1, 2)"]
    ind, tog = forms.pm_readings(r"(\pm 1, \pm 1)")
    assert ind.count("(") == 4 and tog.count("(") == 2
    assert len(forms.pm_readings(r"\pm 1 \pm 2")) == 1  # outside a tuple: independent signs
    assert forms.pm_readings(r"(\pm 1, \mp 1)")[1] == "(+ 1, - 1), (- 1, + 1)"
    assert forms.pm_readings(r"x \pmod 4") is None  # \pmod is not \pm
    assert forms.pm_readings(", ".join([r"(\pm 1, \pm 1, \pm 1, \pm 1)"] * 8)) is None  # too many terms


@pytest.mark.parametrize("answer, gold, expected", [
    # undecided, never wrong: a form we recognise against one we cannot compare with it
    (r"n \equiv 1 \pmod 4, n > 3", r"n \equiv 1 \pmod 4", U),
    (r"a_1, a_2, \ldots, a_n", r"1, 2, \ldots, n", U),
    (r"2, 4, 6, 8, \ldots", r"2, 4, 6, \ldots", U),
    (r"\text{all } n \text{ with } 4 \mid n+1", r"n \equiv 3 \pmod 4", U),
    ("x^2", r"\text{all odd primes}", U),
    # decided
    (r"\{1, 3, 5, \ldots\}", r"1, 3, 5, \dots", C),
    ("1, 3, 5", r"1, 3, 5, \ldots", W),  # finite against infinite
    ("n", "odd $n$", W), ("0", "no solutions", W),
])
def test_undecided_is_unparsable(answer, gold, expected):
    assert equivalent(answer, gold) is expected


_HOSTILE = [
    ", ".join([r"\pm 1"] * 200),
    "(" + ", ".join([r"\pm 1"] * 4) + ")," * 50,
    r"n \equiv " + ", ".join(str(i) for i in range(200)) + r" \pmod{999983}",
    ", ".join(f"{p}k+1" for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)),
    ", ".join(["x"] * 200) + r", \ldots",
    r"1, 2, \ldots, 999999999",
    "32,\\!" * 200 + "349",
    "1" + r"\,000" * 300,
    r"\{" * 300 + r"\}" * 300,
    "all " * 300 + "n such that " * 50,
    "(" * 500 + "," * 500,
    r"\ldots, " * 300,
    r"\equiv \pmod " * 100,
]


@pytest.mark.parametrize("i", range(len(_HOSTILE)))
def test_forms_are_bounded_on_hostile_input(i):
    text = _HOSTILE[i][:1000]  # answers are at most MAX_ANSWER_CHARS
    t = time.perf_counter()
    a, g = clean(text), clean(r"n \equiv 1 \pmod 2")
    forms.compare_congruence(a, g)
    forms.compare_elided(a, a, lambda x, y: x == y)
    forms.compare_readings(a, a, lambda x, y: x == y)
    forms.write_out(a)
    assert time.perf_counter() - t < 0.5
