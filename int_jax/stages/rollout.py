"""`int-jax rollout`: n graded attempts per problem.

Outputs: `problems.jsonl` (the problems this run saw), `rollouts.jsonl` (one
record per attempt), `hard.jsonl` (problems with 0 correct of n). With
`rollout.select_hard`, later stages use only the hard problems' attempts.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from int_jax.stages.base import Item, ItemResult, StageRun
from int_jax.stages.common import Context, context, load_problems

STAGE = "rollout"
SECTIONS = ("model", "data", "prompts", "sampler", "grading", "rollout", "seed")


def rollout_id(problem_id: str, index: int) -> str:
    return f"{problem_id}/r{index}"


def _process(ctx: Context, batch: list[Item], seed: int) -> list[ItemResult]:
    cfg = ctx.config.rollout
    n = int(cfg.n)
    problems = [it.payload for it in batch]
    prompts = [ctx.encode(ctx.prompts.problem_chat(p["problem"])) for p in problems]
    completions = ctx.sample(prompts, n, cfg, seed)
    texts = [c.text for cs in completions for c in cs]
    golds = [p["answer"] for p in problems for _ in range(n)]
    grades = ctx.grade(texts, golds)
    results = []
    for b, (problem, cs) in enumerate(zip(problems, completions)):
        r = ItemResult()
        rollouts = []
        for j, c in enumerate(cs):
            g = grades[b * n + j]
            rollouts.append({
                "id": rollout_id(problem["id"], j), "problem_id": problem["id"], "index": j,
                "text": c.text, "num_tokens": len(c.tokens), "finish_reason": c.finish_reason,
                "answer": g["answer"], "grade": g["grade"], "correct": g["correct"],
            })
            r.counters[f"grade_{g['grade']}"] += 1
            r.tokens += len(c.tokens)
        n_correct = sum(x["correct"] for x in rollouts)
        r.records = {"problems.jsonl": [problem], "rollouts.jsonl": rollouts,
                     "hard.jsonl": [problem] if n_correct == 0 else []}
        r.counters.update(problems=1, attempts=n, correct=n_correct, failed=n - n_correct,
                          hard_problems=int(n_correct == 0),
                          solved_problems=int(n_correct > 0))
        results.append(r)
    return results


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    stage = StageRun(config, STAGE, ("problems.jsonl", "rollouts.jsonl", "hard.jsonl"), SECTIONS)
    manifest = stage.finished()
    if manifest is not None:
        print(f"[{STAGE}] already complete: {stage.dir}")
        return manifest
    problems = load_problems(config)
    stage.begin()
    with context(config, ctx) as ctx:
        items = [Item(p["id"], p) for p in problems]
        stage.run_pass("rollout", items, lambda batch, seed: _process(ctx, batch, seed),
                       config.rollout.batch_size, seed=config.seed)
    return stage.finish({"select_hard": bool(config.rollout.select_hard)})


def main(config: ConfigDict, args: list[str]) -> int:
    del args
    run(config)
    return 0


def load_outputs(config: ConfigDict) -> tuple[dict[str, dict], list[dict]]:
    """(problems by id, rollouts) of the finished rollout stage."""
    from int_jax.stages.base import read_jsonl, require

    directory = require(config, STAGE)
    problems = {p["id"]: p for p in read_jsonl(directory / "problems.jsonl")}
    return problems, read_jsonl(directory / "rollouts.jsonl")


def failed_attempts(config: ConfigDict) -> tuple[dict[str, dict], list[dict], dict[str, int]]:
    """Failed attempts with non-empty text (hard problems only under `select_hard`).

    Returns (problems by id, attempts in rollout order, counters of what was left out).
    """
    problems, rollouts = load_outputs(config)
    if config.rollout.select_hard:
        solved = {r["problem_id"] for r in rollouts if r["correct"]}
    else:
        solved = set()
    counts = {"failed": 0, "failed_empty": 0, "failed_not_hard": 0}
    attempts = []
    for r in rollouts:
        if r["correct"]:
            continue
        counts["failed"] += 1
        if not r["text"].strip():
            counts["failed_empty"] += 1
        elif r["problem_id"] in solved:
            counts["failed_not_hard"] += 1
        else:
            attempts.append(r)
    return problems, attempts, counts
