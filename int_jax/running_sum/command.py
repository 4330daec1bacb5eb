"""`int-jax running-sum problems | base | measure RUN_DIR` (`configs/running_sum.py`).

* `problems`: the miniature's problem sets as Problem JSONL under `<out>/problems/`:
  `train_hard.jsonl` (what InT and RL train on), `heldout_hard.jsonl` (never trained
  on: the main comparison), `easy.jsonl` (the base model should solve these).
* `base`: the base model under `<out>/base/` (`base_model.py`), trained once per
  config: rerunning with the same config does nothing.
* `measure RUN_DIR`: accuracy per difficulty and how often the proposed locations are
  the true first errors, from a run folder's rollout and filter stages.
* `seeds FOLDER...`: held-out hard pass@1 of every row in each seed's folder of run
  folders (`runs/toy runs/toy_seed1 ...`), and whether InT + RL beats RL by more than
  the seeds' spread (`seeds.py`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ml_collections import ConfigDict

from int_jax.data.records import write_records
from int_jax.running_sum import problems as problem_sets

USAGE = "usage: int-jax running-sum problems | base | measure RUN_DIR | seeds FOLDER..."
SETS = ("train_hard", "heldout_hard", "easy")


def write_problems(config: ConfigDict) -> dict[str, Path]:
    p = config.problems
    folder = Path(config.out) / "problems"
    folder.mkdir(parents=True, exist_ok=True)
    train = problem_sets.problem_set("train_hard", problem_sets.HARD, int(p.train_hard), int(p.seed))
    heldout = problem_sets.problem_set("heldout_hard", problem_sets.HARD, int(p.heldout_hard),
                                       int(p.seed), exclude=frozenset(x.problem for x in train))
    easy = problem_sets.problem_set("easy", problem_sets.EASY, int(p.easy), int(p.seed))
    out = {}
    for name, records in zip(SETS, (train, heldout, easy)):
        out[name] = folder / f"{name}.jsonl"
        write_records(out[name], records)  # atomic
        print(f"{out[name]}: {len(records)} problems")
    return out


def main(config: ConfigDict, args: list[str]) -> int:
    if args == ["problems"]:
        write_problems(config)
        return 0
    if args == ["base"]:
        from int_jax.running_sum.base_model import build

        build(config, Path(config.out) / "base")
        return 0
    if len(args) == 2 and args[0] == "measure":
        from int_jax.running_sum.measure import measure

        print(json.dumps(measure(args[1]), indent=2))
        return 0
    if len(args) >= 2 and args[0] == "seeds":
        from int_jax.running_sum.seeds import table

        folders = [Path(a) for a in args[1:]]
        missing = [str(f) for f in folders if not f.is_dir()]
        if missing:
            raise FileNotFoundError(f"no such folder: {', '.join(missing)}")
        print(table(folders, "heldout_hard", ("int_rl", "rl")))
        return 0
    print(USAGE, file=sys.stderr)
    return 2
