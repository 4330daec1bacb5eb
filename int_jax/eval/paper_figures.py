"""The paper's published figures: the one place `int-jax report` reads them from.

Every figure carries where it comes from. What is recorded, and from where:

* the main table and the two Table 1 rows below: the table on the paper's project page,
  written by the paper's authors (https://intervention-training.github.io/, the
  `index.html` of github.com/intervention-training/intervention-training.github.io at
  commit 42dd288f, 2026-01-22). The stored arXiv HTML of the paper itself
  (arxiv.org/html/2601.14209v1) could be searched only at its opening, not at its
  tables, so no cell here is checked against the paper's own table and no paper table
  number is claimed;
* the next-token entropies: the bar labels of the authors' figure file
  `static/images/entropy.png` (and `entropy.pdf`, same labels) in that repository
  (commit c282342c, 2026-01-20); the paper's number for that figure is not checked.

Left out (the report writes `NOT_RECORDED`): the NLL of each SFT set (the authors' NLL
figure, `static/images/nll.png`, prints no values, and reading bar heights would be an
estimate); Table 1's rows `x` and `x + prefix` (not on the project page) and all of
Table 2 (found only in secondary summaries of the paper, notes in other GitHub
repositories that reword its tables and disagree with each other on Table 2's row names);
the funnel. Add a figure only with its source; never a guess.

Units: the report stores rates as fractions (`format.display` prints `100 * v`%), so
every published percentage is divided by 100 here (`_pct(11.68)` is 0.1168, shown as
11.68%); coverage `n / 334` is stored as the fraction n/334. Row and column keys are
the report's (`int_jax.eval.report.tables`).
"""

from __future__ import annotations

import dataclasses
import re

NOT_RECORDED = "not recorded"


@dataclasses.dataclass(frozen=True)
class PaperFigure:
    value: float
    source: str  # where the figure is published / where we read it


def _pct(published: float) -> float:
    """A percentage as printed in the source -> the fraction the report stores."""
    return round(published / 100, 12)


_PAGE = ("https://intervention-training.github.io/ (the authors' project page: index.html of "
         "github.com/intervention-training/intervention-training.github.io at commit 42dd288f)")
_UNCHECKED = "not checked against the arXiv paper's own table"

# -- main table ---------------------------------------------------------------------------
# The paper's rows as DESIGN.md names them ("Baselines in the paper's main table"), and
# the run-folder names that stand for each (compared lower-case, '-' and ' ' as '_').
MAIN_ROWS: dict[str, tuple[str, ...]] = {
    "Base": ("base",),
    "+RL": ("rl", "base_rl", "grpo"),
    "+Hint-guided RL": ("hint_rl", "hint_guided_rl"),
    "+SFT(Ref)+RL": ("sft_ref_rl", "ref_rl"),
    "+SFT(Reflect)+RL": ("sft_reflect_rl", "reflect_rl"),
    "InT + RL": ("int_rl", "int_grpo"),
}
# Our row -> the row as the project page's table ('Final RL Results', Qwen3-4B-Instruct-2507,
# evaluated at 16K tokens) prints it.
_MAIN_PAGE_ROWS = {
    "Base": "Base",
    "+RL": "+ RL",
    "+Hint-guided RL": "+ Hint-guided RL",
    "+SFT(Ref)+RL": "+ SFT on ref. solutions + RL",
    "+SFT(Reflect)+RL": "+ SFT on self-reflections + RL",
    "InT + RL": "+ InT + RL (Ours)",
}
# Our column key -> the column as the page prints it. The page marks only AMO-Bench and Apex
# Shortlist as pass@8; 'D_train' is the training set; 'Average' is the mean of all five
# columns (checked: it matches the five printed values of every row to 0.01).
_MAIN_PAGE_COLUMNS = {
    "imo_answerbench": "IMO-AnswerBench",
    "hmmt_nov_2025": "HMMT 2025 Nov",
    "amo_bench": "AMO-Bench pass@8",
    "apex_shortlist": "Apex Shortlist pass@8",
    "train": "D_train",
    "average": "Average",
}
# As printed on the page (percent), in _MAIN_PAGE_COLUMNS' order.
_MAIN_PRINTED = {
    "Base": (11.68, 41.61, 26.24, 20.79, 5.53, 21.17),
    "+RL": (23.46, 46.46, 35.21, 22.72, 13.47, 28.26),
    "+Hint-guided RL": (16.89, 47.27, 33.34, 22.23, 23.06, 28.56),
    "+SFT(Ref)+RL": (11.56, 27.45, 25.19, 20.51, 19.07, 20.76),
    "+SFT(Reflect)+RL": (15.53, 38.65, 36.72, 23.93, 23.19, 27.60),
    "InT + RL": (25.62, 49.77, 36.16, 28.22, 28.83, 33.72),
}


