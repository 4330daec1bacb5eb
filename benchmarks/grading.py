"""Grading throughput: our batch API vs math-verify called directly in a loop.

Synthesizes realistic (response, gold) pairs: responses of about 7k tokens of
reasoning text with inline math, ending in a boxed answer that is right, wrong, or
right in another form, 25 samples per problem as in rollouts. Golds come from the
IMO-AnswerBench CSV when it is present (--golds), else from a built-in list.

    python benchmarks/grading.py [--n 10000] [--workers 2] [--timeout 5]

Prints gradings/second for both, their ratio, agreement, and checks no pair is lost.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import platform
import random
import re
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from int_jax.grading.answers import extract_answer  # noqa: E402
from int_jax.grading.verify import Grade, GraderPool, grade_batch  # noqa: E402

BUILTIN_GOLDS = ["3", r"$\frac{1}{2}$", r"$-\frac{2}{3},0,\frac{2}{3}$", "$P(x)=-1, P(x)=x+1$",
                 r"$\left\lfloor \log_{2}a\right\rfloor +1$.", r"$(-\infty , 0]$", "2026, 2030",
                 r"$2\sqrt[3]{\frac{196}{13}}$", "odd $n$", r"$\sqrt{2}-1$", "4151879777",
                 r"$(2, \frac{1}{2}, \frac{9}{4})$", r"$n \ge 2$", "1012", r"$2^{2024}+1$"]

FILLER = [
    r"Let $a_n$ denote the number of valid configurations, so $a_1 = 1$ and $a_2 = 3$.",
    r"Consider the substitution $x = t + \frac{1}{t}$; then $x^2 - 2 = t^2 + \frac{1}{t^2}$.",
    "We now check the small cases by hand to make sure the pattern is right.",
    r"By AM-GM, $\frac{a+b}{2} \ge \sqrt{ab}$ with equality iff $a = b$.",
    r"Summing over all $k$ gives $\sum_{k=1}^{n} k^2 = \frac{n(n+1)(2n+1)}{6}$.",
    "Hmm, wait. That does not look right, let me recompute the second term carefully.",
    r"Modulo $3$ the squares are $0$ or $1$, hence $x^2 + y^2 \equiv 0 \pmod 3$ forces $3 \mid x$.",
    "So the claim holds for every n, and the induction step goes through as before.",
]


def load_golds(path: str | None) -> list[str]:
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", newline="") as f:
            return [r["Short Answer"] for r in csv.DictReader(f)]
    return BUILTIN_GOLDS


def variants(gold: str) -> list[str]:
    """A right answer, same answer written differently, and plausible wrong answers."""
    g = gold.strip().strip(".").strip("$").strip()
    out = [g, g, g.replace(r"\frac", r"\dfrac") + " "]
    m = re.fullmatch(r"-?\d+", g)
    if m:
        v = int(g)
        out += [str(v + 1), str(v - 1), str(2 * v), f"{v}.0"]
    else:
        out += [g.replace("+", "-", 1), g.replace("1", "2", 1), "0", "1"]
    return out


def make_pairs(golds: list[str], n: int, seed: int = 0, tokens: int = 7000) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    chars = tokens * 4  # ~4 characters per token
    while len(pairs) < n:
        gold = rng.choice(golds)
        answers = variants(gold)
        for _ in range(min(25, n - len(pairs))):  # 25 samples per problem
            body, size = [], 0
            while size < chars:
                s = rng.choice(FILLER)
                body.append(s)
                size += len(s) + 2
            pairs.append(("\n\n".join(body) + f"\n\nTherefore the answer is $\\boxed{{{rng.choice(answers)}}}$.",
                          gold))
    return pairs


def plain_math_verify(pairs):
    from math_verify import parse, verify

    out = []
    for response, gold in pairs:
        g = gold.strip()
        if g.endswith("."):
            g = g[:-1]
        gold_parsed = parse(g if "$" in g else f"${g}$")
        out.append(bool(verify(gold_parsed, parse(response))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10.0, help="per item (the default config's)")
    ap.add_argument("--golds", default="/work/shared/data/imo_answerbench.csv")
    ap.add_argument("--no-dedup", action="store_true",
                    help="send every pair to the workers (measures parallelism + extraction alone)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")  # sympy deprecation noise from math-verify's solver

    golds = load_golds(args.golds)
    pairs = make_pairs(golds, args.n)
    mean_chars = sum(len(r) for r, _ in pairs) / len(pairs)
    print(f"device: CPU ({platform.processor() or platform.machine()}), "
          f"{os.cpu_count()} cores visible; workers={args.workers}, timeout={args.timeout}s")
    print(f"pairs: {len(pairs)} (~{mean_chars / 4:.0f} tokens/response, {len(set(golds))} golds "
          f"from {'IMO-AnswerBench CSV' if golds is not BUILTIN_GOLDS else 'built-in list'})")

    with GraderPool(args.workers) as pool:
        grade_batch(pairs[:2], pool=pool)  # workers started: not timed
        t = time.perf_counter()
        if args.no_dedup:
            extracted = [extract_answer(r) for r, _ in pairs]
            items = [(a or "", g) for (a, _), (_, g) in zip(extracted, pairs)]
            ours = pool.grade_answers(items, args.timeout)
        else:
            ours = grade_batch(pairs, pool=pool, timeout_s=args.timeout)
        t_ours = time.perf_counter() - t
        restarts = pool.restarts

    t = time.perf_counter()
    theirs = plain_math_verify(pairs)
    t_plain = time.perf_counter() - t

    assert len(ours) == len(pairs) and all(isinstance(g, Grade) for g in ours), "a pair was lost"
    counts = {g.value: ours.count(g) for g in Grade if ours.count(g)}
    agree = sum((g is Grade.CORRECT) == p for g, p in zip(ours, theirs)) / len(pairs)
    print(f"ours (batch API, {args.workers} worker processes, hard time limits): "
          f"{len(pairs) / t_ours:,.0f} gradings/s ({t_ours:.1f}s); grades {counts}; "
          f"worker restarts {restarts}")
    print(f"plain math-verify loop (parse whole response + verify, one process): "
          f"{len(pairs) / t_plain:,.0f} gradings/s ({t_plain:.1f}s); "
          f"{sum(theirs)} correct")
    unique = len({(extract_answer(r)[0], g) for r, g in pairs})
    print(f"distinct (answer, gold) pairs: {unique}; "
          + ("every pair sent to the workers (--no-dedup)" if args.no_dedup else "each graded once"))
    print(f"ratio ours/plain: {t_plain / t_ours:.1f}x (goal >= 1.5x); "
          f"agreement on correct/not: {agree:.1%}; no pair lost: {len(ours) == len(pairs)}")
    print("load average (1, 5, 15 min): start {}, end {}".format(*common.load_average()))


if __name__ == "__main__":
    main()
