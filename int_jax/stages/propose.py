"""`int-jax propose`: k self-proposed interventions per failed attempt.

Two passes, each resumable:
1. `guided`: per problem (with a failed attempt and a reference solution), the
   model solves the problem with the reference as a guide (turn 1 of the chat);
2. `propose`: per failed attempt, the three-turn chat (turn 1, the model's guided
   solution as the assistant turn, then the numbered attempt and the task), k
   samples. Chats over `propose.context_limit` tokens are skipped and counted.

Outputs: `guided.jsonl`, `proposals.jsonl` (one record per sampled proposal).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from int_jax.intervention.steps import split_steps
from int_jax.stages import rollout
from int_jax.stages.base import Item, ItemResult, StageRun, read_jsonl
from int_jax.stages.common import Context, context

STAGE = "propose"
SECTIONS = ("model", "data", "prompts", "sampler", "grading", "rollout", "propose", "seed")


def proposal_id(rollout_id: str, index: int) -> str:
    return f"{rollout_id}/p{index}"


def _guided(ctx: Context, batch: list[Item], seed: int) -> list[ItemResult]:
    cfg = ctx.config.propose
    prompts = [ctx.encode(ctx.prompts.solve_chat(p["problem"], p["reference_solution"]))
               for p in (it.payload for it in batch)]
    completions = ctx.sample(prompts, 1, cfg, seed, max_new_tokens=cfg.guided_max_new_tokens)
    results = []
    for it, (c,) in zip(batch, completions):
        record = {"id": it.key, "problem_id": it.key, "text": c.text, "num_tokens": len(c.tokens),
                  "finish_reason": c.finish_reason}
        results.append(ItemResult({"guided.jsonl": [record]}, tokens=len(c.tokens)))
        results[-1].counters.update(guided=1, guided_truncated=int(c.finish_reason == "length"))
    return results


def _propose(ctx: Context, problems: dict, guided: dict, batch: list[Item], seed: int):
    cfg = ctx.config.propose
    k, limit = int(cfg.k), int(cfg.context_limit)
    results = [ItemResult() for _ in batch]
    prompts, where = [], []
    for b, it in enumerate(batch):
        attempt = it.payload
        problem = problems[attempt["problem_id"]]
        steps = split_steps(attempt["text"])
        chat = ctx.prompts.proposal_chat(problem["problem"], problem["reference_solution"],
                                         guided[problem["id"]]["text"], steps)
        ids = ctx.encode(chat)
        results[b].counters["attempts"] += 1
        if len(ids) > limit:
            results[b].counters["skipped_context"] += 1
            continue
        prompts.append(ids)
        where.append((b, len(steps)))
    for (b, n_steps), cs in zip(where, ctx.sample(prompts, k, cfg, seed)):
        attempt = batch[b].payload
        records = []
        for j, c in enumerate(cs):
            records.append({
                "id": proposal_id(attempt["id"], j), "rollout_id": attempt["id"],
                "problem_id": attempt["problem_id"], "index": j, "n_steps": n_steps,
                "text": c.text, "num_tokens": len(c.tokens), "finish_reason": c.finish_reason,
            })
            results[b].tokens += len(c.tokens)
        results[b].records = {"proposals.jsonl": records}
        results[b].counters.update(proposed_attempts=1, proposals=len(records),
                                   proposals_truncated=sum(c.finish_reason == "length" for c in cs))
    return results


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    stage = StageRun(config, STAGE, ("guided.jsonl", "proposals.jsonl"), SECTIONS)
    manifest = stage.finished()
    if manifest is not None:
        print(f"[{STAGE}] already complete: {stage.dir}")
        return manifest
    problems, attempts, left_out = rollout.failed_attempts(config)
    stage.begin()
    with context(config, ctx) as ctx:
        no_reference = {pid for pid, p in problems.items() if not (p.get("reference_solution") or "").strip()}
        usable = [a for a in attempts if a["problem_id"] not in no_reference]
        problem_ids = list(dict.fromkeys(a["problem_id"] for a in usable))
        stage.run_pass("guided", [Item(pid, problems[pid]) for pid in problem_ids],
                       lambda batch, seed: _guided(ctx, batch, seed), config.propose.batch_size,
                       seed=config.seed)
        guided = {g["problem_id"]: g for g in read_jsonl(stage.path("guided.jsonl"))}
        stage.run_pass("propose", [Item(a["id"], a) for a in usable],
                       lambda batch, seed: _propose(ctx, problems, guided, batch, seed),
                       config.propose.batch_size, seed=config.seed)
        left_out["failed_no_reference"] = len(attempts) - len(usable)
    return stage.finish({"left_out": left_out})


def main(config: ConfigDict, args: list[str]) -> int:
    del args
    run(config)
    return 0
