"""Qwen3 decoder in Flax NNX, numerically matching transformers' Qwen3ForCausalLM.

Every weight carries `logical_axes` metadata (MaxText style); `sharding.py` maps
those names to mesh axes with rules from the config, so changing parallelism never
touches this file. Projection kernels are stored head-split (`[embed, heads,
head_dim]`) so heads can be sharded over the `tensor` axis; the matmuls merge (heads,
head_dim) with a reshape that is a bitcast (`_heads_in`, `_heads_out`).

One forward serves training, parity tests and KV-cache decoding:

    logits = model(input_ids, positions, attention_mask)            # plain
    logits = model(input_ids, positions, segment_ids=seg)           # packed
    logits, cache = model.decode(input_ids, positions, cache)       # cached
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from int_jax.models import attention as attention_lib
from int_jax.models import sharding
from int_jax.models.rms_norm import rms_norm
from int_jax.models.swiglu import swiglu
from int_jax.models.vocab import QWEN3_END_TOKEN_IDS  # noqa: F401 - re-exported


# Activations named in the model (`checkpoint_name`), for the `names` remat policy:
#   query, key, value  [B, T, H|K, D]  attention inputs (after q/k norm and RoPE)
#   attention          [B, T, H, D]    the attention kernel's output
#   attention_stats                    what the flash and splash kernels keep for their
#                                      backward (output and log-sum-exp, their layouts)
#   attention_out      [B, T, D]       after o_proj
#   mlp_gate, mlp_up   [B, T, F]       the MLP's two input projections
#   mlp_out            [B, T, D]       after down_proj
ACTIVATION_NAMES = ("query", "key", "value", "attention", "attention_stats", "attention_out",
                    "mlp_gate", "mlp_up", "mlp_out")
# `names` saves these by default: the attention kernel's inputs and (flash, splash) its
# own residuals, so the backward recomputes the norms, the MLP and the projections but
# not the attention forward. Kernels that name nothing (xla, chunked, cudnn, triton)
# recompute their forward under any policy but `none`.
DEFAULT_REMAT_NAMES = ("query", "key", "value", "attention_stats")
# What each decoder layer keeps for the backward (`Qwen3Config.remat`):
#   none   everything autodiff saves (no recomputation)
#   full   only the layer's input: the backward recomputes the whole layer
#   dots   the outputs of matmuls against weights (dots without batch dimensions);
#          attention scores and elementwise work are recomputed
#   names  the activations named in `remat_names` (ACTIVATION_NAMES)
REMAT_POLICIES = ("none", "full", "dots", "names")


def remat_policy(remat: str, names=DEFAULT_REMAT_NAMES):
    """The `jax.checkpoint` policy of a remat setting (None: save nothing)."""
    if remat == "full":
        return None
    if remat == "dots":
        return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    if remat == "names":
        return jax.checkpoint_policies.save_only_these_names(*names)
    raise ValueError(f"no checkpoint policy for remat={remat!r}")


@dataclasses.dataclass(frozen=True)
class Qwen3Config:
    """Architecture plus the few execution switches that change the graph."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 40960
    # Execution switches (not part of the checkpoint).
    remat: str = "none"  # REMAT_POLICIES, per decoder layer (True / False: full / none)
    remat_names: tuple[str, ...] = DEFAULT_REMAT_NAMES  # saved by remat="names"
    scan_layers: bool = False  # nnx.scan over stacked layer weights
    attention_impl: str = "xla"  # a name in attention.KERNELS (auto: choose_kernel)
    attention_chunk_size: int = 512

    def __post_init__(self):
        # The boolean of earlier configs: True was jax.checkpoint of the whole layer.
        if isinstance(self.remat, bool):
            object.__setattr__(self, "remat", "full" if self.remat else "none")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"unknown remat {self.remat!r}; choose one of {REMAT_POLICIES}")
        object.__setattr__(self, "remat_names", tuple(self.remat_names))
        unknown = sorted(set(self.remat_names) - set(ACTIVATION_NAMES))
        if unknown:
            raise ValueError(f"unknown remat_names {unknown}; the model names {ACTIVATION_NAMES}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of "
                f"num_kv_heads={self.num_kv_heads}")

    def replace(self, **changes) -> "Qwen3Config":
        return dataclasses.replace(self, **changes)

    @property
    def num_params(self) -> int:
        """Parameter count (embeddings included), for MFU and memory estimates."""
        d, f, h, k, hd = (self.hidden_size, self.intermediate_size, self.num_heads,
                          self.num_kv_heads, self.head_dim)
        attn = d * h * hd * 2 + d * k * hd * 2 + 2 * hd
        layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.num_layers * layer + d + head

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "Qwen3Config":
        """Build from a transformers `config.json` dict (v4 or v5 layout)."""
        model_type = hf.get("model_type")
        if model_type != "qwen3":
            raise ValueError(
                f"unsupported model_type {model_type!r} in config.json; expected 'qwen3'")
        # transformers 5 nests rope settings under `rope_parameters`; v4 keeps
        # `rope_theta` at top level. Read both, prefer the nested form.
        rope = hf.get("rope_parameters") or {}
        theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", (hf.get("rope_scaling") or {}).get("rope_type", "default"))
        if rope_type not in (None, "default"):
            raise ValueError(f"unsupported rope_type {rope_type!r} in config.json")
        heads = hf["num_attention_heads"]
        kwargs = dict(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads", heads),
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            rope_theta=float(theta),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position_embeddings=hf.get("max_position_embeddings", 40960),
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict:
        """The `config.json` transformers needs to load a saved checkpoint."""
        return {
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "use_sliding_window": False,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
        }


_QWEN3_COMMON = dict(vocab_size=151936, head_dim=128, num_kv_heads=8)

PRESETS: dict[str, Qwen3Config] = {
    "qwen3_0_6b": Qwen3Config(hidden_size=1024, intermediate_size=3072, num_layers=28,
                              num_heads=16, tie_word_embeddings=True, **_QWEN3_COMMON),
    "qwen3_1_7b": Qwen3Config(hidden_size=2048, intermediate_size=6144, num_layers=28,
                              num_heads=16, tie_word_embeddings=True, **_QWEN3_COMMON),
    "qwen3_4b": Qwen3Config(hidden_size=2560, intermediate_size=9728, num_layers=36,
                            num_heads=32, tie_word_embeddings=True, **_QWEN3_COMMON),
    "qwen3_4b_instruct_2507": Qwen3Config(
        hidden_size=2560, intermediate_size=9728, num_layers=36, num_heads=32,
        tie_word_embeddings=True, rope_theta=5_000_000.0,
        max_position_embeddings=262144, **_QWEN3_COMMON),
    "qwen3_8b": Qwen3Config(hidden_size=4096, intermediate_size=12288, num_layers=36,
                            num_heads=32, tie_word_embeddings=False, **_QWEN3_COMMON),
    # Real Qwen3 vocabulary (so the real tokenizer works), toy everything else.
    "tiny": Qwen3Config(vocab_size=151936, hidden_size=64, intermediate_size=128,
                        num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                        tie_word_embeddings=True, max_position_embeddings=4096),
}


def preset(name: str, **overrides) -> Qwen3Config:
    """A named architecture, optionally with fields replaced."""
    try:
        return PRESETS[name].replace(**overrides)
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}") from None


