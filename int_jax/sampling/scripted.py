"""A `Sampler` that replays model outputs from a script file instead of a model.

Pipeline tests substitute it at the sampling boundary to drive the success path
(parsable proposals, correct continuations) deterministically. The script is
JSONL; each line is one rule with `"outputs": [text, ...]` and at most one key:

* `"prompt_sha256"`: `prompt_key(ids)`, the hash of the exact prompt token ids;
* `"contains"`: a substring of the decoded prompt (special tokens included);
* neither: an *ordered* rule, used by the next prompt that no keyed rule matches
  (in call order; not resumable across processes, so keyed rules are the ones to
  use in kill-and-resume runs).

Keyed rules are tried in file order, hash rules first. Sample j of a prompt is
`outputs[j % len(outputs)]`. A prompt no rule matches gets `default` or raises.
An output longer than `max_new_tokens` is cut there (`finish_reason="length"`),
as a model would be; otherwise the end-of-turn token is appended (`"stop"`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from int_jax.sampling.types import Completion, SamplingParams

END_OF_TURN_ID = 151645


def prompt_key(ids: Sequence[int]) -> str:
    return hashlib.sha256(",".join(str(int(i)) for i in ids).encode()).hexdigest()


class ScriptError(ValueError):
    pass


def load_script(path: str | Path) -> list[dict]:
    """Rules of a script file, checked; errors name the file, line and field."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ScriptError(f"{path}: cannot read sampler script: {e}") from e
    rules = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rule = json.loads(line)
        except json.JSONDecodeError as e:
            raise ScriptError(f"{where}: not JSON ({e.msg})") from e
        if not isinstance(rule, dict):
            raise ScriptError(f"{where}: a rule must be a JSON object")
        outputs = rule.get("outputs")
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
            raise ScriptError(f"{where}: field 'outputs' must be a non-empty list of strings")
        keys = [k for k in ("prompt_sha256", "contains") if k in rule]
        if len(keys) > 1:
            raise ScriptError(f"{where}: use one of 'prompt_sha256' / 'contains', not both")
        if keys and (not isinstance(rule[keys[0]], str) or not rule[keys[0]]):
            raise ScriptError(f"{where}: field {keys[0]!r} must be a non-empty string")
        rules.append(rule)
    return rules


class ScriptedSampler:
    def __init__(self, rules: list[dict], tokenizer, *, default: str | None = None,
                 end_id: int = END_OF_TURN_ID):
        self.tokenizer = tokenizer
        self.default = default
        self.end_id = end_id
        self._by_hash = {r["prompt_sha256"]: r for r in rules if "prompt_sha256" in r}
        self._contains = [r for r in rules if "contains" in r]
        self._ordered = [r for r in rules if "prompt_sha256" not in r and "contains" not in r]
        self._next_ordered = 0

    @classmethod
    def from_file(cls, path: str | Path, tokenizer, **kwargs) -> "ScriptedSampler":
        return cls(load_script(path), tokenizer, **kwargs)

    def _outputs(self, ids: Sequence[int]) -> list[str]:
        rule = self._by_hash.get(prompt_key(ids))
        if rule is None and self._contains:
            text = self.tokenizer.decode(list(ids), skip_special_tokens=False)
            rule = next((r for r in self._contains if r["contains"] in text), None)
        if rule is None and self._next_ordered < len(self._ordered):
            rule = self._ordered[self._next_ordered]
            self._next_ordered += 1
        if rule is not None:
            return rule["outputs"]
        if self.default is None:
            tail = self.tokenizer.decode(list(ids)[-40:], skip_special_tokens=False)
            raise ScriptError(f"no script rule matches a prompt of {len(ids)} tokens ending "
                              f"{tail!r} (sha256 {prompt_key(ids)[:16]}...)")
        return [self.default]

    def _completion(self, text: str, max_new_tokens: int) -> Completion:
        ids = list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        if len(ids) >= max_new_tokens:  # no room left for the end-of-turn token
            ids = ids[:max_new_tokens]
            return Completion(tokens=ids, text=self.tokenizer.decode(ids), logprobs=[0.0] * len(ids),
                              model_logprobs=[0.0] * len(ids), finish_reason="length")
        return Completion(tokens=ids + [self.end_id], text=text, logprobs=[0.0] * (len(ids) + 1),
                          model_logprobs=[0.0] * (len(ids) + 1), finish_reason="stop")

    def generate(self, prompts: Sequence[Sequence[int]], n: int, sampling: SamplingParams,
                 max_new_tokens: int, seed: int) -> list[list[Completion]]:
        del sampling, seed  # a script is its own distribution
        if n < 1 or max_new_tokens < 1:
            raise ValueError(f"n={n} and max_new_tokens={max_new_tokens} must be >= 1")
        result = []
        for ids in prompts:
            outputs = self._outputs(ids)
            result.append([self._completion(outputs[j % len(outputs)], max_new_tokens)
                           for j in range(n)])
        return result
