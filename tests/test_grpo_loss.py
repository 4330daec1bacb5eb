"""GRPO's loss pieces against float64 numpy references written here, independently.

Tolerances come from the standard rounding model (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2.2 and 3.1): each fp32 operation is exact then rounded,
fl(a op b) = (a op b)(1 + d) with |d| <= u = 2^-24; a sum of n terms in any order is off
by at most gamma_n * sum|terms|, gamma_n = n u / (1 - n u). XLA's exp and log are counted
as 2 ulp (4u) each. The inputs are fp32 values, so the float64 reference sees exactly
what the fp32 code sees. The bounds are worst cases: a real bug (a wrong side of a clip,
a dropped mask, a wrong divisor, a wrong temperature) moves a result by a fixed fraction
of its size, orders of magnitude beyond them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from int_jax.train import grpo

U = 2.0 ** -24  # fp32 unit roundoff
MODES = grpo.AGG_MODES
CONST_LEN = 7  # Dr.GRPO's L in these tests
EPS_LOW, EPS_HIGH, DUAL = 0.2, 0.28, 3.0


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


def within(got, want, tol, what: str) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff = np.abs(got - want)
    bad = ~(diff <= np.broadcast_to(tol, diff.shape))
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, diff, -1)), diff.shape)
        raise AssertionError(f"{what}: {int(bad.sum())}/{diff.size} entries out of bound; "
                             f"worst at {i}: got {got[i]!r} want {want[i]!r} "
                             f"tol {np.broadcast_to(tol, diff.shape)[i]!r}")


# -- a hand-made batch: every side of every clip ----------------------------------

# rho = pi / pi_old per token; 0 marks padding. Advantages per row beside.
RATIOS = np.array([
    [1.50, 1.10, 0.50, 1.00, 0.00, 0.00],  # A > 0: clipped high; unclipped x3 (0.5: the
    #                                         low clip never binds for A > 0)
    [0.50, 0.90, 1.50, 10.0, 1.00, 0.00],  # A < 0: clipped low; unclipped; unclipped (the
    #                                         high clip never binds for A < 0); dual clip
    [1.30, 0.70, 2.00, 0.00, 0.00, 0.00],  # A = 0: an all-equal group
    [0.00, 0.00, 0.00, 0.00, 0.00, 0.00],  # batch padding: no live token
    [0.60, 1.20, 1.35, 1.27, 1.00, 4.00],  # A > 0: unclipped x2, clipped, just under, 1, clipped
    [0.79, 0.81, 1.30, 5.00, 2.90, 0.00],  # A < 0: clipped low, just above, unclipped,
    #                                         dual clip, just under c
])
ADV = np.array([1.0, -0.5, 0.0, 0.7, 0.3, -1.2], np.float32)


def hand_batch(seed=0):
    """(logp, old_logp, mask) in fp32 with pi/pi_old = RATIOS at live tokens; padded
    positions hold +-60, whose exp() would overflow fp32 if it were ever taken."""
    rng = np.random.default_rng(seed)
    mask = (RATIOS != 0).astype(np.float32)
    logp = (-rng.uniform(0.05, 4.0, RATIOS.shape)).astype(np.float32)
    old = (logp - np.log(np.where(mask != 0, RATIOS, 1.0))).astype(np.float32)
    logp = np.where(mask != 0, logp, 60.0).astype(np.float32)
    old = np.where(mask != 0, old, -60.0).astype(np.float32)
    return logp, old, mask


def ref_policy(logp, old, adv, mask, eps_low, eps_high, c):
    """Per-token loss, d loss / d logp, and the three clip indicators, token by token."""
    loss, dloss = np.zeros(logp.shape), np.zeros(logp.shape)
    low, high, dual = (np.zeros(logp.shape, bool) for _ in range(3))
    for b, t in np.ndindex(logp.shape):
        if not mask[b, t]:
            continue
        a, r = float(adv[b]), math.exp(float(logp[b, t]) - float(old[b, t]))
        if a > 0:  # gain a * min(r, 1 + eps_high): flat (no gradient) above the clip
            high[b, t] = r > 1 + eps_high
            loss[b, t] = -a * min(r, 1 + eps_high)
            dloss[b, t] = 0.0 if high[b, t] else -a * r
        elif a < 0:  # cost |a| * max(r, 1 - eps_low), capped at |a| c
            low[b, t] = r < 1 - eps_low
            loss[b, t] = -a * max(r, 1 - eps_low)
            dloss[b, t] = 0.0 if low[b, t] else -a * r
            if c is not None and r > c:
                dual[b, t] = True
                loss[b, t], dloss[b, t] = -a * c, 0.0
    return loss, dloss, low, high, dual


def ref_agg_coef(mask, mode, constant_len=None):
    """d(aggregate) / d(per-token loss): the aggregate is sum(coef * loss)."""
    live = mask != 0
    rows = [b for b in range(mask.shape[0]) if live[b].any()]
    coef = np.zeros(mask.shape)
    for b in rows:
        if mode == "token-mean":
            coef[b, live[b]] = 1.0 / live.sum()
        elif mode == "seq-mean-token-mean":
            coef[b, live[b]] = 1.0 / (len(rows) * live[b].sum())
        elif mode == "seq-mean-token-sum":
            coef[b, live[b]] = 1.0 / len(rows)
        elif mode == "seq-mean-token-sum-norm":
            coef[b, live[b]] = 1.0 / (len(rows) * constant_len)
    return coef


def pg_rel_err(logp, old):
    """Relative error bound of one fp32 clipped-ratio token: x = logp - old is rounded
    (u|x|, which exp turns into a relative u|x|), exp (4u), the clip bound 1 +- eps
    (u), the product with A (u), the division by the aggregate's weight (u), and two
    more for the coefficient's own roundings: (|x| + 8) u."""
    x = np.abs(np.asarray(logp, np.float64) - np.asarray(old, np.float64))
    return (np.minimum(x, 40.0) + 8.0) * U