# --------------------------------------------------------------------------- cache


@flax.struct.dataclass
class KVCache:
    """Per-layer keys/values, stacked: [layers, batch, max_len, kv_heads, head_dim].

    Slot `i` of the length axis holds the token at position `i`, so a decode step
    writes at its position and causality masks everything after it (stale
    entries from an earlier, longer sequence in the same slot are never read).
    """

    k: jax.Array
    v: jax.Array

    LOGICAL_AXES = ("layers", "cache_batch", "cache_length", "cache_kv_heads", "head_dim")

    @classmethod
    def zeros(cls, config: Qwen3Config, batch: int, max_len: int, dtype=jnp.bfloat16):
        shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
        return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype))

    @property
    def max_len(self) -> int:
        return self.k.shape[2]


class CacheAt(NamedTuple):
    """A cache object bound to one layer. The object (the sampler's paged KV views) has
    `attend(layer, q, k, v) -> (out [B, T, H, D], updated object)`: it stores the new
    keys and values itself and attends with its own kernel and masks."""

    cache: Any
    layer: int


# --------------------------------------------------------------------------- layers


def _param(rngs: nnx.Rngs, shape, axes, dtype, init=None):
    init = init or nnx.initializers.normal(stddev=0.02)
    return nnx.Param(init(rngs.params(), shape, dtype), logical_axes=axes)


