"""A JetStream `Engine` over the Qwen3 decoding core.

JetStream's Driver owns scheduling (prefill queue, free slots, continuous
batching); this class owns the device work: bucketed prefill, insert, one
decode step for all slots, sampling. It follows the 0.2.2 or the 0.3.0
contract as `jetstream_compat` detects (or as `api_version` says: tests drive
the 0.3.0 contract by hand while PyPI only has 0.2.2).

Side channels JetStream lacks:
* per-request sampling settings, seed, `max_new_tokens` and a tag come from the
  request bound by `GuardedDriver` (`RequestSpec`); unbound requests use the
  engine defaults;
* every step's rows (token, log-probabilities, finish code, tag) reach
  `self.listener` when JetStream copies them to host.

Identical prompts are prefilled once: a small LRU cache maps a prompt (and
the weights version) to its KV and last logits, so n samples or 32
continuations of one prefix cost one prefill and n cheap first-token draws.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import threading
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding

from int_jax.models import sharding as sharding_lib
from int_jax.models.qwen3 import Qwen3
from int_jax.sampling import decode as decode_lib
from int_jax.sampling import jetstream_compat as compat
from int_jax.sampling import layout, reshard
from int_jax.sampling.settings import SamplerSettings
from int_jax.sampling.types import GREEDY, SamplingParams

from jetstream.engine import engine_api, tokenizer_pb2


def request_key(seed: int, index: int) -> np.ndarray:
    """Raw PRNG key (uint32 [2]) of request `index` in a run seeded with `seed`.

    Depends only on (seed, index), never on the slot a request lands in, so a
    run is reproducible whatever the batch layout does (up to float reordering).
    """
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(2, np.uint32)


@dataclasses.dataclass(frozen=True)
class RequestSpec:
    """Per-request settings carried beside a JetStream ActiveRequest."""

    tag: int
    sampling: SamplingParams
    max_new_tokens: int
    key: np.ndarray  # uint32 [2]


class ParamsRef:
    """The weights the Driver hands back to every engine call; swapped in place."""

    def __init__(self, state):
        self.state = state
        self.version = 0


class _PrefixCache:
    """LRU of prompt -> (KV, last logits), for one weights version at a time."""

    def __init__(self, entries: int):
        self.entries = int(entries)
        self._data: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key, value):
        if self.entries <= 0:
            return
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.entries:
                self._data.popitem(last=False)

    def clear(self):
        with self._lock:
            self._data.clear()


class Qwen3Engine(engine_api.Engine):
    """JetStream engine: slots x max_len KV cache, power-of-two prefill buckets.

    `settings` (or keyword fields building one) says how; `model_rules` are the
    model's sharding rules, under the sampler's overrides (`settings.rules`, see
    `layout.sampler_rules`: by default whole weights per fsdp device).
    """

    def __init__(self, model: Qwen3, settings: SamplerSettings | None = None, *,
                 default_sampling: SamplingParams = GREEDY, default_max_new_tokens: int = 256,
                 seed: int = 0, tokenizer=None, tokenizer_path: str = "",
                 mesh: Mesh | None = None, model_rules=None,
                 api_version: tuple[int, int] | None = None, **fields):
        settings = (settings or SamplerSettings()).replace(**fields)
        self.settings = settings
        self.api_version = tuple(api_version or compat.API_VERSION)
        if self.api_version not in ((0, 2), (0, 3)):
            raise ValueError(f"api_version must be (0, 2) or (0, 3), got {self.api_version}")
        # 0.3.0: prefill returns the first token, so decode steps emit what they sample.
        self.prefill_returns_first_token = self.api_version >= (0, 3)
        rules = layout.sampler_rules(model_rules, settings.rules)
        self.core = decode_lib.DecodeCore(model, settings, lagged=not self.prefill_returns_first_token,
                                          mesh=mesh, rules=rules)
        self.config = model.config
        self.stop_ids = settings.stop_ids
        self.pad_id = settings.pad_id
        self.default_sampling = default_sampling
        self.default_max_new_tokens = int(default_max_new_tokens)
        self.seed = int(seed)
        self._tokenizer = tokenizer
        self._tokenizer_path = tokenizer_path
        self._mesh = mesh
        self._rules = tuple(rules)
        self.settings = self.core.settings  # resolved for this backend: no `auto` left
        _, like = nnx.split(self.core.abstract_model)  # the sampler's shapes and dtypes
        if mesh is None:
            one = SingleDeviceSharding(jax.devices()[0])
            self._param_shardings = [one] * len(jax.tree.leaves(like))
        else:
            self._param_shardings = jax.tree.leaves(
                sharding_lib.state_shardings(like, mesh, self._rules))
        self.params = ParamsRef(self._place(like, nnx.split(model)[1]))
        self._prefix_cache = _PrefixCache(settings.prefix_cache_entries)
        self._tags = itertools.count(1 << 24)  # unbound requests (gRPC); rollouts use 0..N
        # Receives every step's host rows (numpy int32 [rows, decode.OUT_WIDTH]).
        self.listener: Callable[[np.ndarray], None] | None = None

    # -- weights -------------------------------------------------------------------

    def _place(self, like, new, *, free_old: bool = False):
        """Copies of the weights `new` in `like`'s structure, shapes and dtypes, on
        this engine's shardings (see `reshard.copy_onto`: device to device, and
        never the caller's buffers, which a trainer may donate).

        Always explicit (committed) placement, at start-up and on every swap:
        jit keys its cache on argument placement, so mixing committed and
        uncommitted weights would recompile. `free_old`: `like` holds the current
        copy, and each of its arrays is deleted just before its replacement is
        made, so a swap never holds two copies (peak: one copy plus one weight).
        """
        cur, treedef = jax.tree_util.tree_flatten_with_path(like)
        new_leaves, new_def = jax.tree.flatten(new)
        if new_def != treedef:
            raise ValueError("update_params: the new weights' structure differs from the model's")
        for (path, old), leaf in zip(cur, new_leaves):  # every check before anything is freed
            if isinstance(leaf, jax.Array) and leaf.is_deleted():
                raise ValueError(f"update_params: {jax.tree_util.keystr(path)} was deleted "
                                 "(weights read from the sampler before an earlier swap?)")
            if tuple(old.shape) != tuple(np.shape(leaf)):
                raise ValueError(f"update_params: {jax.tree_util.keystr(path)} has shape "
                                 f"{tuple(np.shape(leaf))}, the sampler's model {tuple(old.shape)}")
        placed = []
        for (_, old), leaf, sh in zip(cur, new_leaves, self._param_shardings):
            if free_old and leaf is old:  # the current weights themselves: nothing to do
                placed.append(old)
                continue
            if free_old and isinstance(old, jax.Array) and not old.is_deleted():
                old.delete()
            placed.append(reshard.copy_onto(leaf, sh, old.dtype))
        return jax.tree.unflatten(treedef, placed)

    def update_params(self, params) -> None:
        """Use new weights (an `nnx.State` or a `Qwen3`) for the next requests.

        The engine keeps its own copies, resharded from the trainer's layout onto
        the sampler's and cast to the sampler's dtypes on device (no host copy).
        The previous copy is freed weight by weight as the new one is made (arrays
        read from `params.state` before the call are deleted). Shapes must match,
        so nothing recompiles. Call between `generate` calls.
        """
        if isinstance(params, nnx.Module):
            _, params = nnx.split(params)
        self._prefix_cache.clear()  # KV of the old weights
        self.params.state = self._place(self.params.state, params, free_old=True)
        self.params.version += 1

    # -- prompts -------------------------------------------------------------------

    def check_prompt_length(self, length: int) -> None:
        if length <= 0:
            raise ValueError("empty prompt: at least one token is needed")
        decode_lib.bucket_for(length, self.core.buckets)

    def pad_prompt(self, ids) -> tuple[np.ndarray, int]:
        # Pad with id 0, not pad_id: any in-vocabulary id works (padding is
        # never attended to), but an out-of-vocabulary one embeds as NaN,
        # and NaN survives a zero attention weight.
        return self.core.pad(list(np.asarray(ids).reshape(-1)), 0)

    def tokenizer_adapter(self):
        if self._tokenizer is None:
            return compat.IdTokenizer(self.stop_ids, self.pad_id)
        return compat.HFTokenizer(self._tokenizer, self.stop_ids, self.pad_id)

    # -- JetStream Engine API --------------------------------------------------------

    def _spec(self, samples: int = 1) -> RequestSpec:
        """The request's settings; unbound requests get defaults and `samples` fresh tags."""
        request = compat.take_bound_request()
        spec = getattr(request, "int_jax_spec", None) if request is not None else None
        if spec is not None:
            return spec
        tag = next(self._tags)
        for _ in range(samples - 1):  # sample i is tagged tag + i: keep those unique
            next(self._tags)
        max_new = getattr(request, "max_tokens", 0) or self.default_max_new_tokens
        return RequestSpec(tag=tag, sampling=self.default_sampling, max_new_tokens=int(max_new),
                           key=request_key(self.seed, tag))

    def _prompt_kv(self, state, version, padded, length):
        key = (version, padded.shape[-1], padded.reshape(-1)[:length].tobytes())
        hit = self._prefix_cache.get(key)
        if hit is not None:
            return hit, True
        kv, logits = self.core.prefill(state, padded, length)
        self._prefix_cache.put(key, (kv, logits))
        return (kv, logits), self._prefix_cache.entries > 0

    def _prefill(self, params, padded_tokens, true_length, num_samples: int | None,
                 want_rows: bool):
        ref = params if isinstance(params, ParamsRef) else None
        state, version = (ref.state, ref.version) if ref else (params, -1)
        padded = np.asarray(padded_tokens, np.int32).reshape(-1)
        length = int(true_length)
        if num_samples is not None and int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        spec = self._spec(1 if num_samples is None else int(num_samples))
        (kv, logits), shared = self._prompt_kv(state, version, padded, length)
        s = spec.sampling
        n = 1 if num_samples is None else int(num_samples)
        draws = []
        for i in range(n):
            key = spec.key if num_samples is None else request_key(int(spec.key[0]), i)
            tok, lp, mlp = self.core.draw(logits, key, s.temperature, s.top_p, s.top_k)
            draws.append((tok, lp, mlp, key))

        def pack(i):
            tok, lp, mlp, key = draws[i]
            return decode_lib.Prefix(
                kv=kv, length=jnp.int32(length), token=tok, logprob=lp, model_logprob=mlp,
                key=jnp.asarray(key, jnp.uint32), temperature=jnp.float32(s.temperature),
                top_p=jnp.float32(s.top_p), top_k=jnp.int32(s.top_k),
                max_new=jnp.int32(spec.max_new_tokens), tag=jnp.int32(spec.tag + i),
                shared_kv=shared or n > 1)

        prefixes = [pack(i) for i in range(n)]
        # 0.2.2 never sees first-token rows: skip their host copy (a sync per prefill).
        rows = self._first_rows(prefixes) if want_rows else None
        return prefixes, rows

    def _first_rows(self, prefixes):
        """The first generated token of each prefix as step rows (0.3.0 returns these).

        All n rows form one "slot" (samples_per_slot = n): 0.3.0's detokenizer
        reads a prefill result at slot 0, so every sample's first token reaches
        the request's return channel, not only the first sample's.
        """
        rows = np.zeros((len(prefixes), decode_lib.OUT_WIDTH), np.int32)
        host = jax.device_get([(p.token, p.logprob, p.model_logprob, p.length, p.max_new, p.tag)
                               for p in prefixes])
        for r, (tok, lp, mlp, length, max_new, tag) in enumerate(host):
            rows[r] = (tok, 1, 1, tag, np.float32(lp).view(np.int32),
                       np.float32(mlp).view(np.int32),
                       self.core.first_token_finish(int(tok), int(length), int(max_new)),
                       0)  # OUT_WINDOW_MISS: prefill attends over the whole prompt
        return compat.step_rows(rows, self.listener, samples_per_slot=len(prefixes))

    def prefill(self, *, params, existing_prefix=None, padded_tokens, true_length,
                sampler=None, request_id=None):
        if existing_prefix is not None:
            raise NotImplementedError("existing_prefix: identical prompts share KV through the "
                                      "engine's prefix cache instead")
        prefixes, rows = self._prefill(params, padded_tokens, true_length, None,
                                       want_rows=self.prefill_returns_first_token)
        if self.prefill_returns_first_token:
            return prefixes[0], rows
        return prefixes[0]

    def prefill_multisampling(self, *, params, existing_prefix=None, padded_tokens, true_length,
                              sampler=None, rng=None, num_samples: int = 1):
        """0.3.0 multi-sampling: one prefill, `num_samples` first tokens, a list of prefixes.

        Each sample gets its own key and tag; `bulk_insert` puts the list into slots.
        """
        if not self.prefill_returns_first_token:
            raise NotImplementedError("prefill_multisampling is JetStream 0.3.0 API; this engine "
                                      f"follows {self.api_version}")
        return self._prefill(params, padded_tokens, true_length, num_samples, want_rows=True)

    def insert(self, prefix, decode_state, slot: int, request_id=None):
        return self.core.insert(decode_state, prefix, int(slot))

    def bulk_insert(self, prefix, decode_state, slots: list[int]):
        """Insert the prefixes of `prefill_multisampling`, one per slot, in order."""
        prefixes = list(prefix) if isinstance(prefix, (list, tuple)) else [prefix]
        slots = [int(s) for s in slots]
        if len(prefixes) != len(slots):
            # One prefix in several slots would decode the same sample (same first
            # token, same key) several times: refuse rather than return duplicates.
            raise ValueError(f"bulk_insert: {len(prefixes)} prefixes for {len(slots)} slots; "
                             "pass the list prefill_multisampling returned")
        if len(set(slots)) != len(slots):
            raise ValueError(f"bulk_insert: repeated slots {slots}")
        for p, slot in zip(prefixes, slots):
            decode_state = self.core.insert(decode_state, p, int(slot))
        return decode_state

    def free_resource(self, slot: int) -> Any:
        return None

    def generate(self, params, decode_state, sampler=None):
        state = params.state if isinstance(params, ParamsRef) else params
        decode_state, out = self.core.step(state, decode_state)
        return decode_state, compat.step_rows(out, functools.partial(self._rows_to_host, self.listener))

    def _rows_to_host(self, listener, rows: np.ndarray) -> None:
        """A step's rows reached the host: finished slots stop widening the decode
        window (a window error raises here, in the Driver's thread), then the listener."""
        self.core.observe_rows(rows)
        if listener is not None:
            listener(rows)

    def load_params(self, *args, **kwargs):
        return self.params

    def get_prefix_destination_sharding(self) -> Any:
        return None  # interleaved: prefill and generate share devices

    def get_tokenizer(self) -> tokenizer_pb2.TokenizerParameters:
        return tokenizer_pb2.TokenizerParameters(path=self._tokenizer_path or "")

    def build_tokenizer(self, metadata):
        return self.tokenizer_adapter()

    def init_decode_state(self, *args, **kwargs):
        return self.core.init_state()

    @property
    def max_concurrent_decodes(self) -> int:
        return self.core.slots

    @property
    def samples_per_slot(self) -> int:
        return 1

    @property
    def max_prefill_length(self) -> int:
        return self.core.buckets[-1]

    @property
    def mesh(self):
        return self._mesh

    @property
    def colocated_cpus(self):
        return None

    @property
    def use_chunked_prefill(self) -> bool:
        return False

    @property
    def prefill_chunk_size(self) -> int:
        return self.core.buckets[-1]

    # -- reporting -------------------------------------------------------------------

    @property
    def compile_stats(self) -> decode_lib.CompileStats:
        return self.core.compile_stats

    @property
    def prefix_cache_stats(self) -> tuple[int, int]:
        return self._prefix_cache.hits, self._prefix_cache.misses
