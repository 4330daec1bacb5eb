"""`int-jax eval`: K graded samples per benchmark problem, and pass@k summaries.

For each benchmark in `config.eval.benchmarks` (a name -> `path`, `loader`,
`category`, `limit`; a path of '' leaves that benchmark out), each problem's chat
(`prompts.problem_chat`, the rollouts' prompt) is sampled `eval.k` times in one
sampler call, so the K samples share one prefill (the engine reuses the KV of
identical prompts), and every sample is graded by the project grader.

Outputs under `<run.root>/<run.name>/eval/`:

* `samples.jsonl`: one `EvalSample` per sample (problem id, benchmark, sample index,
  text, extracted answer, grade, tokens, finish reason; `meta.prompt_tokens`);
* `problems.jsonl`: the problems this run saw (`Problem`), each with
  `meta.eval = {benchmark, category, gold_unreadable}`;
* `summary_<benchmark>.json` per benchmark, rebuilt from the records when the stage
  ends (`int_jax.eval.passk.eval_summaries`): pass@k for k = 1, 2, 4, ... K (unbiased
  estimator), bootstrap intervals over problems, coverage, mean@K, grade counts, mean
  response length, truncation rate, and per-category scores where the problems carry
  a category.

A problem whose gold answer the grader cannot read (`gold_unreadable`) is sampled
and recorded like any other but left out of every score: the summary counts and
lists it with its samples, so it is never silently scored 0.

Resumable like every stage (`stages/base.py`): one pass per benchmark, a commit per
batch of `eval.batch_size` problems; a killed run, rerun, loses and duplicates
nothing, and a finished one is skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import signal
import threading
from pathlib import Path

from ml_collections import ConfigDict

from int_jax.data.records import EvalSample, Problem, iter_records
from int_jax.eval import passk
from int_jax.stages.base import Item, ItemResult, StageError, StageRun, command
from int_jax.stages.common import Context, context

log = logging.getLogger("int_jax.stages")

STAGE = "eval"
SECTIONS = ("model", "prompts", "sampler", "grading", "eval", "seed")
OUTPUTS = {"samples.jsonl": EvalSample, "problems.jsonl": Problem}
PROBLEM_JSONL = "problems"  # `loader` of a file of Problem records
AUTO_CATEGORIES = ("Category", "category")  # meta keys read as the category when not set


def summary_path(directory: Path, benchmark: str) -> Path:
    return directory / f"summary_{benchmark}.json"


# -- gold answers the grader cannot read -------------------------------------------


class _Overtime(BaseException):
    """Raised by the interval timer; a BaseException so parser code cannot swallow it."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Interrupt Python-level work after `seconds` (main thread only; elsewhere none)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        raise _Overtime()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _short(s: str, n: int = 80) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


def _gold_reading(gold: str) -> str | None:
    from int_jax.grading import equivalence as eq
    from int_jax.grading import forms
    from int_jax.grading.answers import gold_answer

    g = eq.clean(gold_answer(gold))
    if not g:
        return "empty once layout is removed"
    main = eq.main_part(g)
    if eq.is_prose(main):
        return None  # compared as a bag of words
    if forms.parse_classes(main, linear=True) is not None:
        return None  # residue classes
    written = forms.write_out(main)
    items = forms.elided_items(written)
    if items is not None:
        bad = [x for x in items if x is not None and not eq.parse_math(x)]
        return f"item {_short(bad[0])!r} of an elided list does not parse" if bad else None
    for reading in forms.pm_readings(written) or [written]:
        if not eq.parse_math(reading):
            return f"math-verify cannot parse {_short(reading)!r}"
    return None


def gold_unreadable(gold: str, timeout_s: float = 10.0) -> str | None:
    """Why the project grader cannot read `gold`, or None when it can.

    Follows `grading.equivalence.equivalent`'s reading of a gold: its final answer
    (`answers.gold_answer`), cleaned, without a trailing qualifier; words are compared
    as words; congruences, elided lists and `\\pm` tuples are `grading.forms`' and
    their parts must parse; anything else must parse with math-verify. Against such a
    gold every response is `unparsable` (or right only by identical text), so a score
    would say nothing about the model. Bounded by `timeout_s` (main thread).
    """
    try:
        with _time_limit(timeout_s):
            return _gold_reading(gold)
    except _Overtime:
        return f"reading it took over {timeout_s:g} s"
    except Exception as e:  # a parser bug on odd input: the grader cannot read it either
        return f"the grader's parser failed ({type(e).__name__})"


# -- benchmarks ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    path: str
    problems: list[Problem]
    category_key: str | None  # the Problem.meta key holding the category, if any
    sha256: str  # of the file, so the manifest says exactly what was evaluated


def _setting(name: str, key: str) -> str:
    return f"config.eval.benchmarks.{name}.{key}"


