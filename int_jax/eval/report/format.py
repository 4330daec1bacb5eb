"""How a cell reads on the page, and a table's source footnotes (Markdown and HTML share them).

Rates are shown as percentages with one decimal, NLL / entropy with three decimals,
counts as integers; a paper figure as published. A missing cell reads "—" with its
reason. Footnotes group the sources of a table by file: `[n] file: key, key`.
"""

from __future__ import annotations

from int_jax.eval.report.model import Cell, Column, Source, Table

MISSING = "—"


def display(cell: Cell, column: Column) -> str:
    """The cell's text without the reason of a missing cell."""
    v = cell.value
    if v is None:
        return MISSING
    if isinstance(v, str):
        return v
    if column.kind == "rate":
        return f"{100 * v:g}%" if cell.paper else f"{100 * v:.1f}%"
    if column.kind == "count":
        return str(int(v)) if float(v).is_integer() else f"{v:g}"
    if column.kind == "float":
        return f"{v:g}" if cell.paper else f"{v:.3f}"
    return str(v)


def display_with_reason(cell: Cell, column: Column) -> str:
    text = display(cell, column)
    return f"{text} ({cell.reason})" if cell.missing and cell.reason else text


def cell_sources(cell: Cell) -> list[Source]:
    out = list(cell.sources)
    if cell.paper:
        out.append(Source("paper", cell.paper))
    return out


def footnotes(table: Table) -> tuple[list[list[int]], list[str]]:
    """(footnote numbers per row, footnote texts): one footnote per source file, its
    keys listed in first-seen order."""
    files: dict[str, list[str]] = {}
    refs: list[list[int]] = []
    for row in table.rows:
        mine: list[int] = []
        for col in table.columns:
            for src in cell_sources(table.cell(row, col)):
                keys = files.setdefault(src.path, [])
                if src.key not in keys:
                    keys.append(src.key)
                n = list(files).index(src.path) + 1
                if n not in mine:
                    mine.append(n)
        refs.append(sorted(mine))
    texts = [f"{path}: {', '.join(keys)}" for path, keys in files.items()]
    return refs, texts


def grouped(sources) -> list[str]:
    """`file: key, key` per file, for a figure's caption."""
    files: dict[str, list[str]] = {}
    for src in sources:
        keys = files.setdefault(src.path, [])
        if src.key not in keys:
            keys.append(src.key)
    return [f"{path}: {', '.join(keys)}" for path, keys in files.items()]
