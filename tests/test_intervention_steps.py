"""Step splitting and guided prefixes: what the proposer's step numbers and the SFT
targets refer to, in the authors' construction (default) and in ours."""

import pytest
from hypothesis import given, settings, strategies as st

from int_jax.intervention.steps import StepFormat, join_steps, split_steps

AUTHORS = StepFormat()
OURS = StepFormat(split_mode="normalized", label="Step {i}:", double_newlines=False)


def authors_guided_prefix(attempt: str, location: int, content: str) -> str:
    """The authors' construction, written out as they state it."""
    steps = attempt.split("\n\n")
    return "\n\n".join(steps[:location - 1]) + "\n\n" + content.replace("\n", "\n\n")


def test_split_on_blank_lines():
    text = "First we note x=1.\n\nThen y = 2x.\nSo y=2.\n\nThus \\boxed{2}."
    assert split_steps(text) == ["First we note x=1.", "Then y = 2x.\nSo y=2.", "Thus \\boxed{2}."]
    assert AUTHORS.split(text) == split_steps(text)


def test_crlf_runs_of_blank_lines_and_outer_whitespace():
    text = "  \n\nA\r\n\r\nB\n\n\n\n  \t\nC\n \nD  \n\n"
    assert split_steps(text) == ["A", "B", "C", "D"]
    # The authors' split keeps every piece as it is, empty ones included.
    assert AUTHORS.split(text) == ["  ", "A\r\n\r\nB", "", "  \t\nC\n \nD  ", ""]


def test_single_newlines_stay_inside_a_step():
    assert split_steps("a\nb\nc") == ["a\nb\nc"]


def test_empty_and_whitespace_only():
    assert split_steps("") == []
    assert split_steps(" \n\n \r\n") == []


def test_numbering_and_join():
    steps = ["x = 1", "y = 2"]
    assert AUTHORS.number(steps) == "**Substep 1:** x = 1\n\n**Substep 2:** y = 2"
    assert OURS.number(steps) == "Step 1: x = 1\n\nStep 2: y = 2"
    assert join_steps(steps) == "x = 1\n\ny = 2"


@pytest.mark.parametrize("location", [1, 2, 3, 4])
def test_default_guided_prefix_is_the_authors_construction(location):
    attempt = "We set x = 1.\nThen x + 1 = 2.\n\n\n\nSo 2x = 3.\n\n  Hence \\boxed{3}. "
    content = "Instead, 2x = 2 * 1.\nThat is 2.\nNow compare."
    steps = AUTHORS.split(attempt)
    assert len(steps) == 4  # "" between the two blank lines is a step of its own
    got = AUTHORS.guided_prefix(steps, location, content)
    assert got == authors_guided_prefix(attempt, location, content)
    prefix, step, suffix = AUTHORS.split_at(steps, location)
    assert step == steps[location - 1]
    if location > 1:
        assert prefix + step + suffix == attempt


def test_our_guided_prefix_collapses_and_strips():
    steps = OURS.split("s1\n\n\n\ns2\n\ns3\n\ns4")
    assert OURS.guided_prefix(steps, 3, "  fixed\nhere  ") == "s1\n\ns2\n\nfixed\nhere"
    assert OURS.guided_prefix(steps, 1, "fixed") == "fixed"
    assert OURS.split_at(steps, 1) == ("", "s1", "\n\ns2\n\ns3\n\ns4")
    assert OURS.split_at(steps, 4) == ("s1\n\ns2\n\ns3\n\n", "s4", "")
    with pytest.raises(ValueError, match="outside 1..4"):
        OURS.guided_prefix(steps, 5, "x")
    with pytest.raises(ValueError):
        AUTHORS.guided_prefix(steps, 0, "x")


def test_doubling_touches_only_lone_newlines():
    assert AUTHORS.intervention_text("a\nb\n\nc") == "a\n\nb\n\nc"


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="config.steps.split"):
        StepFormat(split_mode="lines")
    with pytest.raises(ValueError, match="config.steps.label"):
        StepFormat(label="Step:")


def test_rejects_non_text():
    with pytest.raises(TypeError):
        split_steps(None)
    with pytest.raises(TypeError):
        AUTHORS.split(None)


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
    assert join_steps(AUTHORS.split(text)) == text  # the authors' split loses nothing
