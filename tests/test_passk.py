"""pass@k: exact on small n, stable on large n, the summaries built from it."""

import math

import pytest

from int_jax.data.records import EvalSample
from int_jax.eval.passk import default_ks, pass_at_k, summarize, summarize_samples


def exact(n, c, k):
    return 1 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
def test_matches_exact_combinatorial_value(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(exact(n, c, k), abs=1e-12)


def test_edge_cases_and_bad_arguments():
    assert pass_at_k(1024, 0, 1) == 0.0 and pass_at_k(1024, 0, 1024) == 0.0
    assert pass_at_k(1024, 1024, 1) == 1.0
    assert pass_at_k(1024, 1, 1024) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 0)


def test_large_n_is_finite_monotone_and_accurate():
    n = 1024
    for c in (1, 2, 7, 100, 1000):
        vals = [pass_at_k(n, c, k) for k in default_ks(n)]
        assert all(0.0 <= v <= 1.0 for v in vals)
        assert all(a <= b + 1e-15 for a, b in zip(vals, vals[1:]))
        assert vals[0] == pytest.approx(c / n, rel=1e-12)  # pass@1 is the mean
        assert vals[-1] == 1.0  # pass@n: any correct sample is drawn
    # against exact big-integer arithmetic where floats of C(n, k) overflow
    assert pass_at_k(1024, 3, 300) == pytest.approx(exact(1024, 3, 300), rel=1e-12)


def test_default_ks():
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(12) == [1, 2, 4, 8, 12]
    assert default_ks(1) == [1]


def test_summary_pass_at_n_is_coverage_and_ci_is_seeded():
    counts = {f"p{i}": (16, c) for i, c in enumerate([0, 0, 1, 3, 16, 8, 0, 2])}
    s = summarize(counts, bootstrap=500, seed=3)
    assert list(s.pass_at) == [1, 2, 4, 8, 16]
    assert s.pass_at[16] == pytest.approx(s.coverage) == pytest.approx(5 / 8)
    assert s.mean_at_n == pytest.approx(s.pass_at[1]) == pytest.approx(30 / 128)
    assert all(s.ci[k][0] <= s.pass_at[k] <= s.ci[k][1] for k in s.pass_at)
    assert s.ci[1][0] < s.ci[1][1]
    assert summarize(counts, bootstrap=500, seed=3).ci == s.ci
    assert summarize(counts, bootstrap=500, seed=4).ci != s.ci
    with pytest.raises(ValueError, match="samples per problem"):
        summarize(counts, ks=[32])


def test_summarize_samples_groups_by_benchmark():
    grades = {"a": ["correct", "wrong"], "b": ["wrong", "timeout"]}
    samples = [EvalSample(pid, "hmmt", i, "", g) for pid, gs in grades.items()
               for i, g in enumerate(gs)]
    samples.append(EvalSample("z", "apex", 0, "", "no_answer"))
    out = summarize_samples(samples, bootstrap=50)
    assert set(out) == {"hmmt", "apex"}
    assert out["hmmt"].num_problems == 2 and out["hmmt"].pass_at[1] == pytest.approx(0.25)
    assert out["hmmt"].coverage == 0.5 and out["apex"].coverage == 0.0
