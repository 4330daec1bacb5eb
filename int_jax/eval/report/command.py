"""`int-jax report RUN_DIR... [--out DIR]`: the paper's tables and plots from run folders.

RUN_DIR: a run folder (`runs/<name>/`, with stage folders such as eval/ and stats/),
an SFT output (`int-jax sft`), a GRPO output (its metrics.jsonl), a diagnostics
output (`int-jax diagnostics`), or a folder of such folders (`runs/`).

Writes under DIR (default `runs/report/`): Markdown and CSV per table (main table,
Table 1, Table 2, NLL / entropy, the pipeline funnel), PNG plots (pass@k per
benchmark with confidence bands, GRPO reward / all-wrong share / response length,
the funnel), `report.md`, and `report.html`, one self-contained page with every
table and plot that opens from disk. Each number names the file and key it was
read from; the paper's figures sit beside ours (int_jax/eval/paper_figures.py,
'not recorded' where we have none); a missing input is an empty cell with the
reason. Needs no config and no accelerator.
"""

from __future__ import annotations

import argparse

from ml_collections import ConfigDict

from int_jax.eval.report import report_from_folders
from int_jax.eval.report.collect import shown
from int_jax.eval.report.write import write_report

DEFAULT_OUT = "runs/report"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one message, exit 2 (the command line prints it)
        raise SystemExit(f"int-jax report: {message}\n{self.format_usage().strip()}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="int-jax report", add_help=False,
                description="the paper's tables and plots from run folders")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR")
    return p


def main(config: ConfigDict, args: list[str]) -> int:
    del config  # no settings: the folders are the input
    opts = _parser().parse_args(args)
    report = report_from_folders(opts.run_dirs)
    written = write_report(report, opts.out)
    for note in report.notes:
        print(f"note: {note}")
    missing = [f"{f.title} ({f.reason})" for f in report.figures if not f.drawn]
    print(f"report: {len(report.tables)} tables, {len(report.figures) - len(missing)} plots "
          f"({len(missing)} with nothing to draw) from {len(report.runs)} folders")
    print(f"written: {shown(written[-1])} (and {len(written) - 1} more files in {opts.out})")
    return 0