# -- config -----------------------------------------------------------------------


def test_config_defaults_and_frozen():
    cfg = grpo.GRPOConfig()
    assert (cfg.kl_coef, cfg.entropy_coef, cfg.normalize_adv_by_std) == (0.0, 0.0, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.clip_low = 0.3
    grpo.GRPOConfig(loss_agg_mode="seq-mean-token-sum-norm", constant_len=256,
                    dual_clip=3.0, tis_cap=2.0, kl_coef=0.1, kl_estimator="k1")


@pytest.mark.parametrize("kwargs,field", [
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"clip_low": 1.0}, "clip_low"),
    ({"clip_low": -0.1}, "clip_low"),
    ({"clip_high": -0.2}, "clip_high"),
    ({"dual_clip": 1.0}, "dual_clip"),
    ({"loss_agg_mode": "mean"}, "loss_agg_mode"),
    ({"loss_agg_mode": "seq-mean-token-sum-norm"}, "constant_len"),
    ({"loss_agg_mode": "seq-mean-token-sum-norm", "constant_len": 0}, "constant_len"),
    ({"loss_agg_mode": "seq-mean-token-sum-norm", "constant_len": 2.5}, "constant_len"),
    ({"constant_len": 256}, "constant_len"),
    ({"kl_coef": -0.1}, "kl_coef"),
    ({"kl_estimator": "k2"}, "kl_estimator"),
    ({"entropy_coef": -1e-4}, "entropy_coef"),
    ({"normalize_adv_by_std": 1}, "normalize_adv_by_std"),
    ({"adv_eps": 0.0}, "adv_eps"),
    ({"old_logprobs": "ref"}, "old_logprobs"),
    ({"tis_cap": 0.5}, "tis_cap"),
    ({"tis_cap": 2.0, "old_logprobs": "sampler"}, "tis_cap"),
])
def test_config_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"GRPOConfig\.{field}\b"):
        grpo.GRPOConfig(**kwargs)


# -- advantages -------------------------------------------------------------------


def test_group_advantages_center_and_zero_for_equal_groups():
    rewards = [[1, 0, 0, 1], [0.1, 0.1, 0.1, 0.1], [1, 1, 1, 1], [0, 0, 0, 1],
               [0.3, 0.9, 0.2, 0.25]]
    got = grpo.group_advantages(rewards)
    assert got.dtype == np.float32 and got.shape == (5, 4)
    for row, r in zip(got, rewards):
        mean = math.fsum(r) / len(r)
        want = [x - mean if len(set(r)) > 1 else 0.0 for x in r]
        # float64 mean and subtraction (n + 2 roundings of u64), then one fp32 rounding
        within(row, want, U * np.abs(want) + 8 * 2.0 ** -53 * max(map(abs, r)), "advantage")
    assert np.all(got[1] == 0) and np.all(got[2] == 0)
    assert np.isclose(got[3], [-0.25, -0.25, -0.25, 0.75]).all()


@pytest.mark.parametrize("normalize", [False, True])
def test_group_advantages_exactly_zero_where_float_mean_is_not(normalize):
    """The float mean of three 0.1s is not 0.1: equal groups are zero by rule, not luck."""
    rewards = np.array([[0.1] * 3, [0.7] * 3, [1.0, 0.0, 1.0]])
    naive = rewards - rewards.mean(axis=1, keepdims=True)
    assert np.all(naive[:2] != 0)  # the precondition that makes this test mean something
    got = grpo.group_advantages(rewards, normalize_by_std=normalize)
    assert np.all(got[:2] == 0) and np.all(got[2] != 0)


