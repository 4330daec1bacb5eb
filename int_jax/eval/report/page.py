"""One self-contained HTML page: every table and every plot (PNG as a base64 data URI),
inline CSS, no script and no external resource, so it opens from disk in any browser."""

from __future__ import annotations

import base64
from html import escape

from int_jax.eval.report.format import MISSING, display, footnotes, grouped
from int_jax.eval.report.model import Figure, Report, Table

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
div.wide { overflow-x: auto; }  /* a wide table scrolls by itself, not the whole page */
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.paper, th.paper { background: #f7f3e8; }
td.missing { color: #888; }
.reason { display: block; font-size: 0.8em; color: #a33; }
ol.sources { font-size: 0.75em; color: #555; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption, p.desc { font-size: 0.85em; color: #444; }
p.nofigure { color: #a33; }
"""


def _table_html(table: Table) -> str:
    refs, notes = footnotes(table)
    head = "".join(f'<th class="paper">{escape(c.title)}</th>' if c.paper else f"<th>{escape(c.title)}</th>"
                   for c in table.columns)
    body = []
    for row, mine in zip(table.rows, refs):
        cells = []
        for c in table.columns:
            cell = table.cell(row, c)
            classes = [k for k, on in (("num", c.kind != "text"), ("paper", c.paper),
                                       ("missing", cell.missing)) if on]
            text = escape(display(cell, c))
            if cell.missing and cell.reason:
                text = f'{MISSING}<span class="reason">{escape(cell.reason)}</span>'
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}>{text}</td>")
        links = "".join(f'<a href="#{table.key}-src-{n}">[{n}]</a>' for n in mine)
        body.append(f"<tr>{''.join(cells)}<td>{links}</td></tr>")
    sources = "".join(f'<li id="{table.key}-src-{n}">{escape(t)}</li>' for n, t in enumerate(notes, 1))
    return (f'<section id="table-{table.key}"><h2>{escape(table.title)}</h2>'
            f'<p class="desc">{escape(table.description)}</p>'
            f'<div class="wide"><table id="{table.key}"><thead><tr>{head}<th>sources</th></tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"
            f'<ol class="sources">{sources}</ol></section>')


def _figure_html(figure: Figure, png: bytes | None) -> str:
    if png is None:
        return (f'<p class="nofigure" id="figure-{figure.key}"><b>{escape(figure.title)}</b>: '
                f"{MISSING} {escape(figure.reason)}</p>")
    data = base64.b64encode(png).decode("ascii")
    sources = "; ".join(grouped(s for series in figure.series for s in series.sources))
    return (f'<figure id="figure-{figure.key}"><img alt="{escape(figure.title)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{escape(figure.title)}. '
            f"Sources: {escape(sources)}</figcaption></figure>")


def report_html(report: Report, pngs: dict[str, bytes]) -> str:
    """`pngs`: figure key -> PNG bytes of every drawn figure."""
    runs = "".join(f"<tr><td>{escape(r.name)}</td><td>{escape(r.path)}</td>"
                   f"<td>{escape(', '.join(r.found) or 'nothing recognised')}</td></tr>" for r in report.runs)
    notes = ("<section id=\"notes\"><h2>Notes on the inputs</h2><ul>"
             + "".join(f"<li>{escape(n)}</li>" for n in report.notes) + "</ul></section>") if report.notes else ""
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(report.title)}</h1>",
        '<section id="runs"><h2>Folders read</h2><table id="folders"><thead><tr><th>folder</th><th>path</th>'
        f"<th>holds</th></tr></thead><tbody>{runs}</tbody></table></section>",
        notes,
        *(_table_html(t) for t in report.tables),
        '<section id="plots"><h2>Plots</h2>',
        *(_figure_html(f, pngs.get(f.key)) for f in report.figures),
        "</section></body></html>", ""])
