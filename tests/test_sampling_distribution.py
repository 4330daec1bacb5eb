"""Sampling: the truncated distribution against a numpy hand computation, and draws against it."""

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest

from int_jax.sampling import sample as sample_lib


def numpy_truncated(logits, temperature, top_p, top_k):
    """Reference: scale, keep top_k, renormalise, keep the smallest top-p nucleus."""
    if temperature == 0:
        out = np.zeros_like(logits)
        out[np.argmax(logits)] = 1.0
        return out
    z = logits / temperature
    order = np.argsort(-z, kind="stable")
    keep = np.ones_like(z, bool)
    if top_k > 0:
        keep[:] = False
        keep[order[:top_k]] = True
    p = np.where(keep, np.exp(z - z.max()), 0.0)
    p /= p.sum()
    if top_p < 1.0:
        sorted_p = p[order]
        before = np.cumsum(sorted_p) - sorted_p
        nucleus = order[before < top_p]
        keep2 = np.zeros_like(keep)
        keep2[nucleus] = True
        p = np.where(keep2, p, 0.0)
        p /= p.sum()
    return p


LOGITS = np.random.RandomState(3).randn(200).astype(np.float32) * 2.0


def prob_rtol(logits, temperature):
    """Relative bound between two fp32 evaluations (JAX's, numpy's float32 reference) of
    one truncated probability (tests/numerics.py): z / t and z - max are off by <= 2u span
    (span: the scaled logits' range), which exp turns relative, plus exp's own u; each of
    <= 2 normalisations sums <= V positive terms (gamma_V) and divides (u). Greedy rows
    are exact one-hots, and truncated tokens exact zeros, in both."""
    if temperature == 0:
        return 0.0
    span = float(logits.max() - logits.min()) / temperature
    return 2 * (2 * numerics.U32 * span + numerics.gamma(2 * logits.size + 4))
SETTINGS = [  # (temperature, top_p, top_k): paper rollouts, GRPO, greedy, mixes
    (0.7, 0.8, 20), (1.0, 1.0, 0), (0.0, 1.0, 0), (1.3, 0.5, 0), (1.0, 1.0, 5),
    (0.9, 0.95, 100),  # top_k above max_top_k: full-sort path
]


@pytest.mark.parametrize("t,p,k", SETTINGS)
def test_truncated_distribution_matches_numpy(t, p, k):
    got = sample_lib.truncated_distribution(
        jnp.asarray(LOGITS)[None], jnp.array([t]), jnp.array([p]), jnp.array([k]), max_top_k=64)[0]
    want = numpy_truncated(LOGITS, t, p, k)
    numerics.assert_within(got, want, prob_rtol(LOGITS, t) * want, f"t={t} p={p} k={k}")


def test_mixed_rows_in_one_batch_match_per_row():
    rows = len(SETTINGS)
    logits = jnp.asarray(np.stack([LOGITS] * rows))
    t, p, k = (jnp.array(x) for x in zip(*SETTINGS))
    got = np.asarray(sample_lib.truncated_distribution(logits, t, p, k))
    for r, (tt, pp, kk) in enumerate(SETTINGS):
        want = numpy_truncated(LOGITS, tt, pp, kk)
        numerics.assert_within(got[r], want, prob_rtol(LOGITS, tt) * want, f"row {r}")


@pytest.mark.parametrize("t,p,k", [(0.7, 0.8, 20), (1.0, 1.0, 0), (1.3, 0.5, 0)])
def test_draws_follow_the_truncated_distribution(t, p, k):
    draws = 20000
    logits = jnp.broadcast_to(jnp.asarray(LOGITS), (draws, LOGITS.size))
    keys = jax.random.split(jax.random.key(0), draws)
    full = lambda x: jnp.full((draws,), x)  # noqa: E731
    tokens, logp, model_logp = jax.jit(sample_lib.sample)(
        logits, keys, full(float(t)), full(float(p)), full(int(k)))
    tokens = np.asarray(tokens)
    expected = numpy_truncated(LOGITS, t, p, k)
    # No token outside the nucleus, ever.
    assert expected[tokens].min() > 0
    empirical = np.bincount(tokens, minlength=LOGITS.size) / draws
    tv = 0.5 * np.abs(empirical - expected).sum()
    # TV of 20k draws over <= 200 outcomes: E[TV] <~ 0.5*sqrt(K/N) ~ 0.05 worst case.
    assert tv < 0.05, tv
    # Returned logprobs are those of the drawn token under each distribution: a relative
    # error r of p is an absolute error <= r of log p, and each log rounds (u |log p|).
    want = np.log(expected[tokens])
    numerics.assert_within(logp, want, prob_rtol(LOGITS, t) + 2 * numerics.U32 * np.abs(want),
                           "sampling logprobs")
    ref_model = jax.nn.log_softmax(jnp.asarray(LOGITS))[tokens]
    model_tol = numerics.log_softmax_tol(0.0, float(np.abs(LOGITS).max()), LOGITS.size)
    numerics.assert_within(model_logp, ref_model, model_tol, "model logprobs")


def test_top_k_one_and_temperature_zero_are_greedy():
    logits = jnp.asarray(np.random.RandomState(1).randn(16, 300).astype(np.float32))
    keys = jax.random.split(jax.random.key(1), 16)
    ones = jnp.ones((16,))
    top1, lp, _ = sample_lib.sample(logits, keys, ones, ones, jnp.ones((16,), jnp.int32))
    greedy, glp, _ = sample_lib.sample(logits, keys, jnp.zeros((16,)), ones, jnp.zeros((16,), jnp.int32))
    argmax = np.asarray(jnp.argmax(logits, -1))
    np.testing.assert_array_equal(np.asarray(top1), argmax)
    np.testing.assert_array_equal(np.asarray(greedy), argmax)
    # Prob 1 under top-1: a log-softmax over one kept token, exact up to its own
    # rounding (exp, sum, log: tests/numerics.py, one evaluation against exact 0).
    np.testing.assert_allclose(np.asarray(lp), 0.0,
                               atol=numerics.log_softmax_tol(0.0, 0.0, 1, evaluations=1))
    np.testing.assert_allclose(np.asarray(glp), 0.0, atol=0)
