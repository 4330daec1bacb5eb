"""The sampler's scheduler: continuous batching over the engine's JetStream methods,
with admission by KV memory and several prompts per prefill call.

JetStream's Driver admits a request whenever a decode slot is free and prefills one
prompt per call. This loop, in the caller's thread, runs the same engine methods
(`insert`, `generate`, the step rows) and adds what the Driver lacks:

* admission by memory: a request starts when the pool can hold every page it may
  need (`engine.admit`, never blocking); otherwise it waits, in order, until
  finished sequences give pages back. Samples of one prompt are admitted together
  when they fit, else as many as fit (the rest share the cached prompt later); with
  `share_prompts=False` each sample is admitted alone, with a prefill of its own;
* several prompts admitted together are prefilled in one call (`prefill_admitted`);
* one decode step in flight: step t+1 is dispatched before step t's rows are read.

Each request's random stream depends only on (seed, tag, position) (`request_key`
and the step's fold-in of the generated count), so when and where a request runs
(its slot, its row, which requests wait) never changes what it samples.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Callable, Sequence

from int_jax.sampling import decode as decode_lib
from int_jax.sampling.engine import Qwen3Engine, request_key
from int_jax.sampling.types import SamplerFailure, SamplingParams


@dataclasses.dataclass
class Request:
    """n samples of one prompt, tagged first_tag .. first_tag + n - 1."""

    ids: Sequence[int]
    n: int
    first_tag: int
    max_new_tokens: int
    admitted: int = 0  # samples admitted so far


class Scheduler:
    def __init__(self, engine: Qwen3Engine, requests: Sequence[Request], *,
                 sampling: SamplingParams, seed: int, stall_timeout_s: float = 1800.0):
        self.engine, self.sampling, self.seed = engine, sampling, int(seed)
        self.waiting = collections.deque(requests)
        self.total = sum(r.n for r in requests)
        self.stall_timeout_s = float(stall_timeout_s)
        self.stats = dict(prefill_calls=0, steps=0, waits=0, peak_live=0)

    def run(self, progress: Callable[[int], None] | None = None) -> None:
        """Until every sample has emitted its last token. Engine failures are raised as
        `SamplerFailure` (the engine's exception is the cause)."""
        try:
            self._loop(progress or (lambda finished: None))
        except (KeyboardInterrupt, SystemExit, TimeoutError):
            raise
        except Exception as e:  # noqa: BLE001 - any engine failure, with its traceback
            raise SamplerFailure(f"the engine failed: {type(e).__name__}: {e}") from e

    def _loop(self, progress) -> None:
        engine = self.engine
        params = engine.params
        state = engine.init_decode_state()
        free = collections.deque(range(engine.max_concurrent_decodes))
        live: dict[int, int] = {}  # slot -> tag
        pending = None  # the dispatched step whose rows are not read yet
        finished, last = 0, time.monotonic()
        while finished < self.total:
            state, done = self._admit(params, state, free, live)
            rows = None
            if live:
                state, rows = engine.generate(params, state)
                self.stats["steps"] += 1
                self.stats["peak_live"] = max(self.stats["peak_live"], len(live))
            if pending is not None:
                done += self._read(pending, free, live)
            elif rows is None and self.waiting:
                raise RuntimeError("nothing runs and the next request does not fit the KV pool "
                                   "(internal error: check_request should have refused it)")
            pending = rows
            finished += done
            if done:
                last = time.monotonic()
                progress(done)
            elif time.monotonic() - last > self.stall_timeout_s:
                raise TimeoutError(f"no request finished for {self.stall_timeout_s:.0f} s "
                                   f"({finished}/{self.total} done)")

    def _admit(self, params, state, free, live):
        """Admit waiting samples into free slots while the pool holds them; prefill them
        together; insert. Returns (state, samples already finished by their first token)."""
        engine, admitted, budget = self.engine, [], len(free)
        while self.waiting and budget > 0:
            request = self.waiting[0]
            got = engine.admit(request.ids, request.max_new_tokens,
                               min(request.n - request.admitted, budget))
            if got is None:
                self.stats["waits"] += 1
                break
            holds, logits = got
            admitted.append((request, request.admitted, holds, logits))
            request.admitted += len(holds)
            budget -= len(holds)
            if request.admitted == request.n:
                self.waiting.popleft()
        if not admitted:
            return state, 0
        self.stats["prefill_calls"] += 1
        all_logits = engine.prefill_admitted(params, [(r.ids, h, lg) for r, _, h, lg in admitted])
        done = 0
        for (request, start, holds, _), logits in zip(admitted, all_logits):
            tags = range(request.first_tag + start, request.first_tag + start + len(holds))
            prefixes = engine.make_prefixes(logits, holds, [(t, request_key(self.seed, t)) for t in tags],
                                            self.sampling, request.max_new_tokens)
            first = None
            if engine.prefill_returns_first_token:  # 0.3.0: the first token comes back now
                first = engine.first_rows(prefixes).convert_to_numpy().data
            for i, prefix in enumerate(prefixes):
                slot = free.popleft()
                state = engine.insert(prefix, state, slot)
                if first is not None and first[i, decode_lib.OUT_FINISH] != decode_lib.FINISH_NONE:
                    free.append(slot)  # insert already gave its row back
                    done += 1
                else:
                    live[slot] = prefix.tag
        return state, done

    def _read(self, rows, free, live) -> int:
        """A step's rows to host (the engine's listener records them); frees the slots
        whose sample emitted its last token. Returns how many did."""
        data = rows.convert_to_numpy().data  # slot order
        done = 0
        for slot in list(live):
            row = data[slot]
            if row[decode_lib.OUT_VALID] and row[decode_lib.OUT_FINISH] != decode_lib.FINISH_NONE:
                del live[slot]
                free.append(slot)
                done += 1
        return done
