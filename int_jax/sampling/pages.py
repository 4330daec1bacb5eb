"""Host-side bookkeeping of the paged KV cache: who holds which page, admission by
memory, the prompt cache, and which decode row serves which slot.

Pages have reference counts. A prompt's pages are written once (by prefill) and then
shared by every sample of it and by the prompt cache; a sequence writes only its own
pages: from the page holding its first new position on. When that page still holds
the shared prompt's last, partial page, the sequence gets a fresh copy of it (the one
page ever copied). Pages return to the free list when nobody holds them.
With `share_prompts=False` nothing is shared: each admission takes one sample, with
prompt pages of its own that its caller prefills, and nothing enters the prompt cache.

Admission reserves, for each admitted sample, every page it could ever need
(`own_pages`: up to its max_new_tokens or max_len), so a running sequence never finds
the pool empty: requests that do not fit yet wait until finished sequences free pages.
Pages held only by the prompt cache count as free (least recently used first).

Decode rows are split over the data-parallel shards like the pool's pages, and a row
takes pages of its shard only. Admission therefore also claims a row in the shard it
reserves pages in; `insert` binds the caller's slot (JetStream's, or the sampler's) to
that row, and `order()` maps slots to rows so the step's output reads per slot.

Thread-safe: JetStream prefills, inserts and steps, and reads results, on different
threads. A blocking admission (JetStream's prefill thread) waits on a condition and
gives up with `Stopped` when `stop_waiting()` is called.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any, Hashable

import numpy as np


class Stopped(Exception):
    """A waiting admission was told to stop (its Driver is shutting down)."""

    quiet_stop = True  # jetstream_compat.GuardedDriver records no failure for it


class PoolTooSmallError(ValueError):
    """A request that could not fit even in an empty pool (a settings problem)."""


@dataclasses.dataclass
class Hold:
    """One admitted sample's claim, from admission to insert: a row reserved in `shard`,
    one reference on each prompt page, `own` more pages promised. `source`: pages of the
    same prompt in another shard to copy the prompt from (instead of prefilling it),
    one reference on each until the copy is made (`copied`)."""

    shard: int
    pages: tuple[int, ...]
    length: int
    max_new: int
    own: int
    source: tuple[int, ...] | None = None
    done: bool = False  # inserted or released


class Pending:
    """Stands for the last logits of a prompt whose prefill is admitted but not run yet
    (other samples admitted meanwhile share or copy its pages)."""

    def __init__(self, key: Hashable):
        self.key = key


@dataclasses.dataclass
class _Row:
    tag: int
    shard: int
    pages: list
    position: int  # where the next fed token is written
    cap: int  # the last position the device may write
    reserved: int  # pages promised to this row, not yet taken


@dataclasses.dataclass
class _Cached:
    shard: int
    pages: tuple[int, ...]
    logits: Any  # or a Pending


class PageManager:
    def __init__(self, *, shards: int, pages_per_shard: int, page_size: int, slots: int,
                 max_len: int, cache_entries: int, share_prompts: bool = True):
        if slots % shards:
            raise ValueError(f"sampler.slots={slots} must be a multiple of the data-parallel "
                             f"shards ({shards}: the mesh axes of the cache_batch rule)")
        self.shards, self.pages_per_shard, self.page_size = shards, pages_per_shard, page_size
        self.slots, self.max_len, self.cache_entries = slots, max_len, int(cache_entries)
        self.share_prompts = bool(share_prompts)
        self.rows_per_shard = slots // shards
        self._cond = threading.Condition()
        self._stop = False
        self.waiting = 0  # admissions blocked on memory right now
        self.refs = None
        self.hits = self.misses = 0
        self.reset()

    # -- sizes ---------------------------------------------------------------------------

    def null_page(self, shard: int) -> int:
        return shard * self.pages_per_shard

    def shard_of_row(self, row: int) -> int:
        return row // self.rows_per_shard

    def prompt_pages(self, length: int) -> int:
        return -(-length // self.page_size)

    def cap(self, length: int, max_new: int) -> int:
        """The last position a sequence may write (its last fed token's)."""
        return min(length + max(max_new, 1) - 1, self.max_len - 1)

    def own_pages(self, length: int, max_new: int) -> int:
        """Pages a sample writes: from the one holding position `length` to its cap."""
        return (self.cap(length, max_new) // self.page_size) - length // self.page_size + 1

    def check_fits(self, length: int, max_new: int) -> None:
        """Raise `PoolTooSmallError` (naming the settings) if one sample of this request
        could not run even alone in an empty pool."""
        need = self.prompt_pages(length) + self.own_pages(length, max_new)
        if need > self.pages_per_shard - 1:
            tokens = (self.pages_per_shard - 1) * self.page_size
            raise PoolTooSmallError(
                f"a {length}-token prompt with max_new_tokens={max_new} needs {need} KV pages "
                f"of {self.page_size} tokens, the pool holds {self.pages_per_shard - 1} per "
                f"device ({tokens} tokens); raise sampler.kv_pool_bytes (or lower "
                "sampler.kv_reserve_bytes, the prompt, or max_new_tokens)")

    # -- state ---------------------------------------------------------------------------

    def reset(self) -> dict:
        """Forget every holder: all pages free, no row bound, the cache empty. Returns
        what was still held (pages held outside the cache, rows bound, holds pending)."""
        with self._cond:
            held = dict(pages=0, rows=0, pending=0)
            if self.refs is not None:
                held = dict(pages=self.pages_in_use(exclude_cache=True), rows=len(self.bound),
                            pending=sum(self.in_flight))
            total = self.shards * self.pages_per_shard
            self.refs = np.zeros(total, np.int32)
            self.free = [list(range((j + 1) * self.pages_per_shard - 1, j * self.pages_per_shard, -1))
                         for j in range(self.shards)]  # a stack: low ids first
            self.promised = [0] * self.shards
            self.free_rows = [list(range(j * self.rows_per_shard, (j + 1) * self.rows_per_shard))
                              for j in range(self.shards)]
            self.in_flight = [0] * self.shards
            self.rows: list[_Row | None] = [None] * self.slots
            self.bound: dict[int, int] = {}
            self.cache: collections.OrderedDict[Hashable, _Cached] = collections.OrderedDict()
            self._cond.notify_all()
        return held

    def pages_in_use(self, exclude_cache: bool = False) -> int:
        with self._cond:
            refs = self.refs.copy()
            if exclude_cache:
                for entry in self.cache.values():
                    refs[list(entry.pages)] -= 1
            return int((refs > 0).sum())

    def free_pages(self) -> int:
        with self._cond:
            return sum(len(f) for f in self.free)

    def stop_waiting(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def allow_waiting(self) -> None:
        with self._cond:
            self._stop = False

    # -- pages ---------------------------------------------------------------------------

    def _take(self, shard: int, promised: bool) -> int:
        page = self.free[shard].pop()
        self.refs[page] = 1
        if promised:
            self.promised[shard] -= 1
        return page

    def _drop(self, pages) -> None:
        for page in pages:
            self.refs[page] -= 1
            if self.refs[page] == 0:
                self.free[page // self.pages_per_shard].append(page)
            assert self.refs[page] >= 0, f"page {page} released twice"
        self._cond.notify_all()

    def _evictable(self, shard: int, keep: Hashable) -> int:
        return sum(len(e.pages) for (k, _), e in self.cache.items()
                   if e.shard == shard and k != keep and all(self.refs[p] == 1 for p in e.pages))

    def _available(self, shard: int, keep: Hashable) -> int:
        return len(self.free[shard]) - self.promised[shard] + self._evictable(shard, keep)

    def _evict_until(self, shard: int, need: int, keep: Hashable) -> None:
        for name in [n for n, e in self.cache.items() if e.shard == shard and n[0] != keep]:
            if len(self.free[shard]) - self.promised[shard] >= need:
                return
            entry = self.cache[name]
            if all(self.refs[p] == 1 for p in entry.pages):
                del self.cache[name]
                self._drop(entry.pages)

    def _cache_put(self, key, shard, pages, logits) -> None:
        if self.cache_entries <= 0 or key is None or (key, shard) in self.cache:
            return
        self.refs[list(pages)] += 1
        self.cache[(key, shard)] = _Cached(shard, pages, logits)
        while len(self.cache) > self.cache_entries:
            _, old = self.cache.popitem(last=False)
            self._drop(old.pages)

    # -- admission -----------------------------------------------------------------------

    def _plan(self, key, length, max_new, n, min_n):
        """(shard, samples, entry to share, entry to copy from) admitting the most
        samples (sharing before copying before prefilling), or None."""
        own = self.own_pages(length, max_new)
        donors = [e for (k, _), e in self.cache.items() if k == key] if key is not None else []
        best, best_score = None, None
        for shard in range(self.shards):
            entry = next((e for e in donors if e.shard == shard), None)
            prompt = 0 if entry is not None else self.prompt_pages(length)
            rows = len(self.free_rows[shard]) - self.in_flight[shard]
            avail = self._available(shard, key)
            k = min(n, rows, (avail - prompt) // own if avail >= prompt else 0)
            score = (k, 2 if entry is not None else 1 if donors else 0)
            if k >= min_n and (best_score is None or score > best_score):
                best = (shard, k, entry, None if entry is not None or not donors else donors[-1])
                best_score = score
        return best

    def admit(self, key: Hashable | None, length: int, max_new: int, n: int = 1, *,
              block: bool = False, min_n: int = 1):
        """Claim rows and pages in one shard for up to `n` samples of a prompt (at least
        `min_n`). Returns `(holds, logits)`, or None when they do not fit now and `block`
        is False. `logits`: the prompt's, when its pages are shared or copied (a `Pending`
        while its prefill has not run yet); None when the caller must prefill its pages.
        With `key` (and the prompt cache on), later admissions of the prompt share its
        pages in this shard and copy them into other shards. Without `share_prompts`:
        one sample, its own prompt pages to prefill, `key` ignored."""
        self.check_fits(length, max_new)
        if not self.share_prompts:
            key, n, min_n = None, 1, min(min_n, 1)
        with self._cond:
            while True:
                if block and self._stop:
                    raise Stopped()
                plan = self._plan(key, length, max_new, n, min_n)
                if plan is not None:
                    break
                if not block:
                    return None
                self.waiting += 1
                try:
                    self._cond.wait(0.05)
                finally:
                    self.waiting -= 1
            shard, k, entry, donor = plan
            own = self.own_pages(length, max_new)
            source, fresh = None, False
            if entry is not None:  # shared by reference
                self.cache.move_to_end((key, shard))
                pages, logits = entry.pages, entry.logits
                self.hits += k
            else:
                self._evict_until(shard, self.prompt_pages(length) + k * own, key)
                pages = tuple(self._take(shard, promised=False)
                              for _ in range(self.prompt_pages(length)))
                self.refs[list(pages)] -= 1  # the holds below take the references
                if donor is not None:  # copied from another shard
                    source, logits = donor.pages, donor.logits
                    self.refs[list(source)] += k
                    self.hits += k
                else:
                    fresh, logits = True, Pending(key)
                    self.misses += 1
                    self.hits += k - 1
            self._evict_until(shard, k * own, key)
            self.refs[list(pages)] += k
            self.promised[shard] += k * own
            self.in_flight[shard] += k
            if entry is None:
                self._cache_put(key, shard, pages, logits)
            holds = [Hold(shard, pages, length, max_new, own, source) for _ in range(k)]
            return holds, (None if fresh else logits)

    def remember(self, key: Hashable, logits) -> None:
        """A prompt's prefill ran: its cached entries (and copies) take its logits."""
        with self._cond:
            for (k, _), entry in self.cache.items():
                if k == key and isinstance(entry.logits, Pending):
                    entry.logits = logits

    def copied(self, hold: Hold) -> None:
        """The prompt was copied from `hold.source`: those references go."""
        with self._cond:
            if hold.source is not None:
                self._drop(hold.source)
                hold.source = None

    def release(self, hold: Hold) -> None:
        """Give back a hold that will never be inserted (again: nothing happens)."""
        with self._cond:
            if hold.done:
                return
            hold.done = True
            self.copied(hold)
            self._drop(hold.pages)
            self.promised[hold.shard] -= hold.own
            self.in_flight[hold.shard] -= 1

    def drop_pending(self) -> None:
        """Forget cached prompts whose prefill never ran (it failed)."""
        with self._cond:
            for name in [n for n, e in self.cache.items() if isinstance(e.logits, Pending)]:
                self._drop(self.cache.pop(name).pages)

    def forget_cache(self) -> None:
        with self._cond:
            while self.cache:
                _, entry = self.cache.popitem(last=False)
                self._drop(entry.pages)

    # -- rows ----------------------------------------------------------------------------

    def insert(self, hold: Hold, slot: int, tag: int, live: bool = True):
        """Bind `slot` to a row of the hold's shard; returns (row, its page-table entries,
        page copies [(src, dst)]). `live=False`: the sample already finished (0.3.0's
        first token), so the row is freed again at once."""
        size = self.page_size
        with self._cond:
            if hold.done:
                raise RuntimeError("a prefix can be inserted once")
            if slot in self.bound:
                raise RuntimeError(f"slot {slot} is still bound to an unfinished sequence")
            hold.done = True
            shard = hold.shard
            row = self.free_rows[shard].pop(0)
            self.in_flight[shard] -= 1
            full = hold.length // size
            pages, copies = list(hold.pages[:full]), []
            reserved = hold.own
            if len(hold.pages) > full:  # the prompt's partial last page
                partial = hold.pages[full]
                if self.refs[partial] > 1:  # shared: write into a copy
                    page = self._take(shard, promised=True)
                    copies.append((partial, page))
                    self._drop([partial])
                else:  # ours alone: write into it
                    page = partial
                    self.promised[shard] -= 1
                pages.append(page)
                reserved -= 1
            self.rows[row] = _Row(tag, shard, pages, hold.length, self.cap(hold.length, hold.max_new),
                                  reserved)
            self.bound[slot] = row
            if not live:
                self._finish(row)
            return row, list(pages), copies

    def grow(self) -> tuple[np.ndarray, np.ndarray]:
        """Before a decode step: a page for every live row whose next position starts
        one. Returns (page id, table index) per row, -1 where none; then advances each
        row's position (an upper bound: rows the device already finished keep going
        until their finish is observed, within their reservation)."""
        new = np.full(self.slots, -1, np.int32)
        index = np.full(self.slots, -1, np.int32)
        with self._cond:
            for r, row in enumerate(self.rows):
                if row is None or row.position > row.cap:
                    continue
                idx = row.position // self.page_size
                if idx == len(row.pages):
                    assert row.reserved > 0, "a row outgrew its reservation"
                    page = self._take(row.shard, promised=True)
                    row.pages.append(page)
                    row.reserved -= 1
                    new[r], index[r] = page, idx
                row.position += 1
        return new, index

    def _finish(self, row: int) -> None:
        state = self.rows[row]
        self.rows[row] = None
        self._drop(state.pages)
        self.promised[state.shard] -= state.reserved
        self.free_rows[state.shard].append(row)
        self.free_rows[state.shard].sort()
        for slot, r in list(self.bound.items()):
            if r == row:
                del self.bound[slot]

    def finished(self, row: int, tag: int) -> None:
        """Row `row` emitted its last token (ignored if it already serves another tag)."""
        with self._cond:
            state = self.rows[row]
            if state is not None and state.tag == tag:
                self._finish(row)

    def release_rows(self) -> None:
        """Free every row (a fresh decode state)."""
        with self._cond:
            for row in range(self.slots):
                if self.rows[row] is not None:
                    self._finish(row)

    def order(self) -> np.ndarray:
        """Row of each slot (slots bound to none: their own index)."""
        with self._cond:
            out = np.arange(self.slots)
            for slot, row in self.bound.items():
                out[slot] = row
            return out
