"""GRPO, the "+ RL" of every row of the paper's table:
`int-jax grpo --config=configs/grpo.py:<setting>[,hint]`.

<setting>: `paper` (the paper's Table 5: 32 prompts x 8 samples, mini-batches of 16
prompts' groups, lr 1e-6, temperature 1.0, top-p 1.0, no KL, no entropy bonus, 400
steps), `release` (the authors' RL release, a PipelineRL fork: temperature 0.8, one
update per 256 samples, ratio clip 4, entropy bonus 1e-4, gradient clip 0.3, weight
decay 0.01, loss summed over tokens / 256, advantages not divided by the std, eval
every 50 steps) or `tiny` (the random tiny Qwen3 on the demo's problems: tests, CPU).
`,hint`: hint-guided RL (the table's "+Hint-guided RL" row): each prompt carries the
first half of its reference solution (`hint.mode=sampled` draws the fraction per
prompt in [hint.low, hint.high]).

The start model is `model.hf_path` (the base model, or `<sft output_dir>/hf` of
`int-jax sft`), else `init.orbax_path` (an `int-jax convert` folder, or a train run's
`checkpoints/` or `checkpoints/<step>`), else the preset's random weights. Model,
prompts, sampler and grader settings are configs/int.py's (through configs/eval.py,
whose `eval` section is the held-out evaluation run every `train.eval_every` steps).

Commands:

    int-jax grpo --config=configs/grpo.py:paper --config.model.hf_path=runs/sft/hf \\
        --config.data.problems=runs/int/rollout/problems.jsonl --config.output_dir=runs/grpo_int
    int-jax grpo --config=configs/grpo.py:paper,hint --config.model.hf_path=BASE \\
        --config.data.problems=... --config.output_dir=runs/grpo_hint
    int-jax grpo --config=configs/grpo.py:release --config.model.hf_path=... \\
        --config.data.problems=... --config.eval.benchmarks.amo_bench.path=...
    int-jax demo && int-jax grpo --config=configs/grpo.py:tiny
"""

from pathlib import Path

from ml_collections import ConfigDict

from int_jax.config_io import import_config

# Each setting's model, prompts, sampler, grader and held-out eval: configs/eval.py's of
# this arg (the release runs at the paper's).
EVAL_ARG = {"paper": "paper", "release": "paper", "tiny": "tiny"}
SETTINGS = tuple(EVAL_ARG)
VARIANTS = ("", "hint")

# The paper's Table 5, in one place.
PAPER = dict(
    n=8,  # samples per prompt
    prompts_per_step=32,
    prompts_per_update=16,  # mini-batch: 16 prompts' groups per optimizer update
    lr=1e-6,
    temperature=1.0,
    top_p=1.0,
    kl_coef=0.0,
    entropy_coef=0.0,
    steps=400,
)