def _read_problem_jsonl(path: str, name: str) -> list[Problem]:
    problems = list(iter_records(path, Problem))
    seen: set[str] = set()
    for lineno, p in enumerate(problems, 1):
        if p.id in seen:
            raise ValueError(f"{path}: record {lineno}: problem id {p.id!r} appears twice "
                             f"({_setting(name, 'path')})")
        seen.add(p.id)
    return problems


def load_benchmark(name: str, entry: ConfigDict) -> Benchmark:
    """The problems of one `config.eval.benchmarks` entry, checked."""
    from int_jax.data import benchmarks

    path = str(entry.get("path", "") or "")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: benchmark file not found ({_setting(name, 'path')})")
    loader = str(entry.get("loader", "") or "") or (name if name in benchmarks.BENCHMARKS
                                                   else PROBLEM_JSONL)
    if loader == PROBLEM_JSONL:
        problems = _read_problem_jsonl(path, name)
    elif loader in benchmarks.BENCHMARKS:
        problems = list(benchmarks.load_benchmark(loader, path))
    else:
        raise ValueError(f"{_setting(name, 'loader')}={loader!r}: use {PROBLEM_JSONL!r} (a JSONL "
                         f"of Problem records) or one of {sorted(benchmarks.BENCHMARKS)}")
    limit = int(entry.get("limit", 0) or 0)
    problems = problems[:limit] if limit > 0 else problems
    if not problems:
        raise ValueError(f"{path}: no problems ({_setting(name, 'path')})")
    key = str(entry.get("category", "") or "")
    if key:
        if not any(key in p.meta for p in problems):
            raise ValueError(f"{_setting(name, 'category')}={key!r}: no problem of {path} has "
                             f"that meta key (its problems carry {sorted(problems[0].meta)})")
    else:
        key = next((k for k in AUTO_CATEGORIES if any(k in p.meta for p in problems)), "")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return Benchmark(name, path, problems, key or None, digest)


def load_benchmarks(config: ConfigDict) -> tuple[list[Benchmark], list[str]]:
    """(the configured benchmarks, names of those left out for an empty path)."""
    entries = config.eval.get("benchmarks")
    if not entries:
        raise ValueError("config.eval.benchmarks is empty: name at least one benchmark "
                         "(configs/eval.py)")
    out, skipped = [], []
    for name in sorted(entries):  # sorted: a saved config (JSON) lists them sorted
        entry = entries[name]
        if not isinstance(entry, (ConfigDict, dict)):
            raise ValueError(f"config.eval.benchmarks.{name} must hold path / loader / category / "
                             f"limit, got {type(entry).__name__}")
        if not entry.get("path"):
            skipped.append(name)
            continue
        out.append(load_benchmark(name, entry))
    if not out:
        raise ValueError(f"config.eval.benchmarks: no benchmark has a path; set e.g. "
                         f"--config.{_setting(next(iter(entries)), 'path')}=FILE")
    if skipped:
        log.warning("eval: no path for %s: left out", ", ".join(skipped))
    return out, skipped


def _check_settings(config: ConfigDict) -> None:
    cfg = config.eval
    k = int(cfg.k)
    if k < 1:
        raise ValueError(f"config.eval.k={k}: need at least one sample per problem")
    if int(cfg.max_new_tokens) < 1:
        raise ValueError(f"config.eval.max_new_tokens={cfg.max_new_tokens}: must be >= 1")
    ks = cfg.get("ks")
    if ks and any(not 1 <= int(x) <= k for x in ks):
        raise ValueError(f"config.eval.ks={tuple(ks)}: each k must be in 1..eval.k={k}")


# -- sampling ------------------------------------------------------------------------


def _check_lengths(config: ConfigDict, bench: Benchmark, problems: list[Problem],
                   prompts: list[list[int]]) -> None:
    if config.sampler.kind != "jetstream":
        return
    max_len, new = int(config.sampler.max_len), int(config.eval.max_new_tokens)
    for p, ids in zip(problems, prompts):
        if len(ids) + new > max_len:
            raise StageError(f"{bench.path}: problem {p.id!r}: {len(ids)} prompt tokens + "
                             f"eval.max_new_tokens={new} exceed sampler.max_len={max_len}; raise "
                             "config.sampler.max_len")


