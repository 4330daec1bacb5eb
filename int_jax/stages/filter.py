"""`int-jax filter`: parse each proposal, drop the bad ones, keep the first survivor
per failed attempt.

Outputs: `checks.jsonl` (one verdict per proposal, the reason when rejected, the
repairs its parse needed) and `interventions.jsonl` (at most one per attempt,
with the split attempt's prefix, original step and suffix, for the next stages).
"""

from __future__ import annotations

import collections

from ml_collections import ConfigDict

from int_jax.intervention import filters
from int_jax.intervention.parse import parse_intervention
from int_jax.intervention.steps import join_steps, split_steps
from int_jax.stages import rollout
from int_jax.stages.base import Item, ItemResult, StageRun, read_jsonl, require

STAGE = "filter"
SECTIONS = ("filter",)


def intervention_id(rollout_id: str) -> str:
    return f"{rollout_id}/i"


def check_attempt(config: ConfigDict, attempt: dict, gold: str, proposals: list[dict]) -> ItemResult:
    cfg = config.filter
    steps = split_steps(attempt["text"])
    result = ItemResult()
    checks, verdicts = [], []
    chosen = None
    for prop in sorted(proposals, key=lambda p: p["index"]):
        parsed = parse_intervention(prop["text"], max_block_chars=int(cfg.max_block_chars),
                                    time_limit_s=float(cfg.parse_time_limit_s))
        reason = filters.rejection(parsed, len(steps), gold, int(cfg.max_content_chars))
        checks.append({"id": prop["id"], "rollout_id": attempt["id"], "reason": reason,
                       "location": parsed.location, "repairs": list(parsed.repairs),
                       "detail": parsed.detail})
        verdicts.append(filters.Verdict(prop["index"], reason))
        result.counters["proposals"] += 1
        if parsed.ok:
            result.counters["parsed"] += 1
            result.counters["parsed_strict" if not parsed.repairs else "parsed_repaired"] += 1
        result.counters[f"rejected_{reason}" if reason else "survived"] += 1
        if reason is None and chosen is None:
            chosen = (prop, parsed)
    assert (chosen[0]["index"] if chosen else None) == filters.first_survivor(verdicts)
    interventions = []
    if chosen is not None:
        prop, parsed = chosen
        loc = parsed.location
        interventions.append({
            "id": intervention_id(attempt["id"]), "problem_id": attempt["problem_id"],
            "rollout_id": attempt["id"], "proposal_id": prop["id"], "location": loc,
            "content": parsed.content.strip(), "n_steps": len(steps),
            "prefix": join_steps(steps[:loc - 1]), "original_step": steps[loc - 1],
            "suffix": join_steps(steps[loc:]),
        })
        result.counters["kept"] += 1
    else:
        result.counters["attempts_without_survivor"] += 1
    result.counters["attempts"] += 1
    result.records = {"checks.jsonl": checks, "interventions.jsonl": interventions}
    return result


def run(config: ConfigDict, ctx=None) -> dict:
    del ctx  # parsing needs no model
    stage = StageRun(config, STAGE, ("checks.jsonl", "interventions.jsonl"), SECTIONS)
    manifest = stage.finished()
    if manifest is not None:
        print(f"[{STAGE}] already complete: {stage.dir}")
        return manifest
    problems, rollouts = rollout.load_outputs(config)
    proposals = read_jsonl(require(config, "propose") / "proposals.jsonl")
    stage.begin()
    by_attempt = collections.defaultdict(list)
    for p in proposals:
        by_attempt[p["rollout_id"]].append(p)
    attempts = {r["id"]: r for r in rollouts}
    items = [Item(rid, (attempts[rid], props)) for rid, props in by_attempt.items()]

    def process(batch, seed):
        del seed
        return [check_attempt(config, a, problems[a["problem_id"]]["answer"], props)
                for a, props in (it.payload for it in batch)]

    stage.run_pass("filter", items, process, batch_size=64)
    return stage.finish()


def main(config: ConfigDict, args: list[str]) -> int:
    del args
    run(config)
    return 0
