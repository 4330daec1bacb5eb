"""Every output of a report on disk, under one folder:

* `<table>.md` and `<table>.csv` for each table (main, table1, table2, diagnostics, funnel);
* `plots/<figure>.png` for each figure that has something to draw;
* `report.md` (all tables, plot links) and `report.html` (self-contained).

Files are written whole (temporary file, then rename); returns the paths written.
"""

from __future__ import annotations

import os
from pathlib import Path

from int_jax.eval.report.csvfile import table_csv
from int_jax.eval.report.markdown import report_markdown, table_markdown
from int_jax.eval.report.model import Report
from int_jax.eval.report.page import report_html
from int_jax.eval.report.png import render


def _put(path: Path, data: bytes) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def write_report(report: Report, out: str | os.PathLike) -> list[Path]:
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    written = []
    for table in report.tables:
        written.append(_put(out / f"{table.key}.md", table_markdown(table).encode("utf-8")))
        written.append(_put(out / f"{table.key}.csv", table_csv(table).encode("utf-8")))
    pngs = {f.key: render(f) for f in report.figures if f.drawn}
    for key, png in pngs.items():
        written.append(_put(out / "plots" / f"{key}.png", png))
    written.append(_put(out / "report.md", report_markdown(report).encode("utf-8")))
    written.append(_put(out / "report.html", report_html(report, pngs).encode("utf-8")))
    return written
