"""GRPO over several processes (JAX multi-controller: every host runs the same command).

How a step is split, and why:

* Sampling and grading. Each process samples a contiguous block of a round's prompts
  (`Hosts.share`: whole groups, block sizes differing by at most one) on an engine over
  its own devices (`factory.build_sampler_mesh`), so no host waits on another's decode
  steps. Its requests carry the tags a single process gives those groups (`first_tag`),
  and a request's random stream depends only on (seed, tag) (`engine.request_key`), so
  the samples are the ones one process draws, however many processes there are. It
  grades what it sampled with its own grader workers.
* Gather. What each process sampled and graded (tokens, the sampler's logprobs, finish
  reasons, raw rewards, its phase times) goes to every process (`Hosts.gather`: two
  all-gathers of int32 words, a few bytes per token). Every process then holds the
  step's whole host data, identical to one process's: dynamic sampling, advantages
  (per group), packing, metrics and the checkpointed data position are computed from the
  same numbers everywhere, and only process 0 writes files.
* Learn. Every process packs the whole step and places only the rows its own devices
  hold on the global mesh (`step.whole_batch`); forward outputs the host reads (pi_old,
  the mismatch metrics) come back whole (`host_value`).
* Times are each process's own; `Hosts.slowest` makes them the slowest process's (the
  step waits for it), so every process logs the same numbers.
* Weight sync: `sampling/reshard.py` gathers each trainer weight into every host's
  sampler layout, one weight at a time.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from int_jax.data import host_sync
from int_jax.sampling.types import Completion

_FINISH = ("stop", "length")
_HEADER = 4  # first group index, groups, samples per group, timings


def _f64_words(values) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, np.float64).reshape(-1)).view(np.int32)


def _f32_words(values) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, np.float32).reshape(-1)).view(np.int32)


def encode_groups(first: int, completions: Sequence[Sequence[Completion]], raw: np.ndarray,
                  seconds: Sequence[float]) -> np.ndarray:
    """int32 words of one process's block of groups (first group index `first`):
    a header, its timings and raw rewards as float64 bits, then per sample its length,
    finish reason, tokens and both logprobs as float32 bits (exact round trip). Text is
    not sent: it was graded where it was sampled."""
    groups = len(completions)
    n = len(completions[0]) if groups else 0
    raw = np.asarray(raw, np.float64)
    if raw.size != groups * n:
        raise ValueError(f"{raw.size} rewards for {groups} groups x {n} samples")
    parts = [np.array([first, groups, n, len(seconds)], np.int32), _f64_words(seconds),
             _f64_words(raw)]
    for cs in completions:
        for c in cs:
            k = len(c.tokens)
            if len(c.logprobs) != k or len(c.model_logprobs) != k:
                raise ValueError(f"a completion of {k} tokens carries {len(c.logprobs)} / "
                                 f"{len(c.model_logprobs)} logprobs")
            parts += [np.array([k, _FINISH.index(c.finish_reason)], np.int32),
                      np.asarray(c.tokens, np.int32).reshape(-1), _f32_words(c.logprobs),
                      _f32_words(c.model_logprobs)]
    return np.concatenate(parts)


def decode_groups(words: np.ndarray):
    """(first group index, completions [G][n], raw rewards [G, n], timings) of
    `encode_groups`' words (text empty)."""
    words = np.ascontiguousarray(words, np.int32)
    first, groups, n, k = (int(x) for x in words[:_HEADER])
    at = _HEADER
    seconds = words[at:at + 2 * k].view(np.float64).tolist()
    at += 2 * k
    raw = words[at:at + 2 * groups * n].view(np.float64).reshape(groups, n).copy()
    at += 2 * groups * n
    completions = []
    for _ in range(groups):
        group = []
        for _ in range(n):
            length, finish = int(words[at]), int(words[at + 1])
            at += 2
            tokens = words[at:at + length].tolist()
            logprobs = words[at + length:at + 2 * length].view(np.float32).tolist()
            model = words[at + 2 * length:at + 3 * length].view(np.float32).tolist()
            at += 3 * length
            group.append(Completion(tokens=tokens, text="", logprobs=logprobs,
                                    model_logprobs=model, finish_reason=_FINISH[finish]))
        completions.append(group)
    if at != words.size:
        raise ValueError(f"decode_groups: {words.size - at} words left over")
    return first, completions, raw, seconds


@dataclasses.dataclass(frozen=True)
class Hosts:
    """This process's place among the run's processes and the all-gather they share
    (int [k] of this process -> [processes, k]; a parameter so tests can stand in for
    several processes)."""

    index: int = 0
    count: int = 1
    all_gather: host_sync.AllGather = host_sync.process_all_gather

    @classmethod
    def of_jax(cls) -> "Hosts":
        import jax  # noqa: PLC0415

        return cls(index=jax.process_index(), count=jax.process_count())

    def share(self, groups: int) -> tuple[int, int]:
        """[lo, hi): the groups of `groups` this process samples, in process order."""
        base, extra = divmod(int(groups), self.count)
        lo = self.index * base + min(self.index, extra)
        return lo, lo + base + (1 if self.index < extra else 0)

    def _gather_words(self, words: np.ndarray) -> list[np.ndarray]:
        sizes = np.asarray(self.all_gather(np.array([words.size], np.int64)))[:, 0]
        padded = np.zeros(int(sizes.max()), np.int32)
        padded[:words.size] = words
        rows = np.asarray(self.all_gather(padded)).astype(np.int32)
        return [rows[p, :int(size)] for p, size in enumerate(sizes)]

    def gather(self, first: int, completions: list[list[Completion]], raw: np.ndarray,
               seconds: Sequence[float], n: int):
        """Every process's block of groups, in group order: (completions, raw rewards
        [G, n], the slowest process's timings). One process: its own, unchanged."""
        raw = np.asarray(raw, np.float64).reshape(len(completions), n)
        if self.count == 1:
            return completions, raw, list(seconds)
        blocks = sorted((decode_groups(w) for w in self._gather_words(
            encode_groups(first, completions, raw, seconds))), key=lambda b: (b[0], len(b[1])))
        out, raws, at = [], [], 0
        for lo, comps, block_raw, _ in blocks:
            if lo != at:
                raise RuntimeError(f"gathered groups start at {lo}, expected {at}")
            out += comps
            raws.append(block_raw.reshape(len(comps), n))
            at += len(comps)
        slowest = np.max([b[3] for b in blocks], axis=0).tolist()
        return out, np.concatenate(raws), slowest

    def slowest(self, values: dict[str, float]) -> dict[str, float]:
        """Each value's largest over the processes (one process: as given)."""
        if self.count == 1:
            return dict(values)
        keys = sorted(values)
        rows = self.all_gather(_f64_words([values[k] for k in keys]).astype(np.int64))
        rows = np.ascontiguousarray(np.asarray(rows).astype(np.int32))
        top = rows.view(np.float64).reshape(rows.shape[0], len(keys)).max(axis=0)
        return {k: float(v) for k, v in zip(keys, top)}


def host_value(x) -> np.ndarray:
    """A device array's whole value on this host; an array spread over several
    processes' devices is all-gathered (every process must call this with it)."""
    import jax  # noqa: PLC0415

    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
