"""The one sampler every stage uses: prompts x n -> completions over `Qwen3Engine`.

`JetStreamSampler.generate` schedules n requests per prompt onto the engine with
`scheduler.Scheduler` (the engine's JetStream methods plus admission by KV memory and
batched prefill, which JetStream's slot-only Driver lacks; the Driver still serves
`int-jax serve`), and returns completions in input order. Each call ends by giving
every KV page back, so a failure in one call (an engine error, Ctrl-C) surfaces as
an exception here and leaves the sampler usable for the next call. Compiled programs
live in the engine and are reused across calls.

Continuing a partial assistant message is just a longer prompt; identical prompts (n
samples, or 32 continuations of one prefix) are prefilled once and share their pages
(each sample prefills its own with `sampler.share_prompts=False`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np
from ml_collections import ConfigDict

from int_jax.models import factory
from int_jax.models.qwen3 import Qwen3
from int_jax.sampling import decode as decode_lib
from int_jax.sampling import scheduler as scheduler_lib
from int_jax.sampling.engine import Qwen3Engine
from int_jax.sampling.settings import SamplerSettings
from int_jax.sampling.types import Completion, SamplingParams


@dataclasses.dataclass
class _Record:
    """What came back for one request, filled by the engine's step rows."""

    tokens: list = dataclasses.field(default_factory=list)
    logprobs: list = dataclasses.field(default_factory=list)
    model_logprobs: list = dataclasses.field(default_factory=list)
    finish: int = decode_lib.FINISH_NONE


