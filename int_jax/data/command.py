"""`int-jax data`: benchmark files in, Problem records out.

* `int-jax data fetch NAME DIR`: download a benchmark when a network is there. The
  one command that reaches out; offline it fails with a clear message.
* `int-jax data prepare NAME FILE OUT.jsonl`: convert a local benchmark file (any
  format `int_jax.data.benchmarks` reads: CSV, JSONL, JSON, Parquet) into the Problem
  records the stages read (`--config.data.problems=OUT.jsonl`). Repeated problems of
  a hash-id set (the InT hard set) are dropped and counted; OUT is written atomically.
"""

from __future__ import annotations

import sys

from ml_collections import ConfigDict

from int_jax.data import benchmarks
from int_jax.data.records import write_records

_NAMES = ", ".join(sorted(benchmarks.BENCHMARKS))
USAGE = ("usage: int-jax data fetch NAME DIR\n"
         "       int-jax data prepare NAME FILE OUT.jsonl\n"
         f"NAME: {_NAMES}")


def fetch(name: str, out_dir: str) -> int:
    try:
        path = benchmarks.fetch(name, out_dir)
    except (RuntimeError, ValueError, KeyError) as e:
        print(f"int-jax data fetch: {e}", file=sys.stderr)
        return 1
    print(f"fetched {name} to {path}; next: int-jax data prepare {name} {path} problems.jsonl")
    return 0


def prepare(name: str, src: str, out: str) -> int:
    """Errors of the input (a bad row, a missing column) name its file, line and field
    and leave OUT as it was."""
    if name not in benchmarks.BENCHMARKS:
        print(f"int-jax data prepare: unknown benchmark {name!r}; known: {_NAMES}", file=sys.stderr)
        return 2
    problems = benchmarks.load_benchmark(name, src)
    n = write_records(out, problems)
    dropped = f", {problems.duplicates} repeated problems dropped" if problems.duplicates else ""
    print(f"{out}: {n} problems from {src} ({name}){dropped}")
    return 0


def main(config: ConfigDict, args: list[str]) -> int:
    del config  # no settings: everything is positional
    if len(args) == 3 and args[0] == "fetch":
        return fetch(args[1], args[2])
    if len(args) == 4 and args[0] == "prepare":
        return prepare(args[1], args[2], args[3])
    print(USAGE, file=sys.stderr)
    return 2
