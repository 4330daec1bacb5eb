"""rollout -> propose -> filter -> continue -> select on a random tiny Qwen3 through
the real JetStream engine. Random weights write no parsable intervention, so the
counts must account for every proposal as a rejection (and the stages after the
filter run on nothing: the provenance of SFT examples is checked where there are
some, on the scripted run of test_stages_pipeline.py). Then the rollout stage is
SIGKILLed mid-way in a subprocess (the same engine, model and device count) and
resumed, and must write exactly what the uninterrupted run wrote."""

import os
from pathlib import Path

import pytest

from int_jax.config_io import save_config
from int_jax.data.records import Continuation, Intervention, Proposal, Rollout, SFTExample, read_records
from int_jax.stages import base, continuation, demo, filter as filter_stage, propose, rollout, select, stats
from int_jax.stages.common import context

from test_stages_pipeline import ROOT, load_config
from test_stages_resume import INT_JAX, _kill_midway, _outputs


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine")
    c = load_config("int.py", "tiny")
    c.run.root, c.run.name, c.run.progress, c.run.fsync = str(tmp / "runs"), "e2e", False, False
    c.data.problems = str(tmp / "problems.jsonl")
    demo._write_jsonl(Path(c.data.problems), demo.PROBLEMS[:2])
    c.rollout.n, c.propose.k, c.continuation.m = 2, 2, 1
    c.rollout.batch_size = 1  # two commits, so the kill-and-resume test can land between them
    for section in (c.rollout, c.propose, c.continuation):
        section.max_new_tokens = 12
    c.propose.guided_max_new_tokens = 12
    # Two prefill buckets bound compilation (the proposer chat is ~600 tokens).
    c.sampler.buckets, c.sampler.max_len, c.sampler.max_prefill_length = (128, 704), 720, 704
    with context(c) as ctx:
        for module in (rollout, propose, filter_stage, continuation, select):
            module.run(c, ctx)
        yield c, stats.run(c), ctx


def test_counts_account_for_every_item(engine_run):
    config, report, _ = engine_run
    c = report["counts"]
    d = Path(config.run.root) / config.run.name
    rollouts = read_records(d / "rollout" / "rollouts.jsonl", Rollout)
    assert len(rollouts) == c["attempts"] == 4
    assert all(r.finish_reason in ("stop", "length") and r.completion_tokens <= 12 for r in rollouts)
    assert c["failed_attempts"] == sum(not r.correct for r in rollouts)
    eligible = c["failed_attempts"] - c["failed_empty"]
    assert c["attempts_sent_to_proposer"] == eligible
    assert c["proposals"] == 2 * (eligible - c["skipped_context"])
    proposals = read_records(d / "propose" / "proposals.jsonl", Proposal)
    assert len(proposals) == c["proposals"]
    checks = read_records(d / "filter" / "checks.jsonl", Proposal)
    assert [x.id for x in checks] == [p.id for p in proposals]
    assert [x.text for x in checks] == [p.text for p in proposals]
    rejected = sum(c["rejected"].values())
    survived = sum(x.rejection is None for x in checks)
    assert rejected + survived == c["proposals"]
    interventions = read_records(d / "filter" / "interventions.jsonl", Intervention)
    assert c["kept_interventions"] == len(interventions) <= survived
    conts = read_records(d / "continue" / "continuations.jsonl", Continuation)
    assert len(conts) == 4 * c["kept_interventions"]
    sft = read_records(d / "select" / "sft.jsonl", SFTExample)
    assert c["sft_examples"] == len(sft) <= c["kept_interventions"]


def test_random_model_text_is_mostly_rejected(engine_run):
    _, report, _ = engine_run
    c = report["counts"]
    assert c["proposals"] > 0
    assert c["rejected"].get("no_block", 0) + c["rejected"].get("unparsable", 0) >= c["proposals"] // 2


def test_every_stage_wrote_a_manifest(engine_run):
    config, _, _ = engine_run
    for stage in ("rollout", "propose", "filter", "continue", "select"):
        assert base.read_manifest(base.stage_dir(config, stage)) is not None


def test_rollout_killed_and_resumed_through_the_engine(engine_run, tmp_path):
    """The first batch comes from a process that is then SIGKILLed, the second from the
    resumed run in this process; sampling is seeded per batch (by its position in the
    fixed item list) and per request, so the bytes equal the uninterrupted run's."""
    config, _, ctx = engine_run
    killed = config.copy_and_resolve_references()
    killed.run.name = "killed"
    saved = save_config(killed, tmp_path)
    d = base.stage_dir(killed, "rollout")
    env = {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}  # XLA_FLAGS (8 devices) is inherited
    _kill_midway([INT_JAX, "rollout", f"--config={ROOT / 'configs' / 'saved.py'}:{saved}",
                  "--config.sampler.delay_s=1.0"], d, after_commits=1, total=2, env=env)
    resumed = rollout.run(killed, ctx)
    straight = base.stage_dir(config, "rollout")
    assert _outputs(d) == _outputs(straight)
    assert resumed["counts"] == base.read_manifest(straight)["counts"]
    assert resumed["counts"]["rollout"]["attempts"] == 4  # 2 problems x n=2, none twice
