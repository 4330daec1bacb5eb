"""pass@k: exact on small n, stable on large n, the summaries built from it."""

import math

import numerics
import pytest

from int_jax.data.records import EvalSample
from int_jax.eval.passk import default_ks, pass_at_k, summarize, summarize_samples


def exact(n, c, k):
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def tol(n, c):
    """The float64 bound derived in tests/numerics.py (pass_at_k_tol)."""
    return numerics.pass_at_k_tol(n, c)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
def test_matches_exact_combinatorial_value(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert abs(pass_at_k(n, c, k) - exact(n, c, k)) <= tol(n, c), (n, c, k)


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
        # Exact values are non-decreasing in k; each computed one is within tol of its own.
        assert all(a <= b + 2 * tol(n, c) for a, b in zip(vals, vals[1:]))
        assert abs(vals[0] - c / n) <= tol(n, c)  # pass@1 is the mean
        assert vals[-1] == 1.0  # pass@n: any correct sample is drawn
    # against exact big-integer arithmetic where floats of C(n, k) overflow
    assert abs(pass_at_k(1024, 3, 300) - exact(1024, 3, 300)) <= tol(1024, 3)


def test_default_ks():
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(12) == [1, 2, 4, 8, 12]
    assert default_ks(1) == [1]


def test_summary_pass_at_n_is_coverage_and_ci_is_seeded():
    counts = {f"p{i}": (16, c) for i, c in enumerate([0, 0, 1, 3, 16, 8, 0, 2])}
    s = summarize(counts, bootstrap=500, seed=3)
    assert list(s.pass_at) == [1, 2, 4, 8, 16]
    # pass@16 of 16 samples is exactly 0.0 or 1.0 per problem (no logs taken), and a mean
    # of 8 such values, like one of 8 multiples of 1/16, is exact in binary.
    assert s.pass_at[16] == s.coverage == 5 / 8
    assert s.mean_at_n == 30 / 128
    # pass@1 per problem is within tol(16, c <= 16) of c / 16; the mean of 8 adds gamma_8.
    assert abs(s.pass_at[1] - 30 / 128) <= tol(16, 16) + numerics.gamma(8, numerics.U64)
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
    assert out["hmmt"].num_problems == 2
    assert abs(out["hmmt"].pass_at[1] - 0.25) <= tol(2, 1) + numerics.gamma(2, numerics.U64)
    assert out["hmmt"].coverage == 0.5 and out["apex"].coverage == 0.0