def _process(ctx: Context, config: ConfigDict, bench: Benchmark, batch: list[Item],
             seed: int) -> list[ItemResult]:
    cfg = config.eval
    k = int(cfg.k)
    problems: list[Problem] = [it.payload for it in batch]
    prompts = [ctx.encode(ctx.prompts.problem_chat(p.problem)) for p in problems]
    _check_lengths(config, bench, problems, prompts)
    timeout = float(config.grading.timeout_s)
    unreadable = [gold_unreadable(p.answer, timeout) for p in problems]
    graded = ctx.sample_graded(prompts, [p.answer for p in problems], k, cfg, seed)
    results = []
    for problem, ids, why, samples in zip(problems, prompts, unreadable, graded):
        category = problem.meta.get(bench.category_key) if bench.category_key else None
        seen = dataclasses.replace(problem, meta={**problem.meta, "eval": {
            "benchmark": bench.name, "category": None if category is None else str(category),
            "gold_unreadable": why}})
        records = [EvalSample(problem_id=problem.id, benchmark=bench.name, sample_index=j,
                              text=g.completion.text, grade=g.grade, answer=g.answer,
                              num_tokens=len(g.completion.tokens),
                              finish_reason=g.completion.finish_reason,
                              meta={"prompt_tokens": len(ids)})
                   for j, g in enumerate(samples)]
        correct = sum(g.correct for g in samples)
        r = ItemResult({"samples.jsonl": records, "problems.jsonl": [seen]},
                       tokens=sum(s.num_tokens for s in records))
        r.counters.update(f"grade_{s.grade}" for s in records)
        r.counters.update(problems=1, samples=k, correct=correct, solved_problems=int(correct > 0),
                          truncated=sum(s.finish_reason == "length" for s in records),
                          tokens=r.tokens, gold_unreadable=int(why is not None))
        results.append(r)
    return results


# -- resume and summaries --------------------------------------------------------------


def _check_unchanged(stage: StageRun, benches: list[Benchmark]) -> None:
    """A resumed run must see the problems its committed records came from."""
    fresh = {(b.name, p.id): (b, p) for b in benches for p in b.problems}
    for done in stage.read("problems.jsonl"):
        name = done.meta.get("eval", {}).get("benchmark")
        b, p = fresh.get((name, done.id), (None, None))
        if p is None or (p.problem, p.answer) != (done.problem, done.answer):
            where = b.path if b is not None else _setting(str(name), "path")
            raise StageError(f"{stage.dir}: problem {done.id!r} of benchmark {name!r} is gone or "
                             f"changed in {where} since this stage's partial outputs were written; "
                             f"restore the file, or delete {stage.dir} to start over")


def _iter_samples(path: Path):
    """EvalSample records one line at a time (texts are large; nothing is kept)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield EvalSample.from_json(line)


def write_summaries(config: ConfigDict, directory: Path) -> dict[str, dict]:
    """Rebuild every benchmark's summary from the stage's records and write each as
    `summary_<benchmark>.json` (atomically); returns them by benchmark."""
    cfg = config.eval
    unscored: dict[str, dict] = {}
    categories: dict[str, dict] = {}
    for p in iter_records(directory / "problems.jsonl", Problem):
        info = p.meta["eval"]
        if info.get("gold_unreadable"):
            unscored.setdefault(info["benchmark"], {})[p.id] = {
                "answer": p.answer, "reason": info["gold_unreadable"]}
        if info.get("category") is not None:
            categories.setdefault(info["benchmark"], {})[p.id] = info["category"]
    ks = [int(x) for x in cfg.ks] if cfg.get("ks") else None
    summaries = passk.eval_summaries(
        _iter_samples(directory / "samples.jsonl"), unscored=unscored, categories=categories,
        ks=ks, bootstrap=int(cfg.bootstrap), confidence=float(cfg.confidence), seed=int(config.seed))
    for name, summary in summaries.items():
        summary["k"] = int(cfg.k)
        summary["max_new_tokens"] = int(cfg.max_new_tokens)
        path = summary_path(directory, name)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, path)
    return summaries


def _prefill_stats(ctx: Context) -> tuple[int, int] | None:
    """(prefix-cache hits, misses) of the JetStream engine, if one was built."""
    sampler = ctx.__dict__.get("sampler")
    stats = getattr(getattr(sampler, "engine", None), "prefix_cache_stats", None)
    return tuple(stats) if stats is not None else None


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    stage = StageRun(config, STAGE, OUTPUTS, SECTIONS)
    if (manifest := stage.finished()) is not None:
        return manifest
    _check_settings(config)
    benches, skipped = load_benchmarks(config)
    stage.begin()
    _check_unchanged(stage, benches)
    with context(config, ctx) as ctx:
        before = _prefill_stats(ctx) or (0, 0)
        for bench in benches:
            stage.run_pass(bench.name, [Item(p.id, p) for p in bench.problems],
                           lambda batch, seed, b=bench: _process(ctx, config, b, batch, seed),
                           config.eval.batch_size, seed=config.seed)
        after = _prefill_stats(ctx)
    summaries = write_summaries(config, stage.dir)
    extra = {
        "benchmarks": {b.name: {"path": b.path, "sha256": b.sha256, "problems": len(b.problems),
                                "category": b.category_key} for b in benches},
        "left_out": skipped,
        "summaries": {name: {"pass_at_1": s["pass_at_1"], "coverage": s["coverage"],
                             "scored_problems": s["scored_problems"],
                             "unscored_problems": s["unscored_problems"]}
                      for name, s in summaries.items()},
    }
    if after is not None:  # this process's prefills only (a resumed run did fewer)
        extra["prefill"] = {"prompts_prefilled": after[1] - before[1],
                            "prefills_reused": after[0] - before[0]}
    return stage.finish(extra)


main = command(STAGE, run)

