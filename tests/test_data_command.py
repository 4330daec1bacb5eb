"""`int-jax data prepare`: benchmark files in, the Problem records the stages read out."""

from pathlib import Path

import pytest
from ml_collections import ConfigDict

from int_jax.data import command
from int_jax.data.benchmarks import load_benchmark
from int_jax.data.records import Problem, RecordError, read_records

FIX = Path(__file__).parent / "fixtures"


def test_prepare_writes_problem_records_and_counts_repeats(tmp_path, capsys):
    out = tmp_path / "problems.jsonl"
    assert command.main(ConfigDict(), ["prepare", "int_hard", str(FIX / "int_hard_duplicates.jsonl"),
                                       str(out)]) == 0
    written = read_records(out, Problem)
    loaded = load_benchmark("int_hard", FIX / "int_hard_duplicates.jsonl")
    assert [p.to_json() for p in written] == [p.to_json() for p in loaded]
    assert loaded.duplicates > 0 and len({p.id for p in written}) == len(written)
    said = capsys.readouterr().out
    assert f"{len(written)} problems" in said
    assert f"{loaded.duplicates} repeated problems dropped" in said


@pytest.mark.parametrize("name,file", [("imo_answerbench", "imo_answerbench_sample.csv"),
                                       ("amo_bench", "amo_bench_sample.jsonl"),
                                       ("apex_shortlist", "apex_shortlist_sample.csv")])
def test_prepare_reads_each_benchmark_format(tmp_path, name, file):
    out = tmp_path / "p.jsonl"
    assert command.main(ConfigDict(), ["prepare", name, str(FIX / file), str(out)]) == 0
    assert [p.id for p in read_records(out, Problem)] == [p.id for p in load_benchmark(name, FIX / file)]


def test_a_bad_input_leaves_the_output_as_it_was(tmp_path):
    out = tmp_path / "p.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(RecordError, match=r"imo_answerbench_missing_answer\.csv:3"):
        command.main(ConfigDict(), ["prepare", "imo_answerbench",
                                    str(FIX / "imo_answerbench_missing_answer.csv"), str(out)])
    assert out.read_text() == "keep me\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_usage_and_unknown_names(tmp_path, capsys):
    assert command.main(ConfigDict(), ["prepare", "nope", "a.csv", str(tmp_path / "o.jsonl")]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert command.main(ConfigDict(), ["prepare", "int_hard"]) == 2
    assert "int-jax data prepare NAME FILE OUT.jsonl" in capsys.readouterr().err
