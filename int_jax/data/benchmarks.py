"""Benchmark and training-problem loaders: local files -> ``Problem`` records.

Each known format is a field mapping (record field -> column) over a generic row
reader for JSONL / JSON / CSV / Parquet, so a new benchmark is a registry entry or a
mapping in a config, not new code. A missing column or empty required value is an
error naming the file, the line (row, for Parquet) and the field.

A set without an id column (the InT hard set) gets ids that hash the problem
text, so a problem written twice is the same problem: the first row is kept, the
repeats are dropped, logged and counted (``Problems.duplicates``). A repeated
value of an id column is still an error: two problems would share one id.

Only ``fetch`` touches the network (the Hugging Face hub); everything else reads
local paths.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from int_jax.data.records import Problem, RecordError

log = logging.getLogger(__name__)

# Record fields a mapping may name; "meta" maps to a list of columns kept verbatim.
_REQUIRED = ("problem", "answer")
_OPTIONAL = ("id", "reference_solution", "source")


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """How one benchmark's files map to ``Problem`` records, and where it lives."""

    mapping: Mapping[str, Any]
    id_prefix: str = ""
    source: str = ""  # default ``Problem.source`` when the file has no source column
    hf_repo: str | None = None  # Hugging Face dataset repo for ``fetch``
    hf_split: str = "train"
    url: str | None = None  # or a direct download of the one file, for ``fetch``


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "imo_answerbench": BenchmarkSpec(
        {"id": "Problem ID", "problem": "Problem", "answer": "Short Answer",
         "source": "Source", "meta": ["Category", "Subcategory"]},
        source="IMO-AnswerBench",
        url="https://raw.githubusercontent.com/google-deepmind/superhuman/main/imobench/"
            "answerbench.csv",
    ),
    "amo_bench": BenchmarkSpec(
        {"id": "question_id", "problem": "prompt", "answer": "answer",
         "reference_solution": "solution", "meta": ["answer_type"]},
        id_prefix="amo-", source="AMO-Bench",
        hf_repo="meituan-longcat/AMO-Bench", hf_split="test",
    ),
    "hmmt_nov_2025": BenchmarkSpec(
        {"id": "problem_idx", "problem": "problem", "answer": "answer", "source": "source"},
        id_prefix="hmmt-nov-2025-", source="HMMT November 2025",
        hf_repo="MathArena/hmmt_nov_2025",
    ),
    "apex_shortlist": BenchmarkSpec(
        {"id": "problem_idx", "problem": "problem", "answer": "answer", "source": "source"},
        id_prefix="apex-shortlist-", source="Apex Shortlist",
        hf_repo="MathArena/apex-shortlist",
    ),
    # The InT hard training set: no id column, so ids hash the problem text.
    "int_hard": BenchmarkSpec(
        {"problem": "problem", "answer": "answer", "source": "source",
         "reference_solution": "reference_solution",
         "meta": ["solution", "reference_solution_source"]},
        id_prefix="int-hard-",
    ),
}


class Problems(list):
    """The loaded ``Problem`` records (a list), with ``duplicates``: how many rows
    repeated the text of an earlier problem in a set whose ids hash the text."""

    duplicates: int = 0


def _rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(location, row) pairs; location is "line N" (file lines) or "row N" (Parquet)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecordError(f"invalid JSON ({e.msg})", path=path, line=n) from None
                if not isinstance(row, dict):
                    raise RecordError("expected a JSON object", path=path, line=n)
                yield f"{n}", row
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise RecordError("expected a JSON list of objects", path=path)
        for n, row in enumerate(data, start=1):
            yield f"item {n}", row
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            start = 2  # line 1 is the header
            for row in reader:
                if None in row:
                    raise RecordError("more cells than header columns", path=path, line=start)
                yield f"{start}", row
                start = reader.line_num + 1
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for n, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield f"row {n}", row
    else:
        raise ValueError(f"{path}: unknown file type {suffix!r} (jsonl, json, csv, tsv, parquet)")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, str) else str(value)