def _main_figure(row: str, col: str, printed: float) -> PaperFigure:
    return PaperFigure(_pct(printed), f"{_PAGE}, table 'Final RL Results', row '{_MAIN_PAGE_ROWS[row]}', "
                                      f"column '{_MAIN_PAGE_COLUMNS[col]}': {printed:.2f} ({_UNCHECKED})")


# paper row -> column key -> figure.
MAIN_TABLE: dict[str, dict[str, PaperFigure]] = {
    row: {col: _main_figure(row, col, v) for col, v in zip(_MAIN_PAGE_COLUMNS, values)}
    for row, values in _MAIN_PRINTED.items()
}

# -- Table 1 (intervention effectiveness): condition -> column -> figure. Conditions are
# int_jax.stages.stats.CONDITION_LABELS' keys. The page's table (section 'InT: Self-Proposed
# Interventions') has two of the four rows; coverage there is problems with a correct
# continuation among 32 (pass@32) of 334, which is our coverage over problems.
_T1_ROWS = {
    "original": "problem x + correct prefix y<t* + original step yt*",
    "intervention": "problem x + correct prefix y<t* + intervention ỹt*",
}


def _t1(cond: str, column: str, printed: str, value: float) -> PaperFigure:
    return PaperFigure(value, f"{_PAGE}, table in section 'InT: Self-Proposed Interventions', row "
                              f"'{_T1_ROWS[cond]}', column '{column}': {printed} ({_UNCHECKED})")


TABLE1: dict[str, dict[str, PaperFigure]] = {
    "original": {"coverage": _t1("original", "Coverage", "29 / 334", 29 / 334),
                 "accuracy": _t1("original", "Accuracy", "0.0713%", _pct(0.0713))},
    "intervention": {"coverage": _t1("intervention", "Coverage", "80 / 334", 80 / 334),
                     "accuracy": _t1("intervention", "Accuracy", "1.56%", _pct(1.56))},
}

# -- Table 2 (SFT ablation): the variants DESIGN.md lists ("Ablations") and InT itself;
# variant -> column -> figure. None recorded (see the module docstring).
TABLE2_ROWS: tuple[str, ...] = ("InT", "InT without prefix cloning", "InT with suffix cloning",
                                "InT without correctness filter")
TABLE2: dict[str, dict[str, PaperFigure]] = {}

# -- NLL / next-token entropy: set (tables.SFT_SETS' names) -> column -> figure.
# The 0.29 / 0.26 / 1.66 once recorded here as NLL (from the project's design notes) are
# next-token entropies, and InT's and the base model's were swapped: the figure prints
# InT 0.26 and Base 0.29. The figure is of the model after SFT on each set (x axis 'SFT
# Model'; 'Base' is the base model, no SFT), not of each set scored by the base model:
# like-for-like only where our 'scored by' is the SFT checkpoint. No NLL is recorded.
_ENTROPY_BARS = {"InT": "InT", "base": "Base", "reference solutions": "Ref. Solution",
                 "SFT(Reflect)": "Self-Reflect"}


def _entropy(name: str, printed: float) -> PaperFigure:
    return PaperFigure(printed, "the authors' figure of next-token entropy per SFT model, "
                                "static/images/entropy.png of github.com/intervention-training/"
                                f"intervention-training.github.io at commit c282342c, bar "
                                f"'{_ENTROPY_BARS[name]}' labelled {printed:.2f} (the model after SFT on "
                                "this set; 'Base' is the base model; the figure's number in the paper "
                                "not checked)")


DIAGNOSTICS: dict[str, dict[str, PaperFigure]] = {
    "InT": {"entropy": _entropy("InT", 0.26)},
    "base": {"entropy": _entropy("base", 0.29)},
    "reference solutions": {"entropy": _entropy("reference solutions", 1.66)},
    "SFT(Reflect)": {"entropy": _entropy("SFT(Reflect)", 0.43)},
}

# -- pipeline funnel: step -> figure. None recorded.
FUNNEL: dict[str, PaperFigure] = {}


def main_row(run_name: str) -> str | None:
    """The paper's main-table row a run folder's name stands for, or None."""
    key = re.sub(r"[\s-]+", "_", run_name.strip().lower())
    return next((row for row, names in MAIN_ROWS.items() if key in names), None)
