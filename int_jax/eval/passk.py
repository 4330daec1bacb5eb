"""pass@k with the unbiased estimator, per-benchmark summaries, bootstrap intervals.

pass@k for one problem with ``c`` correct of ``n`` samples is
``1 - C(n-c, k) / C(n, k)`` (Chen et al., 2021). The binomials overflow floats long
before n = 1024, so it is computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` in log space.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n
    (c of them correct) is correct."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if c == 0:
        return 0.0
    if n - c < k:
        return 1.0
    log_fail = sum(math.log1p(-k / i) for i in range(n - c + 1, n + 1))
    return -math.expm1(log_fail)


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


@dataclasses.dataclass
class Scores:
    """One benchmark's results over its problems."""

    num_problems: int
    n: int  # samples per problem (the smallest, if they differ)
    pass_at: dict[int, float]  # k -> mean pass@k over problems
    ci: dict[int, tuple[float, float]]  # k -> bootstrap interval over problems
    coverage: float  # fraction of problems with at least one correct sample
    mean_at_n: float  # mean fraction correct (equals pass@1)

    def to_dict(self) -> dict:
        return {
            "num_problems": self.num_problems, "n": self.n,
            "pass_at": {str(k): v for k, v in self.pass_at.items()},
            "ci": {str(k): list(v) for k, v in self.ci.items()},
            "coverage": self.coverage, "mean_at_n": self.mean_at_n,
        }


def summarize(counts: Mapping[str, tuple[int, int]], *, ks: Sequence[int] | None = None,
              bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> Scores:
    """Scores from ``{problem_id: (n, c)}``. The interval resamples problems with
    replacement ``bootstrap`` times (seeded, so reports are reproducible)."""
    if not counts:
        raise ValueError("no problems to summarize")
    pairs = list(counts.values())
    n_min = min(n for n, _ in pairs)
    ks = list(ks) if ks is not None else default_ks(n_min)
    if any(k > n_min for k in ks):
        raise ValueError(f"k up to {max(ks)} needs at least that many samples per problem; "
                         f"the smallest problem has {n_min}")
    per = np.array([[pass_at_k(n, c, k) for k in ks] for n, c in pairs])  # [P, K]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(pairs), size=(bootstrap, len(pairs)))
    boots = per[idx].mean(axis=1)  # [B, K]
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha], axis=0)
    return Scores(
        num_problems=len(pairs),
        n=n_min,
        pass_at={k: float(v) for k, v in zip(ks, per.mean(axis=0))},
        ci={k: (float(a), float(b)) for k, a, b in zip(ks, lo, hi)},
        coverage=float(np.mean([c > 0 for _, c in pairs])),
        mean_at_n=float(np.mean([c / n for n, c in pairs])),
    )


def summarize_samples(samples: Iterable, **kwargs) -> dict[str, Scores]:
    """Per-benchmark ``Scores`` from ``EvalSample`` records (or anything with
    ``benchmark``, ``problem_id`` and ``grade``)."""
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for s in samples:
        nc = counts[s.benchmark][s.problem_id]
        nc[0] += 1
        nc[1] += getattr(s.grade, "value", s.grade) == "correct"
    return {b: summarize(probs, **kwargs) for b, probs in sorted(counts.items())}


# ---- one benchmark's evaluation summary (the `eval` stage's summary files) ----------

UNCATEGORISED = "(none)"


@dataclasses.dataclass
class _Tally:
    """Running counts of one benchmark's samples (records are streamed, never kept)."""

    counts: dict[str, list[int]] = dataclasses.field(
        default_factory=lambda: defaultdict(lambda: [0, 0]))  # problem -> [n, correct]
    grades: dict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    samples: int = 0
    tokens: int = 0
    truncated: int = 0

    def add(self, s) -> None:
        grade = getattr(s.grade, "value", s.grade)
        nc = self.counts[s.problem_id]
        nc[0] += 1
        nc[1] += grade == "correct"
        self.grades[grade] += 1
        self.samples += 1
        self.tokens += int(s.num_tokens)
        self.truncated += s.finish_reason == "length"


def _scores(counts: Mapping[str, Sequence[int]], **kwargs) -> dict:
    """pass@k, intervals, coverage and mean@n of some problems; None values (with the
    reason) when there are none."""
    if not counts:
        return {"problems": 0, "pass_at_k": None, "ci": None, "coverage": None,
                "mean_at_k": None, "missing": "no scored problem"}
    s = summarize({p: (n, c) for p, (n, c) in counts.items()}, **kwargs)
    d = s.to_dict()
    return {"problems": s.num_problems, "pass_at_k": d["pass_at"], "ci": d["ci"],
            "coverage": s.coverage, "mean_at_k": s.mean_at_n}


def eval_summaries(samples: Iterable, *, unscored: Mapping[str, Mapping[str, Mapping]] | None = None,
                   categories: Mapping[str, Mapping[str, str | None]] | None = None,
                   ks: Sequence[int] | None = None, bootstrap: int = 1000,
                   confidence: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """One summary per benchmark from ``EvalSample`` records (anything with
    ``benchmark``, ``problem_id``, ``grade``, ``num_tokens`` and ``finish_reason``),
    read once as a stream.

    ``unscored``: benchmark -> problem -> facts (e.g. ``{"answer": ..., "reason": ...}``)
    of problems left out of every score (a gold the grader cannot read); each is listed
    with its sample counts, never scored 0. ``categories``: benchmark -> problem ->
    category (None: ``UNCATEGORISED``); per-category scores when given.

    Scores (pass@k for ``ks``, default 1, 2, 4, ... n; bootstrap intervals over
    problems; coverage; mean@k = mean fraction correct) cover the scored problems.
    Response length and the truncation rate (``finish_reason == "length"``) cover
    every sample.
    """
    tallies: dict[str, _Tally] = defaultdict(_Tally)
    for s in samples:
        tallies[s.benchmark].add(s)
    unscored = unscored or {}
    categories = categories or {}
    kw = dict(ks=ks, bootstrap=bootstrap, confidence=confidence, seed=seed)
    out = {}
    for bench, t in sorted(tallies.items()):
        left_out = unscored.get(bench, {})
        scored = {p: nc for p, nc in t.counts.items() if p not in left_out}
        sizes = sorted({n for n, _ in t.counts.values()})
        summary = {
            "benchmark": bench,
            "problems": len(t.counts),
            "samples": t.samples,
            "samples_per_problem": sizes[0] if len(sizes) == 1 else sizes,
            "grades": dict(sorted(t.grades.items())),
            "mean_response_tokens": t.tokens / t.samples if t.samples else None,
            "truncation_rate": t.truncated / t.samples if t.samples else None,
            "truncated": t.truncated,
            "scored_problems": len(scored),
            "unscored_problems": len(t.counts) - len(scored),
            "unscored": [{"id": p, **dict(left_out[p]), "samples": t.counts[p][0],
                          "correct": t.counts[p][1]} for p in sorted(left_out) if p in t.counts],
        }
        scores = _scores(scored, **kw)
        summary.update({k: v for k, v in scores.items() if k != "problems"})
        summary["pass_at_1"] = scores["pass_at_k"]["1"] if scores["pass_at_k"] else None
        cats = categories.get(bench)
        if cats:
            groups: dict[str, dict] = defaultdict(dict)
            for p, nc in scored.items():
                groups[cats.get(p) or UNCATEGORISED][p] = nc
            summary["categories"] = {c: _scores(g, **kw) for c, g in sorted(groups.items())}
        summary["bootstrap"] = {"resamples": bootstrap, "confidence": confidence, "seed": seed}
        out[bench] = summary
    return out
