"""rollout -> propose -> filter -> continue -> select on a random tiny Qwen3 through
the real JetStream engine. Random weights write no parsable intervention, so the
counts must account for every proposal as a rejection (and the stages after the
filter run on nothing); provenance is checked for whatever survives."""

from pathlib import Path

import pytest

from int_jax.stages import base, continuation, demo, filter as filter_stage, propose, rollout, select, stats
from int_jax.stages.base import read_jsonl
from int_jax.stages.common import context

from test_stages_pipeline import load_config


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine")
    c = load_config("int.py", "tiny")
    c.run.root, c.run.name, c.run.progress, c.run.fsync = str(tmp / "runs"), "e2e", False, False
    c.data.problems = str(tmp / "problems.jsonl")
    demo._write_jsonl(Path(c.data.problems), demo.PROBLEMS[:2])
    c.rollout.n, c.propose.k, c.continuation.m = 2, 2, 1
    for section in (c.rollout, c.propose, c.continuation):
        section.max_new_tokens = 12
    c.propose.guided_max_new_tokens = 12
    # Two prefill buckets bound compilation (the proposer chat is ~600 tokens).
    c.sampler.buckets, c.sampler.max_len, c.sampler.max_prefill_length = (128, 704), 720, 704
    with context(c) as ctx:
        for module in (rollout, propose, filter_stage, continuation, select):
            module.run(c, ctx)
    return c, stats.run(c)


def test_counts_account_for_every_item(engine_run):
    config, report = engine_run
    c = report["counts"]
    d = Path(config.run.root) / config.run.name
    rollouts = read_jsonl(d / "rollout" / "rollouts.jsonl")
    assert len(rollouts) == c["attempts"] == 4
    assert all(r["finish_reason"] in ("stop", "length") and r["num_tokens"] <= 12 for r in rollouts)
    assert c["failed_attempts"] == sum(not r["correct"] for r in rollouts)
    eligible = c["failed_attempts"] - c["failed_empty"]
    assert c["attempts_sent_to_proposer"] == eligible
    assert c["proposals"] == 2 * (eligible - c["skipped_context"])
    proposals = read_jsonl(d / "propose" / "proposals.jsonl")
    assert len(proposals) == c["proposals"]
    checks = read_jsonl(d / "filter" / "checks.jsonl")
    assert [x["id"] for x in checks] == [p["id"] for p in proposals]
    rejected = sum(c["rejected"].values())
    survived = sum(x["reason"] is None for x in checks)
    assert rejected + survived == c["proposals"]
    assert c["kept_interventions"] == len(read_jsonl(d / "filter" / "interventions.jsonl")) <= survived
    conts = read_jsonl(d / "continue" / "continuations.jsonl")
    assert len(conts) == 4 * c["kept_interventions"]
    assert c["sft_examples"] == len(read_jsonl(d / "select" / "sft.jsonl")) <= c["kept_interventions"]


def test_random_model_text_is_mostly_rejected(engine_run):
    _, report = engine_run
    c = report["counts"]
    assert c["proposals"] > 0
    assert c["rejected"].get("no_block", 0) + c["rejected"].get("unparsable", 0) >= c["proposals"] // 2


def test_provenance_of_surviving_examples(engine_run):
    config, _ = engine_run
    d = Path(config.run.root) / config.run.name
    rollouts = {r["id"]: r for r in read_jsonl(d / "rollout" / "rollouts.jsonl")}
    proposals = {p["id"]: p for p in read_jsonl(d / "propose" / "proposals.jsonl")}
    for ex in read_jsonl(d / "select" / "sft.jsonl"):
        assert proposals[ex["proposal_id"]]["rollout_id"] == ex["rollout_id"]
        assert rollouts[ex["rollout_id"]]["problem_id"] == ex["problem_id"]


def test_every_stage_wrote_a_manifest(engine_run):
    config, _ = engine_run
    for stage in ("rollout", "propose", "filter", "continue", "select"):
        assert base.read_manifest(base.stage_dir(config, stage)) is not None
