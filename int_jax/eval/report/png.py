"""PNG: a `model.Figure` drawn with matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from int_jax.eval.report.model import Figure

_SIZE = (7.0, 4.2)  # inches
_DPI = 110


def _lines(ax, figure: Figure) -> None:
    for s in figure.series:
        points = [(x, y) for x, y in zip(s.x, s.y) if y is not None]
        (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3,
                          label=s.label)
        if s.lo is not None and s.hi is not None:
            ax.fill_between(s.x, s.lo, s.hi, color=line.get_color(), alpha=0.2, linewidth=0)
    if figure.log2_x:
        ax.set_xscale("log", base=2)
        ticks = sorted({x for s in figure.series for x in s.x})
        ax.set_xticks(ticks, [str(t) for t in ticks])
    elif all(isinstance(x, int) for s in figure.series for x in s.x):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def _bars(ax, figure: Figure) -> None:
    """Horizontal bars: categories top to bottom, one bar per series in each."""
    categories = list(figure.series[0].x)
    n = len(figure.series)
    height = 0.8 / n
    for i, s in enumerate(figure.series):
        ys = [c + (i - (n - 1) / 2) * height for c in range(len(categories))]
        kept = [(y, v) for y, v in zip(ys, s.y) if v is not None]
        bars = ax.barh([k[0] for k in kept], [k[1] for k in kept], height=height, label=s.label)
        ax.bar_label(bars, labels=[f"{int(v):d}" if float(v).is_integer() else f"{v:g}" for _, v in kept],
                     fontsize=7, padding=2)
    ax.set_yticks(range(len(categories)), categories)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.invert_yaxis()
    ax.grid(True, axis="x", alpha=0.3)


def render(figure: Figure) -> bytes:
    if not figure.drawn:
        raise ValueError(f"figure {figure.key!r} has nothing to draw: {figure.reason}")
    fig = MplFigure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    (_bars if figure.kind == "bars" else _lines)(ax, figure)
    ax.set_title(figure.title)
    ax.set_xlabel(figure.xlabel)
    ax.set_ylabel(figure.ylabel)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