class RMSNorm(nnx.Module):
    """RMSNorm computed in fp32, cast back to the input dtype before the scale."""

    def __init__(self, dim: int, eps: float, *, param_dtype, rngs: nnx.Rngs):
        del rngs
        self.eps = eps
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))

    def __call__(self, x):
        with jax.named_scope("norm"):
            return rms_norm(x, self.weight[...], self.eps)


def rope(x, positions, theta: float):
    """Rotate-half RoPE. x: [B, T, H, D]; positions: [B, T] ints."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    cos = jnp.cos(freqs)[:, :, None, :]
    sin = jnp.sin(freqs)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: Qwen3Config, *, dtype, param_dtype, rngs: nnx.Rngs):
        d, h, k, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.cfg = cfg
        self.dtype = dtype
        self.q_proj = _param(rngs, (d, h, hd), ("embed", "q_heads", "head_dim"), param_dtype)
        self.k_proj = _param(rngs, (d, k, hd), ("embed", "kv_heads", "head_dim"), param_dtype)
        self.v_proj = _param(rngs, (d, k, hd), ("embed", "kv_heads", "head_dim"), param_dtype)
        self.o_proj = _param(rngs, (h, hd, d), ("q_heads", "head_dim", "embed"), param_dtype)
        self.q_norm = RMSNorm(hd, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.k_norm = RMSNorm(hd, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, positions, q_index, q_segment, kv_segment, cache_kv=None):
        """Returns (output [B, T, D], updated stacked cache (k, v) or None).

        `cache_kv` is `(k_all, v_all, layer)`: the *stacked* cache of every layer
        and this layer's index. The new rows are scattered straight into the
        stacked arrays (in place under donation), so a decode step writes T rows
        per slot instead of rebuilding the cache from per-layer copies.
        """
        with jax.named_scope("attention"):
            return self._attend(x, positions, q_index, q_segment, kv_segment, cache_kv)

    def _attend(self, x, positions, q_index, q_segment, kv_segment, cache_kv):
        dt = self.dtype
        q, k, v = (_heads_in(x, w[...].astype(dt))
                   for w in (self.q_proj, self.k_proj, self.v_proj))
        # Qwen3: per-head RMSNorm on q and k, *then* RoPE.
        q = checkpoint_name(rope(self.q_norm(q), positions, self.cfg.rope_theta), "query")
        k = checkpoint_name(rope(self.k_norm(k), positions, self.cfg.rope_theta), "key")
        v = checkpoint_name(v, "value")
        if isinstance(cache_kv, CacheAt):
            out, updated = cache_kv.cache.attend(cache_kv.layer, q, k, v)
            return _heads_out(out, self.o_proj[...].astype(dt)), updated
        updated = None
        if cache_kv is not None:
            k_all, v_all, layer = cache_kv
            k_all = _write_rows(k_all, layer, k.astype(k_all.dtype), q_index)
            v_all = _write_rows(v_all, layer, v.astype(v_all.dtype), q_index)
            k, v = k_all[layer].astype(dt), v_all[layer].astype(dt)
            updated = (k_all, v_all)
        kernel = attention_lib.get_kernel(self.cfg.attention_impl,
                                          chunk_size=self.cfg.attention_chunk_size,
                                          decoding=cache_kv is not None)
        with jax.named_scope(f"kernel_{self.cfg.attention_impl}"):
            out = checkpoint_name(kernel(q, k, v, q_index, q_segment, kv_segment), "attention")
        out = _heads_out(out, self.o_proj[...].astype(dt))
        return checkpoint_name(out, "attention_out"), updated


def _heads_in(x, w):
    """x [B, T, D] @ w [D, H, K] -> [B, T, H, K], as one 2-D matmul over the merged (H, K)
    axis: a bitcast here, and autodiff's backward dots stay 2-D (on CPU the 3-D einsum's
    weight gradient ran ~1.5x slower than the matmul's)."""
    d, h, k = w.shape
    return (x @ w.reshape(d, h * k)).reshape(*x.shape[:-1], h, k)


