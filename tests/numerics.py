"""Tolerances for the suite's numerical comparisons, derived from a rounding-error analysis.

Rounding model (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., 2.2
and 3.1): every IEEE operation is exact and then rounded, fl(a op b) = (a op b)(1 + d),
|d| <= u, the unit roundoff (2^-24 for float32, 2^-53 for float64). A sum or a dot
product of n terms, in *any* order or blocking, satisfies

    |fl(sum) - sum| <= gamma_n * sum(|terms|),        gamma_n = n u / (1 - n u),

and relative errors along a chain compose additively, (1 + g_a)(1 + g_b) <= 1 + g_(a+b).
So a value at the end of a chain of reductions whose lengths add up to K (a rounded
elementwise operation counts as one term) is off by at most gamma_K times the same
computation done in absolute values. Two evaluations of one quantity that differ only
in rounding (another reduction order, sharding, blocking, library) differ by at most the
sum of their two bounds: `evaluations=2`; against a float64 reference, `evaluations=1`.

The bound is a worst case: linear in K, where roundings of random sign grow like
sqrt(K) u. It therefore holds on any IEEE CPU (x86, ARM) and under any XLA reduction
order, while a real bug (a dropped term, a wrong mask, a wrong scale) moves a result by
a fixed fraction of its magnitude, orders of magnitude more than these bounds.
"""

from __future__ import annotations

import math

import numpy as np

U32 = 2.0 ** -24  # float32 unit roundoff (half of eps32 = 2^-23)
U64 = 2.0 ** -53  # float64 unit roundoff

# Rounded elementwise operations on the longest path through one Qwen3 layer, each
# counted as one term of K: RMSNorm's eps add, rsqrt and two scalings (x4 norms), RoPE's
# two products and a sum, the score scale, softmax's subtract / exp / divide, SiLU's
# exp / add / divide and the gate * up product, two residual adds: 30, rounded up.
ELEMENTWISE_PER_LAYER = 32


def gamma(n: int, u: float = U32) -> float:
    """Higham's gamma_n = n u / (1 - n u)."""
    if n * u >= 1:
        raise ValueError(f"gamma_{n} is unbounded at u={u}")
    return n * u / (1 - n * u)


def reduction_tol(n: int, magnitude: float, evaluations: int = 2, u: float = U32) -> float:
    """Largest difference between `evaluations` rounded evaluations (and the exact value)
    of a chain of reductions with n terms in all whose absolute-value computation is
    `magnitude` (for a plain sum: sum |terms|)."""
    return evaluations * gamma(n, u) * magnitude


def score_terms(head_dim: int, score_bound: float) -> int:
    """K-terms of a softmax over scores q.k / sqrt(d) with |q|.|k| / sqrt(d) <= score_bound:
    each score is off by <= gamma_(d+1) * score_bound (absolute; +1 for the scale) and
    exp turns that into a relative error of its output, i.e. (d + 1) * score_bound terms."""
    return math.ceil((head_dim + 1) * max(1.0, score_bound))


def attention_forward_chain(q, k, kv_len: int, block: int) -> int:
    """K for one output of a blocked (online-softmax) attention kernel: score errors turned
    relative by exp, twice (p_j's numerator and its normaliser); the normaliser and p . v,
    sums over kv_len keys; the online softmax's rescalings, 3 roundings per key block;
    subtract, exp, divide, scale. |q.k| / sqrt(d) <= max||q|| max||k|| / sqrt(d)
    (Cauchy-Schwarz). q [B, T, H, D], k [B, S, K, D]."""
    d = q.shape[-1]
    score = float(np.linalg.norm(q, axis=-1).max() * np.linalg.norm(k, axis=-1).max())
    score /= math.sqrt(d)
    return 2 * score_terms(d, score) + 2 * kv_len + 3 * math.ceil(kv_len / block) + 4


def attention_backward_chain(q, k, kv_len: int, block: int) -> int:
    """K for one entry of dq, dk or dv: the forward's chain, then dP = dO . V (d terms),
    the softmax backward's row sum (kv_len), dq over keys / dk, dv over queries, 4 roundings."""
    return (attention_forward_chain(q, k, kv_len, block) + q.shape[-1]
            + 2 * max(kv_len, q.shape[1]) + 4)


