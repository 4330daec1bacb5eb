"""`int-jax pipeline`: every stage of one row of the paper's tables, in order, in one
run folder (`configs/experiments/<row>.py:<model>`).

The row's `experiment.stages` run in this order: hard (hard-problem selection, when
`hard.pool` is set), rollout, propose, filter, continue, select, reflect, reference,
stats, sft, grpo, eval. Each stage gets its own config file's section (`int`, `sft`,
`grpo`, `eval`) with the paths that chain them filled in from `workdir`,
`base_model` and `problems.train`:

    <workdir>/pipeline_config.json   the experiment config, as given
    <workdir>/pipeline.jsonl         one line per stage started / finished / skipped
    <workdir>/pipeline.log           the run's log
    <workdir>/hard/rollout/          hard-problem selection (its hard.jsonl feeds the rest)
    <workdir>/{rollout,propose,filter,continue,select,reflect,reference,stats}/
    <workdir>/sft/                   checkpoints/, metrics.jsonl, hf/, DONE
    <workdir>/grpo/                  checkpoints/, metrics.jsonl, hf/, DONE
    <workdir>/eval/                  samples.jsonl, summary_<benchmark>.json

A finished stage is skipped (a data stage's manifest, SFT's and GRPO's DONE, each
checked against the config it was run with); a partial one resumes (every stage
resumes from its records or checkpoints). Kill the pipeline anywhere and run the
same command again.

`reuse.<stage>=<run folder>`: take that stage, and the data stages before it in this
row, from another row's run folder (a symlink `<workdir>/<stage>` -> its folder)
instead of running them; it must have finished there, with the settings this row
would use (the stage checks). E.g. the SFT rows share the rollouts of `int_rl`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

from ml_collections import ConfigDict

from int_jax.config_io import save_config
from int_jax.stages.base import EPHEMERAL_KEYS, MANIFEST, StageError, command

log = logging.getLogger("int_jax.stages")

ORDER = ("hard", "rollout", "propose", "filter", "continue", "select", "reflect", "reference",
         "stats", "sft", "grpo", "eval")
SAMPLING_STAGES = ("hard", "rollout", "propose", "continue", "reflect")  # share one model + engine
SFT_SETS = ("select", "reference", "reflect")  # the stages that write an SFT set (sft.jsonl)


# -- the stage configs ---------------------------------------------------------------------


def _copy(section: ConfigDict) -> ConfigDict:
    return ConfigDict(section.to_dict())


def _model(section: ConfigDict, hf_path: str) -> None:
    section.model.hf_path = hf_path


def stage_configs(config: ConfigDict) -> dict[str, ConfigDict]:
    """The config each of the row's stages runs with (paths chained through `workdir`)."""
    stages = tuple(config.experiment.stages)
    unknown = [s for s in stages if s not in ORDER]
    if unknown:
        raise ValueError(f"config.experiment.stages: unknown stages {unknown}; known: {ORDER}")
    if list(stages) != sorted(stages, key=ORDER.index):
        raise ValueError(f"config.experiment.stages={stages}: out of order; the order is {ORDER}")
    work = Path(config.workdir)
    base = str(config.base_model or "")
    hard = bool(config.hard.pool)
    if hard and "hard" not in stages:
        stages = ("hard",) + stages
    train = str(work / "hard" / "rollout" / "hard.jsonl") if hard else str(config.problems.train)
    out: dict[str, ConfigDict] = {}
    shift = int(config.get("seed", 0))  # the row's seed: added to every stage's own

    data = _copy(config.int)
    data.seed = int(data.seed) + shift
    data.run.root, data.run.name = str(work.parent), work.name
    data.data.problems = train
    _model(data, base)
    if hard:
        h = _copy(data)
        h.run.root, h.run.name = str(work), "hard"
        h.data.problems = str(config.hard.pool)
        h.rollout.n = int(config.hard.n)
        h.rollout.select_hard = True
        out["hard"] = h
    for stage in stages:
        if stage in ORDER[1:9]:
            out[stage] = data

    model = base  # the checkpoint each training stage starts from, then evaluates
    if "sft" in stages:
        s = _copy(config.sft)
        s.output_dir = str(work / "sft")
        sft_set = str(config.experiment.sft_set or "select")
        if sft_set not in SFT_SETS:
            raise ValueError(f"config.experiment.sft_set={sft_set!r}; one of {SFT_SETS}")
        s.data.train_path = str(work / sft_set / "sft.jsonl")
        s.data.seed, s.train.seed = int(s.data.seed) + shift, int(s.train.seed) + shift
        _model(s, base)
        out["sft"] = s
        model = str(work / "sft" / "hf")
    if "grpo" in stages:
        g = _copy(config.grpo)
        g.output_dir = str(work / "grpo")
        g.data.problems = train
        _model(g, model)
        g.init.orbax_path = ""
        g.seed = int(g.seed) + shift
        out["grpo"] = g
        model = str(work / "grpo" / "hf")
    if "eval" in stages:
        e = _copy(config.eval)
        e.run.root, e.run.name = str(work.parent), work.name
        _model(e, model)
        e.seed = int(e.seed) + shift
        benchmarks = e.eval.benchmarks
        if "train" in benchmarks and not benchmarks.train.path:
            benchmarks.train.path = train  # the training problems, as the paper reports them too
        out["eval"] = e
    return out


# -- skipping, reusing --------------------------------------------------------------------


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in EPHEMERAL_KEYS}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


_CHAINED = ("output_dir", "data.train_path", "data.problems", "model.hf_path")  # paths of a run folder


def _settings(config: dict, chained: bool) -> dict:
    config = _plain(config)
    if not chained:
        for key in _CHAINED:
            *parents, leaf = key.split(".")
            node = config
            for part in parents:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node.pop(leaf, None)
    return config


