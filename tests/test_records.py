"""Typed JSONL records: round trips, crash-torn last lines, precise errors."""

import json

import pytest

from int_jax.data.records import (EvalSample, Intervention, Problem, Proposal, RecordError,
                                  Rollout, Segment, SFTExample, append_records, read_records,
                                  write_records)

EXAMPLES = [
    Problem("p1", "Compute $1+1$.", "2", reference_solution="1+1=2", source="toy",
            meta={"category": "Algebra", "n": 3}),
    Rollout("r1", "p1", 0, "prompt", "so \\boxed{2}", prompt_tokens=5, completion_tokens=7,
            finish_reason="stop", grade="correct", answer="2"),
    Proposal("q1", "r1", "p1", 0, "raw text", location=2, content="new step"),
    Proposal("q2", "r1", "p1", 1, "garbled", rejection="unparsable"),
    Intervention("i1", "p1", "r1", "q1", location=2, content="new step", num_steps=5,
                 continuations=32, correct_continuations=3),
    SFTExample("s1", "p1", [{"role": "user", "content": "Solve"}],
               [Segment("prefix", "Step 1"), Segment("intervention", "Step 2'")],
               intervention_id="i1", rollout_id="r1", proposal_id="q1"),
    EvalSample("p1", "imo_answerbench", 3, "... \\boxed{2}", "correct", answer="2",
               num_tokens=9, finish_reason="stop"),
]


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: type(r).__name__)
def test_json_round_trip_is_stable(record):
    line = record.to_json()
    back = type(record).from_json(line)
    assert back == record
    assert back.to_json() == line and "\n" not in line


def test_file_round_trip_append_and_write(tmp_path):
    path = tmp_path / "sub" / "rollouts.jsonl"
    rollouts = [Rollout(f"r{i}", "p1", i, "x", f"\\boxed{{{i}}}") for i in range(5)]
    assert append_records(path, rollouts[:2]) == 2
    assert append_records(path, rollouts[2:]) == 3
    assert read_records(path, Rollout) == rollouts
    write_records(path, rollouts[:1])
    assert read_records(path, Rollout) == rollouts[:1]


def test_torn_last_line_is_skipped_with_warning_and_dropped_on_append(tmp_path):
    path = tmp_path / "p.jsonl"
    good = [Problem("a", "q", "1"), Problem("b", "q", "2")]
    append_records(path, good)
    whole = Problem("c", "q", "3").to_json()
    with open(path, "a") as f:
        f.write(whole[: len(whole) // 2])  # a crash mid-write
    with pytest.warns(UserWarning, match=r"p\.jsonl:3: skipping a cut-off last line"):
        assert read_records(path, Problem) == good
    with pytest.warns(UserWarning, match="dropping a cut-off last line"):
        append_records(path, [Problem("d", "q", "4")])
    assert [p.id for p in read_records(path, Problem)] == ["a", "b", "d"]


def test_malformed_middle_line_is_an_error_naming_file_line_field(tmp_path):
    path = tmp_path / "p.jsonl"
    append_records(path, [Problem("a", "q", "1")])
    with open(path, "a") as f:
        f.write(json.dumps({"id": "b", "problem": "q"}) + "\n")  # no answer
    append_records(path, [Problem("c", "q", "3")])
    with pytest.raises(RecordError) as e:
        read_records(path, Problem)
    assert (e.value.line, e.value.field) == (2, "answer")
    assert f"{path}:2: field 'answer'" in str(e.value)


def test_bad_json_in_middle_and_complete_bad_last_line_are_errors(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(Problem("a", "q", "1").to_json() + "\n{not json\n"
                    + Problem("c", "q", "3").to_json() + "\n")
    with pytest.raises(RecordError, match=r"p\.jsonl:2: invalid JSON"):
        read_records(path, Problem)
    # a last line that ends in a newline was written whole: malformed means corrupt
    path.write_text(Problem("a", "q", "1").to_json() + "\n{\"id\": \"b\"}\n")
    with pytest.raises(RecordError, match=r":2: field 'problem'"):
        read_records(path, Problem)


def test_unknown_fields_wrong_types_and_bad_values_are_errors():
    with pytest.raises(RecordError, match="field 'extra': unknown field"):
        Problem.from_dict({"id": "a", "problem": "q", "answer": "1", "extra": 1})
    with pytest.raises(RecordError, match="field 'sample_index': expected int, got str"):
        Rollout.from_dict({"id": "r", "problem_id": "p", "sample_index": "0",
                           "prompt": "", "completion": ""})
    with pytest.raises(RecordError, match="field 'sample_index': expected int, got bool"):
        EvalSample.from_dict({"problem_id": "p", "benchmark": "b", "sample_index": True,
                              "text": "", "grade": "wrong"})
    with pytest.raises(RecordError, match="field 'grade': unknown grade 'right'"):
        EvalSample.from_dict({"problem_id": "p", "benchmark": "b", "sample_index": 0,
                              "text": "", "grade": "right"})
    with pytest.raises(RecordError, match=r"field 'segments\[1\]\.kind': unknown segment kind"):
        SFTExample.from_dict({"id": "s", "problem_id": "p", "messages": [],
                              "segments": [{"kind": "prefix", "text": "a"},
                                           {"kind": "hint", "text": "b"}]})
    with pytest.raises(RecordError, match=r"field 'segments\[0\]\.text': missing required"):
        SFTExample.from_dict({"id": "s", "problem_id": "p", "messages": [],
                              "segments": [{"kind": "prefix"}]})