def qwen3_score_bound(model) -> float:
    """|q.k| / sqrt(d) <= sqrt(d) max|g_q| max|g_k|: q and k are RMSNorm outputs
    g * x / rms(x), ||x / rms(x)||_2 = sqrt(d), and RoPE is a rotation."""
    from flax import nnx

    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    g = {n: max(float(np.abs(np.asarray(v[...])).max()) for path, v in flat if n in path)
         for n in ("q_norm", "k_norm")}
    return math.sqrt(model.config.head_dim) * g["q_norm"] * g["k_norm"]


def qwen3_forward_chain(cfg, kv_len: int, max_position: int, score_bound: float) -> int:
    """K for one logit of a Qwen3 forward whose queries see at most `kv_len` keys at
    positions up to `max_position` (`score_bound`: `qwen3_score_bound`)."""
    h, i, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    per_layer = (h                    # input RMSNorm: mean of squares
                 + h                  # q / k / v projections contract the hidden size
                 + d                  # q_norm / k_norm
                 + 4 * max_position   # RoPE: angle pos * inv_freq is off by <= 4 u pos (absolute)
                 + score_terms(d, score_bound) + kv_len  # scores into exp, softmax normaliser
                 + kv_len             # probs @ v
                 + cfg.num_heads * d  # o_proj
                 + h + h + i          # post-attention RMSNorm, gate / up, down
                 + ELEMENTWISE_PER_LAYER)
    return cfg.num_layers * per_layer + h + h + ELEMENTWISE_PER_LAYER  # final norm, lm_head


def qwen3_gradient_chain(cfg, kv_len: int, max_position: int, score_bound: float,
                         tokens: int) -> int:
    """K for one parameter-gradient entry of a token-summed loss on the logits (the SFT
    loss) over `tokens` positions: the forward to the loss, then every contraction
    transposed on the way back, then the sum over positions that forms a weight gradient."""
    h, i, d, v = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim, cfg.vocab_size
    q, kv = cfg.num_heads * d, cfg.num_kv_heads * d
    forward = qwen3_forward_chain(cfg, kv_len, max_position, score_bound) + v + tokens
    back_layer = (h                   # down^T contracts the hidden size
                  + 2 * i             # gate^T and up^T, added
                  + h                 # post-attention RMSNorm backward
                  + h                 # o_proj^T
                  + d + kv_len        # dP = dO . V, softmax backward row sum
                  + kv_len            # dQ = dS K (dK, dV: over <= kv_len queries)
                  + d                 # q_norm / k_norm backward
                  + q + 2 * kv        # q^T, k^T, v^T, added
                  + h                 # input RMSNorm backward
                  + ELEMENTWISE_PER_LAYER)
    backward = v + h + cfg.num_layers * back_layer + ELEMENTWISE_PER_LAYER  # lm_head^T, norm
    return forward + backward + tokens


def _weights(model):
    lm = model.embed_tokens[...].T if model.config.tie_word_embeddings else model.lm_head[...]
    return np.asarray(model.norm.weight[...], np.float64), np.asarray(lm, np.float64)


def qwen3_logit_magnitude(model) -> float:
    """Bound on sum_k |h_k W_kv| for every logit v: the final RMSNorm output is
    h = g * x / rms(x) with ||x / rms(x)||_2 = sqrt(H), so by Cauchy-Schwarz
    sum_k |h_k W_kv| <= max|g| sqrt(H) ||W[:, v]||_2. Errors upstream are relative to
    the same normalised quantities (every sub-layer reads an RMSNorm output, and the
    residual stream of a random-init model is a sum of a few terms of similar size, with
    no catastrophic cancellation), so this magnitude scales the whole chain's bound."""
    g, w = _weights(model)
    return float(np.abs(g).max() * math.sqrt(w.shape[0]) * np.sqrt((w * w).sum(0)).max())


def qwen3_logit_tol(model, kv_len: int, max_position: int | None = None,
                    evaluations: int = 2) -> float:
    """Largest |difference| between logits of `evaluations` fp32 forwards of `model`
    (positions up to `max_position`, by default those of a plain forward: kv_len - 1)."""
    max_position = kv_len - 1 if max_position is None else max_position
    k = qwen3_forward_chain(model.config, kv_len, max_position, qwen3_score_bound(model))
    return reduction_tol(k, qwen3_logit_magnitude(model), evaluations)


