"""`int-jax reflect`: the SFT(Reflect) baseline's data.

For each failed attempt (the same ones `propose` uses), the model sees the
problem, the reference solution and its own attempt, and rewrites the whole
attempt. Rewrites are graded; with `reflect.require_correct` only correct ones
become SFT examples (prompt = the problem, one `response` segment).

Outputs: `reflections.jsonl` (every rewrite as a graded `Rollout`, whose
`meta.rollout_id` names the attempt it rewrites), `sft.jsonl`.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from int_jax.data.records import Problem, Rollout, Segment, SFTExample
from int_jax.stages import rollout
from int_jax.stages.base import Item, ItemResult, StageRun, command
from int_jax.stages.common import Context, context

STAGE = "reflect"
SECTIONS = ("model", "prompts", "sampler", "grading", "rollout", "reflect", "seed")
OUTPUTS = {"reflections.jsonl": Rollout, "sft.jsonl": SFTExample}


def _process(ctx: Context, cfg: ConfigDict, problems: dict[str, Problem], batch: list[Item],
             seed: int) -> list[ItemResult]:
    attempts: list[Rollout] = [it.payload for it in batch]
    chats = [ctx.prompts.reflect_chat(problems[a.problem_id].problem,
                                      problems[a.problem_id].reference_solution, a.completion)
             for a in attempts]
    results = [ItemResult() for _ in batch]
    where, prompts = ctx.encode_within(chats, int(cfg.context_limit), [r.counters for r in results])
    golds = [problems[attempts[b].problem_id].answer for b in where]
    samples = ctx.sample_graded(prompts, golds, int(cfg.n), cfg, seed)
    for b, ids, graded in zip(where, prompts, samples):
        attempt = attempts[b]
        problem = problems[attempt.problem_id]
        prompt = ctx.decode(ids)
        reflections = [Rollout(id=f"{attempt.id}/reflect{j}", problem_id=problem.id,
                               sample_index=j, prompt=prompt, completion=g.completion.text,
                               prompt_tokens=len(ids), completion_tokens=len(g.completion.tokens),
                               finish_reason=g.completion.finish_reason, grade=g.grade,
                               answer=g.answer, meta={"rollout_id": attempt.id})
                       for j, g in enumerate(graded)]
        sft = [SFTExample(id=f"{x.id}/sft", problem_id=problem.id,
                          messages=ctx.prompts.problem_chat(problem.problem),
                          segments=[Segment("response", x.completion)], rollout_id=attempt.id,
                          meta={"reflection_id": x.id})
               for x in reflections if x.correct or not cfg.require_correct]
        results[b].tokens = sum(x.completion_tokens for x in reflections)
        results[b].counters.update(rewrites=len(reflections),
                                   rewrites_correct=sum(x.correct for x in reflections),
                                   kept=len(sft))
        results[b].records = {"reflections.jsonl": reflections, "sft.jsonl": sft}
    return results


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    stage = StageRun(config, STAGE, OUTPUTS, SECTIONS, inputs=("rollout",))
    if (manifest := stage.finished()) is not None:
        return manifest
    problems, attempts, left_out = rollout.failed_attempts(config)
    stage.begin()
    with context(config, ctx) as ctx:
        stage.run_pass("reflect", [Item(a.id, a) for a in attempts],
                       lambda batch, seed: _process(ctx, config.reflect, problems, batch, seed),
                       config.reflect.batch_size, seed=config.seed)
    manifest = stage.finish({"left_out": left_out})
    print(f"[{STAGE}] SFT(Reflect) set: {stage.path('sft.jsonl')}")
    return manifest


main = command(STAGE, run)