def _heads_out(a, w):
    """a [B, T, H, K] @ w [H, K, D] -> [B, T, D], contracting the merged (H, K) axis."""
    h, k, d = w.shape
    return a.reshape(*a.shape[:-2], h * k) @ w.reshape(h * k, d)


def _write_rows(stacked, layer, new, index):
    """stacked [L, B, S, K, D] <- new [B, T, K, D] at [layer, b, index[b, t]].

    One scatter of T rows per slot; slots past the cache end are dropped.
    """
    rows = jnp.arange(new.shape[0], dtype=jnp.int32)[:, None]
    return stacked.at[layer, rows, index].set(new, mode="drop")


class MLP(nnx.Module):
    def __init__(self, cfg: Qwen3Config, *, dtype, param_dtype, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.dtype = dtype
        self.gate_proj = _param(rngs, (d, f), ("embed", "mlp"), param_dtype)
        self.up_proj = _param(rngs, (d, f), ("embed", "mlp"), param_dtype)
        self.down_proj = _param(rngs, (f, d), ("mlp", "embed"), param_dtype)

    def __call__(self, x):
        with jax.named_scope("mlp"):
            dt = self.dtype
            out = swiglu(x, self.gate_proj[...].astype(dt), self.up_proj[...].astype(dt),
                         self.down_proj[...].astype(dt))
            return checkpoint_name(out, "mlp_out")


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: Qwen3Config, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(param_dtype=param_dtype, rngs=rngs)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **kw)
        self.self_attn = Attention(cfg, dtype=dtype, **kw)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, **kw)
        self.mlp = MLP(cfg, dtype=dtype, **kw)

    def __call__(self, x, positions, q_index, q_segment, kv_segment, cache_kv=None):
        with jax.named_scope("decoder_layer"):
            h, updated = self.self_attn(self.input_layernorm(x), positions, q_index,
                                        q_segment, kv_segment, cache_kv)
            x = x + h
            x = x + self.mlp(self.post_attention_layernorm(x))
            x = sharding.constrain(x, ("activation_batch", "activation_length",
                                       "activation_embed"))
            return x, updated




# --------------------------------------------------------------------------- model