def test_group_advantages_divided_by_std():
    rewards = [[1, 0, 0, 1, 0, 0, 0, 1], [1] * 8, [0.3, 0.9, 0.2, 0.25, 0, 1, 1, 0.5]]
    got = grpo.group_advantages(rewards, normalize_by_std=True, eps=1e-6)
    for row, r in zip(got, rewards):
        if len(set(r)) == 1:
            assert np.all(row == 0)
            continue
        mean, sd = statistics.fmean(r), statistics.stdev(r)  # sample std (n - 1)
        want = [(x - mean) / (sd + 1e-6) for x in r]
        within(row, want, 2 * U * np.abs(want) + 1e-12, "normalized advantage")


@pytest.mark.parametrize("rewards", [[1.0, 0.0], [[1.0], [0.0]], [[1.0, float("nan")]]])
def test_group_advantages_rejects_bad_shapes(rewards):
    with pytest.raises(ValueError):
        grpo.group_advantages(rewards)


# -- the clipped policy loss ------------------------------------------------------


@pytest.mark.parametrize("c", [None, DUAL])
def test_policy_loss_terms_every_side_of_every_clip(c):
    logp, old, mask = hand_batch()
    terms = grpo.policy_loss_terms(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(ADV),
                                   jnp.asarray(mask), clip_low=EPS_LOW, clip_high=EPS_HIGH,
                                   dual_clip=c)
    loss, _, low, high, dual = ref_policy(logp, old, ADV, mask, EPS_LOW, EPS_HIGH, c)
    # the batch holds what it claims: both clips twice, the dual clip twice when on
    assert (low.sum(), high.sum(), dual.sum()) == (2, 3, 2 if c else 0)
    within(terms.loss, loss, pg_rel_err(logp, old) * np.abs(loss), "per-token loss")
    np.testing.assert_array_equal(terms.clipped_low, low)
    np.testing.assert_array_equal(terms.clipped_high, high)
    np.testing.assert_array_equal(terms.dual_clipped, dual)
    assert np.all(np.asarray(terms.loss)[mask == 0] == 0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("c", [None, DUAL])
def test_policy_loss_and_gradient_every_mode(mode, c):
    logp, old, mask = hand_batch(1)

    def f(lp):
        terms = grpo.policy_loss_terms(lp, jnp.asarray(old), jnp.asarray(ADV), jnp.asarray(mask),
                                       clip_low=EPS_LOW, clip_high=EPS_HIGH, dual_clip=c)
        return grpo.agg_loss(terms.loss, jnp.asarray(mask), mode, CONST_LEN)

    value, grad = jax.jit(jax.value_and_grad(f))(jnp.asarray(logp))
    loss, dloss, *_ = ref_policy(logp, old, ADV, mask, EPS_LOW, EPS_HIGH, c)
    coef = ref_agg_coef(mask, mode, CONST_LEN)
    # value: per-token relative error plus the sum over <= B*T tokens and the row sums
    mag = np.sum(coef * np.abs(loss))
    tol = np.max(pg_rel_err(logp, old)) * mag + gamma(2 * mask.size) * mag
    within(value, np.sum(coef * loss), tol, f"{mode} loss")
    # gradient: elementwise (the backward of a sum is a broadcast), so a clipped token's
    # zero must be an exact zero, and a live one is within its own relative bound
    want = coef * dloss
    within(grad, want, (pg_rel_err(logp, old) + 4 * U) * np.abs(want), f"{mode} gradient")
    assert np.count_nonzero(want) > 0 and np.all(np.asarray(grad)[want == 0] == 0)


# -- aggregation ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_agg_loss_every_mode_with_garbage_in_padding(mode):
    rng = np.random.default_rng(2)
    mask = (RATIOS != 0).astype(np.float32)
    per_token = rng.normal(size=mask.shape).astype(np.float32)
    per_token[0, 4], per_token[3, 0], per_token[5, 5] = np.nan, np.inf, -1e30  # all padded
    coef = ref_agg_coef(mask, mode, CONST_LEN)
    clean = np.where(mask != 0, per_token, 0.0)
    value, grad = jax.value_and_grad(grpo.agg_loss)(jnp.asarray(per_token), jnp.asarray(mask),
                                                   mode, CONST_LEN)
    # a sum of <= B*T products by coefficients (themselves 1 to 3 roundings), rows first
    mag = np.sum(coef * np.abs(clean))
    within(value, np.sum(coef * clean), gamma(mask.size + 8) * mag, f"{mode} value")
    within(grad, coef, 4 * U * coef, f"{mode} gradient")
    # the sums add over a split batch (what gradient accumulation relies on)
    top = grpo.agg_loss_sums(jnp.asarray(per_token[:3]), jnp.asarray(mask[:3]), mode, CONST_LEN)
    bot = grpo.agg_loss_sums(jnp.asarray(per_token[3:]), jnp.asarray(mask[3:]), mode, CONST_LEN)
    split = (float(top[0]) + float(bot[0])) / (float(top[1]) + float(bot[1]))
    within(split, np.sum(coef * clean), 2 * gamma(mask.size + 8) * mag, f"{mode} split")


def test_agg_loss_empty_batch_is_zero_and_bad_modes_raise():
    zeros = jnp.zeros((2, 3))
    for mode in MODES:
        value, grad = jax.value_and_grad(grpo.agg_loss)(jnp.ones((2, 3)), zeros, mode, CONST_LEN)
        assert float(value) == 0 and np.all(np.asarray(grad) == 0)
    with pytest.raises(ValueError, match="token-mean"):
        grpo.agg_loss(zeros, zeros, "sum")
    with pytest.raises(ValueError, match="constant_len"):
        grpo.agg_loss(zeros, zeros, "seq-mean-token-sum-norm")


# -- KL, entropy, importance sampling ---------------------------------------------


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_kl_penalty(kind):
    rng = np.random.default_rng(3)
    logp = (-rng.uniform(0.01, 6.0, (4, 9))).astype(np.float32)
    ref = (logp + rng.normal(0, 1.0, logp.shape)).astype(np.float32)
    lp64, ref64 = logp.astype(np.float64), ref.astype(np.float64)
    d = ref64 - lp64
    if kind == "k1":
        want, dwant = -d, np.ones_like(d)
        tol, dtol = U * np.abs(d), 0.0  # one rounded subtraction; d/dlogp is exactly 1
    else:
        want, dwant = np.exp(d) - d - 1, 1 - np.exp(d)
        # d is rounded (u|d|, times |e^d - 1| <= e^d + 1 downstream), exp 4u, two
        # subtractions u each on operands <= e^d + |d| + 1; k3 cancels near d = 0, so
        # the bound is absolute, on the operands' size
        tol = U * (np.abs(d) + 6) * (np.exp(d) + np.abs(d) + 1)
        dtol = U * (np.abs(d) + 6) * (np.exp(d) + 1)
    got = grpo.kl_penalty(jnp.asarray(logp), jnp.asarray(ref), kind)
    within(got, want, tol, f"{kind} value")
    dgot = jax.grad(lambda lp: jnp.sum(grpo.kl_penalty(lp, jnp.asarray(ref), kind)))(
        jnp.asarray(logp))
    within(dgot, dwant, dtol, f"{kind} gradient")
    if kind == "k3":
        assert np.all(np.asarray(got) >= 0)
    with pytest.raises(ValueError, match="k2"):
        grpo.kl_penalty(jnp.asarray(logp), jnp.asarray(ref), "k2")


def lse_bound(s, delta):
    """Bound on |fl32 LSE(s) - LSE(s)| and on |fl32 log_softmax(s) - log_softmax(s)|
    over the last axis, where the fp32 code sees s perturbed by at most `delta` per entry.

    Input: dLSE/ds = p has l1 norm 1, d log p_y / ds has l1 norm 2 (1 - p_y) <= 2, so
    delta and 2 delta. Own rounding, per the max-shifted algorithm: s_v - max is
    rounded (u * span, span = max - min), exp (4u) -> each term relatively
    u (span + 4); the sum of V positive terms gamma_V; log turns that relative error
    into an absolute one and adds u |log sum| <= u log V; adding the max back and
    subtracting from s_y add u |LSE| and u |log p|.

    This is the worst case, linear in V; roundings of random sign give ~ sqrt(V) u,
    and in practice a few u log V (the figure usually quoted) - but only the linear
    one is guaranteed."""
    v = s.shape[-1]
    lse = np.log(np.sum(np.exp(s - s.max(-1, keepdims=True)), -1)) + s.max(-1)
    span = s.max(-1) - s.min(-1)
    own = gamma(v) + U * (span + 4 + np.log(v) + np.abs(lse))
    logp_max = np.max(np.abs(s - lse[..., None]), -1)
    return lse, delta + own, 2 * delta + own + U * logp_max


def ref_entropy(s):
    lse = np.log(np.sum(np.exp(s - s.max(-1, keepdims=True)), -1)) + s.max(-1)
    p = np.exp(s - lse[..., None])
    return lse, p, -np.sum(p * (s - lse[..., None]), -1)


def entropy_bound(s, delta, e_lse):
    """|fl32 H - H| for H = LSE - sum_v p_v s_v: the LSE's error; each p_v is
    exp(s_v - LSE) with an argument off by delta + e_lse + u |s_v - LSE| (relative error
    of p_v, plus 4u for exp); the product p s (u) and the V-term sum (gamma_V) act on
    sum p |s|; the inputs s themselves are off by delta."""
    lse, p, _ = ref_entropy(s)
    delta = np.asarray(delta)  # scalar or per row [...]
    rel_p = delta[..., None] + e_lse[..., None] + U * np.abs(s - lse[..., None]) + 5 * U
    return (e_lse + np.sum(p * np.abs(s) * rel_p, -1) + delta
            + gamma(s.shape[-1]) * np.sum(p * np.abs(s), -1))


def test_entropy_from_logits():
    rng = np.random.default_rng(4)
    z = (rng.normal(0, 3, (3, 5, 50))).astype(np.float32)
    s = z.astype(np.float64)
    _, _, want = ref_entropy(s)
    _, e_lse, _ = lse_bound(s, 0.0)
    within(grpo.entropy_from_logits(jnp.asarray(z)), want, entropy_bound(s, 0.0, e_lse),
           "entropy")


def test_importance_weights_and_mismatch_metrics():
    rng = np.random.default_rng(5)
    mask = (RATIOS != 0).astype(np.float32)
    trainer = (-rng.uniform(0.01, 3.0, mask.shape)).astype(np.float32)
    delta = rng.normal(0, 0.6, mask.shape)  # some above log 2 (capped), most not
    sampler = (trainer - delta).astype(np.float32)
    sampler[mask == 0] = 50.0  # garbage in the padding
    cap = 2.0
    w, m = grpo.importance_weights(jnp.asarray(trainer), jnp.asarray(sampler),
                                   jnp.asarray(mask), cap)
    live = mask != 0
    d = trainer.astype(np.float64) - sampler.astype(np.float64)
    want = np.where(live, np.minimum(np.exp(d), cap), 0.0)
    assert 0 < np.sum(live & (np.exp(d) > cap)) < live.sum()
    # weight: d rounded (u|d|) then exp (4u), or the cap exactly
    within(w, want, U * (np.abs(d) + 4) * want, "IS weights")
    n = int(live.sum())
    ad = np.abs(d[live])
    within(m["train/mismatch_logp_abs_mean"], ad.mean(), (gamma(n + 1) + U) * ad.mean()
           + U * ad.mean(), "mean |dlogp|")
    within(m["train/mismatch_logp_abs_max"], ad.max(), U * ad.max(), "max |dlogp|")
    within(m["train/is_weight_mean"], want[live].mean(),
           (gamma(n + 1) + U * (ad.max() + 4)) * want[live].mean(), "mean weight")
    assert float(m["train/is_capped_frac"]) == pytest.approx(np.mean(np.exp(d[live]) > cap),
                                                             rel=2 * U)
    # Pearson: p = exp(logp) is off by u(|logp| + 4) relatively; the centred sums of
    # <= 2n terms by gamma_2n of sum|terms| <= (by Cauchy-Schwarz) their rms product;
    # a relative perturbation e of p moves r by at most 2 e max(p) sqrt(n) / ||p - mean||
    # per side.
    p_t, p_s = np.exp(trainer[live].astype(np.float64)), np.exp(sampler[live].astype(np.float64))
    r = np.corrcoef(p_t, p_s)[0, 1]
    e = U * (max(np.abs(trainer[live]).max(), np.abs(sampler[live]).max()) + 4)
    spread = min(np.linalg.norm(p_t - p_t.mean()), np.linalg.norm(p_s - p_s.mean()))
    tol = 4 * gamma(2 * n + 4) * (1 + abs(r)) + 4 * e * math.sqrt(n) / spread
    within(m["train/mismatch_prob_corr"], r, tol, "probability correlation")
    # no cap: unit weights on live tokens, metrics still there, no IS metrics
    w1, m1 = grpo.importance_weights(jnp.asarray(trainer), jnp.asarray(sampler),
                                     jnp.asarray(mask), None)
    np.testing.assert_array_equal(w1, mask)
    assert "train/is_weight_mean" not in m1 and "train/mismatch_prob_corr" in m1


# -- the whole loss ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_grpo_loss_against_reference(mode, kind):
    beta, alpha, cap = 0.05, 0.01, 2.0
    cfg = grpo.GRPOConfig(clip_low=EPS_LOW, clip_high=EPS_HIGH, dual_clip=DUAL,
                          loss_agg_mode=mode,
                          constant_len=CONST_LEN if mode.endswith("norm") else None,
                          kl_coef=beta, kl_estimator=kind, entropy_coef=alpha, tis_cap=cap)
    rng = np.random.default_rng(6)
    logp, old, mask = hand_batch(6)
    live = mask != 0
    ref = np.where(live, logp + rng.normal(0, 0.5, mask.shape), -5.0).astype(np.float32)
    sampler = np.where(live, old - rng.normal(0, 0.5, mask.shape), 70.0).astype(np.float32)
    ent = np.where(live, rng.uniform(0, 3, mask.shape), np.nan).astype(np.float32)

    def f(lp, h):
        return grpo.grpo_loss(cfg, lp, jnp.asarray(old), jnp.asarray(ADV), jnp.asarray(mask),
                              entropy=h, ref_logp=jnp.asarray(ref),
                              sampler_logp=jnp.asarray(sampler))

    (value, metrics), (g_lp, g_h) = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
        jnp.asarray(logp), jnp.asarray(ent))

    lp64, old64, ref64 = (a.astype(np.float64) for a in (logp, old, ref))
    pg, dpg, low, high, dual = ref_policy(logp, old, ADV, mask, EPS_LOW, EPS_HIGH, DUAL)
    w = np.where(live, np.minimum(np.exp(old64 - sampler.astype(np.float64)), cap), 0.0)
    d = np.where(live, ref64 - lp64, 0.0)
    kl, dkl = ((-d, np.ones_like(d)) if kind == "k1" else (np.exp(d) - d - 1, 1 - np.exp(d)))
    h = np.where(live, ent.astype(np.float64), 0.0)
    coef = ref_agg_coef(mask, mode, CONST_LEN)
    want = np.sum(coef * (w * pg + beta * kl - alpha * h))

    # per token: the policy term's relative bound (pg_rel_err, plus the IS weight's
    # u(|d_s| + 4) and its product u); k3's absolute bound on its operands' size (see
    # test_kl_penalty); two adds and two products by the coefficients; then the sum
    x_err = pg_rel_err(logp, old) + U * (np.abs(old64 - sampler) + 6)
    kl_mag = np.abs(d) + 1 + np.exp(d) if kind == "k3" else np.abs(d)
    mag = np.abs(w * pg) + beta * kl_mag + alpha * np.abs(h)
    err = x_err * np.abs(w * pg) + U * (np.abs(d) + 8) * beta * kl_mag + 4 * U * mag
    tol = np.sum(coef * err) + gamma(2 * mask.size + 8) * np.sum(coef * mag)
    within(value, want, tol, f"{mode}/{kind} loss")
    within(metrics["train/loss"], want, tol, "train/loss")

    dwant = coef * (w * dpg + beta * dkl)
    derr = coef * (x_err * np.abs(w * dpg) + U * (np.abs(d) + 8) * beta * (np.exp(d) + 1)
                   + 4 * U * (np.abs(w * dpg) + beta * np.abs(dkl)))
    within(g_lp, dwant, derr, f"{mode}/{kind} d/dlogp")
    # -alpha coef: alpha's own fp32 rounding, 1 / weight, 1 / L or 1 / n_i, the product
    # with alpha: <= 5 roundings
    within(g_h, -alpha * coef, 6 * U * alpha * coef, f"{mode}/{kind} d/dentropy")

    n = int(live.sum())
    frac = functools.partial(within, tol=2 * U, what="clip fraction")
    frac(metrics["train/clip_frac_low"], low.sum() / n)
    frac(metrics["train/clip_frac_high"], high.sum() / n)
    frac(metrics["train/dual_clip_frac"], dual.sum() / n)
    lr = np.where(live, lp64 - old64, 0.0)
    k3_old = np.exp(lr) - lr - 1
    within(metrics["train/approx_kl_old"], k3_old[live].mean(),
           gamma(n + 2) * k3_old[live].mean()
           + U * np.mean((np.abs(lr[live]) + 6) * (np.exp(lr[live]) + np.abs(lr[live]) + 1)),
           "approx KL to pi_old")
    within(metrics["train/entropy"], h[live].mean(), gamma(n + 2) * h[live].mean(), "entropy")
    within(metrics["train/kl_ref"], kl[live].mean(),
           gamma(n + 2) * np.abs(kl[live]).mean() + U * np.mean((np.abs(d) + 6) * kl_mag),
           "KL to reference")
    assert {"train/is_weight_mean", "train/mismatch_prob_corr", "train/pg_loss"} <= set(metrics)
    assert all(k.startswith("train/") for k in metrics)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalize", [False, True])
