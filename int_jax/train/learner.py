"""The GRPO learner: one RL step as one function per phase, each testable alone.

    rollout       prompts -> n completions each from the sampler (token ids, the
                  sampler's logprobs, finish reasons)                        rollout/
    score         raw rewards -> rewards and loss masks: truncated completions are
                  graded as they are, given a fixed penalty, or masked       reward/
    advantages    `grpo.group_advantages` (numpy, per group)
    pack          groups -> host batches [updates, accum, rows, T] for the train step
    old_logprobs  pi_old: the sampler's, or recomputed by the trainer before the first
                  update; the sampler/trainer mismatch of the step           train/
    learn         one optimizer update per mini-batch (`step.Trainer.update`) train/
    sync          the new weights into the sampler (`update_params`)         sync/

`Learner.step` runs them in order. Rewards come from a function (the project grader
in `int-jax grpo`, any verifiable reward in tests). Dynamic sampling drops groups whose
rewards are all equal and samples more prompts to refill, counting the drops.

Data order is a seeded permutation of the prompts per epoch, read at `position`, which
is checkpointed with the train state (`progress`): a resumed run samples the same
prompts with the same seeds and makes the same updates as an uninterrupted one.

Several processes (`hosts`, train/multihost.py): each samples and grades a block of
every round's groups on its own devices, with the tags one process would use, and the
blocks are gathered onto every process; everything after that (dynamic sampling,
advantages, packing, metrics, the data position) runs on every process on the same
whole step, and each feeds the rows of its own devices to the global train step.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from int_jax.sampling.types import Completion, SamplingParams
from int_jax.train import grpo
from int_jax.train.multihost import Hosts, host_value
from int_jax.train.step import Trainer, batch_digest

TRUNCATED = ("grade", "penalty", "mask")
# LearnerConfig field -> its config key, for error messages.
_KEYS = {"temperature": "grpo.sampling.temperature", "top_p": "grpo.sampling.top_p",
         "top_k": "grpo.sampling.top_k"}


def _key(field: str) -> str:
    return "config." + _KEYS.get(field, f"grpo.{field}")


def _check(ok: bool, field: str, need: str, value) -> None:
    if not ok:
        raise ValueError(f"{_key(field)} must be {need}, got {value!r}")


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    """How one RL step samples and updates (config section `grpo`), checked on creation."""

    n: int = 8  # completions per prompt: the group
    prompts_per_step: int = 32  # groups sampled per step (the paper: 32)
    prompts_per_update: int = 16  # groups per optimizer update: the mini-batch (paper: 16)
    micro_batch: int = 0  # rows per accumulation step of an update; 0 = the whole update
    epochs: int = 1  # passes over a step's groups (each pass: every mini-batch once)
    max_new_tokens: int = 16384
    max_prompt_len: int = 1024  # longer prompts are left out when the run starts
    temperature: float = 1.0  # tau of both the sampler and the loss
    top_p: float = 1.0
    top_k: int = 0
    truncated: str = "grade"  # a completion cut at max_new_tokens: grade | penalty | mask
    truncated_reward: float = 0.0  # its reward with truncated='penalty'
    dynamic_sampling: bool = False  # drop groups with all-equal rewards and refill
    max_rounds: int = 4  # sampler calls per step with dynamic sampling (1 call without)
    mismatch_metrics: bool = True  # with old_logprobs='sampler': a trainer forward to measure it
    loss_chunk_size: int = 512  # positions per vocabulary projection in the loss
    seed: int = 0

    def __post_init__(self):
        for f in ("n", "prompts_per_step", "prompts_per_update", "epochs", "max_new_tokens",
                  "max_prompt_len", "max_rounds", "loss_chunk_size"):
            _check(_positive_int(getattr(self, f)), f, "an int > 0", getattr(self, f))
        _check(self.n >= 2, "n", "at least 2 (advantages compare samples of a prompt)", self.n)
        _check(self.prompts_per_step % self.prompts_per_update == 0, "prompts_per_update",
               f"a divisor of config.grpo.prompts_per_step={self.prompts_per_step}",
               self.prompts_per_update)
        _check(isinstance(self.micro_batch, int) and self.micro_batch >= 0
               and (self.micro_batch == 0 or self.rows_per_update % self.micro_batch == 0),
               "micro_batch", f"0 or a divisor of prompts_per_update x n = {self.rows_per_update}",
               self.micro_batch)
        _check(isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
               and self.temperature > 0, "temperature", "a finite number > 0", self.temperature)
        _check(isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1, "top_p",
               "in (0, 1]", self.top_p)
        _check(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", "an int >= 0",
               self.top_k)
        _check(self.truncated in TRUNCATED, "truncated", f"one of {TRUNCATED}", self.truncated)
        _check(isinstance(self.truncated_reward, (int, float))
               and math.isfinite(self.truncated_reward), "truncated_reward", "a finite number",
               self.truncated_reward)

    @property
    def rows_per_update(self) -> int:
        return self.prompts_per_update * self.n

    @property
    def micro_rows(self) -> int:
        return self.micro_batch or self.rows_per_update

    @property
    def seq_len(self) -> int:
        return self.max_prompt_len + self.max_new_tokens

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=float(self.temperature), top_p=float(self.top_p),
                              top_k=int(self.top_k))

    @property
    def truncates(self) -> bool:
        """Whether sampling truncates the distribution (top-p or top-k)."""
        return self.top_p < 1.0 or self.top_k > 0


def check_compatible(cfg: LearnerConfig, loss: grpo.GRPOConfig) -> None:
    """Settings of the learner and the loss that only make sense together."""
    if loss.temperature != cfg.temperature:
        raise ValueError(f"the loss's temperature {loss.temperature} differs from "
                         f"config.grpo.sampling.temperature={cfg.temperature}: the policy "
                         "trained must be the one sampled")
    if loss.old_logprobs == "sampler" and cfg.truncates:
        raise ValueError("config.loss.old_logprobs='sampler' needs untruncated sampling "
                         "(config.grpo.sampling.top_p=1.0, top_k=0): the sampler's logprobs "
                         "are then those of the temperature-scaled policy the loss trains; "
                         "use old_logprobs='trainer' otherwise")


# -- data order ---------------------------------------------------------------------


class PromptSource:
    """Items 0..size-1 in a fresh seeded permutation per epoch, read from `position`."""

    def __init__(self, size: int, seed: int, position: int = 0):
        if size < 1:
            raise ValueError("no prompts to train on")
        self.size, self.seed, self.position = int(size), int(seed), int(position)
        self._epoch, self._perm = -1, None

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return self._perm

    def take(self, k: int) -> list[tuple[int, int]]:
        """The next k (item, position) pairs; advances the position."""
        out = []
        for p in range(self.position, self.position + k):
            out.append((int(self._order(p // self.size)[p % self.size]), p))
        self.position += k
        return out


def sampling_seed(seed: int, step: int, round_: int) -> int:
    """The sampler's seed for round `round_` of step `step` (31 bits)."""
    return int(np.random.SeedSequence([seed, step, round_]).generate_state(1)[0] & 0x7FFFFFFF)


