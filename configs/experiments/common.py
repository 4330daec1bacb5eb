"""What every experiment config (configs/experiments/<row>.py) shares: the rows of the
paper's tables as data, and `experiment(row, arg)`, which builds a row's config.

An experiment config is one `int-jax pipeline` run: the stages it runs, in order, and
one section per stage config file, each that file's own `get_config` (the paper's
values live there, once; nothing here repeats them):

    int    configs/int.py      the data stages: hard, rollout, propose, filter, continue,
                               select, reflect, reference, stats
    sft    configs/sft.py      masked-prefix SFT (the row's ablation picks the weights)
    grpo   configs/grpo.py     the "+ RL" (`paper`: the paper's Table 5)
    eval   configs/eval.py     K graded samples per benchmark problem, pass@k

and the keys that tie them together (`int_jax/stages/pipeline.py` fills each stage's
paths from them): `workdir` (the run folder), `base_model` (an HF folder; '' = the
preset's random weights), `problems.train` (Problem JSONL: the hard training set),
`hard.pool` (when set, hard problems are chosen from it first), `reuse.<stage>`
(another run folder whose finished stage this row uses instead of running it).

Loaded by import, not by executing files by path: absl loads the row's file as a lone
module, which reaches this one through `int_jax.config_io.import_config`; this module
then imports the stage config files as its package siblings (`from .. import sft`).
"""

from __future__ import annotations

from pathlib import Path

from ml_collections import ConfigDict

from int_jax.model_config import PRESETS

from .. import eval as eval_file, grpo as grpo_file, int as int_file, sft as sft_file

DATA_STAGES = ("hard", "rollout", "propose", "filter", "continue", "select", "reflect",
               "reference", "stats")
STAGES = DATA_STAGES + ("sft", "grpo", "eval")  # every stage the pipeline knows, in run order

_INT = ("rollout", "propose", "filter", "continue", "select", "stats")  # InT's data stages

# One entry per row: the stages it runs, the SFT set it trains on, the SFT ablation
# (configs/sft.py ABLATIONS), the GRPO variant, and the paper's cell it reproduces.
ROWS = {
    # The main table (the paper's Table 3: Qwen3-4B-Instruct-2507 on IMO-AnswerBench,
    # HMMT Nov 2025, AMO-Bench, Apex Shortlist).
    "base": dict(stages=("eval",), cell="main table, row 'Base'"),
    "rl": dict(stages=("grpo", "eval"), cell="main table, row '+ RL'"),
    "hint_rl": dict(stages=("grpo", "eval"), grpo_variant="hint",
                    cell="main table, row '+ Hint-guided RL'"),
    "sft_ref_rl": dict(stages=("rollout", "reference", "stats", "sft", "grpo", "eval"),
                       sft_set="reference", cell="main table, row '+ SFT(Ref) + RL'"),
    "sft_reflect_rl": dict(stages=("rollout", "reflect", "stats", "sft", "grpo", "eval"),
                           sft_set="reflect", cell="main table, row '+ SFT(Reflect) + RL'"),
    "int_rl": dict(stages=_INT + ("sft", "grpo", "eval"), sft_set="select",
                   cell="main table, row '+ InT + RL' (ours)"),
    # The SFT ablation (the paper's Table 2): InT's SFT checkpoint, evaluated, no RL.
    "int_sft": dict(stages=_INT + ("sft", "eval"), sft_set="select",
                    cell="Table 2, 'InT' (the reference row of the ablation)"),
    "int_no_prefix": dict(stages=_INT + ("sft", "eval"), sft_set="select",
                          sft_ablation="no_prefix_cloning",
                          cell="Table 2, 'InT w/o prefix cloning' (prefix weight 0)"),
    "int_with_suffix": dict(stages=_INT + ("sft", "eval"), sft_set="select",
                            sft_ablation="suffix_cloning",
                            cell="Table 2, 'InT with suffix cloning' (suffix weight 1)"),
    "int_no_correctness_filter": dict(
        stages=_INT + ("sft", "eval"), sft_set="select", require_correct=False,
        cell="Table 2, 'InT w/o correctness filter' (no verified-continuation check)"),
}