def load_problems(path: str | os.PathLike, mapping: Mapping[str, Any], *,
                  id_prefix: str = "", source: str = "") -> Problems:
    """Load any table as problems. ``mapping``: record field -> column name, with
    ``problem`` and ``answer`` required, ``id``, ``reference_solution`` and ``source``
    optional, and ``meta`` a list of columns copied into ``Problem.meta``."""
    path = Path(path)
    unknown = set(mapping) - set(_REQUIRED) - set(_OPTIONAL) - {"meta"}
    if unknown:
        raise ValueError(f"unknown fields in mapping: {sorted(unknown)}")
    for field in _REQUIRED:
        if field not in mapping:
            raise ValueError(f"mapping must name a column for {field!r}")
    meta_cols = list(mapping.get("meta", []))
    problems, seen = Problems(), {}
    for where, row in _rows(path):
        line = where if where.isdigit() else None

        def err(msg: str, field: str) -> RecordError:
            if line is None:
                return RecordError(f"{where}: {msg}", path=path, field=field)
            return RecordError(msg, path=path, line=int(line), field=field)

        values = {}
        for field in (*_REQUIRED, *_OPTIONAL):
            col = mapping.get(field)
            if col is None:
                continue
            if col not in row:
                raise err(f"missing column {col!r}", field)
            values[field] = _text(row[col]).strip() if field != "problem" else _text(row[col])
        for field in _REQUIRED:
            if not values[field].strip():
                raise err(f"empty value in column {mapping[field]!r}", field)
        for col in meta_cols:
            if col not in row:
                raise err(f"missing column {col!r}", "meta")
        hashed = not values.get("id")
        if hashed:
            pid = id_prefix + hashlib.sha1(values["problem"].encode()).hexdigest()[:12]
        else:
            pid = id_prefix + values["id"]
        if pid in seen:
            if not hashed:
                raise err(f"duplicate problem id {pid!r} (first at {seen[pid]})", "id")
            problems.duplicates += 1  # the same text again: keep the first row
            continue
        seen[pid] = where
        problems.append(Problem(
            id=pid,
            problem=values["problem"].strip(),
            answer=values["answer"],
            reference_solution=values.get("reference_solution") or None,
            source=values.get("source") or source,
            meta={col: row[col] for col in meta_cols},
        ))
    if problems.duplicates:
        log.warning("%s: %d repeated problems dropped (same text as an earlier row; the first is "
                    "kept), %d problems loaded", path, problems.duplicates, len(problems))
    return problems


def load_benchmark(name: str, path: str | os.PathLike, **mapping: Any) -> Problems:
    """Problems of a registered benchmark (``BENCHMARKS``) from a local file.

    Keyword arguments override the registered mapping; with an unregistered ``name``
    they are the whole mapping (the generic loader for any JSONL/CSV/Parquet table).
    """
    spec = BENCHMARKS.get(name)
    if spec is None:
        if not mapping:
            raise KeyError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)} "
                           "(or pass a field mapping)")
        return load_problems(path, mapping, source=name)
    return load_problems(path, {**spec.mapping, **mapping}, id_prefix=spec.id_prefix,
                         source=spec.source)


def fetch(name: str, out_dir: str | os.PathLike) -> Path:
    """Download a benchmark into ``out_dir``; returns the file to pass to
    ``load_benchmark``. Needs a network (and ``huggingface_hub`` for hub datasets)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = BENCHMARKS.get(name)
    if spec is not None and spec.url is not None:
        import urllib.error
        import urllib.request

        dest = out_dir / (name + Path(spec.url).suffix)
        try:
            with urllib.request.urlopen(spec.url, timeout=30) as r:
                dest.write_bytes(r.read())
        except (urllib.error.URLError, OSError) as e:
            raise RuntimeError(f"cannot download {name} from {spec.url} "
                               f"(offline?): {e}") from None
        return dest
    if spec is None or spec.hf_repo is None:
        raise ValueError(f"no download location known for {name!r}; load it from a local "
                         "file with load_benchmark(name, path)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise RuntimeError("fetching needs `huggingface_hub` (pip install huggingface_hub)") from None
    try:
        local = snapshot_download(repo_id=spec.hf_repo, repo_type="dataset",
                                  local_dir=out_dir / name, allow_patterns=["*.parquet", "*.jsonl",
                                                                            "*.csv", "*.json"])
    except Exception as e:  # the hub raises many types; all mean "not downloaded"
        raise RuntimeError(f"cannot download {name} from the Hugging Face hub "
                           f"({spec.hf_repo}; offline?): {type(e).__name__}: {e}") from None
    files = sorted(p for p in Path(local).rglob("*") if p.suffix in (".parquet", ".jsonl", ".csv")
                   and spec.hf_split in p.name)
    if len(files) != 1:
        raise RuntimeError(f"expected one {spec.hf_split} file in {local}, found {files}")
    return files[0]
