"""`int-jax reflect`: the SFT(Reflect) baseline's data.

For each failed attempt (the same ones `propose` uses), the model sees the
problem, the reference solution and its own attempt, and rewrites the whole
attempt. Rewrites are graded; with `reflect.require_correct` only correct ones
become SFT examples (prompt = the problem, one `response` segment).

Outputs: `reflections.jsonl` (every rewrite, graded), `sft.jsonl`.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from int_jax.stages import rollout
from int_jax.stages.base import Item, ItemResult, StageRun
from int_jax.stages.common import Context, context

STAGE = "reflect"
SECTIONS = ("model", "prompts", "sampler", "grading", "rollout", "reflect", "seed")


def _process(ctx: Context, problems: dict, batch: list[Item], seed: int) -> list[ItemResult]:
    cfg = ctx.config.reflect
    n, limit = int(cfg.n), int(cfg.context_limit)
    results = [ItemResult() for _ in batch]
    prompts, where = [], []
    for b, it in enumerate(batch):
        attempt = it.payload
        problem = problems[attempt["problem_id"]]
        ids = ctx.encode(ctx.prompts.reflect_chat(problem["problem"], problem["reference_solution"],
                                                  attempt["text"]))
        results[b].counters["attempts"] += 1
        if len(ids) > limit:
            results[b].counters["skipped_context"] += 1
            continue
        prompts.append(ids)
        where.append(b)
    completions = ctx.sample(prompts, n, cfg, seed)
    texts = [c.text for cs in completions for c in cs]
    golds = [problems[batch[b].payload["problem_id"]]["answer"] for b in where for _ in range(n)]
    grades = ctx.grade(texts, golds)
    for w, (b, cs) in enumerate(zip(where, completions)):
        attempt = batch[b].payload
        problem = problems[attempt["problem_id"]]
        reflections, sft = [], []
        for j, c in enumerate(cs):
            g = grades[w * n + j]
            rid = f"{attempt['id']}/reflect{j}"
            reflections.append({"id": rid, "rollout_id": attempt["id"], "problem_id": problem["id"],
                                "index": j, "text": c.text, "num_tokens": len(c.tokens),
                                "finish_reason": c.finish_reason, "grade": g["grade"],
                                "answer": g["answer"], "correct": g["correct"]})
            results[b].tokens += len(c.tokens)
            results[b].counters["rewrites"] += 1
            results[b].counters["rewrites_correct"] += int(g["correct"])
            if g["correct"] or not cfg.require_correct:
                sft.append({"id": f"{rid}/sft", "messages": ctx.prompts.problem_chat(problem["problem"]),
                            "segments": [{"kind": "response", "text": c.text}],
                            "problem_id": problem["id"], "rollout_id": attempt["id"],
                            "meta": {"reflection_id": rid}})
        results[b].counters["kept"] += len(sft)
        results[b].records = {"reflections.jsonl": reflections, "sft.jsonl": sft}
    return results


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    stage = StageRun(config, STAGE, ("reflections.jsonl", "sft.jsonl"), SECTIONS)
    manifest = stage.finished()
    if manifest is not None:
        print(f"[{STAGE}] already complete: {stage.dir}")
        return manifest
    problems, attempts, left_out = rollout.failed_attempts(config)
    usable = [a for a in attempts if (problems[a["problem_id"]].get("reference_solution") or "").strip()]
    left_out["failed_no_reference"] = len(attempts) - len(usable)
    stage.begin()
    with context(config, ctx) as ctx:
        stage.run_pass("reflect", [Item(a["id"], a) for a in usable],
                       lambda batch, seed: _process(ctx, problems, batch, seed),
                       config.reflect.batch_size, seed=config.seed)
    manifest = stage.finish({"left_out": left_out})
    print(f"[{STAGE}] SFT(Reflect) set: {stage.path('sft.jsonl')}")
    return manifest


def main(config: ConfigDict, args: list[str]) -> int:
    del args
    run(config)
    return 0
