"""`int-jax reference`: the SFT(Ref) baseline's data: the reference solutions.

One SFT example per problem of the rollout stage (its hard problems under
`rollout.select_hard`) that has a reference solution: prompt = the problem as
the rollouts saw it, one `response` segment = the reference solution.

Output: `sft.jsonl`.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from int_jax.stages import rollout
from int_jax.stages.base import Item, ItemResult, StageRun
from int_jax.stages.common import Context, context

STAGE = "reference"
SECTIONS = ("prompts", "rollout")


def _process(ctx: Context, batch: list[Item]) -> list[ItemResult]:
    results = []
    for it in batch:
        problem = it.payload
        r = ItemResult()
        r.counters["problems"] += 1
        reference = (problem.get("reference_solution") or "").strip()
        if not reference:
            r.counters["no_reference"] += 1
        else:
            r.records = {"sft.jsonl": [{
                "id": f"{problem['id']}/ref", "messages": ctx.prompts.problem_chat(problem["problem"]),
                "segments": [{"kind": "response", "text": reference}], "problem_id": problem["id"]}]}
            r.counters["kept"] += 1
        results.append(r)
    return results


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    stage = StageRun(config, STAGE, ("sft.jsonl",), SECTIONS)
    manifest = stage.finished()
    if manifest is not None:
        print(f"[{STAGE}] already complete: {stage.dir}")
        return manifest
    problems, rollouts = rollout.load_outputs(config)
    if config.rollout.select_hard:
        solved = {r["problem_id"] for r in rollouts if r["correct"]}
        problems = {pid: p for pid, p in problems.items() if pid not in solved}
    stage.begin()
    with context(config, ctx) as ctx:
        stage.run_pass("reference", [Item(pid, p) for pid, p in problems.items()],
                       lambda batch, seed: _process(ctx, batch), batch_size=256)
    manifest = stage.finish()
    print(f"[{STAGE}] SFT(Ref) set: {stage.path('sft.jsonl')}")
    return manifest


def main(config: ConfigDict, args: list[str]) -> int:
    del args
    run(config)
    return 0
