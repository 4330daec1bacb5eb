"""The sampling boundary: what every stage asks of a sampler, and what comes back.

Stages depend on the `Sampler` protocol only, so the JetStream-backed sampler
and a scripted stand-in (tests of the pipeline's success path) are
interchangeable.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol, Sequence

FinishReason = Literal["stop", "length"]


class SamplerFailure(RuntimeError):
    """The sampling engine failed inside `generate`; the original exception is the
    __cause__ (its traceback intact). The sampler stays usable for the next call."""


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """temperature 0 = greedy; top_k 0 = off; top_p 1.0 = off."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


PAPER_ROLLOUT = SamplingParams(temperature=0.7, top_p=0.8, top_k=20)
GRPO_SAMPLING = SamplingParams(temperature=1.0, top_p=1.0, top_k=0)
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)


@dataclasses.dataclass
class Completion:
    """One sampled continuation of one prompt."""

    tokens: list[int]  # generated ids, the stop token included when one was hit
    text: str  # decoded generated ids, stop token excluded
    logprobs: list[float]  # of each token under the sampling distribution
    model_logprobs: list[float]  # under the unmodified model (temperature 1, no truncation)
    finish_reason: FinishReason


class Sampler(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], n: int, sampling: SamplingParams,
                 max_new_tokens: int, seed: int) -> list[list[Completion]]:
        """n completions per prompt: result[i][j] is sample j of prompt i, in input order."""
        ...
