"""Run a launcher's commands, or print them (`--dry-run`): one place decides which.

Launchers build every `gcloud` / `gsutil` / `sbatch` call as an argv list and hand
it here, so a dry run prints exactly what a real run would execute, quoted for a
shell, and nothing else reaches the cloud.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from typing import Sequence


class Shell:
    def __init__(self, dry_run: bool, out=None):
        self.dry_run = dry_run
        self.out = out or sys.stdout

    def run(self, argv: Sequence[str]) -> None:
        line = shlex.join(argv)
        if self.dry_run:
            print(line, file=self.out)
            return
        print(f"+ {line}", file=sys.stderr)
        execute(argv)


def execute(argv: Sequence[str]) -> None:
    """The one place a launcher's command really runs."""
    subprocess.run(list(argv), check=True)


def remote_int_jax(repo_dir: str, words: Sequence[str], env: dict[str, str] | None = None) -> str:
    """The shell line a worker runs: `cd <repo> && [ENV=..] .venv/bin/int-jax <words>`."""
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    return f"cd {shlex.quote(repo_dir)} && {exports + ' ' if exports else ''}.venv/bin/int-jax " \
           + shlex.join(words)


def command_words(words: Sequence[str]) -> tuple[list[str], bool]:
    """The int-jax words after `--`, and whether `--dry-run` was among them. int-jax
    commands take no `--dry-run`, so one typed after `--` is the launcher's: taking it
    as such is the safe reading (it prints instead of running)."""
    words = list(words)
    if words[:1] == ["--"]:
        words = words[1:]
    return [w for w in words if w != "--dry-run"], "--dry-run" in words


def launcher_parser(prog: str, doc: str, actions) -> tuple[argparse.ArgumentParser,
                                                           dict[str, argparse.ArgumentParser]]:
    """A parser with one sub-command per action, each already taking `--dry-run`."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    subs = {}
    for name in actions:
        subs[name] = sub.add_parser(name)
        subs[name].add_argument("--dry-run", action="store_true",
                                help="print each command instead of running it")
    return parser, subs