def test_all_equal_group_contributes_exactly_zero_gradient(mode, normalize):
    """Groups of 6: mixed, all right, all wrong, all 0.7 (a partial-credit reward whose
    float mean is not 0.7). The uniform groups' rows get an exactly zero gradient, every
    token of them, under every clip and the IS weights."""
    n = 6
    rewards = np.array([[1, 0, 0, 1, 0, 1], [1] * n, [0] * n, [0.7] * n])
    adv = grpo.group_advantages(rewards, normalize_by_std=normalize).reshape(-1)  # [G, n] -> [G*n]
    cfg = grpo.GRPOConfig(clip_low=EPS_LOW, clip_high=EPS_HIGH, dual_clip=DUAL,
                          loss_agg_mode=mode,
                          constant_len=CONST_LEN if mode.endswith("norm") else None,
                          tis_cap=2.0)
    rng = np.random.default_rng(7)
    logp = (-rng.uniform(0.01, 4.0, (4 * n, 10))).astype(np.float32)
    old = (logp + rng.normal(0, 0.8, logp.shape)).astype(np.float32)  # many clipped tokens
    sampler = (old + rng.normal(0, 0.3, logp.shape)).astype(np.float32)
    mask = (np.arange(10)[None, :] < rng.integers(3, 11, (4 * n, 1))).astype(np.float32)

    grad = jax.grad(lambda lp: grpo.grpo_loss(cfg, lp, old, adv, mask, sampler_logp=sampler)[0])(
        jnp.asarray(logp))
    grad = np.asarray(grad)
    assert np.all(grad[n:] == 0), "a uniform group moved the policy"
    assert np.count_nonzero(grad[:n]) > 0


