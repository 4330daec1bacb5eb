"""The sampler's settings: one frozen object, built from `config.sampler`, that every
sampler constructor takes (`DecodeCore`, `Qwen3Engine`, `JetStreamSampler`).

Defaults live here and nowhere else: the dataclass's field defaults are the small
CPU-sized ones (tests, the demo), `PRESETS` holds each named preset's changes, and
`sampler_config(preset)` turns a preset into the `ConfigDict` a config file embeds
(`configs/sampler.py`, `configs/int.py`, and through it `configs/eval.py`).

This module imports no JAX, so config files can use it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
from ml_collections import ConfigDict

from int_jax.models.vocab import QWEN3_END_TOKEN_IDS, QWEN3_PAD_ID

# `config.sampler` keys that pick or throttle a sampler rather than configure the engine
# (read by `int_jax.stages.common.build_sampler`).
STAGE_KEYS = frozenset({"kind", "script", "default", "delay_s"})
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def _dtype_name(value) -> str:
    name = value if isinstance(value, str) else np.dtype(value).name
    if name == "auto":
        return name
    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {value!r}; choose one of {DTYPE_NAMES}")
    return name


def _ints(value) -> tuple[int, ...]:
    return tuple(int(v) for v in (value or ()))


def _rules(value):
    if value is None:
        return None
    return tuple((name, tuple(t) if isinstance(t, list) else t) for name, t in value)


def _setter(obj):
    """Setter for normalising the fields of a frozen dataclass in __post_init__."""
    return lambda name, value: object.__setattr__(obj, name, value)


def power_of_two_buckets(smallest: int, largest: int) -> tuple[int, ...]:
    """smallest, 2*smallest, ... up to and including `largest` (rounded up to a power of 2)."""
    if smallest < 1 or largest < smallest:
        raise ValueError(f"bad bucket range {smallest}..{largest}")
    out, b = [], smallest
    while b < largest:
        out.append(b)
        b *= 2
    out.append(b)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """Everything the sampler's engine is built with (checked on creation)."""

    slots: int = 8  # decode rows: the most sequences decoded at once (memory permitting)
    max_len: int = 2048  # the longest sequence: prompt + new tokens
    # The paged KV cache: one pool of `page_size`-token pages per device, sized in bytes:
    # kv_pool_bytes if set, else on GPU / TPU the memory left after the weights minus
    # kv_reserve_bytes (prefill activations, step temporaries), on CPU cpu_kv_pool_bytes,
    # or with that 0, room for every slot at max_len (host memory is rarely the limit).
    page_size: int = 16
    kv_pool_bytes: int = 0
    kv_reserve_bytes: int = 2 << 30
    cpu_kv_pool_bytes: int = 0
    # Prefill: each call runs one of `buckets` tokens per prompt (() = powers of two from
    # min_bucket up to prefill_chunk); a prompt longer than the largest goes in chunks of
    # it, several shorter ones go in one call (up to max_prefill_batch prompts). The
    # longest prompt accepted is max_prefill_length (0: the largest bucket); longer
    # prompts are errors, never cut.
    buckets: tuple[int, ...] = ()
    min_bucket: int = 16
    prefill_chunk: int = 512
    max_prefill_length: int = 0
    max_prefill_batch: int = 8
    # The sampler's own execution settings, independent of the trainer's model config.
    # auto: bfloat16 on GPU / TPU, float32 on CPU (weights); the compute dtype follows
    # the weights and the KV cache the compute dtype.
    param_dtype: str = "auto"
    compute_dtype: str = "auto"
    cache_dtype: str = "auto"
    # Dense attention kernel of prefill (a name in models/attention.py KERNELS; auto: xla
    # on CPU, chunked elsewhere) and paged kernel of decode (PAGED_KERNELS; auto: blocked
    # on CPU, pallas_gpu on GPU, pallas_tpu on TPU). Remat is always off.
    prefill_kernel: str = "auto"
    decode_kernel: str = "auto"
    stop_ids: tuple[int, ...] = QWEN3_END_TOKEN_IDS
    pad_id: int = QWEN3_PAD_ID  # what JetStream's tokenizer reports; prompts are padded with 0
    max_top_k: int = 64  # top_k up to this uses lax.top_k; larger sorts the vocabulary
    prefix_cache_entries: int = 4  # prompts whose KV is kept (n samples, continuations)
    # Identical prompts (n samples of one, 32 continuations of one prefix) prefilled once,
    # their pages shared by reference. False: every sample prefills its own copy of its
    # prompt into pages of its own, shared with nothing (no prompt cache either): what an
    # engine without prefix sharing does, for measuring what sharing saves.
    share_prompts: bool = True
    progress: bool = True  # a tqdm bar per generate call
    stall_timeout_s: float = 1800.0  # no request finishing for this long is an error
    use_tokenizer: bool = True  # from_config: load the model's tokenizer (False: ids as text)
    # The sampler's weight layout: overrides on top of the model's rules (see layout.py);
    # None = layout.SAMPLER_RULE_OVERRIDES, () = the model's own layout.
    rules: tuple | None = None

    def __post_init__(self):
        fix = _setter(self)
        fix("buckets", tuple(sorted(set(_ints(self.buckets)))))
        fix("stop_ids", _ints(self.stop_ids))
        for name in ("param_dtype", "compute_dtype", "cache_dtype"):
            fix(name, _dtype_name(getattr(self, name)))
        fix("rules", _rules(self.rules))
        for name in ("slots", "max_len", "page_size", "kv_pool_bytes", "kv_reserve_bytes",
                     "cpu_kv_pool_bytes", "min_bucket", "prefill_chunk", "max_prefill_length",
                     "max_prefill_batch", "pad_id", "max_top_k", "prefix_cache_entries"):
            fix(name, int(getattr(self, name)))
        fix("stall_timeout_s", float(self.stall_timeout_s))
        if not isinstance(self.share_prompts, (bool, np.bool_)):
            raise ValueError(f"sampler.share_prompts={self.share_prompts!r}: must be True or False")
        fix("share_prompts", bool(self.share_prompts))
        if self.slots < 1:
            raise ValueError(f"sampler.slots={self.slots}: need at least one decode slot")
        if self.max_len < 2:
            raise ValueError(f"sampler.max_len={self.max_len}: a prompt token and a new one at least")
        if self.buckets and self.buckets[0] < 1:
            raise ValueError(f"sampler.buckets={self.buckets}: lengths must be positive")
        if self.page_size < 1 or self.max_prefill_batch < 1:
            raise ValueError("sampler.page_size and sampler.max_prefill_batch must be >= 1")
        if self.prefill_buckets[-1] > self.max_len:
            raise ValueError(f"largest prefill bucket {self.prefill_buckets[-1]} exceeds "
                             f"max_len {self.max_len}; lower sampler.prefill_chunk or "
                             "raise sampler.max_len")
        if self.longest_prompt >= self.max_len:
            raise ValueError(f"sampler.max_prefill_length={self.longest_prompt} leaves no room "
                             f"for a new token in sampler.max_len={self.max_len}")
        if self.max_top_k < 1:
            raise ValueError(f"sampler.max_top_k={self.max_top_k}: must be >= 1")
        if self.stall_timeout_s <= 0:
            raise ValueError(f"sampler.stall_timeout_s={self.stall_timeout_s}: must be > 0")

    @property
    def prefill_buckets(self) -> tuple[int, ...]:
        """The prefill call lengths, ascending; the last is the prefill chunk."""
        if self.buckets:
            return self.buckets
        largest = min(self.prefill_chunk, self.max_len)
        derived = power_of_two_buckets(min(self.min_bucket, largest), largest)
        return tuple(b for b in derived if b <= self.max_len) or (self.max_len,)

    @property
    def longest_prompt(self) -> int:
        return self.max_prefill_length or min(self.prefill_buckets[-1], self.max_len - 1)

    def resolve(self, platform: str) -> "SamplerSettings":
        """`auto` values made concrete for a backend ("cpu", "gpu", "tpu")."""
        param = self.param_dtype
        if param == "auto":
            param = "float32" if platform == "cpu" else "bfloat16"
        compute = param if self.compute_dtype == "auto" else self.compute_dtype
        cache = compute if self.cache_dtype == "auto" else self.cache_dtype
        prefill = self.prefill_kernel
        if prefill == "auto":
            prefill = "xla" if platform == "cpu" else "chunked"
        decode = self.decode_kernel
        if decode == "auto":
            decode = {"gpu": "pallas_gpu", "tpu": "pallas_tpu"}.get(platform, "blocked")
        return self.replace(param_dtype=param, compute_dtype=compute, cache_dtype=cache,
                            prefill_kernel=prefill, decode_kernel=decode)

    def replace(self, **changes) -> "SamplerSettings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | ConfigDict, **overrides) -> "SamplerSettings":
        """From `config.sampler` (stage keys such as `kind` are skipped); an unknown key is
        an error naming the known ones, so a typo never silently keeps a default."""
        data = cfg.to_dict() if isinstance(cfg, ConfigDict) else dict(cfg)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - STAGE_KEYS)
        if unknown:
            raise ValueError(f"config.sampler: unknown key(s) {unknown}; known: {sorted(known)}")
        values = {k: v for k, v in data.items() if k in known and v is not None}
        values.update(overrides)
        return cls(**values)

    def to_config(self) -> ConfigDict:
        """The settings as the `ConfigDict` a config file embeds."""
        out = dataclasses.asdict(self)
        out["buckets"] = out["buckets"] or None  # None: derived (overridable by a tuple)
        return ConfigDict(out)


# Each preset's changes to the defaults above. `tiny`: the random tiny Qwen3 on a CPU
# (tests, the demo). `paper`: the paper's lengths (32768-token proposer chats, 16384 new
# tokens) for Qwen3-4B-Instruct-2507.
PRESETS: dict[str, dict] = {
    "tiny": dict(max_len=1024, max_prefill_length=1000),
    # kv_reserve_bytes: `int-jax plan` measures ~2.3 GiB of temporaries for a 2048-token
    # prefill with 32K tokens of context (compiled on CPU, an overestimate).
    "paper": dict(slots=256, max_len=49152, page_size=64, min_bucket=128, prefill_chunk=2048,
                  max_prefill_length=32768, prefix_cache_entries=64, kv_reserve_bytes=4 << 30),
}


def settings(preset: str = "tiny", **changes) -> SamplerSettings:
    """The settings of a named preset, with `changes` on top."""
    try:
        base = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown sampler preset {preset!r}; choose one of {sorted(PRESETS)}") from None
    return SamplerSettings(**{**base, **changes})


def sampler_config(preset: str = "tiny") -> ConfigDict:
    """`config.sampler` for a preset: every engine setting with its value."""
    return settings(preset).to_config()
