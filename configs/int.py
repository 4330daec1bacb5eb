"""The InT data pipeline: `int-jax <stage> --config=configs/int.py:<arg>`.

Stages: rollout -> propose -> filter -> continue -> select -> stats, plus the
baselines' data (reflect, reference). Each writes `<run.root>/<run.name>/<stage>/`.

Args: `paper` (the paper's settings, Qwen3-4B-Instruct-2507 from `model.hf_path`)
or `tiny` (random tiny Qwen3, small budgets: tests and the demo).

Read as data: the body writes the paper's values once; `tiny` changes them in one
block at the end.
"""

from ml_collections import ConfigDict

from int_jax.model_config import model_config
from int_jax.sampling.settings import sampler_config

ARGS = ("paper", "tiny")


def _sampler(preset: str) -> ConfigDict:
    """The engine's settings of a sampler preset plus the keys that pick the sampler."""
    c = sampler_config(preset)
    c.kind = "jetstream"  # jetstream | scripted
    c.script = ""  # scripted: JSONL rules (see int_jax/sampling/scripted.py)
    c.default = None  # scripted: output for prompts no rule matches (None = error)
    c.delay_s = 0.0  # sleep per prompt before sampling (a throttle for kill-and-resume tests)
    return c


def get_config(arg: str = "paper") -> ConfigDict:
    if arg not in ARGS:
        raise ValueError(f"configs/int.py: unknown arg {arg!r}; use 'paper' or 'tiny'")
    c = ConfigDict()
    c.model = model_config("qwen3_4b_instruct_2507")
    c.seed = 0

    c.run = ConfigDict(dict(
        root="runs",
        name="int",
        progress=True,  # tqdm bars
        fsync=True,  # fsync each committed batch (crash safety beyond process death)
    ))
    # Problems: JSONL of problem records (id, problem, answer, reference_solution, ...).
    c.data = ConfigDict(dict(problems="", limit=0))  # limit 0 = all
    # Template files; '' = the built-in ones in int_jax/intervention/templates/ (the
    # authors' release: the raw problem as the user message; the long verification task).
    # A built-in variant by name: problem=problem_with_instruction (ours: the problem plus
    # "reason step by step, answer in \boxed{}"), verify_attempt=verify_attempt_short.
    c.prompts = ConfigDict(dict(problem="", solve_with_reference="", verify_attempt="", reflect=""))
    # How attempts become numbered steps and guided prefixes (int_jax/intervention/steps.py).
    c.steps = ConfigDict(dict(
        split="authors",  # authors: raw split on "\n\n"; normalized (ours): blank-line runs, stripped
        label="**Substep {i}:**",  # the authors' step label; ours was "Step {i}:"
        double_newlines=True,  # lone newlines inside the intervention doubled (authors')
    ))

    # Where samples come from: the JetStream engine over `model`, or a script.
    # jetstream: the engine's settings, every key (int_jax/sampling/settings.py).
    c.sampler = _sampler("paper")
    c.grading = ConfigDict(dict(timeout_s=10.0, workers=16))
    c.grading.multi_box = False  # True: closing boxes are one list, a later "final answer" wins

    # The paper's sampling for every data stage: temperature 0.7, top-p 0.8, top-k 20.
    paper = ConfigDict(dict(temperature=0.7, top_p=0.8, top_k=20))
    c.rollout = ConfigDict(dict(
        n=4,  # paper: 4 for intervention data, 64-128 to find hard problems
        select_hard=False,  # keep only problems with 0 correct of n downstream
        max_new_tokens=16384,
        sampling=paper,
        batch_size=64,  # problems per sampler call
    ))
    c.propose = ConfigDict(dict(
        k=4,  # proposals per failed attempt
        # Turn 1 (the reference-guided solution): one sample per failed attempt (the
        # authors') or one per problem, shared by its attempts (ours, cheaper).
        guided_per="attempt",  # attempt | problem
        context_limit=30000,  # tokens of the proposer chat; longer is skipped
        guided_max_new_tokens=16384,  # turn 1: the guided solution
        max_new_tokens=16384,
        sampling=paper,
        batch_size=64,
    ))
    c.filter = ConfigDict(dict(
        max_content_chars=4000,
        max_block_chars=32000,
        # substring: the gold answer as a raw substring of the content (the authors');
        # normalized: whole-token match of the raw and the normalised forms (ours).
        leak_test="substring",
        parse_time_limit_s=1.0,
    ))
    c.continuation = ConfigDict(dict(
        m=32,  # continuations per condition
        # Table 1: x+prefix+intervention, x alone, x+prefix, x+prefix+original step.
        conditions=("intervention", "problem", "prefix", "original"),
        # Appended to the unfinished answer ('' = the authors': the guided prefix as is).
        # Only the continuation's own text is graded, never the prefix.
        separator="",
        max_new_tokens=16384,
        sampling=paper,
        batch_size=16,  # interventions per sampler call
        save_texts=False,  # keep every continuation's text (large)
    ))
    c.select = ConfigDict(dict(
        require_correct=True,  # the correctness filter (False: the ablation without it)
        include_suffix=True,  # keep the original suffix as a (weight-0) segment
    ))
    c.reflect = ConfigDict(dict(
        n=1,
        require_correct=True,  # keep only rewrites whose final answer is right
        context_limit=30000,
        max_new_tokens=16384,
        sampling=paper,
        batch_size=64,
    ))

    # -- small runs: every override in one block -----------------------------------
    if arg == "tiny":
        c.model = model_config("tiny")
        c.run.name = "tiny"
        c.sampler = _sampler("tiny")
        c.grading.workers = 1
        c.rollout.n = 2
        c.propose.k = 2
        c.continuation.m = 2
        for section in (c.rollout, c.propose, c.continuation, c.reflect):
            section.max_new_tokens = 48
        c.propose.guided_max_new_tokens = 32
        c.propose.context_limit = c.reflect.context_limit = 900
        c.rollout.batch_size = c.propose.batch_size = c.reflect.batch_size = 4
        c.continuation.batch_size = 2
    return c
