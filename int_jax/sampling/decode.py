"""The decoding core: bucketed prefill, insert into a slot, one step for all slots.

Everything here is a pure jitted function of (params, arrays); the JetStream
engine (`engine.py`) only adapts it to JetStream's API. Weights are passed as
an `nnx.State` argument and merged inside the trace, so swapping weights of
the same shapes never recompiles. Compilations are bounded by design: one
prefill and one insert per prompt-length bucket, one decode step per decode
bucket (a step attends over a window of the cache, see `decode_window.py`),
one draw.

Per-slot state lives on device in `DecodeState`; a decode step emits one row
per slot into an int32 table (`OUT_*` columns; log-probabilities bit-cast
into int32) so the host copies a single small array per step.

Emission order. JetStream 0.2.2 returns nothing from prefill, so its first
generated token must come out of the first decode step after insert: the step
emits the token it *feeds* ("lagged"). JetStream 0.3.0 returns the first token
from prefill, so its steps emit the token they *sample*. `lagged` picks one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from int_jax.models import sharding as sharding_lib
from int_jax.models.qwen3 import KVCache, Qwen3, Qwen3Config
from int_jax.sampling import decode_window, layout
from int_jax.sampling import sample as sample_lib
from int_jax.sampling.settings import SamplerSettings

# Columns of the per-step output table [slots, OUT_WIDTH] (int32). OUT_WINDOW_MISS
# is 1 on a live row whose position the step's attention window did not cover.
(OUT_TOKEN, OUT_VALID, OUT_LENGTH, OUT_TAG, OUT_LOGPROB, OUT_MODEL_LOGPROB, OUT_FINISH,
 OUT_WINDOW_MISS) = range(8)
OUT_WIDTH = 8
# Finish codes of an emitted token.
FINISH_NONE, FINISH_STOP, FINISH_LENGTH = 0, 1, 2
# Length reported for a slot with nothing to emit: larger than any max_tokens,
# so JetStream's detokenizer closes the request without appending a token.
IDLE_LENGTH = 2**30


class DecodeWindowError(RuntimeError):
    """A decode step's attention window missed a live position (an internal error)."""


