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


# ---- several boxes, "final answer" sentences, golds given as solution text ----

from int_jax.grading.answers import (  # noqa: E402
    MAX_BOXES, boxed_group, final_answer_statement, gold_answer)


@pytest.mark.parametrize("text, expected", [
    (r"$\boxed{1}\boxed{2}$", ["1", "2"]),
    (r"\[ \boxed{-2} \quad \text{and} \quad \boxed{1}. \]", ["-2", "1"]),
    (r"\boxed{a}, \boxed{b} or \boxed{c}", ["a", "b", "c"]),
    (r"\boxed{7} but wait, \boxed{8}", ["8"]),  # words between: not one answer
    (r"\boxed{\boxed{1}}", ["1"]),  # a nested box is not a neighbour
    (r"\boxed{a\}} and \boxed{b}", [r"a\}", "b"]),  # an escaped brace does not close
    (r"x\}} and \boxed{b}", ["b"]),  # a stray brace is not a box
    (r"\boxed{1} \boxed{2", None),  # the last box never closed
    ("nothing", None),
])
def test_boxed_group(text, expected):
    assert boxed_group(text) == expected


def test_boxed_group_is_bounded():
    many = r"\boxed{1}" * 100
    assert boxed_group(many) == ["1"] * MAX_BOXES
    big = r"\boxed{" + "2" * MAX_ANSWER_CHARS + "}" + r"\boxed{3}"
    assert boxed_group(big) == ["3"]  # together too long for one answer


@pytest.mark.parametrize("text, expected", [
    ("Final Answer: The final answer is $10,455$. I hope it is correct.", "$10,455$"),
    ("so the final answer is 3.5. Done", "3.5"),
    (r'The final answer is \"$12 $ and $13 $\". I hope', "$12 $ and $13 $"),
    ("final answer: $a. b$. Then", "$a. b$"),  # a period inside math does not end it
    ("first final answer is 1.\nthen the final answer is 2.", "2"),
    ("no such sentence", None),
])
def test_final_answer_statement(text, expected):
    assert final_answer_statement(text) == expected


def test_multi_box_reading():
    two = r"so $n = \boxed{-2}$ and $\boxed{1}$."
    assert extract_answer(two) == ("1", False)  # the authors' last-box rule
    assert extract_answer(two, multi_box=True) == ("-2, 1", False)
    sub = r"first $\boxed{200}$, then $\boxed{255}$. Final Answer: The final answer is $10,455$."
    assert extract_answer(sub) == ("255", False)
    assert extract_answer(sub, multi_box=True) == ("$10,455$", False)
    words = r"\boxed{7}. Final answer: see above."  # a sentence stating nothing is not an answer
    assert extract_answer(words, multi_box=True) == ("7", False)
    assert extract_answer("The final answer is 7.", multi_box=True) == (None, False)  # no box
    long = r"\boxed{" + "1" * 600 + r"} and \boxed{" + "2" * 600 + "}"
    assert extract_answer(long, multi_box=True) == ("2" * 600, False)


def test_gold_answer():
    assert gold_answer("42") == "42"
    assert gold_answer(r"$\boxed{1}\boxed{2}$") == "1, 2"
    assert gold_answer(r"Solving, $x = \boxed{20}$ percent.") == "20"
    text = "We compute 100 - 72 = 28. Final Answer: The final answer is $28 \\%$. I hope it is correct."
    assert gold_answer(text) == "$28 \\%$"
    assert gold_answer("All powers of 2") == "All powers of 2"


def test_multi_box_linear_on_huge_adversarial_input():
    import time

    t = time.perf_counter()
    for text in ("{" * 200_000 + r"\boxed{" + "{" * 200_000,
                 "\\boxed{" * 50_000 + "1" + "}" * 50_000,
                 r"\boxed{1}" * 100_000,
                 "}" * 200_000 + r"\boxed{1}",
                 "\\" * 200_001 + r"}\boxed{1}",
                 r"\boxed{1} " + "and " * 100_000 + r"\boxed{2}",
                 r"\boxed{1}" + "final answer is " * 20_000):
        extract_answer(text, multi_box=True)
        gold_answer(text)
    assert time.perf_counter() - t < 3.0
