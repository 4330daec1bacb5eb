"""`int-jax stats`: counts after every step and the Table-1 view, as Markdown and JSON.

Reads whatever stages of the run have finished (missing ones are reported as
such) and rewrites `stats/stats.json` and `stats/stats.md` atomically.

Table 1: for each conditioning of the continuations (x; x + prefix; x + prefix +
original step; x + prefix + intervention), over the same interventions and the
same m: *coverage* = share of interventions (and of problems) with >= 1 correct
continuation, *accuracy* = share of all continuations that are correct.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

from ml_collections import ConfigDict

from int_jax.config_io import save_config
from int_jax.data.records import Continuation, SFTExample, read_records
from int_jax.intervention.filters import LEAK_TESTS
from int_jax.stages.base import (command, manifest_fingerprint, read_manifest, read_manifests,
                                 stage_dir)

STAGE = "stats"
CONDITION_LABELS = {
    "problem": "x",
    "prefix": "x + prefix",
    "original": "x + prefix + original step",
    "intervention": "x + prefix + intervention",
}


def _counts(manifest: dict | None, pass_name: str) -> dict:
    return (manifest or {}).get("counts", {}).get(pass_name, {})


def _continuations(config: ConfigDict) -> list[Continuation] | None:
    """The continue stage's records; None when it has not finished."""
    directory = stage_dir(config, "continue")
    if read_manifest(directory) is None:
        return None
    return read_records(directory / "continuations.jsonl", Continuation)


def pipeline_counts(config: ConfigDict, continuations: list[Continuation] | None) -> dict:
    """The funnel: attempts -> failures -> proposals -> parsed -> kept -> verified -> SFT."""
    m = read_manifests(config, ("rollout", "propose", "filter", "continue", "select"))
    roll, guided, prop = _counts(m["rollout"], "rollout"), _counts(m["propose"], "guided"), \
        _counts(m["propose"], "propose")
    filt, sel = _counts(m["filter"], "filter"), _counts(m["select"], "select")
    left_out = (m["propose"] or {}).get("left_out", {})
    out = {
        "stages_finished": [s for s, v in m.items() if v is not None],
        "problems": roll.get("problems", 0),
        "hard_problems": roll.get("hard_problems", 0),
        "attempts": roll.get("attempts", 0),
        "correct_attempts": roll.get("correct", 0),
        "failed_attempts": roll.get("failed", 0),
        "failed_empty": left_out.get("failed_empty", 0),
        "failed_not_hard": left_out.get("failed_not_hard", 0),
        "failed_no_reference": left_out.get("failed_no_reference", 0),
        "guided_solutions": guided.get("guided", 0),
        "attempts_sent_to_proposer": prop.get("attempts", 0) - prop.get("skipped_context", 0),
        "skipped_context": prop.get("skipped_context", 0),
        "proposals": prop.get("proposals", 0),
        "parsed": filt.get("parsed", 0),
        "parsed_strict": filt.get("parsed_strict", 0),
        "parsed_repaired": filt.get("parsed_repaired", 0),
        "rejected": {k[len("rejected_"):]: v for k, v in sorted(filt.items()) if k.startswith("rejected_")},
        "leaky": filt.get("rejected_leaky", 0),
        # What each leak test would reject of the proposals that reached the leak check
        # (`filter.leak_test` picks the one applied): the authors' raw substring test
        # and our normalised whole-token test, on the same proposals.
        "leaky_by_test": {t: filt.get(f"leaky_{t}", 0) for t in LEAK_TESTS},
        "kept_interventions": filt.get("kept", 0),
        "with_correct_continuation": None if continuations is None else sum(
            c.num_correct > 0 for c in continuations if c.condition == "intervention"),
        "sft_examples": sel.get("kept", 0),
        "problems_covered": None,
    }
    if m["select"] is not None:
        sft = read_records(stage_dir(config, "select") / "sft.jsonl", SFTExample)
        out["problems_covered"] = len({e.problem_id for e in sft})
    return out


def table1(continuations: list[Continuation] | None) -> dict | None:
    """Rows by condition; None when the continue stage has not finished."""
    if continuations is None:
        return None
    by_cond = collections.defaultdict(list)
    for r in continuations:
        by_cond[r.condition].append(r)
    table = {}
    for cond in CONDITION_LABELS:
        rs = by_cond.get(cond, [])
        if not rs:
            continue
        problems = collections.defaultdict(int)
        for r in rs:
            problems[r.problem_id] += r.num_correct
        total = sum(r.m for r in rs)
        correct = sum(r.num_correct for r in rs)
        table[cond] = {
            "conditioned_on": CONDITION_LABELS[cond],
            "interventions": len(rs),
            "continuations": total,
            "correct": correct,
            "accuracy": correct / total if total else 0.0,
            "coverage_interventions": sum(r.num_correct > 0 for r in rs) / len(rs),
            "problems": len(problems),
            "coverage_problems": sum(v > 0 for v in problems.values()) / len(problems),
        }
    return table


def render_markdown(counts: dict, table: dict | None, run_name: str) -> str:
    lines = [f"# InT pipeline: run `{run_name}`", "", "## Counts", "", "| step | count |", "|---|---:|"]
    for key, value in counts.items():
        if isinstance(value, (dict, list)):
            continue
        lines.append(f"| {key.replace('_', ' ')} | {'n/a' if value is None else value} |")
    if counts["rejected"]:
        lines += ["", "Rejected proposals by reason:", "", "| reason | count |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in counts["rejected"].items()]
    lines += ["", "Proposals each leak test would reject (of those that reached it):", "",
              "| leak test | would reject |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in counts["leaky_by_test"].items()]
    lines += ["", "## Table 1: continuations by conditioning", ""]
    if table is None:
        lines.append("(the continue stage has not finished)")
    elif not table:
        lines.append("(no intervention survived the filters, so nothing was continued)")
    else:
        lines += ["| conditioned on | interventions | continuations | accuracy | coverage (interventions)"
                  " | coverage (problems) |", "|---|---:|---:|---:|---:|---:|"]
        for row in table.values():
            lines.append(f"| {row['conditioned_on']} | {row['interventions']} | {row['continuations']} | "
                         f"{row['accuracy']:.3f} | {row['coverage_interventions']:.3f} | "
                         f"{row['coverage_problems']:.3f} |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run(config: ConfigDict) -> dict:
    continuations = _continuations(config)
    counts = pipeline_counts(config, continuations)
    table = table1(continuations)
    out_dir = stage_dir(config, STAGE)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir)
    # Which run of each stage this report describes (their manifests' fingerprints).
    report = {"counts": counts, "table1": table,
              "inputs": {s: manifest_fingerprint(stage_dir(config, s)) for s in counts["stages_finished"]}}
    _write(out_dir / "stats.json", json.dumps(report, indent=2) + "\n")
    md = render_markdown(counts, table, config.run.name)
    _write(out_dir / "stats.md", md)
    print(md)
    print(f"[{STAGE}] written: {out_dir / 'stats.md'} and {out_dir / 'stats.json'}")
    return report


main = command(STAGE, run)
