"""Chat template + response segments -> token ids and per-token loss weights.

The SFT patch trains on `(prompt, prefix + intervention)` with the prompt masked
and the suffix left out. Qwen3's chat template has no generation markers, so the
mask is built here from the segments' *token spans*:

* The prompt is the chat template applied to the messages with the generation
  prompt (`<|im_start|>assistant\\n`), tokenised on its own. The response is
  tokenised on its own and appended. This is exactly how the sampler sees a
  rollout (prompt ids, then generated ids): no BPE merge ever crosses the
  prompt/response boundary, and `encode_prompt(messages, prefix)` produces the
  same ids as the first tokens of `encode_example` over that prefix.
* Inside the response, segments are concatenated as text and tokenised *once*
  with character offsets. Each token belongs to the segment holding its first
  character. A token that a BPE merge stretches across a segment boundary
  therefore goes to the earlier segment and takes its weight; the labels of every
  other token stay aligned with the text they came from (no shift).
* Response text is model output (untrusted): literal special-token strings such
  as ``<|im_end|>`` inside it are tokenised as plain text, never as control tokens.

`loss_weights[i]` is the weight of token `i` *as a label*, i.e. of predicting
`ids[i]` from `ids[:i]`; the train step shifts by one.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

# Kinds the pipeline writes; the paper's defaults: prefix and intervention are
# cloned, the suffix is not (it is not even included). `response` is a whole
# solution (SFT(Ref), SFT(Reflect) baselines).
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "prefix": 1.0,
    "intervention": 1.0,
    "suffix": 0.0,
    "response": 1.0,
}
TRUNCATION_MODES = ("right", "drop")
PROMPT = "prompt"
END_OF_TURN = "end_of_turn"


@dataclasses.dataclass
class EncodeStats:
    """What happened to a data set's examples (reported by the loader and `sft`)."""

    seen: int = 0
    kept: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_empty: int = 0


@dataclasses.dataclass(frozen=True)
class Span:
    """Token range [start, end) of one part of an encoded example."""

    kind: str
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class EncodedExample:
    ids: list[int]
    loss_weights: list[float]
    spans: tuple[Span, ...]  # prompt first, then included segments (, end_of_turn)
    prompt_len: int
    truncated: bool  # cut at cutoff_len from the right

    def __len__(self) -> int:
        return len(self.ids)


def _template(tokenizer, messages, **template_kwargs) -> str:
    _check_messages(messages)
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=True, **template_kwargs)


def _check_messages(messages) -> None:
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] must be a dict with string 'role' and 'content'")


def _encode_text(tokenizer, text: str, *, offsets: bool = False):
    """Ids (and char offsets) of `text` with special-token strings kept as text."""
    enc = tokenizer(text, add_special_tokens=False, split_special_tokens=True,
                    return_offsets_mapping=offsets)
    return (enc["input_ids"], enc["offset_mapping"]) if offsets else enc["input_ids"]


def encode_prompt(tokenizer, messages, assistant_prefix: str = "", **template_kwargs) -> list[int]:
    """Prompt ids for sampling: template + generation prompt (+ an unfinished answer).

    With `assistant_prefix`, the assistant's message is started but not ended
    (no end-of-turn), so the model continues it; used for counterfactual
    continuations from `prefix + intervention`.
    """
    ids = list(tokenizer(_template(tokenizer, messages, **template_kwargs),
                         add_special_tokens=False)["input_ids"])
    if assistant_prefix:
        ids += _encode_text(tokenizer, assistant_prefix)
    return ids


def included_segments(segments: Sequence[tuple[str, str]], weights: Mapping[str, float]):
    """Drop trailing weight-0 segments (the suffix by default): they teach nothing.

    A weight-0 segment *before* a weighted one stays, as context (e.g. the prefix
    in the "no prefix cloning" ablation).
    """
    segments = list(segments)
    for i, (kind, text) in enumerate(segments):
        if kind not in weights:
            raise ValueError(f"segments[{i}]: kind {kind!r} has no loss weight; "
                             f"configured kinds: {sorted(weights)}")
        if not isinstance(text, str):
            raise ValueError(f"segments[{i}] ({kind}): text must be a string")
    while segments and float(weights[segments[-1][0]]) == 0.0:
        segments.pop()
    return segments


def encode_example(tokenizer, messages, segments: Sequence[tuple[str, str]],
                   weights: Mapping[str, float] = DEFAULT_WEIGHTS, cutoff_len: int = 16384,
                   truncation: str = "right", add_end_of_turn: bool = False,
                   end_of_turn_weight: float = 1.0, stats: EncodeStats | None = None,
                   **template_kwargs) -> EncodedExample | None:
    """Encode one SFT example; None when it must be skipped.

    Skipped: over `cutoff_len` with `truncation="drop"`, or nothing left to train
    on (no weighted token survives). The end-of-turn token (`<|im_end|>`) is
    appended only with `add_end_of_turn` and only to a response that was not cut.
    `stats`, when given, counts the outcome.
    """
    stats = stats if stats is not None else EncodeStats()
    stats.seen += 1
    if truncation not in TRUNCATION_MODES:
        raise ValueError(f"truncation={truncation!r}; choose one of {TRUNCATION_MODES}")
    if cutoff_len < 2:
        raise ValueError(f"cutoff_len={cutoff_len} must be >= 2")
    kept = included_segments(segments, weights)
    prompt_ids = encode_prompt(tokenizer, messages, **template_kwargs)
    text = "".join(t for _, t in kept)
    resp_ids, offsets = _encode_text(tokenizer, text, offsets=True) if text else ([], [])

    # Segment of each response token = segment holding its first character.
    bounds, pos = [], 0
    for kind, seg_text in kept:
        bounds.append((kind, pos, pos + len(seg_text)))
        pos += len(seg_text)
    seg_index = []
    j = 0
    for start, _ in offsets:
        while j + 1 < len(bounds) and start >= bounds[j][2]:
            j += 1
        seg_index.append(j)

    ids = list(prompt_ids) + list(resp_ids)
    w = [0.0] * len(prompt_ids) + [float(weights[kept[s][0]]) for s in seg_index]
    spans = [Span(PROMPT, 0, len(prompt_ids))]
    n = len(prompt_ids)
    for s, (kind, _, _) in enumerate(bounds):
        count = sum(1 for x in seg_index if x == s)
        spans.append(Span(kind, n, n + count))
        n += count
    if add_end_of_turn:
        eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
        ids.append(int(eot))
        w.append(float(end_of_turn_weight))
        spans.append(Span(END_OF_TURN, n, n + 1))

    truncated = len(ids) > cutoff_len
    if truncated:
        if truncation == "drop":
            stats.dropped_too_long += 1
            return None
        # A cut response gets no end-of-turn: drop the one just added.
        ids, w = ids[:cutoff_len], w[:cutoff_len]
        spans = [Span(sp.kind, min(sp.start, cutoff_len), min(sp.end, cutoff_len))
                 for sp in spans if sp.kind != END_OF_TURN]
    if not any(x != 0 for x in w[1:]):
        stats.dropped_empty += 1
        return None
    stats.kept += 1
    stats.truncated += int(truncated)
    return EncodedExample(ids=ids, loss_weights=w, spans=tuple(spans),
                          prompt_len=len(prompt_ids), truncated=truncated)
