"""Final-answer extraction from untrusted model text."""

import pytest

from int_jax.grading.answers import MAX_ANSWER_CHARS, extract_answer, last_boxed


@pytest.mark.parametrize("text, expected", [
    (r"so the answer is \boxed{42}.", "42"),
    (r"first \boxed{1} then \boxed{2}", "2"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\{1, \{2\}\}}", r"\{1, \{2\}\}"),
    (r"$\boxed{a_{i_{j}} + {b}}$", r"a_{i_{j}} + {b}"),
    (r"\fbox{7}", "7"),
    (r"\boxed{1} and later \fbox{3}", "3"),
    (r"\boxed 5", "5"),
    (r"$\boxed 5$", "5"),
    (r"\boxed{x} \boxedfoo{9}", "x"),  # another command, not \boxed
    (r"\boxed {12}", "12"),
    ("no answer here", None),
    (r"\boxed{3} then cut off \boxed{4", None),  # the final answer never closed
    (r"\boxed", None),
    (r"\boxed{a \\ b}", r"a \\ b"),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_extract_answer_bounds():
    assert extract_answer(r"\boxed{ 7 }") == ("7", False)
    assert extract_answer("nothing") == (None, False)
    assert extract_answer(r"\boxed{}") == ("", False)
    long = "1" * (MAX_ANSWER_CHARS + 1)
    assert extract_answer(rf"\boxed{{{long}}}") == (None, True)
    ok = "1" * MAX_ANSWER_CHARS
    assert extract_answer(rf"\boxed{{{ok}}}") == (ok, False)


def test_linear_on_huge_adversarial_input():
    import time

    text = "{" * 200_000 + r"\boxed{" + "{" * 200_000
    t = time.perf_counter()
    assert last_boxed(text) is None
    text = "\\boxed{" * 50_000 + "1" + "}" * 50_000
    assert last_boxed(text) == "1"
    assert time.perf_counter() - t < 2.0