def log_softmax_tol(logit_tol: float, logit_bound: float, vocab: int,
                    temperature: float = 1.0, evaluations: int = 2) -> float:
    """Largest |difference| of log p_y = z_y / t - log sum_v exp(z_v / t) (also over a
    truncated support of <= `vocab` tokens) between evaluations whose logits differ by
    <= `logit_tol`, with |z| <= `logit_bound`.

    Input: d log p / dz has inf-norm 2 / t, so 2 logit_tol / t. Own rounding, per
    evaluation: z / t - max is off by <= 2u * range / t (range <= 2 logit_bound), which
    exp turns into a relative error; the sum of <= vocab positive exps is off by gamma_vocab
    (relative), the log turns relative into absolute; exp, log and the last subtraction
    add u each, times |log p| <= range / t + log(vocab)."""
    span = 2 * logit_bound / temperature
    own = gamma(vocab + 2) + 2 * U32 * span + 3 * U32 * (span + math.log(vocab))
    return 2 * logit_tol / temperature + evaluations * own


def leaf_tol(reference, k: int, evaluations: int = 2) -> float:
    """Bound for every entry of one gradient (or other) array at the end of a K-term
    chain: gamma_K times the array's largest |entry| as the magnitude of its terms.

    The exact sum(|terms|) of an entry would need every intermediate of the backward
    pass. For N terms of random sign, max_entries |sum| ~ sqrt(2 ln(size)) sqrt(N) rms while
    sum |terms| ~ N E|term|: the largest entry understates sum |terms| by at most
    ~ sqrt(N) / 3, and the linear gamma_K overstates K random roundings (~ sqrt(K) u) by
    sqrt(K) >= sqrt(N), since the chain includes that sum of N terms."""
    return reduction_tol(k, float(np.abs(np.asarray(reference, np.float64)).max()), evaluations)


def assert_within(got, want, tol, err_msg: str = "") -> None:
    """|got - want| <= tol entrywise (tol broadcasts), in float64; NaN fails. The message
    names how many entries exceed their bound and the worst one."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff = np.abs(got - want)
    tol = np.broadcast_to(np.asarray(tol, np.float64), diff.shape)
    bad = ~(diff <= tol)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(diff - tol, nan=np.inf),
                                                -np.inf)), diff.shape)
        raise AssertionError(
            f"{err_msg}: {int(bad.sum())} of {diff.size} entries exceed their bound; worst at "
            f"{tuple(int(x) for x in i)}: got {got[i]!r}, want {want[i]!r}, "
            f"|diff| {diff[i]:.3e} > tol {tol[i]:.3e}")


def pass_at_k_tol(n: int, c: int) -> float:
    """|pass@k computed in log space (int_jax/eval/passk.py) - the exact 1 - C(n-c,k)/C(n,k)|
    in float64. Each of the c terms log1p(-x), x = k/i, rounds x (u) and itself (<= 1 ulp =
    2u); log1p's condition number at -x, x / ((1 - x) |log(1 - x)|) <= 1 / (1 - x) =
    i / (i - k) <= n, scales the first: <= (n + 2) u |term|. Summing c same-sign terms adds
    gamma_c |L| (L the sum). -expm1(L) moves by e^L |dL| <= e^L |L| gamma_(n+c+2) <=
    gamma_(n+c+2) and rounds (2u); the exact value's float64 evaluation rounds one division
    (u) and 1 - q (u). In all <= gamma_(n+c+6)."""
    return gamma(n + c + 6, U64)


def mean_pass_at_k_tol(counts) -> float:
    """The same for the mean of pass@k over problems ({problem: (n, c)}): each value in
    [0, 1] is off by <= pass_at_k_tol, and the float64 mean of P of them adds gamma_P
    (the sum, relative to a sum <= P) and u (the division)."""
    counts = list(counts.values()) if hasattr(counts, "values") else list(counts)
    worst = max(n + c for n, c in counts)
    return gamma(worst + 6 + len(counts) + 1, U64)
