"""`int-jax filter`: parse each proposal, drop the bad ones, keep the first survivor
per failed attempt.

Outputs: `checks.jsonl` (every `Proposal` again, now with its parsed location and
content, the rejection reason or None when it survived, and in `meta` the
repairs its parse needed) and `interventions.jsonl` (at most one `Intervention`
per attempt; its guided prefix is rebuilt from the attempt by `location`, with
the step split of `config.steps`, the one the proposer saw).

Counters `leaky_substring` and `leaky_normalized` say how many proposals each leak
test would reject among those that reached the leak check, whichever one
`filter.leak_test` applies.
"""

from __future__ import annotations

import collections
import dataclasses

from ml_collections import ConfigDict

from int_jax.data.records import Intervention, Problem, Proposal, Rollout
from int_jax.intervention import filters
from int_jax.intervention.parse import parse_intervention
from int_jax.intervention.steps import StepFormat
from int_jax.stages import rollout
from int_jax.stages.base import (Item, ItemResult, StageError, StageRun, command, read_stage,
                                 stage_dir)

STAGE = "filter"
SECTIONS = ("steps", "filter")
OUTPUTS = {"checks.jsonl": Proposal, "interventions.jsonl": Intervention}


def intervention_id(rollout_id: str) -> str:
    return f"{rollout_id}/i"


def check_attempt(cfg: ConfigDict, steps: StepFormat, attempt: Rollout, gold: str,
                  proposals: list[Proposal]) -> ItemResult:
    """Verdicts on one attempt's proposals, and its intervention (the first survivor)."""
    num_steps = len(steps.split(attempt.completion))
    result = ItemResult()
    checks = []
    for prop in sorted(proposals, key=lambda p: p.index):
        parsed = parse_intervention(prop.text, max_block_chars=int(cfg.max_block_chars),
                                    time_limit_s=float(cfg.parse_time_limit_s))
        reason = filters.rejection(parsed, num_steps, gold, int(cfg.max_content_chars),
                                   str(cfg.leak_test))
        if reason in (None, filters.LEAKY):  # reached the leak check: what would each test say?
            for test in filters.LEAK_TESTS:
                result.counters[f"leaky_{test}"] += filters.leaks(parsed.content.strip(), gold, test)
        checks.append(dataclasses.replace(
            prop, location=parsed.location, content=parsed.content, rejection=reason,
            meta={**prop.meta, "repairs": list(parsed.repairs), "detail": parsed.detail}))
        result.counters["proposals"] += 1
        if parsed.ok:
            result.counters["parsed"] += 1
            result.counters["parsed_strict" if not parsed.repairs else "parsed_repaired"] += 1
        result.counters[f"rejected_{reason}" if reason else "survived"] += 1
    kept = filters.first_survivor(filters.Verdict(c.index, c.rejection) for c in checks)
    interventions = []
    if kept is not None:
        chosen = next(c for c in checks if c.index == kept)
        interventions.append(Intervention(
            id=intervention_id(attempt.id), problem_id=attempt.problem_id, rollout_id=attempt.id,
            proposal_id=chosen.id, location=chosen.location, content=chosen.content,
            num_steps=num_steps))
        result.counters["kept"] += 1
    else:
        result.counters["attempts_without_survivor"] += 1
    result.counters["attempts"] += 1
    result.records = {"checks.jsonl": checks, "interventions.jsonl": interventions}
    return result


def run(config: ConfigDict, ctx=None) -> dict:
    del ctx  # parsing needs no model
    if config.filter.leak_test not in filters.LEAK_TESTS:
        raise ValueError(f"config.filter.leak_test={config.filter.leak_test!r}; "
                         f"choose one of {filters.LEAK_TESTS}")
    steps = StepFormat.from_config(config.steps)
    stage = StageRun(config, STAGE, OUTPUTS, SECTIONS, inputs=("rollout", "propose"))
    if (manifest := stage.finished()) is not None:
        return manifest
    problems, rollouts = rollout.load_outputs(config)
    proposals = read_stage(config, "propose", "proposals.jsonl", Proposal)
    by_attempt = collections.defaultdict(list)
    for p in proposals:
        by_attempt[p.rollout_id].append(p)
    attempts = {r.id: r for r in rollouts}
    unknown = sorted(set(by_attempt) - set(attempts))
    if unknown:
        raise StageError(f"{stage_dir(config, 'propose') / 'proposals.jsonl'}: proposals for "
                         f"attempts the rollout stage did not write, e.g. {unknown[0]!r}")
    items = [Item(rid, (attempts[rid], props)) for rid, props in by_attempt.items()]
    stage.begin()

    def process(batch, seed):
        del seed
        return [check_attempt(config.filter, steps, a, problems[a.problem_id].answer, props)
                for a, props in (it.payload for it in batch)]

    stage.run_pass("filter", items, process, batch_size=64)
    return stage.finish()


main = command(STAGE, run)


# -- what later stages read -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GuidedAttempt:
    """An intervention with the pieces of its attempt around the step it replaces
    (`StepFormat.split_at`): `prefix + intervention_text` is the guided prefix."""

    intervention: Intervention
    prefix: str  # the text before the wrong step, ending with its separator (may be '')
    original_step: str
    suffix: str  # the text after the wrong step, starting with its separator ('' at the end)
    intervention_text: str  # the intervention as it stands in the guided attempt

    @property
    def guided_prefix(self) -> str:
        return self.prefix + self.intervention_text


def load_interventions(config: ConfigDict) -> tuple[dict[str, Problem], list[GuidedAttempt]]:
    """(problems by id, the finished filter stage's interventions in order)."""
    fmt = StepFormat.from_config(config.steps)
    problems, rollouts = rollout.load_outputs(config)
    attempts = {r.id: r for r in rollouts}
    path = stage_dir(config, STAGE) / "interventions.jsonl"
    out = []
    for iv in read_stage(config, STAGE, "interventions.jsonl", Intervention):
        attempt = attempts.get(iv.rollout_id)
        steps = fmt.split(attempt.completion) if attempt else []
        if len(steps) != iv.num_steps:
            raise StageError(f"{path}: intervention {iv.id!r} was made for an attempt of "
                             f"{iv.num_steps} steps that the rollout stage no longer holds")
        out.append(GuidedAttempt(iv, *fmt.split_at(steps, iv.location),
                                 intervention_text=fmt.intervention_text(iv.content)))
    return problems, out
