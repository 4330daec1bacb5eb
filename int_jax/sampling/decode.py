"""The decoding core over a paged KV cache: prefill into pages, insert into a row, one
decode step for all rows.

Everything here is a pure jitted function of (params, pool, arrays); the JetStream
engine (`engine.py`) does the host bookkeeping (`pages.py`: which pages and rows each
sequence holds) and adapts it to JetStream's API. Weights are passed as an
`nnx.State` argument and merged inside the trace, so swapping weights of the same
shapes never recompiles. Compilations are bounded by design: one prefill per (prompts
per call, prefill bucket, context pages) in use, one insert, one page copy per power
of two of pages, one decode step, one draw.

The pool (`paged.PagedKV`) lives here, outside the decode state: prefill writes into
it as well as the decode steps, and every call that changes it donates it and puts the
new one back under a lock (JetStream prefills and decodes on different threads). Per-row
state lives on device in `DecodeState`, with each row's page table; a decode step emits
one row per slot into an int32 table (`OUT_*` columns; log-probabilities bit-cast into
int32) so the host copies a single small array per step.

Emission order. JetStream 0.2.2 returns nothing from prefill, so its first generated
token must come out of the first decode step after insert: the step emits the token it
*feeds* ("lagged"). JetStream 0.3.0 returns the first token from prefill, so its steps
emit the token they *sample*. `lagged` picks one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from int_jax.models import attention as attention_lib
from int_jax.models import sharding as sharding_lib
from int_jax.models.qwen3 import Qwen3, Qwen3Config
from int_jax.sampling import layout, paged
from int_jax.sampling import sample as sample_lib
from int_jax.sampling.settings import SamplerSettings

# Columns of the per-step output table [slots, OUT_WIDTH] (int32).
(OUT_TOKEN, OUT_VALID, OUT_LENGTH, OUT_TAG, OUT_LOGPROB, OUT_MODEL_LOGPROB, OUT_FINISH) = range(7)
OUT_WIDTH = 7
# Finish codes of an emitted token.
FINISH_NONE, FINISH_STOP, FINISH_LENGTH = 0, 1, 2
# Length reported for a slot with nothing to emit: larger than any max_tokens,
# so JetStream's detokenizer closes the request without appending a token.
IDLE_LENGTH = 2**30


class PromptTooLongError(ValueError):
    """A prompt longer than the sampler accepts (never truncated)."""


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding `length` tokens; an error if none does."""
    for b in buckets:
        if length <= b:
            return b
    raise PromptTooLongError(f"{length} tokens do not fit the largest bucket ({buckets[-1]})")


def power_of_two_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@flax.struct.dataclass
class First:
    """A request's first generated token and settings, on device (what insert writes)."""

    length: jax.Array  # int32 []: true prompt length
    token: jax.Array  # int32 []: first generated token
    logprob: jax.Array  # f32 []
    model_logprob: jax.Array  # f32 []
    key: jax.Array  # uint32 [2]: the request's raw PRNG key
    temperature: jax.Array  # f32 []
    top_p: jax.Array  # f32 []
    top_k: jax.Array  # int32 []
    max_new: jax.Array  # int32 []
    tag: jax.Array  # int32 []: request id echoed in every emitted row


@flax.struct.dataclass
class DecodeState:
    """Everything one decode step transforms, for `slots` rows (the pool aside)."""

    page_table: jax.Array  # int32 [S, W]: global page ids of each row's positions
    token: jax.Array  # int32 [S]: latest sampled token, not yet fed
    logprob: jax.Array  # f32 [S]
    model_logprob: jax.Array  # f32 [S]
    position: jax.Array  # int32 [S]: where `token` is written when fed
    generated: jax.Array  # int32 [S]: tokens generated so far, `token` included
    active: jax.Array  # bool [S]
    key: jax.Array  # uint32 [S, 2]
    temperature: jax.Array  # f32 [S]
    top_p: jax.Array  # f32 [S]
    top_k: jax.Array  # int32 [S]
    max_new: jax.Array  # int32 [S]
    tag: jax.Array  # int32 [S]

    @property
    def slots(self) -> int:
        return self.token.shape[0]


