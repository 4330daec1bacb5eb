"""Markdown: one file per table, and the whole report (tables, plot links, notes)."""

from __future__ import annotations

from int_jax.eval.report.format import display_with_reason, footnotes, grouped
from int_jax.eval.report.model import Figure, Report, Table


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table, level: int = 2) -> str:
    refs, notes = footnotes(table)
    head = [c.title for c in table.columns] + ["sources"]
    align = ["---:" if c.kind != "text" else "---" for c in table.columns] + ["---"]
    lines = [f"{'#' * level} {table.title}", "", table.description, "",
             "| " + " | ".join(_escape(h) for h in head) + " |", "|" + "|".join(align) + "|"]
    for row, mine in zip(table.rows, refs):
        cells = [_escape(display_with_reason(table.cell(row, c), c)) for c in table.columns]
        cells.append("".join(f"[{n}]" for n in mine))
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Sources:", ""] + [f"[{n}] {_escape(t)}  " for n, t in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def figure_markdown(figure: Figure, png_dir: str = "plots") -> str:
    if not figure.drawn:
        return f"**{figure.title}**: — ({figure.reason})\n"
    sources = "; ".join(grouped(s for series in figure.series for s in series.sources))
    return f"![{figure.title}]({png_dir}/{figure.key}.png)\n\n{figure.title}. Sources: {_escape(sources)}\n"


def report_markdown(report: Report, png_dir: str = "plots") -> str:
    parts = [f"# {report.title}", "", "## Folders read", "", "| folder | path | holds |", "|---|---|---|"]
    parts += [f"| {_escape(r.name)} | {_escape(r.path)} | {_escape(', '.join(r.found) or 'nothing recognised')} |"
              for r in report.runs]
    if report.notes:
        parts += ["", "## Notes on the inputs", ""] + [f"- {_escape(n)}" for n in report.notes]
    parts.append("")
    for table in report.tables:
        parts.append(table_markdown(table))
    parts.append("## Plots\n")
    for figure in report.figures:
        parts.append(figure_markdown(figure, png_dir))
    return "\n".join(parts)
