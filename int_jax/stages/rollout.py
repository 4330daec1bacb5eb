"""`int-jax rollout`: n graded attempts per problem.

Outputs: `problems.jsonl` (the problems this run saw), `rollouts.jsonl` (one
`Rollout` per attempt), `hard.jsonl` (problems with 0 correct of n). With
`rollout.select_hard`, later stages use only the hard problems' attempts.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from int_jax.data.records import Problem, Rollout
from int_jax.stages.base import Item, ItemResult, StageRun, command, read_stage
from int_jax.stages.common import Context, context, load_problems

STAGE = "rollout"
SECTIONS = ("model", "data", "prompts", "sampler", "grading", "rollout", "seed")
OUTPUTS = {"problems.jsonl": Problem, "rollouts.jsonl": Rollout, "hard.jsonl": Problem}


def rollout_id(problem_id: str, index: int) -> str:
    return f"{problem_id}/r{index}"


def _process(ctx: Context, cfg: ConfigDict, batch: list[Item], seed: int) -> list[ItemResult]:
    n = int(cfg.n)
    problems: list[Problem] = [it.payload for it in batch]
    prompts = [ctx.encode(ctx.prompts.problem_chat(p.problem)) for p in problems]
    samples = ctx.sample_graded(prompts, [p.answer for p in problems], n, cfg, seed)
    results = []
    for problem, ids, graded in zip(problems, prompts, samples):
        prompt = ctx.decode(ids)
        rollouts = [Rollout(id=rollout_id(problem.id, j), problem_id=problem.id, sample_index=j,
                            prompt=prompt, completion=g.completion.text, prompt_tokens=len(ids),
                            completion_tokens=len(g.completion.tokens),
                            finish_reason=g.completion.finish_reason, grade=g.grade,
                            answer=g.answer)
                    for j, g in enumerate(graded)]
        n_correct = sum(r.correct for r in rollouts)
        r = ItemResult({"problems.jsonl": [problem], "rollouts.jsonl": rollouts,
                        "hard.jsonl": [problem] if n_correct == 0 else []},
                       tokens=sum(x.completion_tokens for x in rollouts))
        r.counters.update(f"grade_{x.grade}" for x in rollouts)
        r.counters.update(problems=1, attempts=n, correct=n_correct, failed=n - n_correct,
                          hard_problems=int(n_correct == 0), solved_problems=int(n_correct > 0))
        results.append(r)
    return results


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    stage = StageRun(config, STAGE, OUTPUTS, SECTIONS)
    if (manifest := stage.finished()) is not None:
        return manifest
    problems = load_problems(config)
    stage.begin()
    with context(config, ctx) as ctx:
        stage.run_pass("rollout", [Item(p.id, p) for p in problems],
                       lambda batch, seed: _process(ctx, config.rollout, batch, seed),
                       config.rollout.batch_size, seed=config.seed)
    return stage.finish({"select_hard": bool(config.rollout.select_hard)})


main = command(STAGE, run)


# -- what later stages read -----------------------------------------------------------


def load_outputs(config: ConfigDict) -> tuple[dict[str, Problem], list[Rollout]]:
    """(problems by id, rollouts) of the finished rollout stage."""
    problems = {p.id: p for p in read_stage(config, STAGE, "problems.jsonl", Problem)}
    return problems, read_stage(config, STAGE, "rollouts.jsonl", Rollout)


def problems_in_scope(config: ConfigDict) -> list[Problem]:
    """The problems later stages work on: all, or the hard ones under `select_hard`."""
    name = "hard.jsonl" if config.rollout.select_hard else "problems.jsonl"
    return read_stage(config, STAGE, name, Problem)


def failed_attempts(config: ConfigDict) -> tuple[dict[str, Problem], list[Rollout], dict[str, int]]:
    """The failed attempts to intervene on (propose) or rewrite (reflect): non-empty
    text, a problem in scope (`problems_in_scope`) that has a reference solution.

    Returns (problems by id, attempts in rollout order, counts of what was left out).
    """
    problems, rollouts = load_outputs(config)
    in_scope = {p.id for p in problems_in_scope(config)}
    counts = {"failed": 0, "failed_empty": 0, "failed_not_hard": 0, "failed_no_reference": 0}
    attempts = []
    for r in rollouts:
        if r.correct:
            continue
        counts["failed"] += 1
        if not r.completion.strip():
            counts["failed_empty"] += 1
        elif r.problem_id not in in_scope:
            counts["failed_not_hard"] += 1
        elif not (problems[r.problem_id].reference_solution or "").strip():
            counts["failed_no_reference"] += 1
        else:
            attempts.append(r)
    return problems, attempts, counts
