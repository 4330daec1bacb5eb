"""Folders in, what they hold out: the only part of the report that reads files.

A folder given to `int-jax report` is one or more of:

* a **run folder** `<run.root>/<run.name>/` with stage folders: its eval summaries
  (`eval/summary_<benchmark>.json`, read once `eval/manifest.json` says the stage
  finished; `eval/run_config.json` names the evaluated checkpoint) and the `stats`
  stage's `stats/stats.json` (funnel counts and Table 1), checked against the stage
  manifests it describes;
* an **SFT output** (`int-jax sft`): `run_config.json` with `data.weights` and
  `data.train_path`, which name the SFT variant;
* a **GRPO output**: a `metrics.jsonl` (also `grpo/metrics.jsonl`) whose rows carry
  `rollout/` or `reward/` metrics;
* a **diagnostics output** (`int-jax diagnostics`): `diagnostics.json` (also
  `diagnostics/diagnostics.json`) and the `run_config.json` naming the scoring model;
* a folder of such folders (`runs/`): its children are read instead.

Nothing here fails on a missing stage: each finding carries the reason it is absent.
A folder that does not exist is the user's error (FileNotFoundError).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from int_jax.stages.base import MANIFEST, manifest_fingerprint

RUN_STAGES = ("rollout", "propose", "filter", "continue", "select", "reflect", "reference", "stats",
              "eval")
STATS_STAGES = ("rollout", "propose", "filter", "continue", "select")  # what `stats` counts
GRPO_PREFIXES = ("rollout/", "reward/")


def shown(path: Path) -> str:
    """A path as the report prints it: relative to the working directory when inside it,
    else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _json(path: Path) -> tuple[dict | None, str]:
    """(the JSON object in `path`, "") or (None, why not)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no {path.name} in {shown(path.parent)}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{shown(path)} is unreadable ({type(e).__name__})"
    if not isinstance(data, dict):
        return None, f"{shown(path)} holds no JSON object"
    return data, ""


def _get(data: dict, dotted: str, default=None):
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return default
        data = data[part]
    return data


@dataclasses.dataclass
class EvalStage:
    dir: Path
    summaries: dict[str, dict]  # benchmark -> summary_<benchmark>.json
    unreadable: dict[str, str]  # benchmark -> why its summary could not be read
    model_path: str  # eval/run_config.json model.hf_path ('' for a random model)

    def summary_path(self, benchmark: str) -> Path:
        return self.dir / f"summary_{benchmark}.json"


@dataclasses.dataclass
class SFTOutput:
    name: str
    path: Path
    variant: str  # e.g. "InT", "InT with suffix cloning", "SFT(Ref)"
    train_path: str  # data.train_path ('' = the built-in toy set)
    config_path: Path
    notes: list[str]


@dataclasses.dataclass
class RunFolder:
    name: str
    path: Path
    stages: tuple[str, ...]  # stage folders present
    eval: EvalStage | None
    eval_reason: str  # why `eval` is None
    stats: dict | None
    stats_reason: str  # why `stats` is None
    sft: SFTOutput | None = None  # the SFT output its eval stage evaluated, if any

    @property
    def stats_path(self) -> Path:
        return self.path / "stats" / "stats.json"

    @property
    def is_pipeline(self) -> bool:
        """Holds InT data stages (the funnel and Table 1 read it)."""
        return any(s != "eval" for s in self.stages)

    @property
    def is_experiment(self) -> bool:
        """Holds an eval stage, or nothing else we know (the main table reads it)."""
        return "eval" in self.stages or not self.is_pipeline


@dataclasses.dataclass
class MetricsRun:
    name: str
    path: Path  # the metrics.jsonl
    rows: dict[int, dict]  # step -> the last row logged for it


@dataclasses.dataclass
class DiagnosticsOutput:
    name: str
    path: Path  # the diagnostics.json
    results: dict  # SFT file -> segment kind -> {nll, entropy, tokens}
    scored_by: str  # the model that scored the sets


@dataclasses.dataclass
class Collection:
    runs: list[RunFolder] = dataclasses.field(default_factory=list)
    sft: list[SFTOutput] = dataclasses.field(default_factory=list)
    grpo: list[MetricsRun] = dataclasses.field(default_factory=list)
    diagnostics: list[DiagnosticsOutput] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    found: dict[Path, list[str]] = dataclasses.field(default_factory=dict)  # folder -> kinds


# -- run folders ----------------------------------------------------------------------


def _read_eval(run: Path) -> tuple[EvalStage | None, str]:
    d = run / "eval"
    if not d.is_dir():
        return None, f"no eval stage in {shown(run)}"
    if not (d / MANIFEST).is_file():
        return None, f"the eval stage in {shown(run)} has not finished (no eval/{MANIFEST})"
    summaries, unreadable = {}, {}
    for path in sorted(d.glob("summary_*.json")):
        bench = path.stem[len("summary_"):]
        data, why = _json(path)
        if data is None:
            unreadable[bench] = why
        else:
            summaries[bench] = data
    config, _ = _json(d / "run_config.json")
    model_path = str(_get(config or {}, "model.hf_path", "") or "")
    return EvalStage(d, summaries, unreadable, model_path), ""


def _read_stats(run: Path, notes: list[str]) -> tuple[dict | None, str]:
    path = run / "stats" / "stats.json"
    if not path.parent.is_dir():
        return None, f"no stats stage in {shown(run)}"
    data, why = _json(path)
    if data is None:
        return None, why
    # Does stats.json still describe the stages it counted (and every stage there is)?
    described = data.get("inputs") or {}
    for stage in STATS_STAGES:
        now = manifest_fingerprint(run / stage)
        if stage in described and described[stage] != now:
            notes.append(f"{shown(path)} describes the {stage} stage's manifest {described[stage]}, "
                         f"which is now {now or 'gone'}: rerun `int-jax stats` for current counts")
        elif stage not in described and now is not None:
            notes.append(f"{shown(path)} was written before the {stage} stage finished: rerun "
                         "`int-jax stats` for current counts")
    return data, ""


def _stages(path: Path) -> tuple[str, ...]:
    """The stage folders of a run folder. A GRPO output's eval/ (one eval per step,
    eval/step_<N>/) is not an eval stage."""
    return tuple(s for s in RUN_STAGES if (path / s).is_dir()
                 and not (s == "eval" and any((path / s).glob("step_*"))))


def _read_run(path: Path, notes: list[str]) -> RunFolder:
    stages = _stages(path)
    ev, ev_reason = _read_eval(path)
    stats, stats_reason = _read_stats(path, notes)
    return RunFolder(path.name, path, stages, ev, ev_reason, stats, stats_reason)


# -- SFT outputs ------------------------------------------------------------------------


def _sft_variant(config: dict, notes: list[str], config_path: Path) -> str:
    """The SFT variant a config trains: its data (InT, reference solutions, reflections)
    and, for InT, the ablations (segment weights; the select stage's correctness filter)."""
    train_path = str(_get(config, "data.train_path", "") or "")
    weights = _get(config, "data.weights", {}) or {}
    p = Path(train_path)
    stage = p.parent.name if p.name == "sft.jsonl" else ""
    base = {"select": "InT", "reference": "SFT(Ref)", "reflect": "SFT(Reflect)"}.get(stage)
    if base is None:
        base = p.name if train_path else "toy set"
    changes = []
    if stage == "select":
        select, why = _json(p.parent / "run_config.json")
        required = _get(select or {}, "select.require_correct")
        if required is False:
            changes.append("without correctness filter")
        elif required is None:
            notes.append(f"{shown(config_path)}: whether its InT set passed the correctness filter "
                         f"is unknown ({why or 'no select.require_correct'})")
    if float(weights.get("prefix", 1.0)) == 0.0:
        changes.append("without prefix cloning")
    if float(weights.get("suffix", 0.0)) > 0.0:
        changes.append("with suffix cloning")
    return base + (" " + ", ".join(changes) if changes else "")


def _read_sft(path: Path, notes: list[str]) -> SFTOutput | None:
    config_path = path / "run_config.json"
    config, _ = _json(config_path)
    if config is None or not isinstance(_get(config, "data.weights"), dict):
        return None
    own: list[str] = []
    variant = _sft_variant(config, own, config_path)
    notes.extend(own)
    return SFTOutput(path.name, path, variant, str(_get(config, "data.train_path", "") or ""),
                     config_path, own)


# -- metrics and diagnostics --------------------------------------------------------------


def read_metrics_rows(path: Path) -> dict[int, dict]:
    """step -> the last row logged for it (a resumed run re-logs steps; a torn last line
    of a killed run is skipped), as `int_jax.train.metrics.read_metrics` reads them."""
    rows: dict[int, dict] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows[row["step"]] = row
    return dict(sorted(rows.items()))


def _read_grpo(path: Path) -> MetricsRun | None:
    for candidate in (path / "metrics.jsonl", path / "grpo" / "metrics.jsonl"):
        if candidate.is_file():
            rows = read_metrics_rows(candidate)
            if any(k.startswith(GRPO_PREFIXES) for row in rows.values() for k in row):
                return MetricsRun(path.name, candidate, rows)
    return None


def _read_diagnostics(path: Path, notes: list[str]) -> DiagnosticsOutput | None:
    for d in (path, path / "diagnostics"):
        file = d / "diagnostics.json"
        if not file.is_file():
            continue
        results, why = _json(file)
        if results is None:
            notes.append(why)
            return None
        config, _ = _json(d / "run_config.json")
        model = _get(config or {}, "model", {}) or {}
        if model.get("hf_path"):
            scored_by = str(model["hf_path"])
        elif model.get("preset"):
            scored_by = f"random {model['preset']} (no checkpoint)"
        else:
            scored_by = f"unknown (no model in {shown(d / 'run_config.json')})"
        return DiagnosticsOutput(path.name, file, results, scored_by)
    return None


# -- the folders given ------------------------------------------------------------------


def _read_folder(path: Path, out: Collection, depth: int) -> None:
    kinds: list[str] = []
    if _stages(path):
        run = _read_run(path, out.notes)
        out.runs.append(run)
        kinds += [s for s in run.stages]
    if (sft := _read_sft(path, out.notes)) is not None:
        out.sft.append(sft)
        kinds.append("sft")
    if (grpo := _read_grpo(path)) is not None:
        out.grpo.append(grpo)
        kinds.append("grpo")
    if (diag := _read_diagnostics(path, out.notes)) is not None:
        out.diagnostics.append(diag)
        kinds.append("diagnostics")
    if kinds:
        out.found[path] = kinds
        return
    children = sorted(c for c in path.iterdir() if c.is_dir() and not (c / "report.html").exists()) \
        if depth < 2 else []
    before = len(out.found)
    for child in children:
        _read_folder(child, out, depth + 1)
    if len(out.found) == before and depth == 0:
        # Nothing recognisable: still a row of the run tables, every cell saying why.
        out.runs.append(_read_run(path, out.notes))
        out.found[path] = []
        out.notes.append(f"{shown(path)}: no stage folders ({', '.join(RUN_STAGES)}), SFT output, "
                         "GRPO metrics or diagnostics found")


def _link_sft(out: Collection) -> None:
    """Each eval stage's checkpoint (`model.hf_path`) to the SFT output that wrote it."""
    by_path = {sft.path.resolve(): sft for sft in out.sft}
    for run in out.runs:
        if run.eval is None or not run.eval.model_path:
            continue
        p = Path(run.eval.model_path)
        for candidate in (p, p.parent) if p.name == "hf" else (p,):
            key = candidate.resolve()
            if key not in by_path and candidate.is_dir():
                sft = _read_sft(candidate, out.notes)
                if sft is None:
                    continue
                by_path[key] = sft
                out.sft.append(sft)
                out.notes.append(f"read the SFT output {shown(candidate)}: "
                                 f"{shown(run.eval.dir / 'run_config.json')} names its checkpoint")
            if key in by_path:
                run.sft = by_path[key]
                break


def collect(folders: list[str | os.PathLike]) -> Collection:
    out = Collection()
    seen: set[Path] = set()
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            raise FileNotFoundError(f"{folder}: no such run folder")
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        _read_folder(path, out, depth=0)
    _link_sft(out)
    return out
