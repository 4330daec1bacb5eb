"""CSV: one file per table, for machines.

Columns are the table's, plus `sources` (`column=file: key` for every number) and
`missing` (`column: reason` for every missing cell). A number is written in full
(rates as fractions, not percentages); a missing cell is empty; a paper cell we have
no figure for holds the text `not recorded`.
"""

from __future__ import annotations

import csv
import io

from int_jax.eval.report.format import cell_sources
from int_jax.eval.report.model import Table


def table_csv(table: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.title for c in table.columns] + ["sources", "missing"])
    for row in table.rows:
        values, sources, missing = [], [], []
        for c in table.columns:
            cell = table.cell(row, c)
            values.append("" if cell.missing else cell.value)
            sources += [f"{c.title}={s}" for s in cell_sources(cell)]
            if cell.missing and cell.reason:
                missing.append(f"{c.title}: {cell.reason}")
        w.writerow(values + ["; ".join(sources), "; ".join(missing)])
    return buf.getvalue()