class JetStreamSampler:
    """`Sampler` over JetStream: continuous batching in `slots` KV-cache rows.

    Built from one `SamplerSettings` (or keyword fields building one); `from_config`
    builds it, the mesh and the tokenizer from `config.model` and `config.sampler`.
    """

    def __init__(self, model: Qwen3, tokenizer=None, settings: SamplerSettings | None = None, *,
                 mesh=None, model_rules=None, tokenizer_path: str = "", **fields):
        settings = (settings or SamplerSettings()).replace(**fields)
        self.settings = settings
        self.engine = Qwen3Engine(model, settings, tokenizer=tokenizer,
                                  tokenizer_path=tokenizer_path, mesh=mesh, model_rules=model_rules)
        self.tokenizer = tokenizer
        self.progress = settings.progress
        self.stall_timeout_s = settings.stall_timeout_s
        self.vocab_size = model.config.vocab_size
        self.last_run: dict = {}

    @classmethod
    def from_config(cls, model_cfg: ConfigDict, sampler_cfg: ConfigDict, *, model: Qwen3 | None = None,
                    tokenizer=None, mesh=None) -> "JetStreamSampler":
        """Build the model (unless given), the mesh (unless given: multi-host GRPO
        passes this host's) and the tokenizer from configs.

        The model is built in the trainer's layout (`model.rules`); the engine
        keeps its own copy in the sampler's (`sampler.rules`: overrides on top).
        """
        settings = SamplerSettings.from_config(sampler_cfg)
        if mesh is None:
            mesh = factory.build_mesh(model_cfg)
        if model is None:
            model = factory.build_model(model_cfg, mesh)
        from int_jax.data.tokenizer import load_tokenizer, tokenizer_dir  # noqa: PLC0415

        tokenizer_folder = tokenizer_dir(model_cfg)  # None: the bundled Qwen3 tokenizer
        if tokenizer is None and settings.use_tokenizer:
            tokenizer = load_tokenizer(tokenizer_folder)
        return cls(model, tokenizer, settings, mesh=mesh, model_rules=factory.rules_of(model_cfg),
                   tokenizer_path=str(tokenizer_folder or ""))

    def update_params(self, params) -> None:
        """Sample from new weights from the next `generate` on (GRPO, every step)."""
        self.engine.update_params(params)

    # -- generate ------------------------------------------------------------------

    def _validate(self, prompts, n, max_new_tokens):
        """(prompts as lists of ids, max_new_tokens per prompt), or a clear error."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        prompts = list(prompts)
        per_prompt = ([int(m) for m in max_new_tokens] if not np.isscalar(max_new_tokens)
                      else [int(max_new_tokens)] * len(prompts))
        if len(per_prompt) != len(prompts):
            raise ValueError(f"{len(per_prompt)} max_new_tokens for {len(prompts)} prompts")
        out = []
        for i, (prompt, new) in enumerate(zip(prompts, per_prompt)):
            if new < 1:
                raise ValueError(f"max_new_tokens must be >= 1, got {new}")
            ids = np.asarray(list(prompt), dtype=np.int64)
            if ids.ndim != 1 or ids.size == 0:
                raise ValueError(f"prompt {i}: expected a non-empty list of token ids")
            if ids.min() < 0 or ids.max() >= self.vocab_size:
                raise ValueError(f"prompt {i}: token id outside [0, {self.vocab_size})")
            try:  # too long, or more KV pages than the pool has: an error now, not a hang
                self.engine.check_request(int(ids.size), new)
            except ValueError as e:
                raise type(e)(f"prompt {i}: {e}") from None
            if ids.size + new > self.settings.max_len:
                raise ValueError(
                    f"prompt {i}: {ids.size} prompt tokens + max_new_tokens={new} "
                    f"exceed the longest sequence sampler.max_len={self.settings.max_len}")
            out.append([int(t) for t in ids])
        return out, per_prompt

    def generate(self, prompts: Sequence[Sequence[int]], n: int, sampling: SamplingParams,
                 max_new_tokens: int | Sequence[int], seed: int,
                 first_tag: int = 0) -> list[list[Completion]]:
        """n completions per prompt, in input order; `max_new_tokens` for all prompts or
        one per prompt. Sample j of prompt i is request `first_tag + i * n + j`, whose
        random stream depends on (seed, tag) alone: a process sampling a block of a
        larger call's prompts (multi-host GRPO) passes the block's first tag and draws
        exactly that call's samples."""
        prompts, max_new = self._validate(prompts, n, max_new_tokens)
        if not prompts:
            return []
        total = len(prompts) * n
        records = [_Record() for _ in range(total)]
        counter = {"tokens": 0}

        def listen(rows: np.ndarray) -> None:
            toks, valid, _, tags, lps, mlps, fins = decode_lib.unpack_rows(rows)
            for r in np.nonzero(valid)[0]:
                tag = int(tags[r]) - first_tag
                if 0 <= tag < total:
                    rec = records[tag]
                    rec.tokens.append(int(toks[r]))
                    rec.logprobs.append(float(lps[r]))
                    rec.model_logprobs.append(float(mlps[r]))
                    rec.finish = int(fins[r])
                    counter["tokens"] += 1

        engine = self.engine
        bar, ok = None, False
        t0 = time.perf_counter()
        try:  # whatever happens (Ctrl-C included), every page is given back
            engine.listener = listen
            bar = _progress_bar(total, self.progress)
            requests = [scheduler_lib.Request(ids=p, n=n, first_tag=first_tag + i * n,
                                              max_new_tokens=m)
                        for i, (p, m) in enumerate(zip(prompts, max_new))]
            run = scheduler_lib.Scheduler(engine, requests, sampling=sampling, seed=int(seed),
                                          stall_timeout_s=self.stall_timeout_s)

            def progress(finished: int) -> None:
                if bar is not None:
                    elapsed = max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(tok_s=f"{counter['tokens'] / elapsed:.1f}", refresh=False)
                    bar.update(finished)

            run.run(progress)
            ok = True
        finally:
            if bar is not None:
                bar.close()
            engine.listener = None
            held = engine.release_all()
        if ok and any(held.values()):
            raise RuntimeError(f"internal error: a finished run still held KV pages or rows {held}")
        elapsed = time.perf_counter() - t0
        self.last_run = dict(requests=total, tokens=counter["tokens"], seconds=elapsed,
                             tokens_per_s=counter["tokens"] / max(elapsed, 1e-9), **run.stats)
        return [[self._completion(records[i * n + j], first_tag + i * n + j) for j in range(n)]
                for i in range(len(prompts))]

    def _completion(self, rec: _Record, tag: int) -> Completion:
        if rec.finish == decode_lib.FINISH_NONE or not rec.tokens:
            raise RuntimeError(f"request {tag} closed without a final token (internal error)")
        stopped = rec.finish == decode_lib.FINISH_STOP
        text_ids = rec.tokens[:-1] if stopped else rec.tokens
        return Completion(tokens=list(rec.tokens), text=self.decode(text_ids),
                          logprobs=list(rec.logprobs), model_logprobs=list(rec.model_logprobs),
                          finish_reason="stop" if stopped else "length")

    def decode(self, ids: Sequence[int]) -> str:
        if self.tokenizer is None:
            return " ".join(str(t) for t in ids)
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc="sampling", unit="req", dynamic_ncols=True)
