"""`int-jax grpo`: GRPO from any checkpoint, through the JetStream engine and the one
train step, resumable.

Each step takes `grpo.prompts_per_step` problems (a seeded permutation per epoch),
samples `grpo.n` completions of each with the current weights, grades them with the
project grader (reward 1 for a correct final answer, else 0; truncated completions
graded, penalised or masked: `grpo.truncated`), computes advantages r - mean(r) per
group, takes one optimizer update per mini-batch of `grpo.prompts_per_update` groups,
and hands the new weights to the engine. The phases and their metrics: train/learner.py.

Writes under `output_dir`: run_config.json; prompts.json (problems used and left out);
metrics.jsonl (+ tensorboard/): per step rollout/, reward/, train/, sync/ and eval/
metrics; checkpoints/ (orbax: params, optimizer, rng, step and the data position);
eval/step_<N>/eval/ (the held-out eval every `train.eval_every` steps: the eval stage's
records and pass@k summaries); hf/ (the final weights as safetensors, with the
tokenizer) and DONE, written last. Run again, it continues from the latest checkpoint
(`train.resume`) with the same prompts, seeds and updates as a run never stopped.

On a pod or a GPU cluster every host runs the same command with
`--config.model.distributed=True` (JAX multi-controller; see train/multihost.py):
each host samples and grades its block of every step's prompts on its own devices
(the samples are those one process draws), the blocks are gathered so every process
holds the whole step, the update runs on the global mesh with each process feeding
its devices' rows, and the new weights are gathered into every host's sampler. Every
process computes the same metrics; process 0 alone writes run_config.json,
prompts.json, metrics.jsonl, hf/'s tokenizer and DONE; orbax writes the checkpoints
from all processes, once. The held-out eval (`train.eval_every`) runs in one process
only: with several, set it to 0 and run `int-jax eval` on hf/.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import jax
import numpy as np
from ml_collections import ConfigDict

from int_jax.config_io import save_config
from int_jax.data.records import Problem
from int_jax.intervention.prompts import hint_prefix
from int_jax.models import factory, hf, sharding
from int_jax.sampling.settings import SamplerSettings
from int_jax.stages.base import command
from int_jax.stages.common import Context, build_sampler, load_problems
from int_jax.train import grpo, learner as learner_lib, optim
from int_jax.train.metrics import MetricsLogger
from int_jax.train.step import Trainer, batch_sharding, check_losses

log = logging.getLogger("int_jax.stages")

HINT_MODES = ("off", "fixed", "sampled")


# -- settings ------------------------------------------------------------------------


def learner_config(config: ConfigDict) -> learner_lib.LearnerConfig:
    g = config.grpo
    fields = {k: v for k, v in g.to_dict().items() if k != "sampling"}
    fields.update(g.sampling.to_dict())
    return learner_lib.LearnerConfig(seed=int(config.seed), **fields)


def loss_config(config: ConfigDict) -> grpo.GRPOConfig:
    """`config.loss` as a GRPOConfig; its errors name the config key."""
    try:
        return grpo.GRPOConfig(temperature=float(config.grpo.sampling.temperature),
                               **config.loss.to_dict())
    except ValueError as e:
        raise ValueError(str(e).replace("GRPOConfig.temperature", "config.grpo.sampling."
                                        "temperature").replace("GRPOConfig.", "config.loss.")
                         ) from None
    except TypeError as e:  # an unknown key
        raise ValueError(f"config.loss: {e}") from None


def check_settings(config: ConfigDict) -> tuple[learner_lib.LearnerConfig, grpo.GRPOConfig]:
    """Every setting checked before anything heavy is built; errors name the key."""
    lc, loss = learner_config(config), loss_config(config)
    learner_lib.check_compatible(lc, loss)
    t = config.train
    for key in ("steps", "save_every", "log_every", "keep"):
        if int(t[key]) < 1:
            raise ValueError(f"config.train.{key}={t[key]} must be >= 1")
    if int(t.eval_every) < 0:
        raise ValueError(f"config.train.eval_every={t.eval_every} must be >= 0 (0: never)")
    h = config.hint
    if h.mode not in HINT_MODES:
        raise ValueError(f"config.hint.mode={h.mode!r}: choose one of {HINT_MODES}")
    if h.mode == "fixed" and not 0.0 <= float(h.fraction) <= 1.0:
        raise ValueError(f"config.hint.fraction={h.fraction} must be in [0, 1]")
    if h.mode == "sampled" and not 0.0 <= float(h.low) <= float(h.high) <= 1.0:
        raise ValueError(f"config.hint.low={h.low}, config.hint.high={h.high}: need "
                         "0 <= low <= high <= 1")
    if config.sampler.kind != "jetstream":
        raise ValueError(f"config.sampler.kind={config.sampler.kind!r}: GRPO samples from the "
                         "weights it trains, through the JetStream engine ('jetstream')")
    max_len = int(config.sampler.max_len)
    if lc.seq_len > max_len:
        raise ValueError(f"config.grpo.max_prompt_len + max_new_tokens = {lc.seq_len} exceeds "
                         f"config.sampler.max_len={max_len}")
    longest = longest_prompt(SamplerSettings.from_config(config.sampler))
    if lc.max_prompt_len > longest:
        raise ValueError(f"config.grpo.max_prompt_len={lc.max_prompt_len} exceeds the longest "
                         f"prompt the sampler takes ({longest}: config.sampler."
                         "max_prefill_length or buckets)")
    if config.model.hf_path and config.init.orbax_path:
        raise ValueError("set config.model.hf_path or config.init.orbax_path, not both")
    return lc, loss


def check_processes(config: ConfigDict, processes: int) -> None:
    """What a run over several processes cannot do, named before anything is built."""
    if processes > 1 and int(config.train.eval_every):
        raise ValueError(f"config.train.eval_every={config.train.eval_every}: the held-out "
                         f"eval runs in one process, this run has {processes}; set it to 0 "
                         "and run `int-jax eval` on the exported hf/")


def longest_prompt(settings: SamplerSettings) -> int:
    """The longest prompt the sampler accepts."""
    longest = getattr(settings, "longest_prompt", None)
    return int(longest) if longest is not None else int(settings.prefill_buckets[-1])


# -- start weights -------------------------------------------------------------------


def _train_checkpoint_step(path: Path) -> Path:
    """`checkpoints/` (its latest step) or `checkpoints/<step>` of a train run."""
    if (path / "state").is_dir():
        return path
    steps = sorted((int(p.name), p) for p in path.iterdir() if p.name.isdigit()) \
        if path.is_dir() else []
    if not steps or not (steps[-1][1] / "state").is_dir():
        raise FileNotFoundError(f"{path}: neither an `int-jax convert` folder (params/, "
                                "config.json) nor a train run's checkpoints (config.init.orbax_path)")
    return steps[-1][1]


def load_start_model(config: ConfigDict, mesh):
    """The weights GRPO starts from: `model.hf_path` (HF folder: a base model or an SFT
    run's hf/), else `init.orbax_path`, else the preset's random weights. A GRPO row is
    one right-padded sequence (`learner.pack`), never packed: on GPU `auto` attention
    can take cuDNN with sequence lengths."""
    m = config.model
    path = str(config.init.get("orbax_path", "") or "")
    if not path:
        return factory.build_model(m, mesh, packed_rows=False)
    folder = Path(path)
    rules = factory.rules_of(m)
    if (folder / "params").is_dir():  # `int-jax convert` (params/ + config.json)
        from int_jax.models import convert  # noqa: PLC0415

        return convert.load_orbax(folder, dtype=factory.dtype_of(m.dtype), mesh=mesh,
                                  rules=rules, **factory.execution_overrides(m, packed=False))
    step_dir = _train_checkpoint_step(folder)
    # A train run's state: only its params are read, into model.preset's architecture.
    import orbax.checkpoint as ocp  # noqa: PLC0415

    from int_jax.train.state import ModelDef  # noqa: PLC0415

    model = factory.build_model(m, mesh, packed_rows=False)
    model_def, params = ModelDef.split(model)
    target = {"params": {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding)
                         for k, v in params.items()}}
    restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), target)
    try:
        with ocp.PyTreeCheckpointer() as ckptr:
            restored = ckptr.restore(step_dir / "state", args=ocp.args.PyTreeRestore(
                item=target, restore_args=restore_args, partial_restore=True))
    except (ValueError, KeyError) as e:
        raise ValueError(f"{step_dir}: its params do not fit model.preset="
                         f"{m.preset!r} (config.init.orbax_path): {str(e)[:300]}") from None
    return model_def.merge(restored["params"])


# -- prompts and rewards ---------------------------------------------------------------


class Prompts:
    """Token ids of each problem's prompt: the problem alone, or with a hint (the first
    fraction of its reference solution, fixed or drawn per data position)."""

    def __init__(self, ctx: Context, problems: list[Problem], hint: ConfigDict, seed: int):
        self.ctx, self.problems, self.seed = ctx, problems, int(seed)
        self.mode = str(hint.mode)
        self.fraction, self.low, self.high = float(hint.fraction), float(hint.low), float(hint.high)
        self._cache: dict[int, list[int]] = {}

    def encode(self, problem: Problem, fraction: float | None) -> list[int]:
        if fraction is None:
            return self.ctx.encode(self.ctx.prompts.problem_chat(problem.problem))
        hint = hint_prefix(problem.reference_solution or "", fraction)
        return self.ctx.encode(self.ctx.prompts.hint_chat(problem.problem, hint))

    def longest(self, problem: Problem) -> list[int]:
        """The longest prompt this problem can get (the fraction at its largest)."""
        top = {"off": None, "fixed": self.fraction, "sampled": self.high}[self.mode]
        return self.encode(problem, top)

    def __call__(self, item: int, position: int) -> list[int]:
        if self.mode == "sampled":
            frac = np.random.default_rng([self.seed, position]).uniform(self.low, self.high)
            return self.encode(self.problems[item], float(frac))
        if item not in self._cache:
            frac = self.fraction if self.mode == "fixed" else None
            self._cache[item] = self.encode(self.problems[item], frac)
        return self._cache[item]


def select_problems(config: ConfigDict, ctx: Context, lc: learner_lib.LearnerConfig):
    """(problems to train on, their Prompts, a report): problems without a reference
    solution (hint mode) or whose longest prompt exceeds grpo.max_prompt_len are left
    out, counted and named."""
    problems = load_problems(config)
    hint = config.hint
    if hint.mode != "off":
        missing = [p.id for p in problems if not p.reference_solution]
        if missing:
            raise ValueError(f"{config.data.problems}: problem {missing[0]!r} (and "
                             f"{len(missing) - 1} more) has no reference_solution, which "
                             f"config.hint.mode={hint.mode!r} needs")
    builder = Prompts(ctx, problems, hint, int(config.seed))
    too_long = [p.id for p in problems if len(builder.longest(p)) > lc.max_prompt_len]
    kept = [p for p in problems if p.id not in set(too_long)]
    if not kept:
        raise ValueError(f"every problem's prompt exceeds config.grpo.max_prompt_len="
                         f"{lc.max_prompt_len} tokens")
    report = {"problems": len(problems), "used": len(kept), "too_long": too_long}
    return kept, Prompts(ctx, kept, hint, int(config.seed)), report


def make_reward_fn(ctx: Context, problems: list[Problem]) -> learner_lib.RewardFn:
    """The project grader as a reward: 1.0 for a correct final answer, else 0.0."""

    def reward(items, completions):
        texts = [c.text for cs in completions for c in cs]
        golds = [problems[i].answer for i, cs in zip(items, completions) for _ in cs]
        grades = ctx.grade(texts, golds)
        flat = np.array([1.0 if g == "correct" else 0.0 for g, _ in grades])
        return flat.reshape(len(completions), -1)

    return reward


# -- the held-out eval -----------------------------------------------------------------


def eval_config(config: ConfigDict, step: int) -> ConfigDict:
    c = ConfigDict()
    for section in ("model", "seed", "prompts", "sampler", "grading", "eval"):
        c[section] = config[section]
    c.run = ConfigDict(dict(config.run.to_dict(), root=str(Path(config.output_dir) / "eval"),
                            name=f"step_{step:06d}"))
    return c


def evaluate(config: ConfigDict, step: int, ctx: Context, sampler) -> dict:
    """The eval stage (stages/evaluate.py) on the current weights, through this run's
    sampler and grader; `eval/<benchmark>/...` metrics of its summaries."""
    from int_jax.stages import evaluate as eval_stage  # noqa: PLC0415

    cfg = eval_config(config, step)
    eval_ctx = Context(cfg)
    eval_ctx.__dict__.update(tokenizer=ctx.tokenizer, sampler=sampler,
                             grader_pool=ctx.grader_pool)
    manifest = eval_stage.run(cfg, eval_ctx)
    out = {}
    for name in manifest.get("summaries", {}):
        summary = json.loads(eval_stage.summary_path(Path(manifest_dir(cfg)), name).read_text())
        for k, v in (summary.get("pass_at_k") or {}).items():
            out[f"eval/{name}/pass_at_{k}"] = v
        out[f"eval/{name}/coverage"] = summary.get("coverage")
        out[f"eval/{name}/truncation_rate"] = summary.get("truncation_rate")
    return out


def manifest_dir(cfg: ConfigDict) -> Path:
    return Path(cfg.run.root) / cfg.run.name / "eval"


# -- the run -----------------------------------------------------------------------------


def run(config: ConfigDict) -> dict:
    # Before anything asks JAX a question (jax.process_count() would start a backend).
    sharding.maybe_initialize_distributed(bool(config.model.get("distributed", False)))
    lc, loss = check_settings(config)
    check_processes(config, jax.process_count())
    main_process = jax.process_index() == 0
    t = config.train
    steps, eval_every = int(t.steps), int(t.eval_every)
    out = Path(config.output_dir)
    done_file = out / "DONE"
    if done_file.exists():
        print(f"[grpo] already complete: {out}")
        return json.loads(done_file.read_text())
    if eval_every:  # fail now, not 50 steps in, on a benchmark without a path
        from int_jax.stages import evaluate as eval_stage  # noqa: PLC0415

        eval_stage.load_benchmarks(eval_config(config, 0))
    if main_process:
        save_config(config, out)
    ctx = Context(config)
    trainer = logger = None
    try:
        problems, prompt_fn, report = select_problems(config, ctx, lc)
        if main_process:
            (out / "prompts.json").write_text(json.dumps(report, indent=2) + "\n")
        if report["too_long"]:
            log.warning("grpo: %d of %d problems left out: prompt over %d tokens",
                        len(report["too_long"]), report["problems"], lc.max_prompt_len)
        mesh = factory.build_mesh(config.model)
        # Rows per micro-batch that the mesh's batch axes do not divide are an error now,
        # not at the first update after a whole step of sampling.
        batch_sharding(mesh, factory.rules_of(config.model),
                       (lc.rows_per_update // lc.micro_rows, lc.micro_rows, 1))
        model = load_start_model(config, mesh)
        # The engine keeps its own copy (on this host's devices); the trainer then takes
        # the model's arrays.
        sampler = build_sampler(config, ctx.tokenizer, model=model,
                                mesh=factory.build_sampler_mesh(config.model))
        ctx.__dict__["sampler"] = sampler
        updates = math.ceil(lc.prompts_per_step / lc.prompts_per_update) * lc.epochs
        tx, schedule = optim.make_optimizer(config.optim, steps * updates)
        trainer = Trainer(model, grpo.sequence_loss(loss, lc.loss_chunk_size), tx, schedule,
                          mesh, factory.rules_of(config.model), seed=int(config.seed),
                          checkpoint_dir=out / "checkpoints", keep=int(t.keep),
                          async_save=bool(t.async_save), whole_batches=True)
        del model
        # Before the restore: with a KL term the learner copies the start weights.
        learner = learner_lib.Learner(lc, loss, trainer, sampler, num_items=len(problems),
                                      prompt_fn=prompt_fn,
                                      reward_fn=make_reward_fn(ctx, problems))
        latest, progress = trainer.restore(resume=bool(t.resume), progress=True)
        start = 0
        if latest is not None:
            learner.restore(progress)
            start = int(progress["step"])
            log.info("grpo: resumed from %s step %d", trainer.ckpt.directory, start)
        learner_lib.sync(trainer, sampler)  # the engine holds exactly the trainer's weights
        if eval_every and start and start % eval_every == 0:
            evaluate(config, start, ctx, sampler)  # finishes an eval a kill interrupted
        logger = MetricsLogger(out, total_steps=steps, start_step=start,
                               tensorboard=bool(t.tensorboard), progress=bool(t.progress),
                               desc="grpo", postfix={"reward/mean": ".3f",
                                                     "train/loss": ".4f"})
        pending: list = []
        unchecked: list = []
        log_every, save_every = int(t.log_every), int(t.save_every)
        for step in range(start, steps):
            metrics = learner.step(step)
            done = step + 1
            pending.append((done, metrics))
            if "train/loss" in metrics:
                unchecked.append((done, metrics["train/loss"]))
            last = done == steps
            saving = done % save_every == 0 or last
            logging_step = done % log_every == 0 or last or step == start
            if saving or logging_step:  # host sync point: every loss since the last one
                check_losses(unchecked, trainer.ckpt)
                unchecked = []
            if saving:
                trainer.save(done, progress={**learner.progress(), "step": done})
            if eval_every and done % eval_every == 0:
                metrics.update(evaluate(config, done, ctx, sampler))
            if logging_step:
                logger.log_window(pending)
                pending = []
                if step == start:
                    logger.restart_clock()
        trainer.ckpt.wait()
        if t.export_hf:
            dtype = factory.dtype_of(t.export_dtype) if t.export_dtype else None
            hf.save_pretrained(trainer.model(), out / "hf", dtype=dtype)
            if main_process:
                ctx.tokenizer.save_pretrained(str(out / "hf"))
        summary = {"steps": steps, "optimizer_steps": trainer.optimizer_steps,
                   **learner.progress()}
    finally:
        if trainer is not None:
            trainer.close()
        if logger is not None:
            logger.close()
        ctx.close()
    if main_process:
        done_file.write_text(json.dumps(summary) + "\n")
    print(f"[grpo] done: {out}")
    return summary


main = command("grpo", run)
