"""The typed report: tables of cells and figures of series, each number with its source.

Writers (`markdown`, `csvfile`, `png`, `page`) render a `Report`; nothing here reads
files or draws. A `Cell` is a number read from a run folder (with the file and key it
came from), a paper figure (with its source), a piece of text, or missing (with the
reason, shown in its place: never a zero).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

Kind = Literal["rate", "count", "float", "text"]


@dataclasses.dataclass(frozen=True)
class Source:
    path: str  # the file the number was read from (as the report shows paths)
    key: str  # where in it: a JSON key path, or how the number was derived

    def __str__(self) -> str:
        return f"{self.path}: {self.key}"


@dataclasses.dataclass(frozen=True)
class Cell:
    value: float | int | str | None = None  # None: missing (see reason)
    reason: str = ""  # why it is missing
    sources: tuple[Source, ...] = ()  # where a number came from (several for a derived one)
    paper: str = ""  # a paper figure's source, or "" for ours

    @property
    def missing(self) -> bool:
        return self.value is None

    @staticmethod
    def number(value: float | int, *sources: Source) -> "Cell":
        return Cell(value=value, sources=tuple(sources))

    @staticmethod
    def text(value: str) -> "Cell":
        return Cell(value=value)

    @staticmethod
    def absent(reason: str) -> "Cell":
        return Cell(reason=reason)


@dataclasses.dataclass(frozen=True)
class Column:
    key: str
    title: str
    kind: Kind = "text"
    paper: bool = False  # holds the paper's figures


@dataclasses.dataclass(frozen=True)
class Table:
    key: str  # file stem of its outputs
    title: str
    description: str  # what the table reads and how its numbers are made
    columns: tuple[Column, ...]
    rows: tuple[dict[str, Cell], ...]  # column key -> cell (a missing key: an empty text cell)

    def cell(self, row: dict[str, Cell], column: Column) -> Cell:
        return row.get(column.key, Cell.text(""))


@dataclasses.dataclass(frozen=True)
class Series:
    label: str
    x: tuple  # numbers, or category names for bars
    y: tuple[float | None, ...]  # None: no value at that x
    lo: tuple[float, ...] | None = None  # confidence band
    hi: tuple[float, ...] | None = None
    sources: tuple[Source, ...] = ()


@dataclasses.dataclass(frozen=True)
class Figure:
    key: str  # file stem of its PNG
    title: str
    xlabel: str
    ylabel: str
    series: tuple[Series, ...]
    kind: Literal["lines", "bars"] = "lines"
    log2_x: bool = False
    reason: str = ""  # why nothing is drawn ("" when series are there)

    @property
    def drawn(self) -> bool:
        return bool(self.series)


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """One folder the report read, and what it found there."""

    name: str
    path: str
    found: tuple[str, ...]  # what it holds: "eval", "stats", "sft", "grpo", "diagnostics", ...


@dataclasses.dataclass(frozen=True)
class Report:
    title: str
    runs: tuple[RunInfo, ...]
    tables: tuple[Table, ...]
    figures: tuple[Figure, ...]
    notes: tuple[str, ...] = ()  # warnings about the inputs (stale stats, unread folders)