MODELS = ("qwen3_4b_instruct_2507", "tiny", "toy")  # the paper's model; the CPU-sized random one;
# the running-sum miniature (a trained tiny base on a synthetic domain: the method working)

# Hard-problem selection, when asked (`hard.pool`): the paper keeps problems with 0
# correct of 64-128 samples; we take 64, the cheaper end.
HARD_SAMPLES = 64


def experiment(row: str, arg: str = "qwen3_4b_instruct_2507") -> ConfigDict:
    if row not in ROWS:
        raise ValueError(f"unknown experiment row {row!r}; rows: {sorted(ROWS)}")
    if arg not in PRESETS and arg != "toy":
        raise ValueError(f"configs/experiments/{row}.py: unknown model {arg!r}; use one of "
                         f"{MODELS} (or another preset of {PRESETS})")
    spec = ROWS[row]
    tiny, toy = arg == "tiny", arg == "toy"
    setting = "tiny" if tiny or toy else "paper"  # what configs/int.py, eval.py, grpo.py call them

    c = ConfigDict()
    c.experiment = ConfigDict(dict(row=row, model=arg, stages=tuple(spec["stages"]),
                                   cell=spec["cell"], sft_set=spec.get("sft_set", "")))
    # The folder's name is the row's: the report finds a paper row by it (tiny: runs/tiny/<row>).
    c.workdir = f"runs/{arg}/{row}" if tiny or toy else f"runs/{row}"
    c.base_model = ""  # HF folder of the start model; '' = the preset's random weights
    # Added to every stage's own seed (data, SFT, GRPO, eval): seed=1, 2 ... rerun the
    # whole row with other random streams (give each its own workdir).
    c.seed = 0
    c.problems = ConfigDict(dict(
        train="",  # Problem JSONL: the hard training problems (rollouts, RL, eval's `train`)
    ))
    c.hard = ConfigDict(dict(
        pool="",  # '' = no selection: problems.train is already hard (the InT hard set)
        n=HARD_SAMPLES,  # samples per pool problem; a problem with 0 correct is hard
    ))
    # Another run folder whose finished stage this row uses (a symlink <workdir>/<stage>
    # -> <folder>/<stage>), e.g. --config.reuse.rollout=runs/int_rl: the SFT rows share
    # the rollouts. The stage must have finished there with the same settings, else the
    # stage refuses it (stages/base.py) and says why.
    c.reuse = ConfigDict({stage: "" for stage in STAGES})

    c.int = int_file.get_config(setting)
    ablation = f",{spec['sft_ablation']}" if "sft_ablation" in spec else ""
    c.sft = sft_file.get_config(("tiny" if toy else arg) + ablation)
    c.grpo = grpo_file.get_config(setting + (f",{spec['grpo_variant']}" if "grpo_variant" in spec
                                             else ""))
    c.eval = eval_file.get_config(setting)
    if setting == "paper" and arg != "qwen3_4b_instruct_2507":  # another preset at the paper's settings
        for section in (c.int, c.grpo, c.eval):
            model = section.model
            section.model = ConfigDict(dict(model.to_dict(), preset=arg))

    # -- the row's deltas from the paper's defaults -----------------------------------
    if spec.get("require_correct") is False:
        c.int.select.require_correct = False  # Table 2: no correctness filter

    # -- small runs: every override in one block --------------------------------------
    if tiny:
        # Random tiny weights write no parsable proposal, so the data stages replay the
        # scripted demo (`int-jax demo --config=configs/demo.py:scripted` writes both
        # files); SFT, GRPO and eval run the random tiny Qwen3 through the real engine.
        c.problems.train = "runs/demo-scripted/problems.jsonl"
        c.int.sampler.kind = "scripted"
        c.int.sampler.script = "runs/demo-scripted/script.jsonl"
        for section in (c.int.rollout, c.int.propose, c.int.continuation, c.int.reflect):
            section.max_new_tokens = 256
        c.int.propose.guided_max_new_tokens = 256
        c.int.propose.context_limit = c.int.reflect.context_limit = 4096
        c.hard.n = 4
        c.sft.train.global_batch = 2
        c.sft.train.micro_batch = 1
        c.sft.train.epochs = 1
        c.grpo.train.steps = 2
        c.eval.eval.k = 2
        c.eval.eval.max_new_tokens = 16
        c.eval.eval.bootstrap = 50
        c.eval.eval.benchmarks = ConfigDict({"train": dict(path="", loader="problems", category="",
                                                           limit=0)})
    # -- the running-sum miniature: every toy override in one block ---------------------
    if toy:
        _toy(c)
    return c