def test_grpo_loss_asks_for_what_its_config_needs():
    z = jnp.zeros((2, 3))
    a = jnp.zeros((2,))
    with pytest.raises(ValueError, match="ref_logp"):
        grpo.grpo_loss(grpo.GRPOConfig(kl_coef=0.1), z, z, a, z)
    with pytest.raises(ValueError, match="entropy"):
        grpo.grpo_loss(grpo.GRPOConfig(entropy_coef=0.1), z, z, a, z)
    with pytest.raises(ValueError, match="sampler_logp"):
        grpo.grpo_loss(grpo.GRPOConfig(tis_cap=2.0), z, z, a, z)
    loss, metrics = grpo.grpo_loss(grpo.GRPOConfig(), z, z, a, z)
    assert float(loss) == 0 and "train/kl_ref" not in metrics and "train/entropy" not in metrics


# -- logprobs over the vocabulary in chunks ---------------------------------------

B, T, D, V, CHUNK = 2, 11, 24, 257, 4  # T % CHUNK != 0: the padded last chunk is exercised


def head_data(seed=8):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(0, 1, (B, T, D)).astype(np.float32)
    weight = rng.normal(0, 0.6, (D, V)).astype(np.float32)  # logits ~ N(0, 3^2)
    targets = rng.integers(0, V, (B, T)).astype(np.int32)
    return hidden, weight, targets


