"""`int-jax data fetch NAME DIR`: download a benchmark when a network is there.

Everything else in int-jax reads local files; this is the one command that
reaches out, and it fails with a clear message offline.
"""

from __future__ import annotations

import sys

from ml_collections import ConfigDict

from int_jax.data import benchmarks

USAGE = "usage: int-jax data fetch NAME DIR   (NAME: " + ", ".join(sorted(benchmarks.BENCHMARKS)) + ")"


def main(config: ConfigDict, args: list[str]) -> int:
    del config  # no settings: the benchmark name and folder are positional
    if len(args) != 3 or args[0] != "fetch":
        print(USAGE, file=sys.stderr)
        return 2
    _, name, out_dir = args
    try:
        path = benchmarks.fetch(name, out_dir)
    except (RuntimeError, ValueError) as e:
        print(f"int-jax data fetch: {e}", file=sys.stderr)
        return 1
    print(f"fetched {name} to {path}; load it with load_benchmark({name!r}, {str(path)!r})")
    return 0