def get_config(arg: str = "paper") -> ConfigDict:
    setting, _, variant = arg.partition(",")
    if setting not in SETTINGS or variant not in VARIANTS:
        raise ValueError(f"configs/grpo.py: unknown arg {arg!r}; use one of {SETTINGS}, "
                         "optionally followed by ',hint'")
    # configs/eval.py, by import (absl loads this file alone; see import_config).
    base = import_config("eval", Path(__file__).resolve().parent).get_config(EVAL_ARG[setting])
    c = ConfigDict()
    for section in ("model", "seed", "run", "prompts", "sampler", "grading", "eval"):
        c[section] = base[section]
    c.prompts.problem_with_hint = ""  # '' = int_jax/intervention/templates/problem_with_hint.txt
    c.output_dir = f"runs/grpo_{setting}" + (f"_{variant}" if variant else "")
    c.data = ConfigDict(dict(problems="", limit=0))  # Problem JSONL (limit 0 = all)
    c.init = ConfigDict(dict(orbax_path=""))  # start weights when model.hf_path is empty

    # The learner: train/learner.py LearnerConfig (every key is checked there).
    c.grpo = ConfigDict(dict(
        n=PAPER["n"],
        prompts_per_step=PAPER["prompts_per_step"],
        prompts_per_update=PAPER["prompts_per_update"],
        # rows per accumulation step of an update (0 = the whole update at once): one
        # 18K-token row per chip of an 8-chip host; a multiple of the batch-sharded devices
        micro_batch=8,
        epochs=1,  # passes over a step's groups
        max_new_tokens=16384,  # the paper's sampling budget
        max_prompt_len=2048,  # prompts (with their hint) longer than this are left out
        sampling=ConfigDict(dict(temperature=PAPER["temperature"], top_p=PAPER["top_p"],
                                 top_k=0)),
        truncated="grade",  # a completion cut at max_new_tokens: grade | penalty | mask
        truncated_reward=0.0,  # with truncated=penalty
        dynamic_sampling=False,  # drop groups whose rewards are all equal and refill
        max_rounds=4,  # sampler calls per step with dynamic sampling
        mismatch_metrics=True,  # with loss.old_logprobs=sampler: one more forward per step
        loss_chunk_size=512,
    ))
    # The loss: train/grpo.py GRPOConfig (its temperature is grpo.sampling.temperature).
    c.loss = ConfigDict(dict(
        clip_low=0.2, clip_high=0.2, dual_clip=None,
        loss_agg_mode="seq-mean-token-mean",  # GRPO's 1/G sum_i 1/|o_i| sum_t
        constant_len=None,
        kl_coef=PAPER["kl_coef"], kl_estimator="k3",
        entropy_coef=PAPER["entropy_coef"],
        normalize_adv_by_std=False,  # r - mean(r), as the paper's method section writes it
        adv_eps=1e-6,
        old_logprobs="trainer",  # pi_old recomputed by the trainer before the first update
        tis_cap=None,
    ))
    # Constant lr: no warmup, no decay.
    c.optim = ConfigDict(dict(lr=PAPER["lr"], warmup_ratio=0.0, min_lr_ratio=1.0,
                              weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0))
    c.train = ConfigDict(dict(
        steps=PAPER["steps"],  # RL steps
        save_every=10,
        keep=3,
        async_save=True,
        resume=True,  # continue from the latest checkpoint in output_dir
        log_every=1,  # train/ metrics reach the host every N steps
        eval_every=0,  # held-out eval (the `eval` section) every N steps; 0 = never
        tensorboard=True,
        progress=True,
        export_hf=True,  # final weights as safetensors under output_dir/hf
        export_dtype="",  # "" keeps the parameter dtype; e.g. bfloat16
    ))
    c.hint = ConfigDict(dict(
        mode="off",  # off | fixed | sampled
        fraction=0.5,  # fixed: this fraction of the reference solution's words
        low=0.25, high=0.75,  # sampled: uniform in [low, high] per prompt and visit
    ))
    # In-training evals: pass@1 and pass@k from fewer samples than the final eval's 128.
    c.eval.k = 16
    # The learner's engine keeps its weights and KV pool through an update, so the train
    # step lives in the sampler's reserve: `int-jax plan 8xh100` measures 14.5 GiB per
    # device at one 18K-token row per chip (the launchers set it per target).
    c.sampler.kv_reserve_bytes = 16 << 30

    # -- the authors' release (deltas from the paper's values) ---------------------
    if setting == "release":
        c.grpo.sampling.temperature = 0.8
        c.grpo.prompts_per_update = c.grpo.prompts_per_step  # one update per 32 x 8 = 256
        # Ratio clip 4. PipelineRL's loss takes rho = pi_theta / pi_old with pi_old the
        # actor's (the inference engine's) logprobs and clamps rho to [1 - epsilon_low,
        # 1 + epsilon_high] (its ppo loss; its reinforce loss caps rho at 1 + epsilon_high
        # as a detached weight). With one update per step that rho is the
        # sampler/trainer mismatch, and the clip a cap on it. We read "ratio clip 4" as
        # rho <= 4, i.e. eps_high = 3, the low side left at PipelineRL's default 0.2
        # (the fork itself was not available to check; epsilon_high=4, rho <= 5, is the
        # other reading).
        c.loss.old_logprobs = "sampler"
        c.loss.clip_high = 3.0
        c.loss.entropy_coef = 1e-4
        # Sum over tokens / 256: seq-mean-token-sum divides the token sum by the number of
        # sequences in the update, 256 while every row is trained (no mask, no dynamic
        # sampling in the release).
        c.loss.loss_agg_mode = "seq-mean-token-sum"
        c.optim.grad_clip = 0.3
        c.optim.weight_decay = 0.01
        c.train.eval_every = 50
    if variant == "hint":  # the table's "+Hint-guided RL" row
        c.hint.mode = "fixed"

    # -- small runs: every override in one block -----------------------------------
    if setting == "tiny":
        c.data.problems = "runs/demo/problems.jsonl"  # written by `int-jax demo`
        c.grpo.n = 4
        c.grpo.prompts_per_step = 2
        c.grpo.prompts_per_update = 1
        c.grpo.micro_batch = 0
        c.grpo.max_new_tokens = 16
        c.grpo.max_prompt_len = 128
        c.grpo.loss_chunk_size = 64
        c.optim.lr = 1e-4
        c.train.steps = 4
        c.train.save_every = 2
        c.train.tensorboard = False
        c.eval.k = 2
    return c