def ref_scaled_logits(hidden, weight, tau):
    """s = (h W) / tau in float64, and delta: the bound on |fl32 s - s| per entry.
    The D-term dot product is off by gamma_D sum_k |h_k W_kv|; dividing by tau rounds
    once more (u |s|); tau itself is a float64 here, its fp32 conversion adds u |s|."""
    h, w = hidden.astype(np.float64), weight.astype(np.float64)
    s = (h @ w) / tau  # [B, T, D] @ [D, V] -> [B, T, V]
    dot_mag = np.abs(h) @ np.abs(w)
    return s, gamma(D) * dot_mag / tau + 2 * U * np.abs(s)


@pytest.mark.parametrize("tau", [1.0, 0.7])
@pytest.mark.parametrize("as_callable", [False, True])
def test_chunked_logprobs_and_entropy_match_full_vocab(tau, as_callable):
    hidden, weight, targets = head_data()
    head = ((lambda h: jnp.einsum("btd,dv->btv", h, jnp.asarray(weight)))
            if as_callable else jnp.asarray(weight))
    logp, ent = grpo.token_logprobs_and_entropy(jnp.asarray(hidden), head, jnp.asarray(targets),
                                                temperature=tau, chunk_size=CHUNK)
    s, delta = ref_scaled_logits(hidden, weight, tau)
    lse, p, want_h = ref_entropy(s)
    want = np.take_along_axis(s, targets[..., None], -1)[..., 0] - lse
    dmax = delta.max(-1)
    _, e_lse, e_logp = lse_bound(s, dmax)
    within(logp, want, e_logp, "chunked logprobs")
    within(ent, want_h, entropy_bound(s, dmax, e_lse), "chunked entropy")
    logp_only, none = grpo.token_logprobs_and_entropy(
        jnp.asarray(hidden), head, jnp.asarray(targets), temperature=tau, chunk_size=CHUNK,
        entropy=False)
    assert none is None
    within(logp_only, want, e_logp, "chunked logprobs without entropy")


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_chunked_logprob_gradient_matches_full_vocab(tau):
    """d/dW and d/dh of sum_n c_n log p(y_n), c_n in [-1, 1] (some 0), per entry.

    The logit cotangent is g_nv = c_n (1[v = y_n] - p_nv) / tau. In fp32, p_nv is
    exp(s_nv - LSE_n) with relative error e_p = delta + e_lse + u span + 4u; forming
    -c p, adding c at y, dividing by tau are three roundings: |dg_nv| <= E_nv =
    |c_n| / tau (p_nv (e_p + 3u) + 3u |1[v = y_n] - p_nv|). The transposed matmuls add
    gamma_N (N = B * padded T positions, for dW) or gamma_V (for dh) of the sums of
    |h||g| and |W||g|, plus the propagated E. That is the whole bound; a factor 2 covers
    the products of small errors it drops."""
    hidden, weight, targets = head_data(9)
    c = np.random.default_rng(10).uniform(-1, 1, (B, T)).astype(np.float32)
    c[:, :3] = 0.0

    def f(h, w):
        logp, _ = grpo.token_logprobs_and_entropy(h, w, jnp.asarray(targets), temperature=tau,
                                                  chunk_size=CHUNK, entropy=False)
        return jnp.sum(jnp.asarray(c) * logp)

    dh, dw = jax.jit(jax.grad(f, argnums=(0, 1)))(jnp.asarray(hidden), jnp.asarray(weight))
    s, delta = ref_scaled_logits(hidden, weight, tau)
    lse, p, _ = ref_entropy(s)
    onehot = np.eye(V)[targets]  # [B, T] -> [B, T, V]
    c64 = c.astype(np.float64)[..., None]
    g = c64 * (onehot - p) / tau  # [B, T, V]
    h64, w64 = hidden.astype(np.float64), weight.astype(np.float64)
    want_dw = np.einsum("btd,btv->dv", h64, g)
    want_dh = np.einsum("btv,dv->btd", g, w64)

    dmax = delta.max(-1, keepdims=True)
    _, e_lse, _ = lse_bound(s, dmax[..., 0])
    span = (s.max(-1) - s.min(-1))[..., None]
    e_p = dmax + e_lse[..., None] + U * span + 4 * U
    big_e = np.abs(c64) / tau * (p * (e_p + 3 * U) + 3 * U * np.abs(onehot - p))
    n_pos = B * (T + (-T) % CHUNK)
    tol_dw = 2 * (np.einsum("btd,btv->dv", np.abs(h64), big_e)
                  + gamma(n_pos) * np.einsum("btd,btv->dv", np.abs(h64), np.abs(g)))
    tol_dh = 2 * (np.einsum("btv,dv->btd", big_e, np.abs(w64))
                  + gamma(V) * np.einsum("btv,dv->btd", np.abs(g), np.abs(w64)))
    within(dw, want_dw, tol_dw, "d/dW")
    within(dh, want_dh, tol_dh, "d/dhidden")
    assert np.all(np.asarray(dh)[:, :3] == 0)  # zero-weight positions get nothing


def _avals(jaxpr):
    """Every intermediate's abstract value in a jaxpr, nested jaxprs (scan, remat) included."""
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield var.aval
        for param in eqn.params.values():
            for sub in (param if isinstance(param, (tuple, list)) else (param,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _avals(inner)


def test_chunked_logprobs_never_hold_the_full_logits():
    hidden, weight, targets = head_data()

    def f(h, w):
        logp, ent = grpo.token_logprobs_and_entropy(h, w, jnp.asarray(targets), chunk_size=CHUNK)
        return jnp.sum(logp) + jnp.sum(ent)

    jaxpr = jax.make_jaxpr(jax.grad(f, argnums=(0, 1)))(jnp.asarray(hidden), jnp.asarray(weight))
    # every array with a vocabulary axis, but for the weight, its transpose and its
    # gradient: one chunk's logits at most, forward or backward (no [n_chunks, B, c, V]
    # scan residual)
    per_vocab = [a.shape for a in _avals(jaxpr.jaxpr)
                 if V in getattr(a, "shape", ()) and sorted(a.shape) != sorted((D, V))]
    assert per_vocab and max(int(np.prod(sh)) for sh in per_vocab) <= B * CHUNK * V, per_vocab
