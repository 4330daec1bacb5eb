"""`int-jax propose`: k self-proposed interventions per failed attempt.

Two passes, each resumable:
1. `guided`: per problem (with a failed attempt and a reference solution), the
   model solves the problem with the reference as a guide (turn 1 of the chat);
2. `propose`: per failed attempt, the three-turn chat (turn 1, the model's guided
   solution as the assistant turn, then the numbered attempt and the task), k
   samples. Chats over `propose.context_limit` tokens are skipped and counted.

Outputs: `guided.jsonl` (one ungraded `Rollout` per problem: the guided
solution), `proposals.jsonl` (one unparsed `Proposal` per sample).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from int_jax.data.records import Problem, Proposal, Rollout
from int_jax.intervention.steps import split_steps
from int_jax.stages import rollout
from int_jax.stages.base import Item, ItemResult, StageRun, command
from int_jax.stages.common import Context, context

STAGE = "propose"
SECTIONS = ("model", "data", "prompts", "sampler", "grading", "rollout", "propose", "seed")
OUTPUTS = {"guided.jsonl": Rollout, "proposals.jsonl": Proposal}


def proposal_id(rollout_id: str, index: int) -> str:
    return f"{rollout_id}/p{index}"


def _guided(ctx: Context, cfg: ConfigDict, batch: list[Item], seed: int) -> list[ItemResult]:
    problems: list[Problem] = [it.payload for it in batch]
    prompts = [ctx.encode(ctx.prompts.solve_chat(p.problem, p.reference_solution)) for p in problems]
    completions = ctx.sample(prompts, 1, cfg, seed, max_new_tokens=cfg.guided_max_new_tokens)
    results = []
    for problem, ids, (c,) in zip(problems, prompts, completions):
        record = Rollout(id=f"{problem.id}/guided", problem_id=problem.id, sample_index=0,
                         prompt=ctx.decode(ids), completion=c.text, prompt_tokens=len(ids),
                         completion_tokens=len(c.tokens), finish_reason=c.finish_reason)
        r = ItemResult({"guided.jsonl": [record]}, tokens=len(c.tokens))
        r.counters.update(guided=1, guided_truncated=int(c.finish_reason == "length"))
        results.append(r)
    return results


def _propose(ctx: Context, cfg: ConfigDict, problems: dict[str, Problem],
             guided: dict[str, Rollout], batch: list[Item], seed: int) -> list[ItemResult]:
    attempts: list[Rollout] = [it.payload for it in batch]
    chats = [ctx.prompts.proposal_chat(problems[a.problem_id].problem,
                                       problems[a.problem_id].reference_solution,
                                       guided[a.problem_id].completion, split_steps(a.completion))
             for a in attempts]
    results = [ItemResult() for _ in batch]
    where, prompts = ctx.encode_within(chats, int(cfg.context_limit), [r.counters for r in results])
    for b, cs in zip(where, ctx.sample(prompts, int(cfg.k), cfg, seed)):
        attempt = attempts[b]
        records = [Proposal(id=proposal_id(attempt.id, j), rollout_id=attempt.id,
                            problem_id=attempt.problem_id, index=j, text=c.text,
                            completion_tokens=len(c.tokens), finish_reason=c.finish_reason)
                   for j, c in enumerate(cs)]
        results[b].records = {"proposals.jsonl": records}
        results[b].tokens = sum(p.completion_tokens for p in records)
        results[b].counters.update(proposed_attempts=1, proposals=len(records),
                                   proposals_truncated=sum(c.finish_reason == "length" for c in cs))
    return results


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    stage = StageRun(config, STAGE, OUTPUTS, SECTIONS)
    if (manifest := stage.finished()) is not None:
        return manifest
    problems, attempts, left_out = rollout.failed_attempts(config)
    stage.begin()
    cfg = config.propose
    with context(config, ctx) as ctx:
        problem_ids = list(dict.fromkeys(a.problem_id for a in attempts))
        stage.run_pass("guided", [Item(pid, problems[pid]) for pid in problem_ids],
                       lambda batch, seed: _guided(ctx, cfg, batch, seed), cfg.batch_size,
                       seed=config.seed)
        guided = {g.problem_id: g for g in stage.read("guided.jsonl")}
        stage.run_pass("propose", [Item(a.id, a) for a in attempts],
                       lambda batch, seed: _propose(ctx, cfg, problems, guided, batch, seed),
                       cfg.batch_size, seed=config.seed)
    return stage.finish({"left_out": left_out})


main = command(STAGE, run)
