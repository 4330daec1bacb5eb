"""Each filter, and leak detection across spellings of the same answer."""

import time

import pytest

from int_jax.intervention import filters as F
from int_jax.intervention.parse import ParseResult, parse_intervention


def ok(location, content):
    return ParseResult(location=location, content=content)


def test_no_block_and_unparsable_pass_through():
    assert F.rejection(parse_intervention("no block here"), 5, "3") == F.NO_BLOCK
    assert F.rejection(parse_intervention("<intervention>nope</intervention>"), 5, "3") == F.UNPARSABLE


@pytest.mark.parametrize("location", [0, -1, 6, 100])
def test_location_out_of_range(location):
    assert F.rejection(ok(location, "fix"), 5, "3") == F.LOCATION_OUT_OF_RANGE


@pytest.mark.parametrize("location", [1, 5])
def test_location_bounds_inclusive(location):
    assert F.rejection(ok(location, "fix"), 5, "3") is None


@pytest.mark.parametrize("content", ["", "   ", "\n\n\t"])
def test_empty_content(content):
    assert F.rejection(ok(2, content), 5, "3") == F.EMPTY_CONTENT


def test_content_length_bound():
    assert F.rejection(ok(2, "a" * 101), 5, "3", max_content_chars=100) == F.CONTENT_TOO_LONG
    assert F.rejection(ok(2, "a" * 100), 5, "3", max_content_chars=100) is None


@pytest.mark.parametrize("content,gold", [
    ("So the answer is 12.", "12"),
    ("which gives x = 2.", "2"),
    (r"Hence the ratio is \dfrac{1}{2}.", "1/2"),
    ("Hence the ratio is 1/2.", r"\frac{1}{2}"),
    (r"Hence the ratio is $\frac12$.", r"\frac{1}{2}"),
    (r"the value $\frac{\sqrt{3}}{2}$ appears", r"\dfrac{\sqrt3}{2}"),
    (r"so $x \in \left[1, 3\right)$", "[1,3)"),
    (r"the roots are $-\tfrac{2}{3}, 0, \frac{2}{3}$", r"-\frac{2}{3},0,\frac{2}{3}"),
    (r"we get $\boxed{7}$", r"\boxed{7}"),
    ("leading to 45%", r"45\%"),
    ("so it is 2 \u00d7 3", r"2 \times 3"),
    ("the count is 1 024", "1 024"),
    ("The answer is x+1", "x + 1"),
])
def test_leaky(content, gold):
    assert F.is_leaky(content, gold)
    assert F.rejection(ok(1, content), 3, gold, leak_test="normalized") == F.LEAKY


@pytest.mark.parametrize("content,gold", [
    ("There are 12 ways to choose.", "2"),  # 2 inside 12
    ("x = 2.5 exactly", "2"),  # 2 inside 2.5
    ("Let n be odd.", "7"),
    ("Consider 2x + 1 and simplify.", "x+1"),  # glued to 2
    ("the ratio is 1/3", r"\frac{1}{2}"),
    ("Check the sign before squaring.", ""),  # no gold: nothing can leak
])
def test_not_leaky(content, gold):
    assert not F.is_leaky(content, gold)
    assert F.rejection(ok(1, content), 3, gold, leak_test="normalized") is None


@pytest.mark.parametrize("content,gold,substring,normalized", [
    ("There are 12 ways to choose.", "2", True, False),  # the authors' test: 2 is in 12
    ("So the answer is 12.", " 12 ", True, True),  # outer whitespace of the gold ignored
    (r"Hence the ratio is \dfrac{1}{2}.", "1/2", False, True),  # only ours normalises
    (r"Hence the ratio is \dfrac{1}{2}.", r"\frac{1}{2}", False, True),
    (r"we get $\frac{1}{2}$", r"\frac{1}{2}", True, True),
    ("Check the sign before squaring.", "", False, False),  # no gold: nothing can leak
])
def test_leak_tests_side_by_side(content, gold, substring, normalized):
    assert F.leaks(content, gold, "substring") is substring
    assert F.leaks(content, gold, "normalized") is normalized
    # The default is the authors' test.
    want = F.LEAKY if substring else None
    assert F.rejection(ok(1, content), 3, gold) == want


def test_unknown_leak_test_is_named():
    with pytest.raises(ValueError, match="config.filter.leak_test"):
        F.leaks("x", "1", "fuzzy")


def test_first_survivor_per_attempt():
    vs = [F.Verdict(2, None), F.Verdict(0, F.LEAKY), F.Verdict(1, None), F.Verdict(3, F.NO_BLOCK)]
    assert F.first_survivor(vs) == 1
    assert F.first_survivor([F.Verdict(0, F.UNPARSABLE)]) is None


def test_count_reasons_has_every_reason():
    counts = F.count_reasons([F.LEAKY, None, F.LEAKY, F.NO_BLOCK])
    assert counts == {F.NO_BLOCK: 1, F.UNPARSABLE: 0, F.LOCATION_OUT_OF_RANGE: 0,
                      F.EMPTY_CONTENT: 0, F.CONTENT_TOO_LONG: 0, F.LEAKY: 2}


def test_normalized_leak_verdicts_on_hostile_nesting():
    """A proposal stuck repeating `\\frac{` still gets the right verdict from the normalised
    leak test, in bounded time: the gold spelled another way after 300 nested fractions is
    caught (the substring test cannot see it), a different value is not; 5000 of them are
    rejected as too long before any normalising, which itself stays bounded."""
    nest = "\\frac{" * 300 + "}" * 300  # 2100 chars, under the content limit
    t0 = time.perf_counter()
    leaky = ok(1, nest + r" so it is \dfrac{1}{2}.")
    assert F.rejection(leaky, 3, "1/2", leak_test="normalized") == F.LEAKY
    assert F.rejection(leaky, 3, "1/2", leak_test="substring") is None
    assert F.rejection(ok(1, nest + r" so it is \dfrac{1}{3}."), 3, "1/2",
                       leak_test="normalized") is None
    deep = "\\frac{" * 5000 + "}" * 5000
    assert F.rejection(ok(1, deep), 3, "1/2", leak_test="normalized") == F.CONTENT_TOO_LONG
    assert F.normalise_math(deep)  # returns (input cut to a bound, rewrites capped)
    assert time.perf_counter() - t0 < 2.0  # ~0.03 s here: the bound is slack for slow CI