def _trained(out: Path, cfg: ConfigDict, chained: bool = True) -> bool:
    """SFT / GRPO: True when `out` finished (DONE) with this config; an error when it
    finished with another. `chained=False` (a reused folder): paths that name run
    folders are not compared."""
    if not (out / "DONE").exists():
        return False
    saved = out / "run_config.json"
    now = json.loads(cfg.to_json_best_effort())
    if not saved.exists() or (_settings(json.loads(saved.read_text()), chained)
                              != _settings(now, chained)):
        raise StageError(f"{out}: finished with other settings than this run's (see "
                         f"{saved.name}); delete {out} to rerun it, or use another "
                         "--config.workdir")
    return True


def _finished(folder: Path) -> bool:
    return (folder / MANIFEST).exists() or (folder / "DONE").exists()


def reused(config: ConfigDict, stages: tuple[str, ...]) -> dict[str, Path]:
    """stage -> the folder it is taken from: each `reuse.<stage>` and the data stages
    before it in this row (stats is always this row's own)."""
    out: dict[str, Path] = {}
    for i, stage in enumerate(stages):
        source = str(config.reuse.get(stage, "") or "")
        if not source:
            continue
        for s in stages[: i + 1]:
            if s == stage or (s in ORDER[:8] and s not in out and not config.reuse.get(s)):
                out[s] = Path(source) / s
    return out


def link(target: Path, source: Path) -> None:
    """`target` -> `source` (a finished stage of another run folder), once."""
    if not _finished(source):
        raise StageError(f"{source}: not a finished stage (no {MANIFEST} or DONE); finish it "
                         "there first (reuse.<stage> names a run folder)")
    if target.is_symlink():
        if target.resolve() != source.resolve():
            raise StageError(f"{target} points at {os.readlink(target)}, not {source}; remove "
                             "the link to change what this row reuses")
        return
    if target.exists():
        raise StageError(f"{target} exists: this row ran that stage itself; delete it to "
                         f"reuse {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source.resolve(), target_is_directory=True)


# -- the run --------------------------------------------------------------------------------


class _Journal:
    """<workdir>/pipeline.jsonl and pipeline.log."""

    def __init__(self, work: Path):
        work.mkdir(parents=True, exist_ok=True)
        self.path = work / "pipeline.jsonl"
        self.handler = logging.FileHandler(work / "pipeline.log")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger("int_jax").addHandler(self.handler)

    def event(self, stage: str, event: str, **extra) -> None:
        row = {"time": round(time.time(), 3), "stage": stage, "event": event, **extra}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        log.info("pipeline: %s %s %s", stage, event, extra or "")

    def close(self) -> None:
        logging.getLogger("int_jax").removeHandler(self.handler)
        self.handler.close()


def _run_stage(stage: str, cfg: ConfigDict, ctx) -> str:
    """Run one stage: 'skipped' when it had finished, else 'finished'."""
    if stage in ("sft", "grpo"):
        if _trained(Path(cfg.output_dir), cfg):
            return "skipped"
        module = _module(stage)
        module.main(cfg, []) if stage == "sft" else module.run(cfg)
        return "finished"
    if stage == "stats":  # cheap: rewritten from the stages' manifests every time
        _module(stage).run(cfg)
        return "finished"
    folder = Path(cfg.run.root) / cfg.run.name / ("rollout" if stage == "hard" else stage)
    done = (folder / MANIFEST).exists()
    if stage in SAMPLING_STAGES:
        _module(stage).run(cfg, ctx)  # one model and engine for every sampling data stage
    else:
        _module(stage).run(cfg)
    return "skipped" if done else "finished"


def _module(stage: str):
    import importlib  # noqa: PLC0415

    name = {"hard": "rollout", "continue": "continuation", "filter": "filter", "eval": "evaluate"}
    return importlib.import_module(f"int_jax.stages.{name.get(stage, stage)}")


def run(config: ConfigDict) -> dict:
    configs = stage_configs(config)
    stages = tuple(s for s in ORDER if s in configs)
    work = Path(config.workdir)
    sources = reused(config, stages)
    journal = _Journal(work)
    save_config(config, work, name="pipeline_config.json")
    from int_jax.stages.common import context  # noqa: PLC0415

    results: dict[str, str] = {}
    try:
        for stage, source in sources.items():
            link(work / stage, source)
        sampling = [s for s in stages if s in SAMPLING_STAGES and s not in sources]
        shared = contextlib.ExitStack()
        ctx = shared.enter_context(context(configs[sampling[0]])) if sampling else None
        with shared:
            for stage in stages:
                if stage in sources:
                    results[stage] = "reused"
                    journal.event(stage, "reused", source=str(sources[stage]))
                    # A reused stage is still checked against this row's settings.
                    if stage in ("sft", "grpo"):
                        _trained(work / stage, configs[stage], chained=False)
                    else:
                        _run_stage(stage, configs[stage], ctx)
                    continue
                if stage == "sft" and ctx is not None:
                    shared.close()  # free the sampling model before training
                    ctx = None
                journal.event(stage, "started")
                t0 = time.monotonic()
                results[stage] = _run_stage(stage, configs[stage], ctx)
                journal.event(stage, results[stage], seconds=round(time.monotonic() - t0, 3))
    finally:
        journal.close()
    print(f"\n[pipeline] {config.experiment.row} ({config.experiment.model}): {work.resolve()}")
    for stage in stages:
        print(f"  {stage:<10} {results.get(stage, '-'):<9} {work / stage}")
    print(f"  report: int-jax report {work} --out {work / 'report'}")
    return results


main = command("pipeline", run)
