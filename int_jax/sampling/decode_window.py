"""How much of the KV cache a decode step attends over.

A decode step for position `p` only needs cache rows `0..p` (row `i` holds
position `i`), yet a cache sized for the paper's 16384-token budget is mostly
empty for typical rollouts. Each step therefore runs over a *window*: the
smallest decode bucket covering the longest live position among the slots.
Buckets are a short fixed list (powers of two up to `max_len`), so a window is
a static shape: one compiled step per bucket, never more.

The window is chosen on the host without reading the device (a read would
stall JetStream's pipelined steps): `LiveBounds` mirrors every slot's position
from what the host already knows (prompt length and `max_new` at insert, one
position per step, finish rows as the detokenizer pulls them) and only ever
over-estimates it. The step also flags any live row its window misses
(`decode.OUT_WINDOW_MISS`) so a broken bound is an error, never wrong tokens.
"""

from __future__ import annotations

import threading
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_MIN_DECODE_BUCKET = 256


def decode_buckets(max_len: int, smallest: int = DEFAULT_MIN_DECODE_BUCKET) -> tuple[int, ...]:
    """smallest, 2*smallest, ... below `max_len`, then `max_len` itself (the whole cache)."""
    max_len, smallest = int(max_len), int(smallest)
    if smallest < 1 or max_len < 1:
        raise ValueError(f"bad decode bucket range {smallest}..{max_len}")
    out, b = [], smallest
    while b < max_len:
        out.append(b)
        b *= 2
    return (*out, max_len)


def check_buckets(buckets: Sequence[int], max_len: int) -> tuple[int, ...]:
    """Sorted, deduplicated buckets, the last being the whole cache."""
    out = tuple(sorted({int(b) for b in buckets}))
    if not out or out[0] < 1:
        raise ValueError(f"decode buckets must be positive lengths, got {tuple(buckets)}")
    if out[-1] > max_len:
        raise ValueError(f"decode bucket {out[-1]} exceeds the cache length max_len={max_len}")
    if out[-1] != max_len:
        out = (*out, int(max_len))  # a sequence may always grow to the end of its cache
    return out


def window_for(needed: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding `needed` cache rows (the last one holds them all)."""
    for b in buckets:
        if needed <= b:
            return b
    return buckets[-1]


class LiveBounds:
    """Host-side upper bounds of each slot's next decode position.

    A slot is live from its insert until its finish row is observed; while live
    its position grows by one per step and never passes `cap`, the last
    position the device can decode for it (prompt + max_new - 1, or the end of
    the cache). Finished slots need no window at all. Thread-safe: JetStream
    inserts and steps on one thread and pulls rows to host on another.
    """

    def __init__(self, slots: int, max_len: int):
        self.slots, self.max_len = int(slots), int(max_len)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """A fresh decode state: nothing live."""
        with self._lock:
            self._position = np.zeros(self.slots, np.int64)
            self._cap = np.zeros(self.slots, np.int64)
            self._tag = np.full(self.slots, -1, np.int64)
            self._live = np.zeros(self.slots, bool)

    def inserted(self, slot: int, length: int, max_new: int, tag: int, live: bool = True) -> None:
        """A request now holds `slot` (`live=False`: one that finished at insert)."""
        with self._lock:
            self._position[slot] = length
            self._cap[slot] = min(int(length) + max(int(max_new), 1) - 1, self.max_len - 1)
            self._tag[slot] = tag
            self._live[slot] = live

    def stepped(self) -> None:
        with self._lock:
            self._position = np.where(self._live, np.minimum(self._position + 1, self._cap),
                                      self._position)

    def finished(self, slot: int, tag: int) -> None:
        """`slot` emitted its last token; ignored if the slot already holds another request."""
        with self._lock:
            if self._tag[slot] == tag:
                self._live[slot] = False

    def needed(self) -> int:
        """Cache rows the next step must attend over (at least 1)."""
        with self._lock:
            if not self._live.any():
                return 1
            return int(self._position[self._live].max()) + 1


# --------------------------------------------------------------------------- traced helpers


def rows_at(cache: jax.Array, position: jax.Array) -> jax.Array:
    """cache [layers, slots, length, ...] at per-slot `position` [slots] -> [layers, slots, ...]."""
    layers, _, _, *rest = cache.shape
    dims = jax.lax.GatherDimensionNumbers(
        offset_dims=(0, *range(2, 2 + len(rest))), collapsed_slice_dims=(2,), start_index_map=(2,),
        operand_batching_dims=(1,), start_indices_batching_dims=(0,))
    return jax.lax.gather(cache, position[:, None], dims, slice_sizes=(layers, 1, 1, *rest),
                          mode=jax.lax.GatherScatterMode.CLIP)


def put_rows(cache: jax.Array, rows: jax.Array, position: jax.Array) -> jax.Array:
    """Write rows [layers, slots, ...] at per-slot `position`; positions past the end are dropped.

    One scatter with the slot axis as a batching dimension, in the cache's own
    layout: XLA updates the donated cache in place (a vmapped `.at[].set`
    transposes the slot axis to the front and copies the whole cache back).
    """
    dims = jax.lax.ScatterDimensionNumbers(
        update_window_dims=(0, *range(2, rows.ndim)), inserted_window_dims=(2,),
        scatter_dims_to_operand_dims=(2,), operand_batching_dims=(1,),
        scatter_indices_batching_dims=(0,))
    return jax.lax.scatter(cache, position[:, None], rows, dims,
                           mode=jax.lax.GatherScatterMode.FILL_OR_DROP)


def write_back(full: jax.Array, window: jax.Array, position: jax.Array) -> jax.Array:
    """Copy the rows a step wrote into its window (at `position`) back into the full cache.

    Only one row per slot changed, so only those rows move: O(slots), not
    O(window). Slots whose position lies outside the window (finished ones)
    wrote nothing and copy nothing back.
    """
    size = window.shape[2]
    inside = (position >= 0) & (position < size)
    rows = rows_at(window, jnp.clip(position, 0, size - 1))
    return put_rows(full, rows.astype(full.dtype), jnp.where(inside, position, full.shape[2]))
