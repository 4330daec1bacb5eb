"""`int-jax propose`: k self-proposed interventions per failed attempt.

Two passes, each resumable:
1. `guided`: the model solves the problem with the reference as a guide (turn 1
   of the chat), once per failed attempt (`propose.guided_per="attempt"`, the
   authors') or once per problem, shared by its attempts (`"problem"`);
2. `propose`: per failed attempt, the three-turn chat (turn 1, the model's guided
   solution as the assistant turn, then the attempt in labelled steps
   (`config.steps`) and the task), k samples. Chats over `propose.context_limit`
   tokens are skipped and counted.

Outputs: `guided.jsonl` (one ungraded `Rollout` per attempt or problem, id
`<attempt or problem id>/guided`: the guided solution), `proposals.jsonl` (one
unparsed `Proposal` per sample).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from int_jax.data.records import Problem, Proposal, Rollout
from int_jax.intervention.steps import StepFormat
from int_jax.stages import rollout
from int_jax.stages.base import Item, ItemResult, StageRun, command
from int_jax.stages.common import Context, context

STAGE = "propose"
SECTIONS = ("model", "data", "prompts", "steps", "sampler", "grading", "rollout", "propose",
            "seed")
GUIDED_PER = ("attempt", "problem")
OUTPUTS = {"guided.jsonl": Rollout, "proposals.jsonl": Proposal}


def proposal_id(rollout_id: str, index: int) -> str:
    return f"{rollout_id}/p{index}"


def guided_key(cfg: ConfigDict, attempt: Rollout) -> str:
    """The guided solution an attempt's chat uses: its own, or its problem's."""
    return attempt.id if cfg.guided_per == "attempt" else attempt.problem_id


def guided_id(key: str) -> str:
    return f"{key}/guided"


def _guided(ctx: Context, cfg: ConfigDict, batch: list[Item], seed: int) -> list[ItemResult]:
    """One guided solution per item (key: attempt or problem id; payload: the problem)."""
    problems: list[Problem] = [it.payload for it in batch]
    prompts = [ctx.encode(ctx.prompts.solve_chat(p.problem, p.reference_solution)) for p in problems]
    completions = ctx.sample(prompts, 1, cfg, seed, max_new_tokens=cfg.guided_max_new_tokens)
    results = []
    for it, problem, ids, (c,) in zip(batch, problems, prompts, completions):
        record = Rollout(id=guided_id(it.key), problem_id=problem.id, sample_index=0,
                         prompt=ctx.decode(ids), completion=c.text, prompt_tokens=len(ids),
                         completion_tokens=len(c.tokens), finish_reason=c.finish_reason)
        r = ItemResult({"guided.jsonl": [record]}, tokens=len(c.tokens))
        r.counters.update(guided=1, guided_truncated=int(c.finish_reason == "length"))
        results.append(r)
    return results


def _propose(ctx: Context, cfg: ConfigDict, steps: StepFormat, problems: dict[str, Problem],
             guided: dict[str, Rollout], batch: list[Item], seed: int) -> list[ItemResult]:
    attempts: list[Rollout] = [it.payload for it in batch]
    chats = [ctx.prompts.proposal_chat(problems[a.problem_id].problem,
                                       problems[a.problem_id].reference_solution,
                                       guided[guided_id(guided_key(cfg, a))].completion,
                                       steps.number(steps.split(a.completion)))
             for a in attempts]
    results = [ItemResult() for _ in batch]
    where, prompts = ctx.encode_within(chats, int(cfg.context_limit), [r.counters for r in results])
    for b, cs in zip(where, ctx.sample(prompts, int(cfg.k), cfg, seed)):
        attempt = attempts[b]
        records = [Proposal(id=proposal_id(attempt.id, j), rollout_id=attempt.id,
                            problem_id=attempt.problem_id, index=j, text=c.text,
                            completion_tokens=len(c.tokens), finish_reason=c.finish_reason)
                   for j, c in enumerate(cs)]
        results[b].records = {"proposals.jsonl": records}
        results[b].tokens = sum(p.completion_tokens for p in records)
        results[b].counters.update(proposed_attempts=1, proposals=len(records),
                                   proposals_truncated=sum(c.finish_reason == "length" for c in cs))
    return results


def run(config: ConfigDict, ctx: Context | None = None) -> dict:
    if config.propose.guided_per not in GUIDED_PER:
        raise ValueError(f"config.propose.guided_per={config.propose.guided_per!r}; "
                         f"choose one of {GUIDED_PER}")
    steps = StepFormat.from_config(config.steps)
    stage = StageRun(config, STAGE, OUTPUTS, SECTIONS, inputs=("rollout",))
    if (manifest := stage.finished()) is not None:
        return manifest
    problems, attempts, left_out = rollout.failed_attempts(config)
    stage.begin()
    cfg = config.propose
    with context(config, ctx) as ctx:
        by_key = {guided_key(cfg, a): problems[a.problem_id] for a in attempts}  # in order
        stage.run_pass("guided", [Item(k, p) for k, p in by_key.items()],
                       lambda batch, seed: _guided(ctx, cfg, batch, seed), cfg.batch_size,
                       seed=config.seed)
        guided = {g.id: g for g in stage.read("guided.jsonl")}
        stage.run_pass("propose", [Item(a.id, a) for a in attempts],
                       lambda batch, seed: _propose(ctx, cfg, steps, problems, guided, batch, seed),
                       cfg.batch_size, seed=config.seed)
    return stage.finish({"left_out": left_out})


main = command(STAGE, run)