class PromptTooLongError(ValueError):
    """A prompt does not fit the largest prefill bucket (never truncated)."""


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding `length` tokens; an error if none does."""
    for b in buckets:
        if length <= b:
            return b
    raise PromptTooLongError(
        f"prompt of {length} tokens is longer than the largest prefill bucket "
        f"({buckets[-1]}); raise sampler.max_prefill_length (prompts are never truncated)")


@flax.struct.dataclass
class Prefix:
    """A prefilled prompt with its first sampled token and request settings.

    `shared_kv` marks KV arrays also held by the prefix cache (identical
    prompts reuse them), which must survive JetStream freeing this prefix.
    """

    kv: KVCache  # [layers, 1, bucket, kv_heads, head_dim]
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
    shared_kv: bool = flax.struct.field(pytree_node=False, default=False)


@flax.struct.dataclass
class DecodeState:
    """Everything one decode step transforms, for `slots` rows."""

    cache: KVCache  # [layers, slots, max_len, kv_heads, head_dim]
    token: jax.Array  # int32 [S]: latest sampled token, not yet fed
    logprob: jax.Array  # f32 [S]
    model_logprob: jax.Array  # f32 [S]
    position: jax.Array  # int32 [S]: cache slot `token` is written to when fed
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


_PER_SLOT_AXES = ("cache_batch",)


@dataclasses.dataclass
class CompileStats:
    """How many programs were compiled and how long that took (benchmarks report it)."""

    count: int = 0
    seconds: float = 0.0


class DecodeCore:
    """Jitted prefill / draw / insert / step for one model structure and cache shape.

    Built from a `SamplerSettings` (or keyword fields building one), like the engine
    and the sampler over it."""

    def __init__(self, model: Qwen3, settings: SamplerSettings | None = None, *,
                 lagged: bool = True, mesh: Mesh | None = None, rules=sharding_lib.DEFAULT_RULES,
                 **fields):
        settings = (settings or SamplerSettings()).replace(**fields)
        settings = settings.resolve(layout.platform_of(mesh))
        # The sampler's own model (its dtypes, kernels, no remat), as shapes only.
        self.abstract_model = layout.sampler_model(model, settings)
        self.config: Qwen3Config = self.abstract_model.config
        self.graphdef, _ = nnx.split(self.abstract_model)
        self.settings = settings
        self.slots = settings.slots
        self.max_len = settings.max_len
        self.buckets = settings.prefill_buckets
        self.cache_dtype = jnp.dtype(settings.cache_dtype)
        self.stop_ids = settings.stop_ids
        self.lagged = bool(lagged)
        self.max_top_k = settings.max_top_k
        self.mesh = mesh
        self.rules = tuple(rules)
        # Attention windows of the decode step (see decode_window.py).
        self.decode_buckets = decode_window.check_buckets(
            settings.decode_buckets or decode_window.decode_buckets(
                self.max_len, settings.min_decode_bucket), self.max_len)
        self.live = decode_window.LiveBounds(self.slots, self.max_len)
        self.compile_stats = CompileStats()
        self._state_sharding = self._decode_state_sharding()
        self._prefill = jax.jit(self._prefill_fn)
        self._draw = jax.jit(self._draw_fn)
        self._insert = jax.jit(self._insert_fn, donate_argnums=(0,),
                               out_shardings=self._state_sharding)
        self._step = jax.jit(self._step_fn, donate_argnums=(1,), static_argnums=(2,),
                             out_shardings=(self._state_sharding, self._replicated()))
        self._init = jax.jit(self._init_fn, out_shardings=self._state_sharding)
        self._logits = jax.jit(self._logits_fn, static_argnums=(2,))

    # -- sharding ------------------------------------------------------------------

    def _replicated(self):
        if self.mesh is None:
            return SingleDeviceSharding(jax.devices()[0])
        return NamedSharding(self.mesh, PartitionSpec())

    def _named(self, logical_axes, shape):
        spec = sharding_lib.logical_to_spec(logical_axes, self.rules, shape, self.mesh)
        return NamedSharding(self.mesh, spec)

    def _decode_state_sharding(self):
        """Explicit placement of every DecodeState leaf, with or without a mesh.

        Without a mesh the state is still committed to one device (the one the
        engine puts the weights on): jit keys its cache on committedness, so an
        uncommitted state from `init` would compile `insert` twice per bucket.
        """
        if self.mesh is None:
            one = self._replicated()
            fields = {f.name: one for f in dataclasses.fields(DecodeState)}
            fields.update(cache=KVCache(k=one, v=one))
            return DecodeState(**fields)
        c = self.config
        cache_shape = (c.num_layers, self.slots, self.max_len, c.num_kv_heads, c.head_dim)
        cache = self._named(KVCache.LOGICAL_AXES, cache_shape)
        vec = self._named(_PER_SLOT_AXES, (self.slots,))
        mat = self._named((*_PER_SLOT_AXES, None), (self.slots, 2))
        fields = {f.name: vec for f in dataclasses.fields(DecodeState)}
        fields.update(cache=KVCache(k=cache, v=cache), key=mat)
        return DecodeState(**fields)

    def _constrain_cache(self, x):
        return sharding_lib.constrain(x, KVCache.LOGICAL_AXES)

    def _trace_context(self):
        if self.mesh is None:
            return contextlib.nullcontext()
        return sharding_lib.activation_rules(self.mesh, self.rules)

    def _model(self, params) -> Qwen3:
        return nnx.merge(self.graphdef, params)

    # -- traced bodies ---------------------------------------------------------------

    def _init_fn(self):
        s = self.slots
        cache = KVCache.zeros(self.config, s, self.max_len, self.cache_dtype)
        zi, zf = jnp.zeros((s,), jnp.int32), jnp.zeros((s,), jnp.float32)
        return DecodeState(cache=cache, token=zi, logprob=zf, model_logprob=zf, position=zi,
                           generated=zi, active=jnp.zeros((s,), bool),
                           key=jnp.zeros((s, 2), jnp.uint32), temperature=zf,
                           top_p=jnp.ones((s,), jnp.float32), top_k=zi, max_new=zi,
                           tag=jnp.full((s,), -1, jnp.int32))

    def _prefill_fn(self, params, tokens, length):
        """tokens [1, bucket]; returns (kv for the bucket, fp32 logits [V] after the prompt)."""
        with self._trace_context():
            model = self._model(params)
            bucket = tokens.shape[1]
            cache = KVCache.zeros(self.config, 1, bucket, self.cache_dtype)
            positions = jnp.arange(bucket, dtype=jnp.int32)[None]
            hidden, cache = model.decode_hidden(tokens, positions, cache)
            last = jax.lax.dynamic_slice_in_dim(hidden, length - 1, 1, axis=1)
            logits = model.project(last)[0, 0]
        return cache, logits

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

    def _insert_fn(self, state: DecodeState, prefix: Prefix, slot):
        zeros = (0, slot, 0, 0, 0)
        k = jax.lax.dynamic_update_slice(state.cache.k, prefix.kv.k.astype(self.cache_dtype), zeros)
        v = jax.lax.dynamic_update_slice(state.cache.v, prefix.kv.v.astype(self.cache_dtype), zeros)
        if self.lagged:
            active = jnp.asarray(True)
        else:  # the first token was already emitted (and checked) by prefill
            active = self._finish_code(prefix.token, 1, prefix.length, prefix.max_new) == FINISH_NONE

        def put(arr, value):
            return arr.at[slot].set(jnp.asarray(value, arr.dtype))

        return DecodeState(
            cache=KVCache(k=k, v=v), token=put(state.token, prefix.token),
            logprob=put(state.logprob, prefix.logprob),
            model_logprob=put(state.model_logprob, prefix.model_logprob),
            position=put(state.position, prefix.length), generated=put(state.generated, 1),
            active=put(state.active, active), key=state.key.at[slot].set(prefix.key),
            temperature=put(state.temperature, prefix.temperature),
            top_p=put(state.top_p, prefix.top_p), top_k=put(state.top_k, prefix.top_k),
            max_new=put(state.max_new, prefix.max_new), tag=put(state.tag, prefix.tag))

    def _forward(self, params, state: DecodeState, window: int):
        """Feed every slot's token, attending over cache rows [0, window) only:
        (fp32 logits [S, V], the full cache with the fed rows written)."""
        full = state.cache
        with self._trace_context():
            model = self._model(params)
            if window < self.max_len:
                view = KVCache(k=self._constrain_cache(full.k[:, :, :window]),
                               v=self._constrain_cache(full.v[:, :, :window]))
            else:
                view = full
            logits, written = model.decode(state.token[:, None], state.position[:, None], view)
            if window < self.max_len:  # only the fed rows changed: copy those back
                cache = KVCache(k=decode_window.write_back(full.k, written.k, state.position),
                                v=decode_window.write_back(full.v, written.v, state.position))
            else:
                cache = written
        return logits[:, 0], cache

    def _logits_fn(self, params, state: DecodeState, window: int):
        return self._forward(params, state, window)[0]

    def _step_fn(self, params, state: DecodeState, window: int):
        """One token for every slot (sampled, emitted, checked for the end)."""
        logits, cache = self._forward(params, state, window)
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
        missed = valid & (state.position >= window)
        out = jnp.stack([
            e_tok, valid.astype(jnp.int32), jnp.where(valid, e_gen, IDLE_LENGTH), state.tag,
            jax.lax.bitcast_convert_type(e_lp.astype(jnp.float32), jnp.int32),
            jax.lax.bitcast_convert_type(e_mlp.astype(jnp.float32), jnp.int32),
            jnp.where(valid, code, FINISH_NONE), missed.astype(jnp.int32)], axis=1).astype(jnp.int32)
        active = valid & (code == FINISH_NONE)
        advance = state.active
        new = state.replace(
            cache=cache, token=jnp.where(advance, nxt, state.token),
            logprob=jnp.where(advance, lp, state.logprob),
            model_logprob=jnp.where(advance, mlp, state.model_logprob),
            position=jnp.where(advance, state.position + 1, state.position),
            generated=jnp.where(advance, state.generated + 1, state.generated), active=active)
        return new, out

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
        """A fresh decode state (all slots empty). A core steps one state at a time:
        the host-side window bounds describe the latest one."""
        state = self._timed(self._init)
        self.live.reset()
        return state

    def pad(self, tokens: Sequence[int], pad_id: int = 0) -> tuple[np.ndarray, int]:
        """Right-pad a prompt to its bucket: (int32 [bucket], true length)."""
        n = len(tokens)
        if n == 0:
            raise ValueError("empty prompt: at least one token is needed to sample from")
        bucket = bucket_for(n, self.buckets)
        out = np.full((bucket,), pad_id, np.int32)
        out[:n] = np.asarray(tokens, np.int32)
        return out, n

    def prefill(self, params, padded: np.ndarray, length: int):
        """KV of a right-padded prompt and the logits after its last token."""
        padded = np.asarray(padded, np.int32).reshape(1, -1)
        if padded.shape[1] not in self.buckets:
            raise ValueError(f"prefill length {padded.shape[1]} is not one of the buckets {self.buckets}")
        if not 0 < length <= padded.shape[1]:
            raise ValueError(f"true_length {length} outside 1..{padded.shape[1]}")
        return self._timed(self._prefill, params, padded, np.int32(length))

    def draw(self, logits, key_data, temperature, top_p, top_k):
        return self._timed(self._draw, logits, key_data, np.float32(temperature),
                           np.float32(top_p), np.int32(top_k))

    def insert(self, state: DecodeState, prefix: Prefix, slot: int) -> DecodeState:
        if not 0 <= int(slot) < self.slots:
            raise ValueError(f"slot {slot} outside 0..{self.slots - 1}")
        # Small scalars made from host ints at prefill: ready, so this read never stalls.
        length, max_new, tag = jax.device_get((prefix.length, prefix.max_new, prefix.tag))
        state = self._timed(self._insert, state, prefix, np.int32(slot))
        live = True
        if not self.lagged:  # insert retires a request its first token already finished
            token = int(jax.device_get(prefix.token))
            live = self.first_token_finish(token, int(length), int(max_new)) == FINISH_NONE
        self.live.inserted(int(slot), int(length), int(max_new), int(tag), live=live)
        return state

    def first_token_finish(self, token: int, length: int, max_new: int) -> int:
        """Host twin of `_finish_code` for a prefill's first token (the 1st generated,
        fed at position `length`): what the 0.3.0 contract reports and insert retires."""
        if int(token) in self.stop_ids:
            return FINISH_STOP
        if max_new <= 1 or length >= self.max_len - 1:
            return FINISH_LENGTH
        return FINISH_NONE

    def window(self) -> int:
        """The attention window the next step will use."""
        return decode_window.window_for(self.live.needed(), self.decode_buckets)

    def _checked_window(self, window: int | None) -> int:
        """The host's window, or an override that must be one of the decode buckets."""
        window = self.window() if window is None else int(window)
        if window not in self.decode_buckets:
            raise ValueError(f"decode window {window} is not one of the buckets {self.decode_buckets}")
        return window

    def step(self, params, state: DecodeState, window: int | None = None):
        """One decode step for all slots; `window` overrides the host's choice (tests)."""
        window = self._checked_window(window)
        out = self._timed(self._step, params, state, window)
        self.live.stepped()
        return out

    def step_logits(self, params, state: DecodeState, window: int | None = None) -> jax.Array:
        """fp32 logits [slots, V] the next step would sample from (state untouched)."""
        return self._logits(params, state, self._checked_window(window))

    def observe_rows(self, rows: np.ndarray) -> None:
        """Host rows of a step (in step order): finished slots leave the window bound.

        Raises `DecodeWindowError` if a live row's position was outside its
        step's window, i.e. the host bound was wrong and the row is garbage.
        """
        rows = np.asarray(rows)
        missed = np.nonzero(rows[:, OUT_WINDOW_MISS])[0]
        if missed.size:
            raise DecodeWindowError(
                f"decode step attended over too short a cache window for slots {missed.tolist()} "
                "(the host-side position bound was wrong; one core must step one decode state)")
        done = np.nonzero(rows[:, OUT_VALID].astype(bool) & (rows[:, OUT_FINISH] != FINISH_NONE))[0]
        for slot in done:
            self.live.finished(int(slot), int(rows[slot, OUT_TAG]))


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

