"""Benchmark loaders: each fixture format maps to the right Problem records."""

import json
from pathlib import Path

import pytest

from int_jax.data.benchmarks import BENCHMARKS, fetch, load_benchmark, load_problems
from int_jax.data.records import RecordError

FIX = Path(__file__).parent / "fixtures"


def test_imo_answerbench_csv_with_multiline_cells():
    ps = load_benchmark("imo_answerbench", FIX / "imo_answerbench_sample.csv")
    assert [p.id for p in ps] == ["imo-bench-algebra-010", "imo-bench-number-002",
                                  "imo-bench-algebra-006"]
    assert ps[0].problem == "Find all real $x$ such that\n$27x^3 = 12x$."
    assert ps[0].answer == r"$-\frac{2}{3},0,\frac{2}{3}$"
    assert ps[0].source == "Made up"
    assert ps[0].meta == {"Category": "Algebra", "Subcategory": "Equation"}
    assert ps[2].answer == "$P(x)=-1, P(x)=x+1$"
    assert all(p.reference_solution is None for p in ps)


def test_imo_answerbench_empty_answer_names_file_line_field():
    path = FIX / "imo_answerbench_missing_answer.csv"
    with pytest.raises(RecordError) as e:
        load_benchmark("imo_answerbench", path)
    # the bad record starts on line 3 (its problem cell spans lines 3-4)
    assert (e.value.line, e.value.field) == (3, "answer")
    assert str(path) in str(e.value) and ":3:" in str(e.value)


def test_amo_bench_jsonl():
    ps = load_benchmark("amo_bench", FIX / "amo_bench_sample.jsonl")
    assert [p.id for p in ps] == ["amo-1", "amo-2"]
    assert ps[1].problem == "Find all $x$ with $x^2=4$."
    assert ps[1].answer == r"\boxed{-2, 2}"
    assert ps[1].reference_solution == r"$x=\pm 2$."
    assert ps[1].meta == {"answer_type": "set"} and ps[1].source == "AMO-Bench"


def test_amo_bench_missing_field_names_file_and_line():
    path = FIX / "amo_bench_missing_field.jsonl"
    with pytest.raises(RecordError, match=r"amo_bench_missing_field\.jsonl:2: field 'answer'"):
        load_benchmark("amo_bench", path)


def test_matharena_hmmt_jsonl_and_apex_csv():
    hmmt = load_benchmark("hmmt_nov_2025", FIX / "hmmt_nov_2025_sample.jsonl")
    assert [(p.id, p.answer) for p in hmmt] == [("hmmt-nov-2025-1", r"2\sqrt{2}"),
                                                ("hmmt-nov-2025-2", r"\frac{3}{2}")]
    assert hmmt[0].source == "HMMT November 2025 General #1"
    apex = load_benchmark("apex_shortlist", FIX / "apex_shortlist_sample.csv")
    assert [(p.id, p.answer) for p in apex] == [("apex-shortlist-1", "(1,3]"),
                                                ("apex-shortlist-2", "1024")]


def test_matharena_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"problem_idx": [3, 4], "problem": ["A?", "B?"],
                      "answer": ["7", r"\frac{1}{2}"], "source": ["s3", "s4"]})
    pq.write_table(table, tmp_path / "hmmt.parquet")
    ps = load_benchmark("hmmt_nov_2025", tmp_path / "hmmt.parquet")
    assert [(p.id, p.problem, p.answer, p.source) for p in ps] == [
        ("hmmt-nov-2025-3", "A?", "7", "s3"), ("hmmt-nov-2025-4", "B?", r"\frac{1}{2}", "s4")]


def test_int_hard_set_ids_are_stable_hashes():
    ps = load_benchmark("int_hard", FIX / "int_hard_sample.jsonl")
    again = load_benchmark("int_hard", FIX / "int_hard_sample.jsonl")
    assert [p.id for p in ps] == [p.id for p in again]
    assert len({p.id for p in ps}) == 2 and all(p.id.startswith("int-hard-") for p in ps)
    assert ps[0].reference_solution.startswith("List them")
    assert ps[0].meta == {"solution": "1,2,3,4,6,12.", "reference_solution_source": "human"}


def test_generic_mapping_and_registry_override():
    mapping = {"id": "qid", "problem": "question", "answer": "final", "meta": ["topic"]}
    ps = load_benchmark("my_set", FIX / "generic_sample.csv", **mapping)
    assert [(p.id, p.answer, p.source, p.meta) for p in ps] == [
        ("g1", "12", "my_set", {"topic": "arith"}), ("g2", r"\frac{5}{2}", "my_set", {"topic": "arith"})]
    with pytest.raises(RecordError, match=r"generic_sample\.csv:2: field 'answer': missing column 'nope'"):
        load_problems(FIX / "generic_sample.csv", {"problem": "question", "answer": "nope"})
    with pytest.raises(KeyError):
        load_benchmark("not_registered", FIX / "generic_sample.csv")
    with pytest.raises(ValueError, match="unknown fields"):
        load_problems(FIX / "generic_sample.csv", {"problem": "question", "answer": "final",
                                                   "bogus": "x"})


def test_fetch_unknown_benchmark_is_a_clear_error(tmp_path):
    assert "amo_bench" in BENCHMARKS
    with pytest.raises(ValueError, match="no download location"):
        fetch("int_hard", tmp_path)


def test_int_hard_set_keeps_the_first_of_repeated_problems_and_counts_the_rest(caplog):
    # Rows 3 and 4 repeat the problems of rows 1 and 2 (row 3 with another reference).
    path = FIX / "int_hard_duplicates.jsonl"
    with caplog.at_level("WARNING", logger="int_jax.data.benchmarks"):
        ps = load_benchmark("int_hard", path)
    assert [p.id for p in ps] == [p.id for p in load_benchmark("int_hard", FIX / "int_hard_sample.jsonl")]
    assert ps[0].reference_solution.startswith("List them")  # the first row wins
    assert ps.duplicates == 2
    assert any(str(path) in r.getMessage() and "2 repeated" in r.getMessage() for r in caplog.records)
    assert load_benchmark("int_hard", FIX / "int_hard_sample.jsonl").duplicates == 0


def test_a_repeated_id_column_value_is_still_an_error(tmp_path):
    path = tmp_path / "amo.jsonl"
    row = {"question_id": 1, "prompt": "A?", "answer": "1", "solution": "s", "answer_type": "n"}
    path.write_text(json.dumps(row) + "\n" + json.dumps(dict(row, prompt="B?")) + "\n")
    with pytest.raises(RecordError, match=r"amo\.jsonl:2: field 'id': duplicate problem id 'amo-1'"):
        load_benchmark("amo_bench", path)
