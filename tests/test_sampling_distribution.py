"""Sampling: the truncated distribution against a numpy hand computation, and draws against it."""

import jax
import jax.numpy as jnp
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
SETTINGS = [  # (temperature, top_p, top_k): paper rollouts, GRPO, greedy, mixes
    (0.7, 0.8, 20), (1.0, 1.0, 0), (0.0, 1.0, 0), (1.3, 0.5, 0), (1.0, 1.0, 5),
    (0.9, 0.95, 100),  # top_k above max_top_k: full-sort path
]


@pytest.mark.parametrize("t,p,k", SETTINGS)
def test_truncated_distribution_matches_numpy(t, p, k):
    got = sample_lib.truncated_distribution(
        jnp.asarray(LOGITS)[None], jnp.array([t]), jnp.array([p]), jnp.array([k]), max_top_k=64)[0]
    np.testing.assert_allclose(np.asarray(got), numpy_truncated(LOGITS, t, p, k), atol=1e-6)


def test_mixed_rows_in_one_batch_match_per_row():
    rows = len(SETTINGS)
    logits = jnp.asarray(np.stack([LOGITS] * rows))
    t, p, k = (jnp.array(x) for x in zip(*SETTINGS))
    got = np.asarray(sample_lib.truncated_distribution(logits, t, p, k))
    for r, (tt, pp, kk) in enumerate(SETTINGS):
        np.testing.assert_allclose(got[r], numpy_truncated(LOGITS, tt, pp, kk), atol=1e-6)


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
    # Returned logprobs are those of the drawn token under each distribution.
    np.testing.assert_allclose(np.asarray(logp), np.log(expected[tokens]), atol=1e-4)
    ref_model = jax.nn.log_softmax(jnp.asarray(LOGITS))[tokens]
    np.testing.assert_allclose(np.asarray(model_logp), np.asarray(ref_model), atol=1e-5)


def test_top_k_one_and_temperature_zero_are_greedy():
    logits = jnp.asarray(np.random.RandomState(1).randn(16, 300).astype(np.float32))
    keys = jax.random.split(jax.random.key(1), 16)
    ones = jnp.ones((16,))
    top1, lp, _ = sample_lib.sample(logits, keys, ones, ones, jnp.ones((16,), jnp.int32))
    greedy, glp, _ = sample_lib.sample(logits, keys, jnp.zeros((16,)), ones, jnp.zeros((16,), jnp.int32))
    argmax = np.asarray(jnp.argmax(logits, -1))
    np.testing.assert_array_equal(np.asarray(top1), argmax)
    np.testing.assert_array_equal(np.asarray(greedy), argmax)
    np.testing.assert_allclose(np.asarray(lp), 0.0, atol=1e-6)  # prob 1 under top-1
    np.testing.assert_allclose(np.asarray(glp), 0.0, atol=0)
