"""Step splitting: what the proposer's step numbers and the guided prefix refer to."""

import pytest
from hypothesis import given, settings, strategies as st

from int_jax.intervention.steps import guided_prefix, join_steps, number_steps, split_steps


def test_split_on_blank_lines():
    text = "First we note x=1.\n\nThen y = 2x.\nSo y=2.\n\nThus \\boxed{2}."
    assert split_steps(text) == ["First we note x=1.", "Then y = 2x.\nSo y=2.", "Thus \\boxed{2}."]


def test_crlf_runs_of_blank_lines_and_outer_whitespace():
    text = "  \n\nA\r\n\r\nB\n\n\n\n  \t\nC\n \nD  \n\n"
    assert split_steps(text) == ["A", "B", "C", "D"]


def test_single_newlines_stay_inside_a_step():
    assert split_steps("a\nb\nc") == ["a\nb\nc"]


def test_empty_and_whitespace_only():
    assert split_steps("") == []
    assert split_steps(" \n\n \r\n") == []


def test_numbering_and_join():
    steps = ["x = 1", "y = 2"]
    assert number_steps(steps) == "Step 1: x = 1\n\nStep 2: y = 2"
    assert join_steps(steps) == "x = 1\n\ny = 2"


def test_guided_prefix_replaces_the_wrong_step():
    steps = ["s1", "s2", "s3", "s4"]
    assert guided_prefix(steps, 3, "  fixed  ") == "s1\n\ns2\n\nfixed"
    assert guided_prefix(steps, 1, "fixed") == "fixed"
    with pytest.raises(ValueError, match="outside 1..4"):
        guided_prefix(steps, 5, "x")
    with pytest.raises(ValueError):
        guided_prefix(steps, 0, "x")


def test_rejects_non_text():
    with pytest.raises(TypeError):
        split_steps(None)


_step = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).map(
    lambda s: s.replace("\r", "").replace("\n\n", "\n").strip()).filter(
    lambda s: s and "\n\n" not in s and not any(l.strip() == "" for l in s.split("\n")))


@settings(max_examples=200, deadline=None)
@given(st.lists(_step, max_size=8))
def test_split_inverts_join(steps):
    assert split_steps(join_steps(steps)) == steps


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_join_of_split_is_a_fixed_point(text):
    once = split_steps(text)
    assert split_steps(join_steps(once)) == once
    assert all(s == s.strip() and s for s in once)
