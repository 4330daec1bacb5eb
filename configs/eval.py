"""Evaluation: `int-jax eval --config=configs/eval.py:<arg>` (K graded samples per
benchmark problem; pass@k summaries in `<run.root>/<run.name>/eval/`).

Args: `paper` (the paper's evaluation: 128 samples per problem at temperature 0.7,
top-p 0.8, top-k 20, 16384 new tokens, Qwen3-4B-Instruct-2507 from `model.hf_path`)
or `tiny` (random tiny Qwen3, 4 samples of 32 tokens, on the demo's problems).

Model, prompts, sampler and grader settings are configs/int.py's, so an eval sees
the problem exactly as the rollouts did. Benchmarks: name -> `path` (a file in any
format `int_jax.data.benchmarks` reads, or a JSONL of Problem records), `loader`
('' = the registered loader of that name, else `problems`: Problem JSONL), `category`
(the meta column to break scores down by; '' = `Category` when present) and `limit`
(first N problems; 0 = all). A benchmark with an empty path is left out.

Commands:

    int-jax data fetch amo_bench data/                 # prints the file it wrote
    int-jax eval --config=configs/eval.py:paper --config.model.hf_path=CKPT \\
        --config.run.name=base \\
        --config.eval.benchmarks.amo_bench.path=data/amo_bench/.../test.parquet \\
        --config.eval.benchmarks.hmmt_nov_2025.path=...
    int-jax demo && int-jax eval --config=configs/eval.py:tiny
"""

from pathlib import Path

from ml_collections import ConfigDict

from int_jax.config_io import import_config

# The paper's four benchmarks, then the InT test split and the training set as Problem
# JSONL (`int-jax data prepare`, or the rollout stage's problems.jsonl).
PAPER_BENCHMARKS = ("imo_answerbench", "hmmt_nov_2025", "amo_bench", "apex_shortlist", "int_test",
                    "train")


def _benchmark(path: str = "", loader: str = "", category: str = "", limit: int = 0) -> ConfigDict:
    return ConfigDict(dict(path=path, loader=loader, category=category, limit=limit))


def get_config(arg: str = "paper") -> ConfigDict:
    if arg not in ("paper", "tiny"):
        raise ValueError(f"configs/eval.py: unknown arg {arg!r}; use 'paper' or 'tiny'")
    # configs/int.py, by import (absl loads this file alone; see import_config).
    pipeline = import_config("int", Path(__file__).resolve().parent).get_config(arg)
    c = ConfigDict()
    for section in ("model", "seed", "run", "prompts", "sampler", "grading"):
        c[section] = pipeline[section]
    c.run.name = "base"  # one run folder per evaluated model

    c.eval = ConfigDict(dict(
        k=128,  # samples per problem (paper: 128; pass@k from them, unbiased)
        ks=(),  # the k of pass@k; (): 1, 2, 4, ... k
        max_new_tokens=16384,  # paper: a 16K token budget
        sampling=ConfigDict(dict(temperature=0.7, top_p=0.8, top_k=20)),
        batch_size=8,  # problems per sampler call (and per commit); x k requests
        bootstrap=1000,  # resamples of problems for the confidence intervals
        confidence=0.95,
    ))
    c.eval.benchmarks = ConfigDict({name: _benchmark() for name in PAPER_BENCHMARKS})
    c.eval.benchmarks.train.loader = "problems"

    # -- small runs: every override in one block -------------------------------
    if arg == "tiny":
        c.run.name = "tiny"
        c.eval.k = 4
        c.eval.max_new_tokens = 32
        c.eval.batch_size = 2
        c.eval.bootstrap = 200
        c.eval.benchmarks = ConfigDict({"demo": _benchmark("runs/demo/problems.jsonl", "problems")})
    return c
