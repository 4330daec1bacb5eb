"""`int-jax reference`: the SFT(Ref) baseline's data: the reference solutions.

One SFT example per problem of the rollout stage (its hard problems under
`rollout.select_hard`) that has a reference solution: prompt = the problem as
the rollouts saw it, one `response` segment = the reference solution.

Output: `sft.jsonl`.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from int_jax.data.records import Problem, Segment, SFTExample
from int_jax.stages import rollout
from int_jax.stages.base import Item, ItemResult, StageRun, command
from int_jax.stages.common import Context, context

STAGE = "reference"
SECTIONS = ("prompts", "rollout")
OUTPUTS = {"sft.jsonl": SFTExample}


def _process(ctx: Context, batch: list[Item]) -> list[ItemResult]:
    results = []
    for it in batch:
        problem: Problem = it.payload
        r = ItemResult()
        r.counters["problems"] += 1
        reference = (problem.reference_solution or "").strip()
        if not reference:
            r.counters["no_reference"] += 1
        else:
            r.records = {"sft.jsonl": [SFTExample(
                id=f"{problem.id}/ref", problem_id=problem.id,
                messages=ctx.prompts.problem_chat(problem.problem),
                segments=[Segment("response", reference)])]}
            r.counters["kept"] += 1
        results.append(r)
    return results


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    stage = StageRun(config, STAGE, OUTPUTS, SECTIONS, inputs=("rollout",))
    if (manifest := stage.finished()) is not None:
        return manifest
    problems = rollout.problems_in_scope(config)
    stage.begin()
    with context(config, ctx) as ctx:
        stage.run_pass("reference", [Item(p.id, p) for p in problems],
                       lambda batch, seed: _process(ctx, batch), batch_size=256)
    manifest = stage.finish()
    print(f"[{STAGE}] SFT(Ref) set: {stage.path('sft.jsonl')}")
    return manifest


main = command(STAGE, run)