# -- phases -------------------------------------------------------------------------


def rollout(sampler, prompts: Sequence[Sequence[int]], cfg: LearnerConfig,
            seed: int, first_group: int = 0) -> list[list[Completion]]:
    """n completions per prompt: result[g][j] is sample j of prompt g. `first_group`:
    the index of prompts[0] in its round (a process's block on several hosts), whose
    samples carry the tags one process gives them (JetStreamSampler's `first_tag`)."""
    tags = {"first_tag": first_group * cfg.n} if first_group else {}
    out = sampler.generate([list(p) for p in prompts], cfg.n, cfg.sampling,
                           cfg.max_new_tokens, seed, **tags)
    if len(out) != len(prompts) or any(len(c) != cfg.n for c in out):
        raise RuntimeError(f"sampler returned {[len(c) for c in out]} completions for "
                           f"{len(prompts)} prompts x {cfg.n}")
    return out


def truncated_mask(completions: Sequence[Sequence[Completion]]) -> np.ndarray:
    """bool [G, n]: the completion was cut at max_new_tokens."""
    return np.array([[c.finish_reason == "length" for c in cs] for cs in completions], bool)


def score(raw: np.ndarray, truncated: np.ndarray, cfg: LearnerConfig):
    """(rewards [G, n], live [G, n]) from raw rewards (e.g. 1 correct, 0 not).

    truncated='grade': as graded; 'penalty': a truncated completion's reward is
    `truncated_reward`; 'mask': graded, but its tokens carry no loss (its reward still
    counts in its group's mean: the others are compared with what the policy did).
    """
    rewards = np.asarray(raw, np.float64).copy()
    live = np.ones(rewards.shape, bool)
    if cfg.truncated == "penalty":
        rewards[truncated] = cfg.truncated_reward
    elif cfg.truncated == "mask":
        live &= ~truncated
    return rewards, live