class Qwen3(nnx.Module):
    """Qwen3ForCausalLM. `dtype` is the compute dtype, `param_dtype` the storage one."""

    def __init__(self, config: Qwen3Config, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.dtype = dtype
        cfg = config
        self.embed_tokens = _param(rngs, (cfg.vocab_size, cfg.hidden_size),
                                   ("vocab", "embed"), param_dtype)
        layer_kw = dict(dtype=dtype, param_dtype=param_dtype)
        if cfg.scan_layers:
            @nnx.split_rngs(splits=cfg.num_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=cfg.num_layers,
                      transform_metadata={nnx.PARTITION_NAME: None})
            def make_stack(r):
                return DecoderLayer(cfg, rngs=r, **layer_kw)
            self.layers = make_stack(rngs)
            _prepend_layer_axis(self.layers)
        else:
            self.layers = nnx.List(
                [DecoderLayer(cfg, rngs=rngs, **layer_kw) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
        if not cfg.tie_word_embeddings:
            self.lm_head = _param(rngs, (cfg.hidden_size, cfg.vocab_size),
                                  ("embed", "vocab"), param_dtype)

    # -- pieces ------------------------------------------------------------------

    def embed(self, input_ids):
        with jax.named_scope("embed"):
            x = jnp.take(self.embed_tokens[...], input_ids, axis=0).astype(self.dtype)
            return sharding.constrain(x, ("activation_batch", "activation_length",
                                          "activation_embed"))

    def project(self, hidden):
        """Final-normed hidden [B, T, D] -> fp32 logits [B, T, V]."""
        # Accumulate and return in fp32 even under bf16 compute: rounding logits
        # to bf16 (~0.4% relative) is enough to flip near-tied top-1 tokens.
        with jax.named_scope("lm_head"):
            if self.config.tie_word_embeddings:
                w = self.embed_tokens[...].astype(self.dtype)
                return jnp.einsum("btd,vd->btv", hidden, w, preferred_element_type=jnp.float32)
            w = self.lm_head[...].astype(self.dtype)
            return jnp.einsum("btd,dv->btv", hidden, w, preferred_element_type=jnp.float32)

    def _run_layers(self, x, positions, q_index, q_segment, kv_segment, cache):
        cfg = self.config

        def apply(layer, x, cache_kv):
            return layer(x, positions, q_index, q_segment, kv_segment, cache_kv)

        if cfg.remat != "none":
            apply = nnx.remat(apply, prevent_cse=not cfg.scan_layers,
                              policy=remat_policy(cfg.remat, cfg.remat_names))

        if cache is not None and not isinstance(cache, KVCache):  # a cache object (CacheAt)
            if cfg.scan_layers:
                raise NotImplementedError("cache objects (the sampler's paged KV) run unrolled "
                                          "layers; build the model with scan_layers=False")
            for i, layer in enumerate(self.layers):
                x, cache = apply(layer, x, CacheAt(cache, i))
            return x, cache

        if cfg.scan_layers:
            if cache is None:
                return _scan_no_cache(self.layers, x, apply), None

            # The whole stacked cache rides in the carry: each layer scatters its
            # new rows into it in place, and nothing is re-stacked afterwards.
            @nnx.scan(in_axes=(0, nnx.Carry, 0), out_axes=nnx.Carry,
                      transform_metadata={nnx.PARTITION_NAME: None})
            def scan_fn(layer, carry, index):
                x, k_all, v_all = carry
                x, (k_all, v_all) = apply(layer, x, (k_all, v_all, index))
                return x, k_all, v_all

            x, k, v = scan_fn(self.layers, (x, cache.k, cache.v),
                              jnp.arange(cfg.num_layers, dtype=jnp.int32))
            return x, KVCache(k=k, v=v)

        if cache is None:
            for i, layer in enumerate(self.layers):
                with jax.named_scope(f"layer_{i}"):  # a profile reads layer by layer
                    x, _ = apply(layer, x, None)
            return x, None
        k_all, v_all = cache.k, cache.v
        for i, layer in enumerate(self.layers):
            with jax.named_scope(f"layer_{i}"):
                x, (k_all, v_all) = apply(layer, x, (k_all, v_all, i))
        return x, KVCache(k=k_all, v=v_all)

    # -- entry points --------------------------------------------------------------

    def hidden_states(self, input_ids, positions=None, attention_mask=None, *,
                      segment_ids=None):
        """Final-normed hidden states [B, T, D] (no cache).

        `segment_ids` (packing) takes precedence over `attention_mask`; both use 0
        for padding. Without explicit positions, positions count real tokens
        (so left padding does not shift RoPE) and restart per packed segment.
        """
        b, t = input_ids.shape
        if segment_ids is None:
            segment_ids = (jnp.ones((b, t), jnp.int32) if attention_mask is None
                           else attention_mask.astype(jnp.int32))
        segment_ids = segment_ids.astype(jnp.int32)
        if positions is None:
            positions = default_positions(segment_ids)
        q_index = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        x = self.embed(input_ids)
        x, _ = self._run_layers(x, positions, q_index, segment_ids, segment_ids, None)
        return self.norm(x)

    def __call__(self, input_ids, positions=None, attention_mask=None, *, segment_ids=None):
        """Logits [B, T, V] in fp32."""
        return self.project(self.hidden_states(
            input_ids, positions, attention_mask, segment_ids=segment_ids))

    def decode(self, input_ids, positions, cache: KVCache):
        """Run T new tokens per row against a KV cache; return (logits, new cache).

        Token `[b, t]` is written to cache slot `positions[b, t]` and attends to
        slots `<= positions[b, t]`. Right padding of a prefill bucket is written
        too, but only ever read by queries after it, and a decode step overwrites
        a slot before any query can read it. Positions >= max_len are dropped.
        """
        hidden, new_cache = self.decode_hidden(input_ids, positions, cache)
        return self.project(hidden), new_cache

    def decode_hidden(self, input_ids, positions, cache: KVCache):
        """`decode` without the vocabulary projection: (final-normed hidden, new cache).

        Prefill needs logits at one position only; projecting all T rows of a
        long prompt onto the vocabulary would dominate its memory.
        """
        b, t = input_ids.shape
        positions = positions.astype(jnp.int32)
        # Every cache slot is "segment 1": causality alone hides unwritten slots.
        q_segment = jnp.ones((b, t), jnp.int32)
        kv_segment = jnp.ones((b, cache.max_len), jnp.int32)
        x = self.embed(input_ids)
        x, new_cache = self._run_layers(x, positions, positions, q_segment, kv_segment, cache)
        return self.norm(x), new_cache

    def cached_hidden(self, input_ids, positions, cache):
        """Final-normed hidden states of new tokens through a cache object (see `CacheAt`:
        it stores their keys and values and attends); returns (hidden, updated object)."""
        x = self.embed(input_ids)
        x, cache = self._run_layers(x, positions.astype(jnp.int32), None, None, None, cache)
        return self.norm(x), cache


def _scan_no_cache(stack, x, apply):
    """Scan over stacked layers with no cache to thread through."""

    @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry,
              transform_metadata={nnx.PARTITION_NAME: None})
    def body(layer, x):
        x, _ = apply(layer, x, None)
        return x

    return body(stack, x)


def _prepend_layer_axis(stack: nnx.Module):
    """Stacked layer weights gain a leading `layers` logical axis."""
    for _, var in nnx.iter_graph(stack):
        if isinstance(var, nnx.Variable) and getattr(var, "logical_axes", None) is not None:
            axes = var.logical_axes
            if len(axes) < var[...].ndim:
                var.set_metadata(logical_axes=("layers", *axes))


def default_positions(segment_ids):
    """0, 1, 2, ... counting only real tokens, restarting at each segment start."""
    segment_ids = segment_ids.astype(jnp.int32)
    real = (segment_ids != 0).astype(jnp.int32)
    count = jnp.cumsum(real, axis=-1)
    # Offset of each segment's first token: count just before a segment change.
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=-1)
    base = jnp.where(starts, count - real, 0)
    base = jax.lax.cummax(base, axis=1)
    return jnp.maximum(count - base - 1, 0)


def create(config: Qwen3Config, *, dtype=jnp.float32, param_dtype=jnp.float32, seed: int = 0) -> Qwen3:
    """A randomly initialised model (tests, benchmarks, the demo)."""
    return Qwen3(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))
