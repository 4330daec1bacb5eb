"""`int-jax select`: keep interventions whose guided prefix led to >= 1 correct
continuation (`select.require_correct`; off for the ablation), and write the SFT set.

Each SFT example: `messages` = the problem exactly as the rollouts saw it;
`segments` = `prefix` (steps before the wrong one), `intervention`, and the
original `suffix` (kept for the suffix-cloning ablation; weight 0 by default,
see `int_jax.data.tokenize.DEFAULT_WEIGHTS`). Segments concatenate to the
guided attempt; no end-of-turn follows the intervention. Provenance ids point
back to the problem, rollout, proposal and intervention.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from int_jax.intervention.steps import STEP_SEPARATOR
from int_jax.stages import rollout
from int_jax.stages.base import Item, ItemResult, StageRun, read_jsonl, require
from int_jax.stages.common import Context, context

STAGE = "select"
SECTIONS = ("prompts", "select")


def sft_segments(intervention: dict, include_suffix: bool) -> list[dict]:
    segments = []
    if intervention["prefix"]:
        segments.append({"kind": "prefix", "text": intervention["prefix"] + STEP_SEPARATOR})
    segments.append({"kind": "intervention", "text": intervention["content"]})
    if include_suffix and intervention["suffix"]:
        segments.append({"kind": "suffix", "text": STEP_SEPARATOR + intervention["suffix"]})
    return segments


def _process(ctx: Context, problems: dict, continuations: dict, batch: list[Item]):
    cfg = ctx.config.select
    results = []
    for it in batch:
        iv = it.payload
        r = ItemResult()
        r.counters["interventions"] += 1
        cont = continuations.get(iv["id"])
        if cont is None:
            r.counters["missing_continuations"] += 1
        n_correct = cont["n_correct"] if cont else 0
        if cfg.require_correct and n_correct < 1:
            r.counters["dropped_no_correct"] += 1
            results.append(r)
            continue
        problem = problems[iv["problem_id"]]
        example = {
            "id": f"{iv['id']}/sft", "messages": ctx.prompts.problem_chat(problem["problem"]),
            "segments": sft_segments(iv, bool(cfg.include_suffix)),
            "problem_id": iv["problem_id"], "rollout_id": iv["rollout_id"],
            "proposal_id": iv["proposal_id"], "intervention_id": iv["id"],
            "meta": {"location": iv["location"], "continuations_correct": n_correct,
                     "continuations": cont["m"] if cont else 0},
        }
        r.records = {"sft.jsonl": [example]}
        r.counters["kept"] += 1
        results.append(r)
    return results


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    stage = StageRun(config, STAGE, ("sft.jsonl",), SECTIONS)
    manifest = stage.finished()
    if manifest is not None:
        print(f"[{STAGE}] already complete: {stage.dir}")
        return manifest
    problems, _ = rollout.load_outputs(config)
    interventions = read_jsonl(require(config, "filter") / "interventions.jsonl")
    continuations = {c["intervention_id"]: c
                     for c in read_jsonl(require(config, "continue") / "continuations.jsonl")
                     if c["condition"] == "intervention"}
    stage.begin()
    with context(config, ctx) as ctx:
        items = [Item(i["id"], i) for i in interventions]
        stage.run_pass("select", items,
                       lambda batch, seed: _process(ctx, problems, continuations, batch), batch_size=256)
    manifest = stage.finish()
    print(f"[{STAGE}] SFT set: {stage.path('sft.jsonl')}")
    return manifest


def main(config: ConfigDict, args: list[str]) -> int:
    del args
    run(config)
    return 0