def informative(rewards: np.ndarray) -> np.ndarray:
    """bool [G]: the group's rewards are not all equal (it carries a gradient)."""
    return ~(rewards == rewards[:, :1]).all(axis=1)


MIN_ROW_LENGTH = 16


def row_length(longest: int, seq_len: int) -> int:
    """The padded length T of a step's rows: the power of two (>= 16) that holds its
    longest prompt + completion, capped at max_prompt_len + max_new_tokens. Each length
    compiles the train step once; short steps do not pay for the longest possible row."""
    t = MIN_ROW_LENGTH
    while t < longest:
        t *= 2
    return min(t, seq_len)


def pack(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[Completion]],
         advantages: np.ndarray, live: np.ndarray, cfg: LearnerConfig) -> dict[str, np.ndarray]:
    """Groups -> host arrays [updates, accum, rows, T] (advantages [updates, accum, rows]).

    One completion per row, prompt then completion from position 0, T = `row_length` of
    the longest; rows past the last group are padding (segment 0, mask 0). Position t
    predicts token t + 1, so the completion's tokens are trained at t = p - 1 ..
    p + c - 2 (`mask`), where `old_logp` holds the sampler's logprobs of them.
    """
    groups = len(prompts)
    updates = max(1, math.ceil(groups / cfg.prompts_per_update))
    longest = max((len(p) + len(c.tokens) for p, cs in zip(prompts, completions) for c in cs),
                  default=1)
    rows, t_len = updates * cfg.rows_per_update, row_length(longest, cfg.seq_len)
    ids = np.zeros((rows, t_len), np.int32)
    seg = np.zeros((rows, t_len), np.int32)
    mask = np.zeros((rows, t_len), np.float32)
    old = np.zeros((rows, t_len), np.float32)
    adv = np.zeros((rows,), np.float32)
    for g, (prompt, comps) in enumerate(zip(prompts, completions, strict=True)):
        p = len(prompt)
        for j, c in enumerate(comps):
            r, n_new = g * cfg.n + j, len(c.tokens)
            if p + n_new > t_len:
                raise ValueError(f"a row of {p} prompt + {n_new} completion tokens exceeds "
                                 f"config.grpo.max_prompt_len + max_new_tokens = {cfg.seq_len}")
            ids[r, :p], ids[r, p:p + n_new] = prompt, c.tokens
            seg[r, :p + n_new] = 1
            if live[g, j] and n_new:
                mask[r, p - 1:p + n_new - 1] = 1.0
                old[r, p - 1:p + n_new - 1] = c.logprobs
            adv[r] = advantages[g, j]
    positions = np.where(seg != 0, np.arange(t_len, dtype=np.int32)[None, :], 0)
    accum = cfg.rows_per_update // cfg.micro_rows
    shape = (updates, accum, cfg.micro_rows)
    out = {"ids": ids, "positions": positions.astype(np.int32), "segment_ids": seg,
           "mask": mask, "old_logp": old}
    out = {k: v.reshape(*shape, t_len) for k, v in out.items()}  # [rows, T] -> [U, A, R, T]
    out["sampler_logp"] = out["old_logp"].copy()
    out["advantages"] = adv.reshape(shape)
    return out


def update_batch(batches: dict[str, np.ndarray], u: int, keys: Sequence[str]) -> dict:
    """Mini-batch u of `pack`'s arrays: [accum, rows, ...]."""
    return {k: batches[k][u] for k in keys}


