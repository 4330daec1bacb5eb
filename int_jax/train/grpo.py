"""GRPO's algorithmic core: group advantages, the clipped policy loss and its aggregation.

One function per concern, so each can be checked alone against a float64 reference
(tests/test_grpo_loss.py) and swapped by config:

    group_advantages           rewards [G, n] -> advantages (numpy, host side)
    token_logprobs_and_entropy hidden [B, T, D] -> log pi(y_t) and H_t of the
                               temperature-scaled policy, vocabulary-chunked
    policy_loss_terms          PPO ratio clipped to [1 - eps_low, 1 + eps_high], dual clip c
    kl_penalty                 k1 / k3 estimators of KL(pi || pi_ref)
    importance_weights         truncated IS for sampler / trainer mismatch, and its metrics
    token_loss                 the per-token loss: clipped term x IS weight + KL - entropy
    agg_coefficients           token-mean, seq-mean-token-mean, seq-mean-token-sum, Dr.GRPO
                               as weights a_t on the per-token loss (set by the mask)
    agg_loss(_sums)            the aggregated loss of a per-token loss
    grpo_loss(_sums)           all of the above -> (loss, `train/` metrics)

Notation (the paper's and the GRPO literature's): a group is the n completions of one
prompt, A_i = r_i - mean(r) its advantages, rho_t = pi(y_t) / pi_old(y_t) the ratio.
`sequence_loss` assembles them into the `step.LossFn` the one train step runs (its
gradient formed per vocabulary chunk in the forward pass, `vocab_objective.py`); the
learner (`train/learner.py`), the command (`stages/grpo.py`) and the configs
(`configs/grpo.py`) live elsewhere.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from int_jax.train.step import LossTerms, Max, Mean, Min
from int_jax.train.vocab import softmax_entropy, token_stats
from int_jax.train.vocab_objective import vocab_objective

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
             "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k3")
OLD_LOGPROB_SOURCES = ("sampler", "trainer")

# exp() of a log-ratio beyond this would overflow fp32 (e^88) in the loss or its
# gradient. A real token this far from the old policy is clipped anyway (or, with A < 0
# and no dual clip, carries a gradient no optimiser step survives); the limit only keeps
# such a token, or a bug upstream, finite.
LOG_RATIO_LIMIT = 20.0


def _check(ok: bool, field: str, symbol: str, need: str, value) -> None:
    if not ok:
        sym = f" ({symbol})" if symbol else ""
        raise ValueError(f"GRPOConfig.{field}{sym} must be {need}, got {value!r}")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """The loss's hyperparameters, named after their symbols and checked on creation.

    Defaults are the plain GRPO objective with the paper's choices (no KL, no entropy
    bonus, advantages not divided by the std); experiment configs set the rest.
    """

    temperature: float = 1.0  # tau: the policy trained is softmax(z / tau), as sampled
    clip_low: float = 0.2  # eps_low: rho is clipped below at 1 - eps_low (A < 0)
    clip_high: float = 0.2  # eps_high: rho is clipped above at 1 + eps_high (A > 0)
    dual_clip: float | None = None  # c: for A < 0 the loss is capped at c |A|; None = off
    loss_agg_mode: str = "seq-mean-token-mean"  # GRPO's 1/G sum_i 1/|o_i| sum_t
    constant_len: int | None = None  # L of Dr.GRPO's sum / L (seq-mean-token-sum-norm only)
    kl_coef: float = 0.0  # beta: 0 builds no reference model (the paper's setting)
    kl_estimator: str = "k3"  # k1 = log(pi / pi_ref); k3 = pi_ref/pi - log(pi_ref/pi) - 1
    entropy_coef: float = 0.0  # bonus on the mean next-token entropy (release: 1e-4)
    normalize_adv_by_std: bool = False  # A / (std + eps); the authors do not divide
    adv_eps: float = 1e-6  # eps in A / (std + eps)
    old_logprobs: str = "trainer"  # pi_old at the sampled tokens: from the sampler, or
    #                                recomputed by the trainer before the first update
    tis_cap: float | None = None  # C of truncated IS, min(pi_trainer / pi_sampler, C); None = off

    def __post_init__(self):
        _check(_is_number(self.temperature) and self.temperature > 0, "temperature", "tau",
               "a finite number > 0", self.temperature)
        _check(_is_number(self.clip_low) and 0 <= self.clip_low < 1, "clip_low", "eps_low",
               "in [0, 1) so that 1 - eps_low > 0", self.clip_low)
        _check(_is_number(self.clip_high) and self.clip_high >= 0, "clip_high", "eps_high",
               "a finite number >= 0", self.clip_high)
        _check(self.dual_clip is None or (_is_number(self.dual_clip) and self.dual_clip > 1),
               "dual_clip", "c", "None or a finite number > 1", self.dual_clip)
        _check(self.loss_agg_mode in AGG_MODES, "loss_agg_mode", "",
               f"one of {AGG_MODES}", self.loss_agg_mode)
        if self.loss_agg_mode == "seq-mean-token-sum-norm":
            _check(isinstance(self.constant_len, int) and not isinstance(self.constant_len, bool)
                   and self.constant_len > 0, "constant_len", "L",
                   "an int > 0 with loss_agg_mode='seq-mean-token-sum-norm'", self.constant_len)
        else:
            _check(self.constant_len is None, "constant_len", "L",
                   "None unless loss_agg_mode='seq-mean-token-sum-norm'", self.constant_len)
        _check(_is_number(self.kl_coef) and self.kl_coef >= 0, "kl_coef", "beta",
               "a finite number >= 0", self.kl_coef)
        _check(self.kl_estimator in KL_ESTIMATORS, "kl_estimator", "",
               f"one of {KL_ESTIMATORS}", self.kl_estimator)
        _check(_is_number(self.entropy_coef) and self.entropy_coef >= 0, "entropy_coef", "",
               "a finite number >= 0", self.entropy_coef)
        _check(isinstance(self.normalize_adv_by_std, bool), "normalize_adv_by_std", "",
               "a bool", self.normalize_adv_by_std)
        _check(_is_number(self.adv_eps) and self.adv_eps > 0, "adv_eps", "eps",
               "a finite number > 0", self.adv_eps)
        _check(self.old_logprobs in OLD_LOGPROB_SOURCES, "old_logprobs", "",
               f"one of {OLD_LOGPROB_SOURCES}", self.old_logprobs)
        # A cap below 1 would scale every token down: never what is meant.
        _check(self.tis_cap is None or (_is_number(self.tis_cap) and self.tis_cap >= 1),
               "tis_cap", "C", "None or a finite number >= 1", self.tis_cap)
        # With the sampler's logprobs as pi_old the ratio already divides by the sampler's
        # policy: there is no second trainer-side pi_old to correct towards.
        _check(self.tis_cap is None or self.old_logprobs == "trainer", "tis_cap", "C",
               "None unless old_logprobs='trainer'", self.tis_cap)


# -- advantages (host side) -------------------------------------------------------


def group_advantages(rewards, normalize_by_std: bool = False, eps: float = 1e-6) -> np.ndarray:
    """A = r - mean(r) within each group (row), optionally / (std + eps); float32 [G, n].

    A group whose rewards are all equal carries no signal: its advantages are exactly
    zero (set, not computed: the float mean of n equal values need not equal them), so
    it contributes exactly zero policy gradient. The std is the sample std (ddof=1),
    as torch.std and pandas compute it in the usual GRPO implementations.
    """
    r = np.asarray(rewards, np.float64)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"rewards must be [groups, n] with n >= 2 samples per group, "
                         f"got shape {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError("rewards must be finite")
    adv = r - r.mean(axis=1, keepdims=True)
    if normalize_by_std:
        adv = adv / (r.std(axis=1, ddof=1, keepdims=True) + eps)
    constant = (r == r[:, :1]).all(axis=1)
    adv[constant] = 0.0
    return adv.astype(np.float32)


# -- per-token pieces (device side) -----------------------------------------------


def entropy_from_logits(logits):
    """H = -sum_v p_v log p_v over the last axis, as lse(z) - sum_v p_v z_v (no log 0)."""
    lse = jax.nn.logsumexp(logits, axis=-1)
    return softmax_entropy(jnp.exp(logits - lse[..., None]), logits, lse)


def _weight_head(weight):
    """hidden [B, c, D] -> fp32 logits [B, c, V] through an lm_head weight [D, V]."""
    return lambda h: jnp.einsum("btd,dv->btv", h, weight.astype(h.dtype),
                                preferred_element_type=jnp.float32)


def token_logprobs_and_entropy(hidden, head, targets, *, temperature: float = 1.0,
                               chunk_size: int = 512, entropy: bool = True):
    """log pi(y_t) [B, T] (and H_t [B, T], else None) of softmax(z / temperature).

    `head` maps hidden [B, c, D] to fp32 logits [B, c, V] (e.g. `model.project`), or is
    an lm_head weight [D, V]. The walk over T-chunks under `jax.checkpoint` is
    `vocab.token_stats`'s: at most one chunk's [B, c, V] logits are alive, forward or
    backward, which is what lets long-sequence RL fit.
    """
    if not callable(head):
        head = _weight_head(head)
    # token_stats reads `model.project`; scaling inside it keeps the chunking.
    scaled = types.SimpleNamespace(
        project=head if temperature == 1.0 else lambda h: head(h) / temperature)
    if entropy:
        nll, ent = token_stats(scaled, hidden, targets, chunk_size=chunk_size, entropy=True)
        return -nll, ent
    return -token_stats(scaled, hidden, targets, chunk_size=chunk_size), None


class PolicyTerms(NamedTuple):
    """Per-token clipped policy loss [B, T] and where each clip zeroed the gradient."""

    loss: jax.Array  # -min(rho A, clip(rho) A), capped at c |A| for A < 0; 0 where masked
    clipped_low: jax.Array  # bool: A < 0 and rho < 1 - eps_low
    clipped_high: jax.Array  # bool: A > 0 and rho > 1 + eps_high
    dual_clipped: jax.Array  # bool: A < 0 and rho > c


def policy_loss_terms(logp, old_logp, advantages, mask, *, clip_low: float, clip_high: float,
                      dual_clip: float | None = None) -> PolicyTerms:
    """PPO's clipped surrogate with separate low / high clip (DAPO) and dual clip.

    logp, old_logp, mask: [B, T]; advantages: [B] (one per sequence) or [B, T].
    Masked positions get ratio 1 and loss 0 whatever logp holds there, so padding
    never overflows exp() nor leaks NaN into the gradient.
    """
    live = mask != 0
    adv = advantages[:, None] if advantages.ndim == 1 else advantages  # [B] -> [B, 1]
    log_ratio = jnp.where(live, logp - old_logp, 0.0)
    ratio = jnp.exp(jnp.clip(log_ratio, -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = jnp.maximum(unclipped, clipped)  # pessimistic bound: the larger loss
    clipped_low = live & (adv < 0) & (ratio < 1.0 - clip_low)
    clipped_high = live & (adv > 0) & (ratio > 1.0 + clip_high)
    dual_clipped = jnp.zeros_like(live)
    if dual_clip is not None:
        # A < 0 and rho -> inf would push the loss without bound (Ye et al. 2020).
        capped = jnp.minimum(loss, -adv * dual_clip)
        loss = jnp.where(adv < 0, capped, loss)
        dual_clipped = live & (adv < 0) & (ratio > dual_clip)
    return PolicyTerms(jnp.where(live, loss, 0.0), clipped_low, clipped_high, dual_clipped)


def kl_penalty(logp, ref_logp, kind: str):
    """Per-token estimate of KL(pi || pi_ref) at tokens sampled from (about) pi.

    k1 = log pi - log pi_ref: unbiased, can be negative, high variance.
    k3 = pi_ref/pi - log(pi_ref/pi) - 1: unbiased, >= 0, low variance (Schulman 2020).
    """
    if kind == "k1":
        return logp - ref_logp
    if kind == "k3":
        d = jnp.clip(ref_logp - logp, -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
        return jnp.exp(d) - d - 1.0
    raise ValueError(f"kl estimator must be one of {KL_ESTIMATORS}, got {kind!r}")


def _masked_mean(x, mask):
    w = (mask != 0).astype(jnp.float32)
    return jnp.sum(jnp.where(mask != 0, x, 0.0)) / jnp.maximum(jnp.sum(w), 1.0)


def importance_weights(trainer_logp, sampler_logp, mask, cap: float | None):
    """Truncated IS weights min(pi_trainer / pi_sampler, C) [B, T] and mismatch metrics.

    The completions were drawn from the sampler's policy (bf16, other kernels) while the
    loss treats them as drawn from the trainer's pi_old; the ratio of the two, capped at
    C to bound its variance, re-weights each token (Yao et al. 2025, "truncated
    importance sampling"). cap=None gives weights 1 and only the metrics. Both inputs
    are the old policy's logprobs at the sampled tokens; no gradient flows through here.
    """
    trainer_logp = jax.lax.stop_gradient(trainer_logp)
    sampler_logp = jax.lax.stop_gradient(sampler_logp)
    live = mask != 0
    delta = jnp.where(live, trainer_logp - sampler_logp, 0.0)
    if cap is None:
        weights = jnp.ones_like(delta)
    else:
        weights = jnp.minimum(jnp.exp(jnp.minimum(delta, LOG_RATIO_LIMIT)), cap)
    weights = jnp.where(live, weights, 0.0)

    # Pearson correlation of the two probabilities over the live tokens; NaN when either
    # side is constant (undefined).
    p_t = jnp.exp(jnp.where(live, trainer_logp, 0.0))
    p_s = jnp.exp(jnp.where(live, sampler_logp, 0.0))
    d_t = jnp.where(live, p_t - _masked_mean(p_t, mask), 0.0)
    d_s = jnp.where(live, p_s - _masked_mean(p_s, mask), 0.0)
    corr = jnp.sum(d_t * d_s) / jnp.sqrt(jnp.sum(d_t * d_t) * jnp.sum(d_s * d_s))

    metrics = {"train/mismatch_logp_abs_mean": _masked_mean(jnp.abs(delta), mask),
               "train/mismatch_logp_abs_max": jnp.max(jnp.abs(delta)),
               "train/mismatch_prob_corr": corr}
    if cap is not None:
        metrics["train/is_weight_mean"] = _masked_mean(weights, mask)
        metrics["train/is_capped_frac"] = _masked_mean((delta > math.log(cap)), mask)
    return weights, metrics


# -- aggregation ------------------------------------------------------------------


def agg_coefficients(mask, mode: str, constant_len: int | None = None):
    """(a [B, T], weight) with agg_loss_sums' total = sum_t a_t l_t: every mode is linear in
    the per-token loss, with weights set by the mask alone (so the loss's gradient with
    respect to a token's logprob is known in the forward pass: `vocab_objective`).

        token-mean               sum_it l m / sum_it m              (DAPO)
        seq-mean-token-mean      1/G sum_i (sum_t l m / sum_t m)    (GRPO)
        seq-mean-token-sum       1/G sum_i sum_t l m                (the authors' release:
                                 sum over tokens / 256 at 256 samples per update)
        seq-mean-token-sum-norm  1/G sum_i sum_t l m / L            (Dr.GRPO, constant L)

    The weight is what the total is divided by; both add over micro-batches (below).
    """
    live = mask != 0
    m = jnp.where(live, mask.astype(jnp.float32), 0.0)
    tokens = jnp.sum(m, axis=-1, keepdims=True)  # [B, 1]
    seqs = jnp.sum(jnp.any(live, axis=-1).astype(jnp.float32))
    if mode == "token-mean":
        return m, jnp.sum(tokens)
    if mode == "seq-mean-token-mean":
        return m / jnp.where(tokens != 0, tokens, 1.0), seqs
    if mode == "seq-mean-token-sum":
        return m, seqs
    if mode == "seq-mean-token-sum-norm":
        if constant_len is None or constant_len <= 0:
            raise ValueError(f"mode {mode!r} needs constant_len > 0, got {constant_len!r}")
        return m / constant_len, seqs
    raise ValueError(f"loss aggregation mode must be one of {AGG_MODES}, got {mode!r}")


def agg_loss_sums(per_token, mask, mode: str, constant_len: int | None = None):
    """(total, weight) with loss = total / weight under `mode` (`agg_coefficients`).

    The one train loop sums both over micro-batches and divides once, so every mode
    gives the same update however the batch is split. A row with no live token (batch
    padding) is not a sequence: it adds nothing to either. Whatever `per_token` holds
    where the mask is 0 (NaN included) never reaches the total.
    """
    coeff, weight = agg_coefficients(mask, mode, constant_len)
    return jnp.sum(jnp.where(mask != 0, coeff * per_token, 0.0)), weight


def agg_loss(per_token, mask, mode: str, constant_len: int | None = None):
    """A scalar from a per-token loss [B, T] under `mode` (see `agg_loss_sums`); 0 if empty."""
    total, weight = agg_loss_sums(per_token, mask, mode, constant_len)
    return total / jnp.where(weight > 0, weight, 1.0)


# -- the loss ---------------------------------------------------------------------


class TokenLoss(NamedTuple):
    """The GRPO objective's per-token loss [B, T] and its parts."""

    loss: jax.Array  # l_t = w_t * pg_t + beta * kl_t - entropy_coef * H_t
    pg: jax.Array  # w_t * pg_t: the (importance-weighted) clipped policy term
    kl: jax.Array | None  # kl_t, when cfg.kl_coef > 0
    terms: PolicyTerms


def token_loss(cfg: GRPOConfig, logp, old_logp, advantages, mask, *, entropy=None,
               ref_logp=None, is_weights=None) -> TokenLoss:
    """l_t = w_t * clipped_pg_t + beta * kl_t - entropy_coef * H_t, position by position
    (what `grpo_loss_sums` aggregates and `sequence_loss` differentiates per chunk).

    is_weights [B, T]: truncated importance weights w_t (`importance_weights`), 1 if None.
    """
    terms = policy_loss_terms(logp, old_logp, advantages, mask, clip_low=cfg.clip_low,
                              clip_high=cfg.clip_high, dual_clip=cfg.dual_clip)
    pg = terms.loss if is_weights is None else terms.loss * is_weights
    loss, kl = pg, None
    if cfg.kl_coef > 0:
        kl = kl_penalty(logp, ref_logp, cfg.kl_estimator)
        loss = loss + cfg.kl_coef * kl
    if cfg.entropy_coef > 0:
        loss = loss - cfg.entropy_coef * entropy
    return TokenLoss(loss, pg, kl, terms)


def _check_inputs(cfg: GRPOConfig, entropy, ref_logp, sampler_logp) -> None:
    if cfg.kl_coef > 0 and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp (the frozen reference's logprobs)")
    if cfg.entropy_coef > 0 and entropy is None:
        raise ValueError("entropy_coef > 0 needs entropy (token_logprobs_and_entropy)")
    if cfg.tis_cap is not None and sampler_logp is None:
        raise ValueError("tis_cap needs sampler_logp (the sampler's logprobs)")


def grpo_loss_sums(cfg: GRPOConfig, logp, old_logp, advantages, mask, *, entropy=None,
                   ref_logp=None, sampler_logp=None):
    """(total, weight, metrics) of the GRPO objective, loss = total / weight.

    logp: [B, T] log pi_theta(y_t) of the temperature-scaled policy (carries the
    gradient); old_logp: pi_old's at the same tokens (the source cfg.old_logprobs
    names); advantages: [B] or [B, T]; mask: [B, T], nonzero at the completion's tokens.
    entropy [B, T] is needed for cfg.entropy_coef > 0 (else only reported), ref_logp
    for cfg.kl_coef > 0, sampler_logp for cfg.tis_cap (with old_logp the trainer's);
    given otherwise, sampler_logp only feeds the mismatch metrics.

        l_t = w_t * clipped_pg_t + beta * kl_t - entropy_coef * H_t,   loss = agg(l)

    total and weight add over micro-batches (`agg_loss_sums`). Metrics are this
    batch's token means over the mask, whatever the aggregation mode.
    """
    _check_inputs(cfg, entropy, ref_logp, sampler_logp)
    old_logp = jax.lax.stop_gradient(old_logp)
    advantages = jax.lax.stop_gradient(advantages)
    if ref_logp is not None:
        ref_logp = jax.lax.stop_gradient(ref_logp)
    metrics, is_weights = {}, None
    if sampler_logp is not None:
        is_weights, is_metrics = importance_weights(old_logp, sampler_logp, mask, cfg.tis_cap)
        metrics.update(is_metrics)
    per = token_loss(cfg, logp, old_logp, advantages, mask, entropy=entropy,
                     ref_logp=ref_logp, is_weights=is_weights)
    if per.kl is not None:
        metrics["train/kl_ref"] = _masked_mean(jax.lax.stop_gradient(per.kl), mask)
    if entropy is not None:
        metrics["train/entropy"] = _masked_mean(jax.lax.stop_gradient(entropy), mask)
    total, weight = agg_loss_sums(per.loss, mask, cfg.loss_agg_mode, cfg.constant_len)

    # k3 estimate of KL(pi_old || pi_theta) at tokens drawn from pi_old: how far the
    # updates have moved; 0 at the first update when pi_old is the trainer's own.
    log_ratio = jax.lax.stop_gradient(jnp.where(mask != 0, logp - old_logp, 0.0))
    log_ratio = jnp.clip(log_ratio, -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    terms = per.terms
    metrics.update({
        "train/pg_loss": jax.lax.stop_gradient(
            agg_loss(per.pg, mask, cfg.loss_agg_mode, cfg.constant_len)),
        "train/clip_frac_low": _masked_mean(terms.clipped_low, mask),
        "train/clip_frac_high": _masked_mean(terms.clipped_high, mask),
        "train/dual_clip_frac": _masked_mean(terms.dual_clipped, mask),
        "train/approx_kl_old": _masked_mean(jnp.exp(log_ratio) - log_ratio - 1.0, mask),
        "train/ratio_mean": _masked_mean(jnp.exp(log_ratio), mask),
    })
    return total, weight, metrics


def grpo_loss(cfg: GRPOConfig, logp, old_logp, advantages, mask, *, entropy=None,
              ref_logp=None, sampler_logp=None):
    """(loss, metrics) of one batch: `grpo_loss_sums` divided out, `train/loss` added."""
    total, weight, metrics = grpo_loss_sums(cfg, logp, old_logp, advantages, mask,
                                            entropy=entropy, ref_logp=ref_logp,
                                            sampler_logp=sampler_logp)
    loss = total / jnp.where(weight > 0, weight, 1.0)
    return loss, {"train/loss": jax.lax.stop_gradient(loss), **metrics}


# -- the loss of the one train step -------------------------------------------------

# grpo_loss_sums' metrics that are token means over the mask: reported over the whole
# update as (sum over micro-batches of mean x tokens) / tokens. Its mismatch metrics (a
# max, a correlation) are not additive: the learner computes them per step on the host.
TOKEN_MEAN_METRICS = ("train/clip_frac_low", "train/clip_frac_high", "train/dual_clip_frac",
                      "train/approx_kl_old", "train/ratio_mean", "train/entropy",
                      "train/kl_ref", "train/is_weight_mean", "train/is_capped_frac")


def next_token_targets(ids):
    """targets[t] = ids[t + 1] (0 past the end): position t's logits predict token t + 1."""
    return jnp.concatenate([ids[:, 1:], jnp.zeros_like(ids[:, :1])], axis=1)


def sequence_logprobs(model, batch, *, temperature: float, chunk_size: int = 512,
                      entropy: bool = False):
    """log pi(y_{t+1}) [B, T] (and H_t) of `batch`'s rows (ids, positions, segment_ids)
    under the temperature-scaled policy, at every position t."""
    hidden = model.hidden_states(batch["ids"], batch["positions"],
                                 segment_ids=batch["segment_ids"])
    return token_logprobs_and_entropy(hidden, model.project, next_token_targets(batch["ids"]),
                                      temperature=temperature, chunk_size=chunk_size,
                                      entropy=entropy)


def sequence_loss(cfg: GRPOConfig, chunk_size: int = 512):
    """The GRPO `step.LossFn` over packed rollouts (`learner.pack`).

    A micro-batch holds ids, positions, segment_ids [B, T]; mask [B, T] (nonzero where
    position t's target t + 1 is a trained completion token); old_logp [B, T] at those
    positions; advantages [B]; and, as cfg needs them, sampler_logp (truncated IS) and
    ref_logp (KL) [B, T].

    The loss goes through `vocab_objective`: the aggregation's weight a_t times
    `token_loss` at each position, differentiated per vocabulary chunk in the forward
    pass (three vocabulary matmuls per chunk instead of `token_stats`' four); the same
    sum as `grpo_loss_sums`, which gives the metrics from its logprobs and entropies.
    """
    def loss_fn(model, batch, rng=None):
        del rng
        mask = batch["mask"]
        old_logp = jax.lax.stop_gradient(batch["old_logp"])
        ref_logp, sampler_logp = batch.get("ref_logp"), batch.get("sampler_logp")
        _check_inputs(cfg, True, ref_logp, sampler_logp)
        coeff, weight = agg_coefficients(mask, cfg.loss_agg_mode, cfg.constant_len)
        adv = batch["advantages"]
        aux = {"coeff": coeff, "old_logp": old_logp, "mask": mask,
               "advantages": jnp.broadcast_to(adv[:, None] if adv.ndim == 1 else adv,
                                              mask.shape).astype(jnp.float32)}
        if sampler_logp is not None and cfg.tis_cap is not None:
            aux["is_weights"], _ = importance_weights(old_logp, sampler_logp, mask,
                                                      cfg.tis_cap)
        if cfg.kl_coef > 0:
            aux["ref_logp"] = ref_logp

        def per_token(logp, ent, a):
            per = token_loss(cfg, logp, a["old_logp"], a["advantages"], a["mask"],
                             entropy=ent, ref_logp=a.get("ref_logp"),
                             is_weights=a.get("is_weights"))
            return jnp.where(a["mask"] != 0, a["coeff"] * per.loss, 0.0)

        hidden = model.hidden_states(batch["ids"], batch["positions"],
                                     segment_ids=batch["segment_ids"])
        total, logp, ent = vocab_objective(model, hidden, next_token_targets(batch["ids"]),
                                           per_token, aux, temperature=cfg.temperature,
                                           entropy=True,
                                           entropy_gradient=cfg.entropy_coef > 0,
                                           chunk_size=chunk_size)
        _, _, metrics = grpo_loss_sums(
            cfg, logp, old_logp, batch["advantages"], mask, entropy=ent,
            ref_logp=ref_logp, sampler_logp=sampler_logp)
        live = mask != 0
        tokens = jnp.sum(live.astype(jnp.float32))
        log_ratio = jnp.where(live, logp - old_logp, 0.0)
        terms = {name: Mean(metrics[name] * tokens, tokens)
                 for name in TOKEN_MEAN_METRICS if name in metrics}
        terms["train/ratio_max"] = Max(jnp.exp(jnp.max(jnp.where(live, log_ratio, -jnp.inf))))
        terms["train/ratio_min"] = Min(jnp.exp(jnp.min(jnp.where(live, log_ratio, jnp.inf))))
        terms["train/tokens"] = tokens
        terms["train/sequences"] = jnp.sum(jnp.any(live, axis=-1).astype(jnp.float32))
        return LossTerms(total=total, weight=weight, metrics=terms)

    return loss_fn
