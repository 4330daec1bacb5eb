"""What every stage needs from a config: tokenizer, prompts, sampler, grader, problems.

Heavy pieces (tokenizer, model + engine) are built on first use, so a stage
that only parses (filter, select, stats) never loads a model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Sequence

from ml_collections import ConfigDict

from int_jax.data.records import Problem, iter_records
from int_jax.grading.grade import Grade
from int_jax.intervention.prompts import PromptSet
from int_jax.sampling.types import Completion, Sampler, SamplingParams
from int_jax.stages.base import fingerprint

log = logging.getLogger("int_jax.stages")

SAMPLER_KINDS = ("jetstream", "scripted")
# The config sections a Context builds its pieces from; stages sharing one Context
# (the demo, tests) must agree on them.
CONTEXT_SECTIONS = ("model", "prompts", "sampler", "grading")


def sampling_params(section: ConfigDict) -> SamplingParams:
    s = section.sampling
    return SamplingParams(temperature=float(s.temperature), top_p=float(s.top_p), top_k=int(s.top_k))


def build_sampler(config: ConfigDict, tokenizer, model=None, mesh=None) -> Sampler:
    """The sampler named by `config.sampler.kind`; a jetstream one samples from `model`
    when given (GRPO: the weights it trains), else builds its own from `config.model`,
    on `mesh` when given (multi-host GRPO: this host's devices)."""
    kind = config.sampler.kind
    if kind == "scripted":
        from int_jax.sampling.scripted import ScriptedSampler

        if not config.sampler.script:
            raise ValueError("config.sampler.kind='scripted' needs config.sampler.script (a JSONL file)")
        return ScriptedSampler.from_file(config.sampler.script, tokenizer,
                                         default=config.sampler.get("default"))
    if kind == "jetstream":
        from int_jax.sampling.sampler import JetStreamSampler

        engine_cfg = ConfigDict(config.sampler.to_dict())
        engine_cfg.progress = False  # the stage bar reports items and tokens/s
        return JetStreamSampler.from_config(config.model, engine_cfg, model=model,
                                            tokenizer=tokenizer, mesh=mesh)
    raise ValueError(f"config.sampler.kind={kind!r}; choose one of {SAMPLER_KINDS}")


@dataclasses.dataclass(frozen=True)
class Graded:
    """One sample and its grade (of `completion.text` alone, see `sample_graded`)."""

    completion: Completion
    grade: str  # a Grade value
    answer: str | None  # the extracted final answer

    @property
    def correct(self) -> bool:
        return self.grade == Grade.CORRECT.value


class Context:
    """Lazily built shared pieces of one stage run."""

    def __init__(self, config: ConfigDict):
        self.config = config

    @functools.cached_property
    def tokenizer(self):
        from int_jax.data.tokenizer import load_model_tokenizer

        return load_model_tokenizer(self.config.model)

    @functools.cached_property
    def prompts(self) -> PromptSet:
        return PromptSet.load(self.config.prompts.to_dict())

    @functools.cached_property
    def sampler(self) -> Sampler:
        return build_sampler(self.config, self.tokenizer)

    def encode(self, messages, assistant_prefix: str = "") -> list[int]:
        from int_jax.data.tokenize import encode_prompt

        return encode_prompt(self.tokenizer, messages, assistant_prefix)

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids as text, special tokens included (a record's `prompt`)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def sample(self, prompts: Sequence[Sequence[int]], n: int, section: ConfigDict, seed: int,
               max_new_tokens: int | None = None) -> list[list[Completion]]:
        """n completions per prompt with `section.sampling`; `sampler.delay_s` (a throttle
        for kill-and-resume tests) sleeps that long per prompt first."""
        if not prompts:
            return []
        delay = float(self.config.sampler.get("delay_s", 0.0) or 0.0)
        if delay > 0:
            time.sleep(delay * len(prompts))
        out = self.sampler.generate([list(p) for p in prompts], n, sampling_params(section),
                                    int(max_new_tokens or section.max_new_tokens), seed)
        if len(out) != len(prompts) or any(len(c) != n for c in out):
            raise RuntimeError(f"sampler returned {[len(c) for c in out]} completions for "
                               f"{len(prompts)} prompts x {n}")
        return out

    def sample_graded(self, prompts: Sequence[Sequence[int]], golds: Sequence[str], n: int,
                      section: ConfigDict, seed: int) -> list[list[Graded]]:
        """`sample`, then grade sample j of prompt i against `golds[i]`: only the text
        the model wrote, never the (possibly unfinished) answer it was given."""
        completions = self.sample(prompts, n, section, seed)
        flat = self.grade([c.text for cs in completions for c in cs],
                          [g for g in golds for _ in range(n)])
        return [[Graded(c, *flat[i * n + j]) for j, c in enumerate(cs)]
                for i, cs in enumerate(completions)]

    def encode_within(self, chats: Sequence[list], limit: int,
                      counters: Sequence) -> tuple[list[int], list[list[int]]]:
        """Encode one chat per item; items whose chat is over `limit` tokens are skipped.
        Counts `attempts` and `skipped_context` into each item's counter; returns the
        positions kept and their prompt ids."""
        kept, prompts = [], []
        for i, (chat, counter) in enumerate(zip(chats, counters, strict=True)):
            ids = self.encode(chat)
            counter["attempts"] += 1
            if len(ids) > limit:
                counter["skipped_context"] += 1
                continue
            kept.append(i)
            prompts.append(ids)
        return kept, prompts

    @functools.cached_property
    def grader_pool(self):
        from int_jax.grading.verify import GraderPool

        return GraderPool(int(self.config.grading.workers))

    def grade(self, responses: Sequence[str], golds: Sequence[str]) -> list[tuple[str, str | None]]:
        """(grade value, extracted answer) per response, graded in worker processes with
        a hard per-item time limit."""
        from int_jax.grading.answers import extract_answer
        from int_jax.grading.verify import grade_batch

        if not responses:
            return []
        multi_box = bool(self.config.grading.get("multi_box", False))
        grades = grade_batch(list(zip(responses, golds)), pool=self.grader_pool,
                             timeout_s=float(self.config.grading.timeout_s), multi_box=multi_box)
        return [(Grade(g).value, extract_answer(r, multi_box)[0]) for r, g in zip(responses, grades)]

    def close(self) -> None:
        if "grader_pool" in self.__dict__:
            self.grader_pool.close()
            del self.__dict__["grader_pool"]


def load_problems(config: ConfigDict) -> list[Problem]:
    """Problem records from `config.data.problems` (first `config.data.limit` if > 0).

    Read through `int_jax.data.records`, whose errors name the file, line and field.
    """
    path = config.data.problems
    if not path:
        raise ValueError("config.data.problems is empty: point it at a JSONL file of problems")
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: problems file not found (config.data.problems)")
    problems = list(iter_records(path, Problem))
    seen: set[str] = set()
    for lineno, p in enumerate(problems, 1):
        if p.id in seen:
            raise ValueError(f"{path}: record {lineno}: problem id {p.id!r} appears twice")
        seen.add(p.id)
    limit = int(config.data.get("limit", 0) or 0)
    return problems[:limit] if limit > 0 else problems


@contextlib.contextmanager
def context(config: ConfigDict, ctx: Context | None = None):
    """`ctx` when a caller shares one (the demo: one model for every stage), else a
    fresh Context whose grader processes are stopped on the way out."""
    if ctx is not None:
        if fingerprint(ctx.config, CONTEXT_SECTIONS) != fingerprint(config, CONTEXT_SECTIONS):
            raise ValueError(f"a shared Context must be built from the same {CONTEXT_SECTIONS} "
                             "config sections as the stage it serves")
        yield ctx
        return
    ctx = Context(config)
    try:
        yield ctx
    finally:
        ctx.close()
