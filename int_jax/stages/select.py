"""`int-jax select`: keep interventions whose guided prefix led to >= 1 correct
continuation (`select.require_correct`; off for the ablation), and write the SFT set.

Each `SFTExample`: `messages` = the problem exactly as the rollouts saw it;
`segments` = `prefix` (steps before the wrong one), `intervention`, and the
original `suffix` (kept for the suffix-cloning ablation; weight 0 by default,
see `int_jax.data.tokenize.DEFAULT_WEIGHTS`). Segments concatenate to the
guided attempt; no end-of-turn follows the intervention. Provenance ids point
back to the problem, rollout, proposal and intervention.

Outputs: `sft.jsonl`, and `interventions.jsonl` (every intervention again, with
its continuation counts filled in).
"""

from __future__ import annotations

import dataclasses

from ml_collections import ConfigDict

from int_jax.data.records import Continuation, Intervention, Problem, Segment, SFTExample
from int_jax.stages import filter as filter_stage
from int_jax.stages.base import Item, ItemResult, StageRun, command, read_stage
from int_jax.stages.common import Context, context

STAGE = "select"
SECTIONS = ("prompts", "steps", "select")
OUTPUTS = {"sft.jsonl": SFTExample, "interventions.jsonl": Intervention}


def sft_segments(guided: filter_stage.GuidedAttempt, include_suffix: bool) -> list[Segment]:
    """prefix + intervention is the guided prefix the continuations started from."""
    segments = []
    if guided.prefix:
        segments.append(Segment("prefix", guided.prefix))
    segments.append(Segment("intervention", guided.intervention_text))
    if include_suffix and guided.suffix:
        segments.append(Segment("suffix", guided.suffix))
    return segments


def _process(ctx: Context, cfg: ConfigDict, problems: dict[str, Problem],
             continuations: dict[str, Continuation], batch: list[Item]) -> list[ItemResult]:
    results = []
    for it in batch:
        guided: filter_stage.GuidedAttempt = it.payload
        iv = guided.intervention
        r = ItemResult()
        r.counters["interventions"] += 1
        cont = continuations.get(iv.id)
        if cont is None:
            r.counters["missing_continuations"] += 1
        m, n_correct = (cont.m, cont.num_correct) if cont else (0, 0)
        r.records["interventions.jsonl"] = [
            dataclasses.replace(iv, continuations=m, correct_continuations=n_correct)]
        if cfg.require_correct and n_correct < 1:
            r.counters["dropped_no_correct"] += 1
            results.append(r)
            continue
        r.records["sft.jsonl"] = [SFTExample(
            id=f"{iv.id}/sft", problem_id=iv.problem_id,
            messages=ctx.prompts.problem_chat(problems[iv.problem_id].problem),
            segments=sft_segments(guided, bool(cfg.include_suffix)),
            intervention_id=iv.id, rollout_id=iv.rollout_id, proposal_id=iv.proposal_id,
            meta={"location": iv.location, "continuations_correct": n_correct,
                  "continuations": m})]
        r.counters["kept"] += 1
        results.append(r)
    return results


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    stage = StageRun(config, STAGE, OUTPUTS, SECTIONS, inputs=("rollout", "filter", "continue"))
    if (manifest := stage.finished()) is not None:
        return manifest
    problems, guided = filter_stage.load_interventions(config)
    continuations = {c.intervention_id: c
                     for c in read_stage(config, "continue", "continuations.jsonl", Continuation)
                     if c.condition == "intervention"}
    stage.begin()
    with context(config, ctx) as ctx:
        stage.run_pass("select", [Item(g.intervention.id, g) for g in guided],
                       lambda batch, seed: _process(ctx, config.select, problems, continuations, batch),
                       batch_size=256)
    manifest = stage.finish()
    print(f"[{STAGE}] SFT set: {stage.path('sft.jsonl')}")
    return manifest


main = command(STAGE, run)
