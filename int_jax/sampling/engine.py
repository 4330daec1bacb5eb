"""A JetStream `Engine` over the Qwen3 decoding core and its paged KV cache.

This class owns the device work (chunked and batched prefill into pages, insert, one
decode step for all rows, sampling) and the host bookkeeping of the pages
(`pages.PageManager`): which pages each prompt and sequence holds, admission by
memory, the prompt cache, slots mapped to rows. It follows the 0.2.2 or the 0.3.0
contract as `jetstream_compat` detects (or as `api_version` says: tests drive the
0.3.0 contract by hand while PyPI only has 0.2.2).

Two schedulers drive it through the same methods. JetStream's Driver (`int-jax serve`)
admits by free slots only; here its prefill thread waits inside `prefill` until the
pool has room for the request's pages (a finished sequence frees them). The sampler
(`sampler.py`) schedules itself over the same methods plus `admit` / `prefill_admitted`,
which add what the Driver lacks: several short prompts in one prefill call and
admission that never blocks a thread.

Side channels JetStream lacks:
* per-request sampling settings, seed, `max_new_tokens` and a tag come from the
  request bound by `GuardedDriver` (`RequestSpec`); unbound requests use the
  engine defaults;
* every step's rows (token, log-probabilities, finish code, tag) reach
  `self.listener` when JetStream copies them to host.

Identical prompts are prefilled once: the prompt cache keeps a prompt's pages (and
last logits) by reference, so n samples or 32 continuations of one prefix cost one
prefill and n first-token draws; it is bounded in entries and its pages are the
first reclaimed when the pool runs short. With `share_prompts=False` every sample
prefills its prompt into pages of its own (the engine without prefix sharing).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Callable, Sequence

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
from int_jax.sampling import pages as pages_lib
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


@dataclasses.dataclass
class Prefix:
    """One prefilled sample, ready to insert: its first token and settings on device,
    and its claim on the pool (rows and pages, `pages.Hold`). Not a pytree: JetStream
    frees nothing of it; insert takes over its pages."""

    first: decode_lib.First
    hold: pages_lib.Hold
    tag: int
    first_token: int | None = None  # on host when known (the 0.3.0 first-token rows)


class ParamsRef:
    """The weights the Driver hands back to every engine call; swapped in place."""

    def __init__(self, state):
        self.state = state
        self.version = 0


class Qwen3Engine(engine_api.Engine):
    """JetStream engine: `slots` decode rows over a paged KV pool sized in bytes.

    `settings` (or keyword fields building one) says how; `model_rules` are the
    model's sharding rules, under the sampler's overrides (`settings.rules`, see
    `layout.sampler_rules`: by default whole weights per fsdp device).
    """

    def __init__(self, model: Qwen3, settings: SamplerSettings | None = None, *,
                 default_sampling: SamplingParams = GREEDY, default_max_new_tokens: int = 256,
                 seed: int = 0, tokenizer=None, tokenizer_path: str = "",
                 mesh: Mesh | None = None, model_rules=None,
                 api_version: tuple[int, int] | None = None, interpret: bool = False,
                 **fields):
        settings = (settings or SamplerSettings()).replace(**fields)
        settings = settings.resolve(layout.platform_of(mesh))  # no `auto` left
        self.settings = settings
        self.api_version = tuple(api_version or compat.API_VERSION)
        if self.api_version not in ((0, 2), (0, 3)):
            raise ValueError(f"api_version must be (0, 2) or (0, 3), got {self.api_version}")
        # 0.3.0: prefill returns the first token, so decode steps emit what they sample.
        self.prefill_returns_first_token = self.api_version >= (0, 3)
        rules = layout.sampler_rules(model_rules, settings.rules)
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
        # The weights first (the sampler's dtypes and layout), then the pool: on an
        # accelerator it takes what memory the weights leave.
        _, like = nnx.split(layout.sampler_model(model, settings))
        if mesh is None:
            one = SingleDeviceSharding(jax.devices()[0])
            self._param_shardings = [one] * len(jax.tree.leaves(like))
        else:
            self._param_shardings = jax.tree.leaves(
                sharding_lib.state_shardings(like, mesh, self._rules))
        self.params = ParamsRef(self._place(like, nnx.split(model)[1]))
        self.core = decode_lib.DecodeCore(model, settings, lagged=not self.prefill_returns_first_token,
                                          mesh=mesh, rules=rules, interpret=interpret)
        lay = self.core.layout
        self.pages = pages_lib.PageManager(
            shards=lay.shards, pages_per_shard=lay.pages_per_shard, page_size=lay.page_size,
            slots=settings.slots, max_len=settings.max_len,
            cache_entries=settings.prefix_cache_entries, share_prompts=settings.share_prompts)
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
        self.pages.forget_cache()  # keys and values of the old weights
        self.params.state = self._place(self.params.state, params, free_old=True)
        self.params.version += 1

    # -- prompts -------------------------------------------------------------------

    def check_prompt_length(self, length: int) -> None:
        if length <= 0:
            raise ValueError("empty prompt: at least one token is needed")
        self.core.check_length(length)

    def check_request(self, length: int, max_new_tokens: int) -> None:
        """A clear error now for a request that could never run (a prompt too long for
        the settings, or more pages than an empty pool has), not a wait that never ends.
        (New tokens past sampler.max_len are not an error here: a sequence stops there.)"""
        self.check_prompt_length(length)
        self.pages.check_fits(length, max_new_tokens)

    def pad_prompt(self, ids) -> tuple[np.ndarray, int]:
        # Pad with id 0, not pad_id: any in-vocabulary id works (padding is
        # never attended to), but an out-of-vocabulary one embeds as NaN,
        # and NaN survives a zero attention weight.
        return self.core.pad(list(np.asarray(ids).reshape(-1)), 0)

    def tokenizer_adapter(self):
        if self._tokenizer is None:
            return compat.IdTokenizer(self.stop_ids, self.pad_id)
        return compat.HFTokenizer(self._tokenizer, self.stop_ids, self.pad_id)

    # -- prefill: admission, pages, first tokens --------------------------------------

    def _state_version(self, params):
        ref = params if isinstance(params, ParamsRef) else None
        return (ref.state, ref.version) if ref else (params, -1)

    def prompt_key(self, ids, version: int | None = None):
        """What identifies a prompt in the prompt cache (with the weights' version)."""
        version = self.params.version if version is None else version
        return version, np.asarray(ids, np.int32).tobytes()

    def admit(self, ids, max_new_tokens: int, n: int = 1, *, block: bool = False,
              min_n: int = 1, version: int | None = None):
        """Claim decode rows and KV pages for up to `n` samples of prompt `ids` (see
        `pages.PageManager.admit`); None when they do not fit now and `block` is False."""
        self.check_request(len(ids), max_new_tokens)
        return self.pages.admit(self.prompt_key(ids, version), len(ids), int(max_new_tokens), n,
                                block=block, min_n=min_n)

    def prefill_admitted(self, params, admitted: Sequence[tuple[Sequence[int], list, Any]]) -> list:
        """Prefill the admitted prompts that need it (several per call), copy the prompts
        admitted into other shards, and return each prompt's last logits.
        admitted: (ids, holds, logits) as `admit` returned them."""
        state, version = self._state_version(params)
        todo = [i for i, (_, _, logits) in enumerate(admitted) if logits is None]
        out = [logits for _, _, logits in admitted]
        try:
            fresh = self.core.prefill(state, [(np.asarray(admitted[i][0], np.int32),
                                               admitted[i][1][0].pages) for i in todo])
            done = {}
            for i, logits in zip(todo, fresh):
                key = self.prompt_key(admitted[i][0], version)
                self.pages.remember(key, logits)
                done[key] = out[i] = logits
            copies = []
            for i, (_, holds, logits) in enumerate(admitted):
                if isinstance(logits, pages_lib.Pending):
                    out[i] = done[logits.key]  # prefilled in this call
                if holds[0].source is not None:
                    copies += zip(holds[0].source, holds[0].pages)
            self.core.copy_pages(copies)
            for _, holds, _ in admitted:
                for hold in holds:
                    self.pages.copied(hold)
        except BaseException:
            for _, holds, _ in admitted:
                for hold in holds:
                    self.pages.release(hold)
            self.pages.drop_pending()
            raise
        return out

    def make_prefixes(self, logits, holds, samples: Sequence[tuple[int, np.ndarray]],
                      sampling: SamplingParams, max_new_tokens: int) -> list[Prefix]:
        """Draw each sample's first token (its own key) from the prompt's logits."""
        s = sampling
        out = []
        for hold, (tag, key) in zip(holds, samples):
            tok, lp, mlp = self.core.draw(logits, key, s.temperature, s.top_p, s.top_k)
            first = decode_lib.First(
                length=jnp.int32(hold.length), token=tok, logprob=lp, model_logprob=mlp,
                key=jnp.asarray(key, jnp.uint32), temperature=jnp.float32(s.temperature),
                top_p=jnp.float32(s.top_p), top_k=jnp.int32(s.top_k),
                max_new=jnp.int32(max_new_tokens), tag=jnp.int32(tag))
            out.append(Prefix(first=first, hold=hold, tag=int(tag)))
        return out

    def release(self, prefixes: Sequence[Prefix]) -> None:
        """Give back prefixes that will not be inserted."""
        for p in prefixes:
            self.pages.release(p.hold)

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

    def _prefill(self, params, padded_tokens, true_length, num_samples: int | None,
                 want_rows: bool):
        """JetStream's prefill: waits (this is the Driver's prefill thread) until the
        pool holds the request, then prefills (or shares a cached prompt)."""
        _, version = self._state_version(params)
        ids = np.asarray(padded_tokens, np.int32).reshape(-1)[:int(true_length)]
        if num_samples is not None and int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        n = 1 if num_samples is None else int(num_samples)
        spec = self._spec(n)
        admitted = []
        try:  # n samples in as many shards as their rows need (copies of one prefill)
            while sum(len(h) for _, h, _ in admitted) < n:
                left = n - sum(len(h) for _, h, _ in admitted)
                holds, logits = self.admit(ids, spec.max_new_tokens, left, block=True,
                                           version=version)
                admitted.append((ids, holds, logits))
            all_logits = self.prefill_admitted(params, admitted)
            prefixes, tag = [], spec.tag
            for (_, holds, _), logits in zip(admitted, all_logits):
                samples = [(tag + i, spec.key if num_samples is None
                            else request_key(int(spec.key[0]), tag - spec.tag + i))
                           for i in range(len(holds))]
                prefixes += self.make_prefixes(logits, holds, samples, spec.sampling,
                                               spec.max_new_tokens)
                tag += len(holds)
            # 0.2.2 never sees first-token rows: skip their host copy (a sync per prefill).
            rows = self.first_rows(prefixes) if want_rows else None
        except BaseException:
            for _, holds, _ in admitted:
                for hold in holds:
                    self.pages.release(hold)
            raise
        return prefixes, rows

    def first_rows(self, prefixes):
        """The first generated token of each prefix as step rows (0.3.0 returns these).

        All n rows form one "slot" (samples_per_slot = n): 0.3.0's detokenizer
        reads a prefill result at slot 0, so every sample's first token reaches
        the request's return channel, not only the first sample's.
        """
        rows = np.zeros((len(prefixes), decode_lib.OUT_WIDTH), np.int32)
        host = jax.device_get([(p.first.token, p.first.logprob, p.first.model_logprob)
                               for p in prefixes])
        for r, (p, (tok, lp, mlp)) in enumerate(zip(prefixes, host)):
            p.first_token = int(tok)
            rows[r] = (tok, 1, 1, p.tag, np.float32(lp).view(np.int32),
                       np.float32(mlp).view(np.int32),
                       self.core.first_token_finish(int(tok), p.hold.length, p.hold.max_new))
        return compat.step_rows(rows, self.listener, samples_per_slot=len(prefixes))

    def prefill(self, *, params, existing_prefix=None, padded_tokens, true_length,
                sampler=None, request_id=None):
        if existing_prefix is not None:
            raise NotImplementedError("existing_prefix: identical prompts share pages through "
                                      "the engine's prompt cache instead")
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

    def insert(self, prefix: Prefix, decode_state, slot: int, request_id=None):
        """Bind `slot` to a row of the prefix's shard; give it the prompt's pages (a copy
        of the shared partial last page) and the first token."""
        live = True
        if not self.core.lagged:  # 0.3.0: the first token may have finished the request
            token = prefix.first_token
            if token is None:
                token = int(jax.device_get(prefix.first.token))
            live = self.core.first_token_finish(token, prefix.hold.length,
                                                prefix.hold.max_new) == decode_lib.FINISH_NONE
        row, pages, copies = self.pages.insert(prefix.hold, int(slot), prefix.tag, live=live)
        self.core.copy_pages(copies)
        table = self.core.null_table(pages, prefix.hold.shard, self.core.table_width)
        return self.core.insert(decode_state, prefix.first, row, table)

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
            decode_state = self.insert(p, decode_state, slot)
        return decode_state

    def free_resource(self, slot: int) -> Any:
        return None  # a sequence's pages are freed when its finish row reaches the host

    def generate(self, params, decode_state, sampler=None):
        state = params.state if isinstance(params, ParamsRef) else params
        new_pages, new_index = self.pages.grow()
        order = self.pages.order()
        decode_state, out = self.core.step(state, decode_state, new_pages, new_index)
        return decode_state, compat.step_rows(
            out, functools.partial(self._rows_to_host, self.listener), order=order)

    def _rows_to_host(self, listener, rows: np.ndarray) -> None:
        """A step's rows reached the host: finished rows give their pages back, then the
        listener sees them (rows in row order; JetStream reads them in slot order)."""
        _, valid, _, tags, _, _, finish = decode_lib.unpack_rows(rows)
        for row in np.nonzero(valid & (finish != decode_lib.FINISH_NONE))[0]:
            self.pages.finished(int(row), int(tags[row]))
        if listener is not None:
            listener(rows)

    def release_all(self) -> dict:
        """Forget every page holder (the end of a run, or after a failure): all pages
        free again. Returns what was still held outside the prompt cache."""
        return self.pages.reset()

    def load_params(self, *args, **kwargs):
        return self.params

    def get_prefix_destination_sharding(self) -> Any:
        return None  # interleaved: prefill and generate share devices

    def get_tokenizer(self) -> tokenizer_pb2.TokenizerParameters:
        return tokenizer_pb2.TokenizerParameters(path=self._tokenizer_path or "")

    def build_tokenizer(self, metadata):
        return self.tokenizer_adapter()

    def init_decode_state(self, *args, **kwargs):
        self.pages.release_rows()  # rows of an earlier decode state hold nothing now
        return self.core.init_state()

    @property
    def max_concurrent_decodes(self) -> int:
        return self.core.slots

    @property
    def samples_per_slot(self) -> int:
        return 1

    @property
    def max_prefill_length(self) -> int:
        return self.core.longest_prompt

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
        """(samples that shared a prefilled prompt, prompts prefilled)."""
        return self.pages.hits, self.pages.misses
