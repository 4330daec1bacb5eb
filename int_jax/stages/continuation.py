"""`int-jax continue`: the counterfactual check, and the controls of Table 1.

For each intervention, m continuations (graded) of an *unfinished* assistant
answer after the problem, under each condition:

* `intervention`: prefix (steps before the wrong one) + the intervention;
* `problem`: nothing (the problem alone);
* `prefix`: the prefix alone;
* `original`: the prefix + the original wrong step.

The unfinished answer ends with `continuation.separator` (a blank line), so the
model starts the next step. A continuation is graded as the full answer
(unfinished part + continuation), since its final `\\boxed{}` may sit in either.

Output: `continuations.jsonl`, one record per (intervention, condition).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from int_jax.intervention.steps import join_steps
from int_jax.stages import rollout
from int_jax.stages.base import Item, ItemResult, StageRun, read_jsonl, require
from int_jax.stages.common import Context, context

STAGE = "continue"
SECTIONS = ("model", "prompts", "sampler", "grading", "continuation", "seed")
CONDITIONS = ("intervention", "problem", "prefix", "original")


def unfinished_answer(intervention: dict, condition: str, separator: str) -> str:
    """The assistant text each condition continues from ('' for the problem alone)."""
    prefix = intervention["prefix"]
    if condition == "problem":
        return ""
    if condition == "prefix":
        parts = [prefix] if prefix else []
    elif condition == "original":
        parts = [prefix, intervention["original_step"]] if prefix else [intervention["original_step"]]
    elif condition == "intervention":
        parts = [prefix, intervention["content"]] if prefix else [intervention["content"]]
    else:
        raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS}")
    return join_steps(parts) + separator if parts else ""


def _process(ctx: Context, problems: dict, batch: list[Item], seed: int) -> list[ItemResult]:
    cfg = ctx.config.continuation
    m, conditions, sep = int(cfg.m), tuple(cfg.conditions), str(cfg.separator)
    prompts, heads, golds = [], [], []
    for it in batch:
        problem = problems[it.payload["problem_id"]]
        chat = ctx.prompts.problem_chat(problem["problem"])
        for cond in conditions:
            head = unfinished_answer(it.payload, cond, sep)
            prompts.append(ctx.encode(chat, head))
            heads.append(head)
            golds.append(problem["answer"])
    completions = ctx.sample(prompts, m, cfg, seed)
    texts = [heads[i] + c.text for i, cs in enumerate(completions) for c in cs]
    grades = ctx.grade(texts, [g for g in golds for _ in range(m)])
    results = []
    for b, it in enumerate(batch):
        r = ItemResult()
        records = []
        for ci, cond in enumerate(conditions):
            p = b * len(conditions) + ci
            cs = completions[p]
            gs = grades[p * m:(p + 1) * m]
            rec = {
                "id": f"{it.key}/{cond}", "intervention_id": it.key,
                "problem_id": it.payload["problem_id"], "condition": cond, "m": m,
                "n_correct": sum(g["correct"] for g in gs),
                "grades": [g["grade"] for g in gs], "answers": [g["answer"] for g in gs],
                "num_tokens": [len(c.tokens) for c in cs],
                "finish_reasons": [c.finish_reason for c in cs],
            }
            if cfg.save_texts:
                rec["texts"] = [c.text for c in cs]
            records.append(rec)
            r.tokens += sum(len(c.tokens) for c in cs)
            r.counters[f"{cond}_continuations"] += m
            r.counters[f"{cond}_correct"] += rec["n_correct"]
            r.counters[f"{cond}_covered"] += int(rec["n_correct"] > 0)
        r.counters["interventions"] += 1
        r.records = {"continuations.jsonl": records}
        results.append(r)
    return results


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    bad = [c for c in config.continuation.conditions if c not in CONDITIONS]
    if bad:
        raise ValueError(f"config.continuation.conditions: unknown {bad}; choose from {CONDITIONS}")
    if "intervention" not in config.continuation.conditions:
        raise ValueError("config.continuation.conditions must include 'intervention' "
                         "(select keeps interventions by it)")
    stage = StageRun(config, STAGE, ("continuations.jsonl",), SECTIONS)
    manifest = stage.finished()
    if manifest is not None:
        print(f"[{STAGE}] already complete: {stage.dir}")
        return manifest
    problems, _ = rollout.load_outputs(config)
    interventions = read_jsonl(require(config, "filter") / "interventions.jsonl")
    stage.begin()
    with context(config, ctx) as ctx:
        items = [Item(i["id"], i) for i in interventions]
        stage.run_pass("continue", items, lambda batch, seed: _process(ctx, problems, batch, seed),
                       config.continuation.batch_size, seed=config.seed)
    return stage.finish()


def main(config: ConfigDict, args: list[str]) -> int:
    del args
    run(config)
    return 0