def mismatch_metrics(trainer_logp: np.ndarray, sampler_logp: np.ndarray,
                     mask: np.ndarray) -> dict[str, float]:
    """How far the sampler's logprobs are from the trainer's at the same weights, over the
    trained tokens of a step: mean and max |delta log p|, and the correlation of the two
    probabilities (NaN when either is constant)."""
    live = mask != 0
    if not live.any():
        return {}
    t, s = trainer_logp[live].astype(np.float64), sampler_logp[live].astype(np.float64)
    delta = np.abs(t - s)
    pt, ps = np.exp(t), np.exp(s)
    dt, ds = pt - pt.mean(), ps - ps.mean()
    denom = math.sqrt(float((dt * dt).sum() * (ds * ds).sum()))
    return {"train/mismatch_logp_abs_mean": float(delta.mean()),
            "train/mismatch_logp_abs_max": float(delta.max()),
            "train/mismatch_prob_corr": float((dt * ds).sum() / denom) if denom > 0 else math.nan}


def summarize_updates(updates: list[dict]) -> dict:
    """One step's train metrics from its updates' (device scalars, no host read): the
    mean over updates, but maxima / minima over them for `*_max` / `*_min`, sums for
    counts, and the first update's ratio extremes (`train/first_ratio_*`: 1 up to
    rounding when pi_old is the weights the rollouts came from)."""
    if not updates:
        return {"train/updates": 0}
    named = [{(k if k.startswith("train/") else f"train/{k}"): v for k, v in m.items()}
             for m in updates]
    out = {}
    for k in named[0]:
        xs = jnp.stack([m[k] for m in named])
        if k.endswith("_max"):
            out[k] = jnp.max(xs)
        elif k.endswith("_min"):
            out[k] = jnp.min(xs)
        elif k in ("train/tokens", "train/sequences", "train/loss_weight"):
            out[k] = jnp.sum(xs)
        else:
            out[k] = jnp.mean(xs)
    for k in ("train/ratio_max", "train/ratio_min"):
        if k in named[0]:
            out[k.replace("train/", "train/first_")] = named[0][k]
    out["train/updates"] = len(updates)
    return out


def sync(trainer: Trainer, sampler) -> float:
    """Hand the trainer's weights to the sampler; seconds taken (device work included)."""
    update = getattr(sampler, "update_params", None)
    if update is None:
        raise TypeError(f"{type(sampler).__name__} has no update_params: GRPO needs a sampler "
                        "whose weights it can replace (config.sampler.kind='jetstream')")
    t0 = time.perf_counter()
    update(trainer.model())
    engine = getattr(sampler, "engine", None)
    if engine is not None:
        jax.block_until_ready(engine.params.state)
    return time.perf_counter() - t0


# -- the step -----------------------------------------------------------------------

# (items, completions [G][n]) -> raw rewards [G, n]
RewardFn = Callable[[Sequence[int], Sequence[Sequence[Completion]]], np.ndarray]
# (item, data position) -> prompt token ids
PromptFn = Callable[[int, int], list[int]]


@dataclasses.dataclass
class Sampled:
    """The groups one step trains on, and what the step sampled to get them."""

    items: list[int]
    prompts: list[list[int]]
    completions: list[list[Completion]]
    raw: np.ndarray  # [G, n] rewards as the reward function gave them
    rewards: np.ndarray  # [G, n] after the truncation rule
    live: np.ndarray  # [G, n] completions that carry loss
    metrics: dict


