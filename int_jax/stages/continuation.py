"""`int-jax continue`: the counterfactual check, and the controls of Table 1.

For each intervention, m continuations (graded) of an *unfinished* assistant
answer after the problem, under each condition:

* `intervention`: prefix (steps before the wrong one) + the intervention;
* `problem`: nothing (the problem alone);
* `prefix`: the prefix alone;
* `original`: the prefix + the original wrong step.

The pieces come from `filter.GuidedAttempt` (the step split of `config.steps`),
so `original` and `intervention` differ only in the replaced step. The unfinished
answer is followed by `continuation.separator` ('' by default: the authors'
construction, nothing appended). Only the continuation's own text is graded: a
`\\boxed{}` inside the prefix or the intervention never makes an unfinished
continuation "correct".

Output: `continuations.jsonl`, one `Continuation` per (intervention, condition).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from int_jax.data.records import CONTINUATION_CONDITIONS as CONDITIONS
from int_jax.data.records import Continuation, Problem
from int_jax.stages import filter as filter_stage
from int_jax.stages.base import Item, ItemResult, StageRun, command
from int_jax.stages.common import Context, context

STAGE = "continue"
SECTIONS = ("model", "prompts", "steps", "sampler", "grading", "continuation", "seed")
OUTPUTS = {"continuations.jsonl": Continuation}


def unfinished_answer(guided: filter_stage.GuidedAttempt, condition: str, separator: str) -> str:
    """The assistant text each condition continues from ('' for the problem alone)."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS}")
    if condition == "problem":
        return ""
    step = {"prefix": "", "original": guided.original_step,
            "intervention": guided.intervention_text}[condition]
    text = guided.prefix + step
    return text + separator if text else ""


def _process(ctx: Context, cfg: ConfigDict, problems: dict[str, Problem], batch: list[Item],
             seed: int) -> list[ItemResult]:
    m, conditions, sep = int(cfg.m), tuple(cfg.conditions), str(cfg.separator)
    prompts, golds = [], []
    for it in batch:
        problem = problems[it.payload.intervention.problem_id]
        chat = ctx.prompts.problem_chat(problem.problem)
        for cond in conditions:
            prompts.append(ctx.encode(chat, unfinished_answer(it.payload, cond, sep)))
            golds.append(problem.answer)
    samples = ctx.sample_graded(prompts, golds, m, cfg, seed)
    results = []
    for b, it in enumerate(batch):
        iv = it.payload.intervention
        r = ItemResult()
        records = []
        for ci, cond in enumerate(conditions):
            graded = samples[b * len(conditions) + ci]
            rec = Continuation(
                id=f"{iv.id}/{cond}", intervention_id=iv.id, problem_id=iv.problem_id,
                condition=cond, grades=[g.grade for g in graded], answers=[g.answer for g in graded],
                completion_tokens=[len(g.completion.tokens) for g in graded],
                finish_reasons=[g.completion.finish_reason for g in graded],
                texts=[g.completion.text for g in graded] if cfg.save_texts else None)
            records.append(rec)
            r.tokens += sum(rec.completion_tokens)
            r.counters[f"{cond}_continuations"] += m
            r.counters[f"{cond}_correct"] += rec.num_correct
            r.counters[f"{cond}_covered"] += int(rec.num_correct > 0)
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
    stage = StageRun(config, STAGE, OUTPUTS, SECTIONS, inputs=("rollout", "filter"))
    if (manifest := stage.finished()) is not None:
        return manifest
    problems, guided = filter_stage.load_interventions(config)
    stage.begin()
    with context(config, ctx) as ctx:
        stage.run_pass("continue", [Item(g.intervention.id, g) for g in guided],
                       lambda batch, seed: _process(ctx, config.continuation, problems, batch, seed),
                       config.continuation.batch_size, seed=config.seed)
    return stage.finish()


main = command(STAGE, run)
