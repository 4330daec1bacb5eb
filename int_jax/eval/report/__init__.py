"""`int-jax report`: the paper's tables and plots rebuilt from run folders.

collect (`collect.py`: folders -> what they hold) -> one typed `model.Report`
(`tables.py`, `figures.py`) -> writers (`markdown.py`, `csvfile.py`, `png.py`,
`page.py`; `write.py` puts them on disk). No JAX anywhere on this path: the report
runs on any machine that holds the run folders.
"""

from __future__ import annotations

import os

from int_jax.eval.report.collect import Collection, collect, shown
from int_jax.eval.report.figures import all_figures
from int_jax.eval.report.model import Report, RunInfo
from int_jax.eval.report.tables import all_tables

TITLE = "InT reproduction: the paper's tables from our run folders"


def build_report(collection: Collection, title: str = TITLE) -> Report:
    tables = all_tables(collection)
    funnel = next(t for t in tables if t.key == "funnel")
    runs = tuple(RunInfo(path.name, shown(path), tuple(kinds)) for path, kinds in collection.found.items())
    return Report(title, runs, tables, all_figures(collection, funnel), tuple(collection.notes))


def report_from_folders(folders: list[str | os.PathLike]) -> Report:
    return build_report(collect(folders))