@dataclasses.dataclass
class CompileStats:
    """How many programs were compiled and how long that took (benchmarks report it)."""

    count: int = 0
    seconds: float = 0.0


def pool_pages_per_shard(settings: SamplerSettings, layout_: paged.PoolLayout, platform: str,
                         mesh: Mesh | None) -> int:
    """Pages per device from the byte budget (see SamplerSettings: kv_pool_bytes)."""
    budget = settings.kv_pool_bytes
    if not budget and platform == "cpu":
        # Every slot at max_len on each device (an upper bound when slots are split), plus
        # the copied partial page and the null page, unless a CPU budget is given.
        full = settings.slots * -(-settings.max_len // settings.page_size) + 2
        budget = settings.cpu_kv_pool_bytes or full * layout_.page_bytes
    if not budget:
        devices = mesh.devices.flat if mesh is not None else jax.devices()[:1]
        free = []
        for d in devices:
            stats = d.memory_stats() or {}
            limit = stats.get("bytes_limit") or stats.get("bytes_reservable_limit")
            if not limit:
                raise ValueError(f"{d} reports no memory limit: set sampler.kv_pool_bytes")
            free.append(limit - stats.get("bytes_in_use", 0))
        budget = min(free) - settings.kv_reserve_bytes
    pages = int(budget) // layout_.page_bytes
    # One whole sequence, a copy of a shared partial prompt page, the null page: then
    # every request within max_len fits an empty pool (pages.PageManager.check_fits).
    need = -(-settings.max_len // settings.page_size) + 2
    if pages < need:
        raise ValueError(
            f"the KV pool holds {max(pages, 0)} pages of {settings.page_size} tokens per device "
            f"({max(int(budget), 0)} bytes at {layout_.page_bytes} per page): less than one "
            f"sequence of sampler.max_len={settings.max_len}; raise sampler.kv_pool_bytes (or "
            "lower sampler.kv_reserve_bytes or sampler.max_len)")
    return pages


class DecodeCore:
    """Jitted prefill / draw / insert / step for one model structure and pool shape.

    Built from a `SamplerSettings` (or keyword fields building one), like the engine and
    the sampler over it. `pages_per_shard` overrides the pool size the settings give."""

    def __init__(self, model: Qwen3, settings: SamplerSettings | None = None, *,
                 lagged: bool = True, mesh: Mesh | None = None, rules=sharding_lib.DEFAULT_RULES,
                 pages_per_shard: int | None = None, interpret: bool = False, **fields):
        settings = (settings or SamplerSettings()).replace(**fields)
        platform = layout.platform_of(mesh)
        settings = settings.resolve(platform)
        # The sampler's own model (its dtypes, kernels, no remat), as shapes only.
        self.abstract_model = layout.sampler_model(model, settings)
        self.config: Qwen3Config = self.abstract_model.config
        self.graphdef, _ = nnx.split(self.abstract_model)
        self.settings = settings
        self.slots = settings.slots
        self.max_len = settings.max_len
        self.page_size = settings.page_size
        self.buckets = settings.prefill_buckets
        self.longest_prompt = settings.longest_prompt
        self.cache_dtype = jnp.dtype(settings.cache_dtype)
        self.stop_ids = settings.stop_ids
        self.lagged = bool(lagged)
        self.max_top_k = settings.max_top_k
        self.mesh = mesh
        self.rules = tuple(rules)
        self.table_width = -(-self.max_len // self.page_size)  # W: pages of one sequence
        self.decode_kernel = attention_lib.get_paged_kernel(settings.decode_kernel,
                                                            interpret=interpret)
        self.prefill_kernel = attention_lib.get_kernel(settings.prefill_kernel,
                                                       chunk_size=self.config.attention_chunk_size)
        probe = paged.PoolLayout.build(self.config, page_size=self.page_size, pages_per_shard=1,
                                       dtype=self.cache_dtype, slots=self.slots, mesh=mesh,
                                       rules=self.rules)
        if pages_per_shard is None:
            pages_per_shard = pool_pages_per_shard(settings, probe, platform, mesh)
        self.layout = dataclasses.replace(probe, pages_per_shard=int(pages_per_shard))
        if self.slots % self.layout.shards:
            raise ValueError(f"sampler.slots={self.slots} must be a multiple of the "
                             f"data-parallel shards ({self.layout.shards})")
        self.compile_stats = CompileStats()
        self._state_sharding = self._decode_state_sharding()
        self._pool_sharding = self._pool_shardings()
        self._lock = threading.Lock()  # the pool: one writer at a time
        self.pool = self._timed(jax.jit(self.layout.zeros, out_shardings=self._pool_sharding))
        self._prefill = jax.jit(self._prefill_fn, donate_argnums=(1,),
                                out_shardings=(self._pool_sharding, self._replicated()))
        self._draw = jax.jit(self._draw_fn)
        self._insert = jax.jit(self._insert_fn, donate_argnums=(0,),
                               out_shardings=self._state_sharding)
        self._copy = jax.jit(self._copy_fn, donate_argnums=(0,), out_shardings=self._pool_sharding)
        self._step = jax.jit(self._step_fn, donate_argnums=(1, 2),
                             out_shardings=(self._pool_sharding, self._state_sharding,
                                            self._replicated()))
        self._init = jax.jit(self._init_fn, out_shardings=self._state_sharding)
        self._logits = jax.jit(self._logits_fn)

    # -- sharding ------------------------------------------------------------------

    def _replicated(self):
        if self.mesh is None:
            return SingleDeviceSharding(jax.devices()[0])
        return NamedSharding(self.mesh, PartitionSpec())

    def _pool_shardings(self):
        sh = self.layout.pool_sharding() or self._replicated()
        layers = self.config.num_layers
        return paged.PagedKV(k=(sh,) * layers, v=(sh,) * layers)

    def _decode_state_sharding(self):
        """Explicit placement of every DecodeState leaf, with or without a mesh.

        Without a mesh the state is still committed to one device (the one the
        engine puts the weights on): jit keys its cache on committedness, so an
        uncommitted state from `init` would compile `insert` twice.
        """
        if self.mesh is None:
            one = self._replicated()
            return DecodeState(**{f.name: one for f in dataclasses.fields(DecodeState)})
        rows = self.layout._spec(self.layout.dp_axes)
        vec = NamedSharding(self.mesh, rows)
        mat = NamedSharding(self.mesh, PartitionSpec(*rows, None))
        fields = {f.name: vec for f in dataclasses.fields(DecodeState)}
        fields.update(page_table=mat, key=mat)
        return DecodeState(**fields)

    def _trace_context(self):
        if self.mesh is None:
            return contextlib.nullcontext()
        return sharding_lib.activation_rules(self.mesh, self.rules)

    def _model(self, params) -> Qwen3:
        return nnx.merge(self.graphdef, params)

    # -- traced bodies ---------------------------------------------------------------

    def _init_fn(self):
        s = self.slots
        zi, zf = jnp.zeros((s,), jnp.int32), jnp.zeros((s,), jnp.float32)
        null = (jnp.arange(s, dtype=jnp.int32) // (s // self.layout.shards)) * self.layout.pages_per_shard
        return DecodeState(page_table=jnp.broadcast_to(null[:, None], (s, self.table_width)),
                           token=zi, logprob=zf, model_logprob=zf, position=zi, generated=zi,
                           active=jnp.zeros((s,), bool), key=jnp.zeros((s, 2), jnp.uint32),
                           temperature=zf, top_p=jnp.ones((s,), jnp.float32), top_k=zi, max_new=zi,
                           tag=jnp.full((s,), -1, jnp.int32))

    def _prefill_fn(self, params, pool, tokens, start, length, table):
        """tokens [B, C] at positions start + (0..C-1); writes positions < length into the
        prompts' pages (table [B, Wc]); returns (pool, fp32 logits [B, V] after each
        prompt's position length - 1, meaningful when it lies in this chunk)."""
        with self._trace_context():
            model = self._model(params)
            positions = start[:, None] + jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]
            view = paged.PrefillView(pool=pool, table=table, position=positions,
                                     layout=self.layout, kernel=self.prefill_kernel, length=length)
            hidden, view = model.cached_hidden(tokens, positions, view)
            last = jnp.clip(length - 1 - start, 0, tokens.shape[1] - 1)
            hidden = jnp.take_along_axis(hidden, last[:, None, None], axis=1)  # [B, 1, D]
            logits = model.project(hidden)[:, 0]
        return view.pool, logits

    def _draw_fn(self, logits, key, temperature, top_p, top_k):
        """First token from prompt logits [V], with the request's own key."""
        tok, lp, mlp = sample_lib.sample(
            logits[None], jax.random.fold_in(jax.random.wrap_key_data(key), 0)[None],
            temperature[None], top_p[None], top_k[None], max_top_k=self.max_top_k)
        return tok[0], lp[0], mlp[0]

    def _finish_code(self, token, generated, position, max_new):
        stop = jnp.isin(token, jnp.asarray(self.stop_ids, jnp.int32)) if self.stop_ids else \
            jnp.zeros(token.shape, bool)
        full = (generated >= max_new) | (position >= self.max_len - 1)
        return jnp.where(stop, FINISH_STOP, jnp.where(full, FINISH_LENGTH, FINISH_NONE))

    def _insert_fn(self, state: DecodeState, first: First, row, table_row):
        if self.lagged:
            active = jnp.asarray(True)
        else:  # the first token was already emitted (and checked) by prefill
            active = self._finish_code(first.token, 1, first.length, first.max_new) == FINISH_NONE

        def put(arr, value):
            return arr.at[row].set(jnp.asarray(value, arr.dtype))

        return DecodeState(
            page_table=state.page_table.at[row].set(table_row), token=put(state.token, first.token),
            logprob=put(state.logprob, first.logprob),
            model_logprob=put(state.model_logprob, first.model_logprob),
            position=put(state.position, first.length), generated=put(state.generated, 1),
            active=put(state.active, active), key=state.key.at[row].set(first.key),
            temperature=put(state.temperature, first.temperature),
            top_p=put(state.top_p, first.top_p), top_k=put(state.top_k, first.top_k),
            max_new=put(state.max_new, first.max_new), tag=put(state.tag, first.tag))

    def _copy_fn(self, pool, src, dst):
        return paged.copy_pages(pool, src, dst, self.layout)

    def _forward(self, params, pool, state: DecodeState):
        """Feed every row's token: (fp32 logits [S, V], the pool with the fed rows written)."""
        with self._trace_context():
            model = self._model(params)
            view = paged.DecodeView(pool=pool, table=state.page_table, position=state.position,
                                    layout=self.layout, kernel=self.decode_kernel, write=state.active)
            hidden, view = model.cached_hidden(state.token[:, None], state.position[:, None], view)
            logits = model.project(hidden)
        return logits[:, 0], view.pool

    def _logits_fn(self, params, pool, state: DecodeState):
        return self._forward(params, pool, state)[0]

    def _step_fn(self, params, pool, state: DecodeState, new_pages, new_index):
        """One token for every row (sampled, emitted, checked for the end); rows first get
        the pages the host allocated them (new_pages at new_index; -1: none)."""
        rows = jnp.arange(self.slots)
        table = state.page_table.at[rows, jnp.where(new_pages >= 0, new_index, self.table_width)].set(
            new_pages, mode="drop")
        state = state.replace(page_table=table)
        logits, pool = self._forward(params, pool, state)
        keys = jax.vmap(lambda k, g: jax.random.fold_in(jax.random.wrap_key_data(k), g))(
            state.key, state.generated)
        nxt, lp, mlp = sample_lib.sample(logits, keys, state.temperature, state.top_p,
                                         state.top_k, max_top_k=self.max_top_k)
        if self.lagged:  # emit the fed token
            e_tok, e_lp, e_mlp, e_gen = state.token, state.logprob, state.model_logprob, state.generated
            code = self._finish_code(e_tok, e_gen, state.position, state.max_new)
        else:  # emit the sampled token
            e_tok, e_lp, e_mlp, e_gen = nxt, lp, mlp, state.generated + 1
            code = self._finish_code(e_tok, e_gen, state.position + 1, state.max_new)
        valid = state.active
        out = jnp.stack([
            e_tok, valid.astype(jnp.int32), jnp.where(valid, e_gen, IDLE_LENGTH), state.tag,
            jax.lax.bitcast_convert_type(e_lp.astype(jnp.float32), jnp.int32),
            jax.lax.bitcast_convert_type(e_mlp.astype(jnp.float32), jnp.int32),
            jnp.where(valid, code, FINISH_NONE)], axis=1).astype(jnp.int32)
        active = valid & (code == FINISH_NONE)
        advance = state.active
        new = state.replace(
            token=jnp.where(advance, nxt, state.token),
            logprob=jnp.where(advance, lp, state.logprob),
            model_logprob=jnp.where(advance, mlp, state.model_logprob),
            position=jnp.where(advance, state.position + 1, state.position),
            generated=jnp.where(advance, state.generated + 1, state.generated), active=active)
        return pool, new, out

    # -- host entry points ---------------------------------------------------------------

    def _timed(self, fn, *args):
        before = _cache_size(fn)
        t0 = time.perf_counter()
        out = fn(*args)
        if _cache_size(fn) > before:  # compiled on this call: wait for it to finish
            jax.block_until_ready(out)
            self.compile_stats.count += 1
            self.compile_stats.seconds += time.perf_counter() - t0
        return out

    def init_state(self) -> DecodeState:
        """A fresh decode state: every row empty, its table on its shard's null page."""
        return self._timed(self._init)

    def null_table(self, pages: Sequence[int], shard: int, width: int) -> np.ndarray:
        """`pages` then the shard's null page, `width` entries."""
        out = np.full(width, shard * self.layout.pages_per_shard, np.int32)
        out[:len(pages)] = pages
        return out

    def pad(self, tokens: Sequence[int], pad_id: int = 0) -> tuple[np.ndarray, int]:
        """Right-pad a prompt to its bucket, or to whole chunks when longer than the
        largest: (int32 [padded], true length)."""
        n = len(tokens)
        if n == 0:
            raise ValueError("empty prompt: at least one token is needed to sample from")
        self.check_length(n)
        chunk = self.buckets[-1]
        size = bucket_for(n, self.buckets) if n <= chunk else -(-n // chunk) * chunk
        out = np.full((size,), pad_id, np.int32)
        out[:n] = np.asarray(tokens, np.int32)
        return out, n

    def check_length(self, n: int) -> None:
        if n > self.longest_prompt:
            largest = "the largest prefill bucket" if not self.settings.max_prefill_length else \
                "sampler.max_prefill_length"
            raise PromptTooLongError(
                f"prompt of {n} tokens is longer than {largest} ({self.longest_prompt}); raise "
                "sampler.max_prefill_length (prompts are never truncated)")

    def _context_pages(self, tokens: int) -> int:
        """Table entries a prefill call reads: its pages rounded up to a power of two."""
        return min(power_of_two_at_least(-(-tokens // self.page_size)), self.table_width)

    def prefill(self, params, prompts: Sequence[tuple[np.ndarray, Sequence[int]]]) -> list:
        """Write each prompt's keys and values into its pages; return its last logits.

        prompts: (token ids, global page ids of the prompt). Prompts longer than the
        largest bucket run alone, chunk by chunk (each chunk attends to the pages written
        before it); shorter ones run together, up to `max_prefill_batch` per call.
        """
        out: list = [None] * len(prompts)
        chunk = self.buckets[-1]
        short = [i for i, (ids, _) in enumerate(prompts) if len(ids) <= chunk]
        for i, (ids, pages) in enumerate(prompts):
            if len(ids) > chunk:
                out[i] = self._prefill_long(params, ids, pages)
        short.sort(key=lambda i: len(prompts[i][0]))
        step = self.settings.max_prefill_batch
        for at in range(0, len(short), step):
            group = short[at:at + step]
            logits = self._prefill_call(params, [prompts[i] for i in group], 0,
                                        bucket_for(max(len(prompts[i][0]) for i in group), self.buckets))
            for j, i in enumerate(group):
                out[i] = logits[j]
        return out

    def _prefill_long(self, params, ids, pages):
        chunk = self.buckets[-1]
        logits = None
        for start in range(0, len(ids), chunk):
            logits = self._prefill_call(params, [(ids, pages)], start, chunk)[0]
        return logits

    def _prefill_call(self, params, prompts, start: int, size: int):
        """One prefill program: tokens start..start+size of each prompt (padded batch)."""
        batch = power_of_two_at_least(len(prompts))
        width = self._context_pages(start + size)
        tokens = np.zeros((batch, size), np.int32)
        lengths = np.zeros(batch, np.int32)
        table = np.full((batch, width), -1, np.int32)  # padding rows: no shard owns -1
        for b, (ids, pages) in enumerate(prompts):
            piece = np.asarray(ids[start:start + size], np.int32)
            tokens[b, :len(piece)] = piece
            lengths[b] = len(ids)
            shard = pages[0] // self.layout.pages_per_shard
            table[b] = self.null_table(pages[:width], shard, width)
        with self._lock:
            self.pool, logits = self._timed(self._prefill, params, self.pool, tokens,
                                            np.full(batch, start, np.int32), lengths, table)
        return logits

    def copy_pages(self, copies: Sequence[tuple[int, int]]) -> None:
        """Copy pages (src, dst) in every layer, in order: a copy whose source is an
        earlier copy's destination gets that copy's data (one device call makes every
        copy at once from the pool as it was, so it reads the earlier source instead;
        a third shard copying a prompt from a second does this)."""
        if not copies:
            return
        origin: dict[int, int] = {}
        for page_from, page_to in copies:
            origin[page_to] = origin.get(page_from, page_from)
        n = power_of_two_at_least(len(copies))
        src = np.full(n, -1, np.int32)
        dst = np.full(n, -1, np.int32)
        dst[:len(copies)] = [page_to for _, page_to in copies]
        src[:len(copies)] = [origin[page_to] for _, page_to in copies]
        with self._lock:
            self.pool = self._timed(self._copy, self.pool, src, dst)

    def draw(self, logits, key_data, temperature, top_p, top_k):
        return self._timed(self._draw, logits, key_data, np.float32(temperature),
                           np.float32(top_p), np.int32(top_k))

    def insert(self, state: DecodeState, first: First, row: int, table_row) -> DecodeState:
        if not 0 <= int(row) < self.slots:
            raise ValueError(f"row {row} outside 0..{self.slots - 1}")
        return self._timed(self._insert, state, first, np.int32(row),
                           np.asarray(table_row, np.int32))

    def first_token_finish(self, token: int, length: int, max_new: int) -> int:
        """Host twin of `_finish_code` for a prefill's first token (the 1st generated,
        fed at position `length`): what the 0.3.0 contract reports and insert retires."""
        if int(token) in self.stop_ids:
            return FINISH_STOP
        if max_new <= 1 or length >= self.max_len - 1:
            return FINISH_LENGTH
        return FINISH_NONE

    def step(self, params, state: DecodeState, new_pages=None, new_index=None):
        """One decode step for all rows; (new_pages, new_index): pages the host gives rows
        before it (see pages.PageManager.grow). Returns (state, output table)."""
        none = np.full(self.slots, -1, np.int32)
        new_pages = none if new_pages is None else np.asarray(new_pages, np.int32)
        new_index = none if new_index is None else np.asarray(new_index, np.int32)
        with self._lock:
            self.pool, state, out = self._timed(self._step, params, self.pool, state, new_pages,
                                                new_index)
        return state, out

    def step_logits(self, params, state: DecodeState) -> jax.Array:
        """fp32 logits [slots, V] the next step would sample from (pool and state untouched)."""
        with self._lock:
            return self._logits(params, self.pool, state)


def _cache_size(fn) -> int:
    try:
        return fn._cache_size()
    except AttributeError:  # pragma: no cover - older/newer jax without the helper
        return 0


def unpack_rows(out: np.ndarray):
    """Host view of a step table: (tokens, valid, lengths, tags, logprobs, model_logprobs, finish)."""
    out = np.asarray(out)
    lp = out[:, OUT_LOGPROB].astype(np.int32).view(np.float32)
    mlp = out[:, OUT_MODEL_LOGPROB].astype(np.int32).view(np.float32)
    return (out[:, OUT_TOKEN], out[:, OUT_VALID].astype(bool), out[:, OUT_LENGTH], out[:, OUT_TAG],
            lp, mlp, out[:, OUT_FINISH])
