"""The InT pipeline end to end: scripted success path (exact counts, provenance of
every SFT example), the baselines' data, skipping finished stages, config checks."""

import importlib.util
import json
from pathlib import Path

import pytest

from int_jax.data.records import (Continuation, Intervention, Problem, Proposal, RecordError,
                                  Rollout, SFTExample, read_records)
from int_jax.stages import base, demo, reference, reflect, rollout

ROOT = Path(__file__).resolve().parents[1]


def load_config(file: str, arg: str):
    spec = importlib.util.spec_from_file_location("_cfg", ROOT / "configs" / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def scripted_config(tmp_path, name="t"):
    c = load_config("demo.py", "scripted")
    c.run.root = str(tmp_path / "runs")
    c.run.name = name
    c.run.progress = False
    c.run.fsync = False
    c.data.problems = str(tmp_path / "problems.jsonl")
    c.sampler.script = str(tmp_path / "script.jsonl")
    return c


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scripted")
    config = scripted_config(tmp)
    report = demo.run(config)
    return config, report


def test_counts_of_the_scripted_run(scripted_run):
    _, report = scripted_run
    c = report["counts"]
    # 5 problems x n=2; `pow2` is solved by both attempts; 4 problems fail twice.
    assert (c["problems"], c["attempts"], c["correct_attempts"], c["failed_attempts"]) == (5, 10, 2, 8)
    # One reference-guided solution per failed attempt (the authors' default).
    assert c["hard_problems"] == 4 and c["guided_solutions"] == 8
    # k=2 proposals per failed attempt.
    assert c["attempts_sent_to_proposer"] == 8 and c["proposals"] == 16 and c["skipped_context"] == 0
    # Per attempt: sum10 [leaky, ok]; linear [no block, ok after repair];
    # divisors36 [location 7 of 3, leaky]; coins [leaky, ok].
    assert c["rejected"] == {"leaky": 6, "no_block": 2, "location_out_of_range": 2}
    # Both leak tests agree on these proposals (the gold as written, or `9` in "(2+1)(2+1) = 9").
    assert c["leaky_by_test"] == {"substring": 6, "normalized": 6}
    assert (c["parsed"], c["parsed_strict"], c["parsed_repaired"]) == (14, 12, 2)
    assert c["kept_interventions"] == 6
    # Continuations (m=2): sum10 2/2, linear 1/2, coins 0/2 -> coins dropped by select.
    assert c["with_correct_continuation"] == 4 and c["sft_examples"] == 4
    assert c["problems_covered"] == 2
    t = report["table1"]
    assert t["intervention"]["accuracy"] == pytest.approx(6 / 12)
    assert t["intervention"]["coverage_interventions"] == pytest.approx(4 / 6)
    for cond in ("problem", "prefix", "original"):
        assert t[cond]["continuations"] == 12 and t[cond]["correct"] == 0


def test_provenance_of_every_sft_example(scripted_run):
    config, _ = scripted_run
    d = Path(config.run.root) / config.run.name
    problems = {p.id: p for p in read_records(d / "rollout" / "problems.jsonl", Problem)}
    rollouts = {r.id: r for r in read_records(d / "rollout" / "rollouts.jsonl", Rollout)}
    proposals = {p.id: p for p in read_records(d / "propose" / "proposals.jsonl", Proposal)}
    checks = {p.id: p for p in read_records(d / "filter" / "checks.jsonl", Proposal)}
    interventions = {i.id: i for i in read_records(d / "filter" / "interventions.jsonl", Intervention)}
    counted = {i.id: i for i in read_records(d / "select" / "interventions.jsonl", Intervention)}
    conts = {c.intervention_id: c
             for c in read_records(d / "continue" / "continuations.jsonl", Continuation)
             if c.condition == "intervention"}
    sft = read_records(d / "select" / "sft.jsonl", SFTExample)
    assert len(sft) == 4
    assert counted.keys() == interventions.keys()
    for ex in sft:
        iv = interventions[ex.intervention_id]
        prop = proposals[ex.proposal_id]
        attempt = rollouts[ex.rollout_id]
        problem = problems[ex.problem_id]
        assert iv.proposal_id == prop.id and prop.rollout_id == attempt.id
        assert iv.rollout_id == attempt.id and iv.problem_id == problem.id
        assert attempt.problem_id == problem.id and not attempt.correct
        assert conts[iv.id].num_correct >= 1
        assert (counted[iv.id].continuations, counted[iv.id].correct_continuations) == \
            (conts[iv.id].m, conts[iv.id].num_correct) == (2, ex.meta["continuations_correct"])
        # The kept proposal survived the filter and its parse is the intervention.
        check = checks[prop.id]
        assert check.rejection is None and check.text == prop.text
        assert (check.location, check.content.strip()) == (iv.location, iv.content)
        # The prompt is the problem exactly as the rollouts saw it.
        assert ex.messages == [{"role": "user", "content": ex.messages[0]["content"]}]
        assert ex.messages[0]["content"].startswith(problem.problem)
        assert ex.messages[0]["content"] in attempt.prompt
        # Segments rebuild the attempt with the wrong step replaced, as the authors build
        # the guided prefix: raw split on blank lines, separator before the intervention.
        steps = attempt.completion.split("\n\n")
        kinds = [s.kind for s in ex.segments]
        texts = {s.kind: s.text for s in ex.segments}
        loc = iv.location
        assert kinds == ["prefix", "intervention", "suffix"]
        trained = texts["prefix"] + texts["intervention"]
        assert trained == "\n\n".join(steps[:loc - 1]) + "\n\n" + iv.content
        assert texts["suffix"] == "\n\n" + "\n\n".join(steps[loc:])
        assert problem.answer not in texts["intervention"]


def test_sft_examples_encode_with_the_trainer_tokenisation(scripted_run):
    from int_jax.data.tokenize import encode_example
    from int_jax.data.tokenizer import load_tokenizer

    config, _ = scripted_run
    tok = load_tokenizer()
    for ex in read_records(Path(config.run.root) / config.run.name / "select" / "sft.jsonl", SFTExample):
        enc = encode_example(tok, ex.messages, [(s.kind, s.text) for s in ex.segments])
        kinds = [s.kind for s in enc.spans]
        assert "suffix" not in kinds and "intervention" in kinds  # suffix not trained by default


def test_finished_stages_are_skipped_and_outputs_unchanged(scripted_run):
    config, _ = scripted_run
    d = Path(config.run.root) / config.run.name
    before = {p: p.read_bytes() for p in d.rglob("*.jsonl")}
    demo.run(config)
    assert {p: p.read_bytes() for p in d.rglob("*.jsonl")} == before


def test_changed_config_on_a_finished_stage_is_an_error(scripted_run):
    config, _ = scripted_run
    changed = config.copy_and_resolve_references()
    changed.rollout.n = 3
    with pytest.raises(base.StageError, match="different config"):
        rollout.run(changed)


def test_baseline_data(scripted_run):
    config, _ = scripted_run
    ref = reference.run(config)
    assert ref["counts"]["reference"] == {"kept": 5, "problems": 5}
    refl = reflect.run(config)
    # The reflect chat holds the reference solution, so the script answers it correctly.
    assert refl["counts"]["reflect"]["rewrites"] == 8 and refl["counts"]["reflect"]["kept"] == 8
    d = Path(config.run.root) / config.run.name
    rollouts = {r.id for r in read_records(d / "rollout" / "rollouts.jsonl", Rollout)}
    reflections = {r.id: r for r in read_records(d / "reflect" / "reflections.jsonl", Rollout)}
    for ex in read_records(d / "reflect" / "sft.jsonl", SFTExample):
        assert [s.kind for s in ex.segments] == ["response"]
        assert ex.rollout_id in rollouts
        rewrite = reflections[ex.meta["reflection_id"]]
        assert rewrite.meta["rollout_id"] == ex.rollout_id and rewrite.correct
        assert ex.segments[0].text == rewrite.completion


def test_a_stage_before_its_input_says_what_to_run(tmp_path):
    from int_jax.stages import continuation

    config = scripted_config(tmp_path)
    with pytest.raises(base.StageError, match="run `int-jax rollout`"):
        continuation.run(config)


def test_bad_problem_file_names_file_and_field(tmp_path):
    config = scripted_config(tmp_path)
    Path(config.data.problems).write_text(json.dumps({"id": "a", "problem": "1+1?"}) + "\n")
    with pytest.raises(ValueError, match=r"problems\.jsonl.*1.*answer"):
        rollout.run(config)


def test_malformed_line_in_a_stage_input_names_file_line_and_field(tmp_path):
    config = scripted_config(tmp_path)
    demo.prepare(config)
    rollout.run(config)
    path = base.stage_dir(config, "rollout") / "rollouts.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    bad = json.loads(lines[2])
    bad["completion_tokens"] = "many"
    lines[2] = json.dumps(bad) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    from int_jax.stages import propose

    with pytest.raises(RecordError, match=r"rollouts\.jsonl:3: field 'completion_tokens'"):
        propose.run(config)
    assert not base.stage_dir(config, "propose").exists()  # nothing started, nothing half-written
    # A cut-off last line would be skipped by a plain reader; a stage input is checked
    # against its manifest instead, so no attempt goes missing silently.
    path.write_text("".join(lines[:2]) + lines[-1][:40], encoding="utf-8")
    with pytest.raises(base.StageError, match=r"rollouts\.jsonl: 2 records .* finished with 10"):
        propose.run(config)


def test_chats_over_the_context_limit_are_skipped_and_counted(tmp_path):
    from int_jax.stages import propose, reflect

    config = scripted_config(tmp_path)
    config.propose.context_limit = config.reflect.context_limit = 64  # every chat is longer
    demo.prepare(config)
    rollout.run(config)
    counts = propose.run(config)["counts"]["propose"]
    assert counts == {"attempts": 8, "skipped_context": 8}  # no proposal, no sampler call
    assert base.stage_dir(config, "propose").joinpath("proposals.jsonl").read_bytes() == b""
    assert reflect.run(config)["counts"]["reflect"] == {"attempts": 8, "skipped_context": 8}


def test_stats_counts_as_sent_to_the_proposer_only_the_chats_within_the_limit(tmp_path):
    from int_jax.stages import propose, stats

    config = scripted_config(tmp_path)
    config.rollout.n = 1
    # One problem's reference solution (part of its proposer chat) is far over the limit.
    padding = " Independent events: the probability of both is the product." * 600
    problems = [dict(p, reference_solution=p["reference_solution"] + padding) if p["id"] == "coins"
                else p for p in demo.PROBLEMS]
    demo._write_jsonl(Path(config.data.problems), problems)
    demo._write_jsonl(Path(config.sampler.script), demo.script_rules(problems))
    rollout.run(config)
    propose.run(config)
    counts = stats.run(config)["counts"]
    assert (counts["failed_attempts"], counts["skipped_context"]) == (4, 1)
    assert counts["attempts_sent_to_proposer"] == 3 and counts["proposals"] == 3 * 2
