"""A stage records the manifests of the stages it read and refuses to serve (or resume)
outputs made from inputs that were rerun since: no silent stale reuse."""

import json
import shutil

import pytest
from ml_collections import ConfigDict

from int_jax.data.records import Record
from int_jax.stages import base, continuation, demo, filter as filter_stage, propose, rollout, stats
from int_jax.stages.base import StageError, StageRun

from test_stages_pipeline import scripted_config


def _rerun_propose_with_other_settings(config):
    """Delete the propose folder and run propose again with k=1 (filter's and continue's own
    config sections do not change)."""
    changed = config.copy_and_resolve_references()
    changed.propose.k = 1
    shutil.rmtree(base.stage_dir(config, "propose"))
    propose.run(changed)
    return changed


@pytest.fixture
def through_filter(tmp_path):
    config = scripted_config(tmp_path)
    demo.prepare(config)
    for module in (rollout, propose, filter_stage):
        module.run(config)
    return config


def test_filter_refuses_after_propose_was_rerun(through_filter):
    config = _rerun_propose_with_other_settings(through_filter)
    d = base.stage_dir(config, "filter")
    with pytest.raises(StageError) as e:
        filter_stage.run(config)
    msg = str(e.value)
    assert msg.startswith(f"{d}: input stage 'propose' changed since this stage ran")
    assert f"rerun `int-jax filter` after deleting {d}" in msg and "--config.run.name" in msg
    assert "\n" not in msg
    # Deleting the stale folder, as the message says, rebuilds it from the new proposals.
    shutil.rmtree(d)
    assert filter_stage.run(config)["counts"]["filter"]["proposals"] == 8  # k=1 x 8 attempts


def test_a_partial_filter_run_is_not_resumed_on_other_proposals(through_filter):
    d = base.stage_dir(through_filter, "filter")
    (d / base.MANIFEST).unlink()  # as if it died after its last commit
    config = _rerun_propose_with_other_settings(through_filter)
    with pytest.raises(StageError, match=r"/filter: input stage 'propose' changed since this "
                                         r"stage's partial outputs were written"):
        filter_stage.run(config)


def test_unchanged_inputs_still_skip_the_finished_stage(through_filter):
    before = (base.stage_dir(through_filter, "filter") / base.MANIFEST).read_bytes()
    manifest = filter_stage.run(through_filter)
    assert manifest["inputs"].keys() == {"rollout", "propose"}
    assert (base.stage_dir(through_filter, "filter") / base.MANIFEST).read_bytes() == before


def test_a_stale_stage_upstream_is_named_by_the_stages_after_it_and_by_stats(through_filter):
    continuation.run(through_filter)
    config = _rerun_propose_with_other_settings(through_filter)
    # continue's own inputs (rollout, filter) are unchanged, but filter is stale.
    for run in (continuation.run, stats.run):
        with pytest.raises(StageError, match=r"/filter: input stage 'propose' changed .*"
                                             r"rerun `int-jax filter`"):
            run(config)


# -- the mechanism: a stage must declare every stage it reads ----------------------


def _fake_finished_stage(config, name):
    d = base.stage_dir(config, name)
    d.mkdir(parents=True)
    (d / base.MANIFEST).write_text(json.dumps({"stage": name, "outputs": {}}) + "\n")


def _toy(tmp_path):
    return ConfigDict(dict(run=dict(root=str(tmp_path), name="toy", progress=False, fsync=False),
                           toy=dict(k=1)))


def test_reading_an_undeclared_stage_is_an_error(tmp_path):
    config = _toy(tmp_path)
    _fake_finished_stage(config, "up")
    stage = StageRun(config, "toy", {"a.jsonl": Record}, ("toy",))
    base.require(config, "up")
    with pytest.raises(StageError, match=r"stage 'toy' read stage 'up' .* inputs=\("):
        stage.begin()


def test_declared_inputs_are_recorded_and_checked(tmp_path):
    config = _toy(tmp_path)
    _fake_finished_stage(config, "up")
    stage = StageRun(config, "toy", {"a.jsonl": Record}, ("toy",), inputs=("up",))
    base.require(config, "up")
    stage.begin()
    manifest = stage.finish()
    assert manifest["inputs"] == {"up": base.manifest_fingerprint(base.stage_dir(config, "up"))}
    assert StageRun(config, "toy", {"a.jsonl": Record}, ("toy",), inputs=("up",)).finished()
    (base.stage_dir(config, "up") / base.MANIFEST).unlink()
    with pytest.raises(StageError, match=r"input stage 'up' has no manifest\.json now"):
        StageRun(config, "toy", {"a.jsonl": Record}, ("toy",), inputs=("up",)).finished()
