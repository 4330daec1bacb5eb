"""The paper's published figures: the one place `int-jax report` reads them from.

Every figure carries where it comes from. The only figures our sources record are the
NLL diagnostics below (the project's design notes, DESIGN.md, kept outside this
repository); every other cell of
the paper's tables is absent here, and the report writes `NOT_RECORDED` in it. Add a
figure only with its source (table and cell of the paper); never a guess.

Row and column keys are the report's (`int_jax.eval.report.tables`).
"""

from __future__ import annotations

import dataclasses
import re

NOT_RECORDED = "not recorded"


@dataclasses.dataclass(frozen=True)
class PaperFigure:
    value: float
    source: str  # where the figure is published / where we read it


_DESIGN_DIAGNOSTICS = ("the project's design notes (DESIGN.md, outside this repository), 'The method "
                       "in one page': NLL and next-token entropy of each "
                       "SFT set under the base model, 'InT 0.29 vs base 0.26 vs reference "
                       "solutions 1.66' (one figure per set; DESIGN.md does not say which of the two "
                       "it is; the report reads it as the NLL)")

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
# paper row -> column key -> figure. None recorded.
MAIN_TABLE: dict[str, dict[str, PaperFigure]] = {}

# -- Table 1 (intervention effectiveness): condition -> column -> figure. None recorded.
TABLE1: dict[str, dict[str, PaperFigure]] = {}

# -- Table 2 (SFT ablation): the variants DESIGN.md lists ("Ablations") and InT itself;
# variant -> column -> figure. None recorded.
TABLE2_ROWS: tuple[str, ...] = ("InT", "InT without prefix cloning", "InT with suffix cloning",
                                "InT without correctness filter")
TABLE2: dict[str, dict[str, PaperFigure]] = {}

# -- NLL / next-token entropy of each SFT set under the base model: set -> column -> figure.
DIAGNOSTICS: dict[str, dict[str, PaperFigure]] = {
    "InT": {"nll": PaperFigure(0.29, _DESIGN_DIAGNOSTICS)},
    "base": {"nll": PaperFigure(0.26, _DESIGN_DIAGNOSTICS)},
    "reference solutions": {"nll": PaperFigure(1.66, _DESIGN_DIAGNOSTICS)},
}

# -- pipeline funnel: step -> figure. None recorded.
FUNNEL: dict[str, PaperFigure] = {}


def main_row(run_name: str) -> str | None:
    """The paper's main-table row a run folder's name stands for, or None."""
    key = re.sub(r"[\s-]+", "_", run_name.strip().lower())
    return next((row for row, names in MAIN_ROWS.items() if key in names), None)