# The miniature's committed base model and problem sets (`int-jax running-sum problems`,
# `int-jax running-sum base --config=configs/running_sum.py`).
TOY_BASE = "assets/running_sum/base"
TOY_PROBLEMS = "assets/running_sum/problems"


def _toy(c: ConfigDict) -> None:
    """The running-sum miniature (int_jax/running_sum): the committed base model, its
    character tokenizer's pad and stop ids, the toy's short templates and step label,
    and budgets that run a row in minutes on 2 CPU cores."""
    from int_jax.running_sum import chat
    from int_jax.running_sum.tokenizer import sampler_ids

    c.base_model = TOY_BASE
    c.problems.train = f"{TOY_PROBLEMS}/train_hard.jsonl"
    ids = sampler_ids(Path(__file__).resolve().parents[2] / TOY_BASE)  # the repository's
    for section in (c.int, c.grpo, c.eval):
        for name, path in chat.prompt_paths().items():
            if name in section.prompts:
                section.prompts[name] = path
        section.sampler.pad_id = ids["pad_id"]
        section.sampler.stop_ids = ids["stop_ids"]
        section.sampler.slots = 32  # many short sequences decode together
        section.sampler.max_len = 1024
        section.sampler.max_prefill_length = 960
        section.grading.workers = 1
    c.int.steps.update(chat.step_values())
    c.int.run.progress = False
    c.int.rollout.update(n=4, max_new_tokens=160, batch_size=64)
    # The proposer checks the attempt step by step before its block (up to ~260
    # characters: running_sum/chat.checked_answer); prompt + answer fit max_len.
    c.int.propose.update(k=2, guided_per="problem", guided_max_new_tokens=160,
                         max_new_tokens=288, context_limit=736, batch_size=64)
    c.int.continuation.update(m=2, max_new_tokens=160, batch_size=32)
    c.int.reflect.update(max_new_tokens=160, context_limit=960, batch_size=64)
    c.hard.n = 8
    # SFT from the base: short rows, a few epochs over the few verified interventions (3
    # to 30 of them, by seed: batches of 4, so the smallest set still makes one).
    c.sft.data.cutoff_len = 512
    c.sft.train.update(global_batch=4, micro_batch=0, epochs=3, save_every=1000,
                       tensorboard=False)
    c.sft.optim.lr = 3e-4
    # GRPO: a few steps of 8 problems x 8 samples.
    c.grpo.grpo.update(n=8, prompts_per_step=8, prompts_per_update=8, micro_batch=0,
                       max_new_tokens=160, max_prompt_len=512, loss_chunk_size=256)
    c.grpo.optim.lr = 1e-4
    c.grpo.train.update(steps=10, save_every=5, tensorboard=False, progress=False)
    # Eval: the held-out hard set (the comparison), the easy set, the training set.
    c.eval.eval.update(k=4, max_new_tokens=160, batch_size=16, bootstrap=200)
    c.eval.eval.benchmarks = ConfigDict({
        "heldout_hard": dict(path=f"{TOY_PROBLEMS}/heldout_hard.jsonl", loader="problems",
                             category="", limit=0),
        "easy": dict(path=f"{TOY_PROBLEMS}/easy.jsonl", loader="problems", category="", limit=0),
        "train": dict(path="", loader="problems", category="", limit=0),
    })