class Learner:
    """GRPO over a `Trainer` (the train state and step) and a sampler with
    `update_params` (the JetStream engine), on prompts from `prompt_fn` scored by
    `reward_fn`. `step(s)` runs RL step s; `progress()` is what a checkpoint keeps."""

    def __init__(self, cfg: LearnerConfig, loss: grpo.GRPOConfig, trainer: Trainer, sampler, *,
                 num_items: int, prompt_fn: PromptFn, reward_fn: RewardFn,
                 hosts: Hosts | None = None):
        check_compatible(cfg, loss)
        self.cfg, self.loss = cfg, loss
        self.hosts = hosts or Hosts.of_jax()
        self.trainer, self.sampler = trainer, sampler
        self.source = PromptSource(num_items, cfg.seed)
        self.prompt_fn, self.reward_fn = prompt_fn, reward_fn
        self.counters = {"groups_sampled": 0, "groups_dropped": 0, "samples": 0}
        chunk = cfg.loss_chunk_size

        def logprobs(model, micro):
            return grpo.sequence_logprobs(model, micro, temperature=loss.temperature,
                                          chunk_size=chunk)[0]

        self._logprobs = trainer.forward(logprobs)
        self._reference = None
        if loss.kl_coef > 0:  # the frozen start weights; never built when beta = 0
            ref = jax.tree.map(jnp.copy, trainer.state.params)
            apply = trainer.forward_with(logprobs)
            self._reference = lambda local: apply(ref, local)

    # -- checkpointed progress ---------------------------------------------------------

    def progress(self) -> dict:
        return {"position": self.source.position, "counters": dict(self.counters)}

    def restore(self, progress: dict) -> None:
        self.source.position = int(progress["position"])
        self.counters.update({k: int(v) for k, v in progress.get("counters", {}).items()})

    # -- phases in order ---------------------------------------------------------------

    def sample(self, step: int) -> Sampled:
        """Rollout and score, with dynamic sampling's refills; `rollout/` and `reward/`
        metrics of everything sampled (dropped groups included)."""
        cfg = self.cfg
        keep: list[tuple] = []
        all_raw, all_comps = [], []
        rounds = dropped = 0
        sample_s = grade_s = 0.0
        while True:
            want = cfg.prompts_per_step - len(keep)
            taken = self.source.take(want)
            items = [item for item, _ in taken]
            prompts = [self.prompt_fn(item, pos) for item, pos in taken]
            lo, hi = self.hosts.share(len(taken))  # this process's groups of the round
            t0 = time.perf_counter()
            comps = rollout(self.sampler, prompts[lo:hi], cfg,
                            sampling_seed(cfg.seed, step, rounds), first_group=lo)
            t1 = time.perf_counter()
            raw = (np.asarray(self.reward_fn(items[lo:hi], comps), np.float64)
                   if comps else np.zeros((0, cfg.n)))
            seconds = (t1 - t0, time.perf_counter() - t1)
            comps, raw, (sampled_s, graded_s) = self.hosts.gather(lo, comps, raw, seconds, cfg.n)
            sample_s += sampled_s
            grade_s += graded_s
            rounds += 1
            rewards, live = score(raw, truncated_mask(comps), cfg)
            useful = informative(rewards) if cfg.dynamic_sampling else np.ones(len(items), bool)
            dropped += int((~useful).sum())
            keep += [(items[g], prompts[g], comps[g], raw[g], rewards[g], live[g])
                     for g in np.nonzero(useful)[0]]
            all_raw.append(raw)
            all_comps += comps
            if not cfg.dynamic_sampling or len(keep) >= cfg.prompts_per_step \
                    or rounds >= cfg.max_rounds:
                break
        self.counters["groups_sampled"] += sum(len(r) for r in all_raw)
        self.counters["groups_dropped"] += dropped
        self.counters["samples"] += sum(len(r) for r in all_raw) * cfg.n
        raw_all = np.concatenate(all_raw)
        lengths = np.array([len(c.tokens) for cs in all_comps for c in cs])
        cut = truncated_mask(all_comps)
        tokens = int(lengths.sum())
        metrics = {
            "rollout/groups": len(raw_all), "rollout/rounds": rounds,
            "rollout/groups_dropped": dropped,
            "rollout/groups_dropped_total": self.counters["groups_dropped"],
            "rollout/groups_kept": len(keep),
            "rollout/response_len_mean": float(lengths.mean()),
            "rollout/response_len_max": int(lengths.max()),
            "rollout/truncation_rate": float(cut.mean()),
            "rollout/tokens": tokens, "rollout/seconds": sample_s,
            "rollout/tokens_per_s": tokens / max(sample_s, 1e-9),
            # correct := a raw reward > 0 (1 for the grader's correct answers)
            "reward/mean": float(raw_all.mean()),
            "reward/frac_all_wrong": float((raw_all <= 0).all(axis=1).mean()),
            "reward/frac_all_right": float((raw_all > 0).all(axis=1).mean()),
            "reward/seconds": grade_s,
        }
        if keep:
            items, prompts, comps, raw, rewards, live = (list(x) for x in zip(*keep))
        else:
            items, prompts, comps, raw, rewards, live = [], [], [], [], [], []
        shape = (len(keep), cfg.n)
        return Sampled(items, prompts, comps, np.array(raw, np.float64).reshape(shape),
                       np.array(rewards, np.float64).reshape(shape),
                       np.array(live, bool).reshape(shape), metrics)

    def batches(self, sampled: Sampled) -> dict[str, np.ndarray]:
        """Advantages and packed arrays of the groups to train on."""
        adv = grpo.group_advantages(sampled.rewards, self.loss.normalize_adv_by_std,
                                    self.loss.adv_eps)
        return pack(sampled.prompts, sampled.completions, adv, sampled.live, self.cfg)

    def old_logprobs(self, batches: dict[str, np.ndarray]) -> dict[str, float]:
        """Fill `old_logp` with pi_old as configured (and `ref_logp` for the KL); the
        mismatch metrics whenever the trainer's logprobs at the rollout weights are
        computed (always with old_logprobs='trainer')."""
        loss, metrics = self.loss, {}
        need_trainer = loss.old_logprobs == "trainer" or self.cfg.mismatch_metrics
        keys = ("ids", "positions", "segment_ids")
        if need_trainer:
            trainer_lp = np.stack([host_value(self._logprobs(update_batch(batches, u, keys)))
                                   for u in range(batches["ids"].shape[0])])
            metrics.update(mismatch_metrics(trainer_lp, batches["sampler_logp"], batches["mask"]))
            if loss.old_logprobs == "trainer":
                batches["old_logp"] = np.where(batches["mask"] != 0, trainer_lp, 0.0).astype(
                    np.float32)
        if self._reference is not None:
            batches["ref_logp"] = np.stack([host_value(self._reference(update_batch(
                batches, u, keys))) for u in range(batches["ids"].shape[0])])
        return metrics

    def learn(self, batches: dict[str, np.ndarray]) -> list[dict]:
        """Every mini-batch once per epoch, one optimizer update each; device metrics."""
        keys = ["ids", "positions", "segment_ids", "mask", "old_logp", "advantages"]
        if self.loss.tis_cap is not None:
            keys.append("sampler_logp")
        if self._reference is not None:
            keys.append("ref_logp")
        out = []
        for _ in range(self.cfg.epochs):
            for u in range(batches["ids"].shape[0]):
                out.append(self.trainer.update(update_batch(batches, u, keys)))
        return out

    def step(self, step: int) -> dict:
        """One RL step. Returns its metrics: host numbers for rollout/, reward/, sync/;
        device scalars for train/ (read them on logging steps only)."""
        t_start = time.perf_counter()
        sampled = self.sample(step)
        metrics = dict(sampled.metrics)
        if not sampled.items:  # every group uniform: nothing to learn from, weights unchanged
            metrics.update({"train/updates": 0, "train/seconds": 0.0, "sync/seconds": 0.0})
            return metrics
        t0 = time.perf_counter()
        batches = self.batches(sampled)
        # equal across runs iff the same completions and advantages were trained on
        metrics["batch_sha"] = batch_digest({k: batches[k] for k in ("ids", "mask", "advantages")})
        metrics.update(self.old_logprobs(batches))
        t1 = time.perf_counter()
        updates = self.learn(batches)
        jax.block_until_ready(self.trainer.state.params)  # for the phase time only
        t2 = time.perf_counter()
        metrics.update(summarize_updates(updates))
        trained = float(batches["mask"].sum()) * self.cfg.epochs
        sync_s = sync(self.trainer, self.sampler)
        times = self.hosts.slowest({"old_logprob": t1 - t0, "learn": t2 - t1, "sync": sync_s,
                                    "step": time.perf_counter() - t_start})
        metrics.update({"train/old_logprob_seconds": times["old_logprob"],
                        "train/seconds": times["old_logprob"] + times["learn"],
                        "train/tokens_per_s": trained / max(times["learn"], 1e-9),
                        "sync/seconds": times["sync"],
                        "sync/fraction": times["sync"] / max(times["step"], 1e-9)})
        metrics["tokens"] = metrics["rollout/tokens"]
        return metrics
