"""The paged KV cache on device: one pool of fixed-size pages per layer, and the views
through which the model writes and reads it (decode: one token per row; prefill: a
chunk of tokens per prompt).

Pool layout, per layer: `k, v [kv_heads, pages, page_size, head_dim]` (what the Pallas
kernels take). With a mesh, the pages axis is split over the data-parallel mesh axes
(the sampler's `cache_batch` rule, like its decode rows) and the KV heads over the
tensor axis: shard `j` of `dp` owns global page ids `j * pages_per_shard + [0,
pages_per_shard)`, and a row of the decode state only ever holds pages of its own
shard (rows are split over the same axes), so attention never leaves a device. Page 0
of each shard is its null page: never handed out, it fills unused table entries.

Every write and read runs per shard (`jax.shard_map`; a plain call without a mesh) on
local page ids. Prefill prompts are not split over rows: each shard writes and attends
for the prompts whose pages it owns and a sum over the data axes gives every shard the
result. `copy_pages` copies pages between any shards the same way.

The model calls `attend(layer, q, k, v)` on a view for every layer (see
`qwen3.CacheAt`); the view writes the new keys and values into the pool first, then
attends, and returns the output and the view with its pool updated.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from int_jax.models import sharding as sharding_lib
from int_jax.models.qwen3 import Qwen3Config


@flax.struct.dataclass
class PagedKV:
    """The pool: per-layer key and value pages, each [kv_heads, pages, page_size, head_dim]."""

    k: tuple
    v: tuple


def _axes(entry) -> tuple[str, ...]:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


@dataclasses.dataclass(frozen=True)
class PoolLayout:
    """Static shape and placement of a pool (hashable: part of the traced programs)."""

    num_layers: int
    kv_heads: int
    head_dim: int
    page_size: int
    pages_per_shard: int
    dtype: Any
    mesh: Mesh | None = None
    dp_axes: tuple[str, ...] = ()  # mesh axes splitting pages (and decode rows)
    tp_axes: tuple[str, ...] = ()  # mesh axes splitting KV heads

    @classmethod
    def build(cls, config: Qwen3Config, *, page_size: int, pages_per_shard: int, dtype,
              slots: int, mesh: Mesh | None = None, rules=sharding_lib.DEFAULT_RULES) -> "PoolLayout":
        dp = tp = ()
        if mesh is not None:
            dp = _axes(sharding_lib.logical_to_spec(("cache_batch",), rules, (slots,), mesh)[0])
            tp = _axes(sharding_lib.logical_to_spec(("cache_kv_heads",), rules,
                                                    (config.num_kv_heads,), mesh)[0])
        return cls(num_layers=config.num_layers, kv_heads=config.num_kv_heads,
                   head_dim=config.head_dim, page_size=int(page_size),
                   pages_per_shard=int(pages_per_shard), dtype=jnp.dtype(dtype), mesh=mesh,
                   dp_axes=dp, tp_axes=tp)

    @property
    def shards(self) -> int:
        return math.prod(self.mesh.shape[a] for a in self.dp_axes) if self.mesh is not None else 1

    @property
    def tensor(self) -> int:
        return math.prod(self.mesh.shape[a] for a in self.tp_axes) if self.mesh is not None else 1

    @property
    def num_pages(self) -> int:
        return self.pages_per_shard * self.shards

    @property
    def page_bytes(self) -> int:
        """Bytes of one page on one device (all layers, keys and values, its KV heads)."""
        heads = self.kv_heads // self.tensor
        return 2 * self.num_layers * heads * self.page_size * self.head_dim * self.dtype.itemsize

    # -- placement ---------------------------------------------------------------------

    def _spec(self, *entries) -> PartitionSpec:
        return PartitionSpec(*(None if not a else a[0] if len(a) == 1 else a for a in entries))

    @property
    def pool_spec(self) -> PartitionSpec:
        return self._spec(self.tp_axes, self.dp_axes, (), ())

    def pool_sharding(self):
        return None if self.mesh is None else NamedSharding(self.mesh, self.pool_spec)

    def zeros(self) -> PagedKV:
        shape = (self.kv_heads, self.num_pages, self.page_size, self.head_dim)
        one = lambda: jnp.zeros(shape, self.dtype)  # noqa: E731
        return PagedKV(k=tuple(one() for _ in range(self.num_layers)),
                       v=tuple(one() for _ in range(self.num_layers)))

    def _map(self, fn, in_specs, out_specs):
        """`fn(base, *args)` per shard (base: the shard's first global page id)."""
        if self.mesh is None:
            return lambda *args: fn(jnp.int32(0), *args)

        def local(*args):
            shard = jax.lax.axis_index(self.dp_axes) if self.dp_axes else 0
            return fn(jnp.int32(shard * self.pages_per_shard), *args)

        return jax.shard_map(local, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs,
                             check_vma=False)

    def _sum_over_shards(self, x):
        return jax.lax.psum(x, self.dp_axes) if self.mesh is not None and self.dp_axes else x


# --------------------------------------------------------------------------- per-shard pieces


def _put(pool, new, page, offset):
    """pool [K, P, page_size, D] <- new [N, K, D] at (page[n], offset[n]); page >= P drops."""
    return pool.at[:, page, offset].set(new.swapaxes(0, 1).astype(pool.dtype), mode="drop")


def _gather(pool, table):
    """pool [K, P, page_size, D] at table [B, W] -> [B, W * page_size, K, D]."""
    k, _, page_size, d = pool.shape
    b, w = table.shape
    return pool[:, table].reshape(k, b, w * page_size, d).swapaxes(0, 1).swapaxes(1, 2)


def _local(table, base, pages):
    """Global page ids -> this shard's, and whether they are this shard's."""
    local = table - base
    return local, (local >= 0) & (local < pages)


@dataclasses.dataclass(frozen=True)
class _View:
    pool: PagedKV
    table: jax.Array  # global page ids
    position: jax.Array  # where each new token goes (and the query's position)
    layout: PoolLayout
    kernel: Callable

    def _with(self, layer, k_pages, v_pages):
        k = self.pool.k[:layer] + (k_pages,) + self.pool.k[layer + 1:]
        v = self.pool.v[:layer] + (v_pages,) + self.pool.v[layer + 1:]
        return dataclasses.replace(self, pool=PagedKV(k=k, v=v))


@dataclasses.dataclass(frozen=True)
class DecodeView(_View):
    """One new token per decode row: write it at `position`, attend over 0..position.

    table [S, W]; position [S]; write [S] (rows that store their key and value: the
    active ones). `kernel` is a paged kernel (models/attention.py PAGED_KERNELS)."""

    write: jax.Array = None

    def attend(self, layer: int, q, k, v):
        lay = self.layout
        dp, tp = lay.dp_axes, lay.tp_axes
        rows, pool = lay._spec(dp, tp, ()), lay.pool_spec

        def local(base, q, k, v, k_pages, v_pages, table, position, write):
            pages, size = lay.pages_per_shard, lay.page_size
            table = jnp.clip(_local(table, base, pages)[0], 0, pages - 1)
            idx = jnp.clip(position // size, 0, table.shape[1] - 1)
            page = jnp.take_along_axis(table, idx[:, None], axis=1)[:, 0]
            page = jnp.where(write, page, pages)  # inactive rows write nothing
            k_pages = _put(k_pages, k, page, position % size)
            v_pages = _put(v_pages, v, page, position % size)
            # Idle rows attend to one position: their output is never used, and a stale
            # length would make the kernels read pages for nothing.
            lengths = jnp.where(write, position + 1, 1)
            return self.kernel(q, k_pages, v_pages, lengths, table), k_pages, v_pages

        fn = lay._map(local, (rows, rows, rows, pool, pool, lay._spec(dp, ()), lay._spec(dp),
                              lay._spec(dp)), (rows, pool, pool))
        out, k_pages, v_pages = fn(q[:, 0], k[:, 0], v[:, 0], self.pool.k[layer],
                                   self.pool.v[layer], self.table, self.position, self.write)
        return out[:, None], self._with(layer, k_pages, v_pages)


@dataclasses.dataclass(frozen=True)
class PrefillView(_View):
    """A chunk of tokens per prompt: write positions < length, then attend (causally)
    over the prompt's pages up to the chunk's end with a dense kernel (attention.py).

    table [B, Wc] (one shard's pages per prompt; a first entry < 0 marks a padding
    row); position [B, C]; length [B]: the prompt's true length."""

    length: jax.Array = None

    def attend(self, layer: int, q, k, v):
        lay = self.layout
        tokens, pool, whole = lay._spec((), (), lay.tp_axes, ()), lay.pool_spec, lay._spec((), ())

        def local(base, q, k, v, k_pages, v_pages, table, position, length):
            pages, size = lay.pages_per_shard, lay.page_size
            b, c = position.shape
            table, owned = _local(table, base, pages)
            owned = owned[:, 0]  # a prompt's pages all lie in one shard
            table = jnp.clip(table, 0, pages - 1)
            idx = jnp.clip(position // size, 0, table.shape[1] - 1)
            page = jnp.take_along_axis(table, idx, axis=1)
            page = jnp.where(owned[:, None] & (position < length[:, None]), page, pages)
            flat = lambda x: x.reshape(b * c, *x.shape[2:])  # noqa: E731
            k_pages = _put(k_pages, flat(k), flat(page), flat(position % size))
            v_pages = _put(v_pages, flat(v), flat(page), flat(position % size))
            keys, values = _gather(k_pages, table), _gather(v_pages, table)
            kv_segment = (jnp.arange(keys.shape[1])[None, :] < length[:, None]).astype(jnp.int32)
            out = self.kernel(q, keys.astype(q.dtype), values.astype(q.dtype), position,
                              jnp.ones((b, c), jnp.int32), kv_segment)
            out = jnp.where(owned[:, None, None, None], out, jnp.zeros_like(out))
            return lay._sum_over_shards(out), k_pages, v_pages

        fn = lay._map(local, (tokens, tokens, tokens, pool, pool, whole, whole, lay._spec(())),
                      (tokens, pool, pool))
        out, k_pages, v_pages = fn(q, k, v, self.pool.k[layer], self.pool.v[layer], self.table,
                                   self.position, self.length)
        return out, self._with(layer, k_pages, v_pages)


def copy_pages(pool: PagedKV, src, dst, layout: PoolLayout) -> PagedKV:
    """Copy page src[i] onto page dst[i] in every layer (any shards; negative ids skip)."""
    spec = layout.pool_spec
    whole = layout._spec(())

    def local(base, k_pages, v_pages, src, dst):
        pages = layout.pages_per_shard
        valid = (src >= 0) & (dst >= 0)
        src, own_src = _local(src, base, pages)
        dst, own_dst = _local(dst, base, pages)
        dst = jnp.where(valid & own_dst, dst, pages)  # pages >= `pages` are dropped

        def one(p):
            data = p[:, jnp.clip(src, 0, pages - 1)]
            data = jnp.where((valid & own_src)[None, :, None, None], data, jnp.zeros_like(data))
            return p.at[:, dst].set(layout._sum_over_shards(data), mode="drop")

        return one(k_pages), one(v_pages)

    fn = layout._map(local, (spec, spec, whole, whole), (spec, spec))
    k, v = [], []
    for kp, vp in zip(pool.k, pool.v):
        kp, vp = fn(kp, vp, src, dst)
        k.append(kp)
        v.append(vp)
    return PagedKV(k=tuple(k), v=tuple(v))

