"""Worker processes that grade (answer, gold) pairs under a hard per-item time limit.

sympy can hang inside C code (``10^{10^{10^{10}}}`` asks GMP for an astronomically
large integer) where no Python-level signal reaches it, and math-verify's own timeouts
use ``signal.alarm``, which only works on a process's main thread. So grading runs in
worker processes, each its own main thread, under two limits:

* soft: an interval timer in the worker interrupts Python-level work after
  ``timeout_s``; the item is graded ``timeout`` and the worker lives on;
* hard: the parent kills a worker whose current item has run ``timeout_s + grace_s``
  (or that died), grades that item ``timeout``, starts a replacement and re-sends the
  worker's other queued items. No item is ever lost; results come back in input order.

Workers come from a ``forkserver`` that has already imported sympy and math-verify,
so a replacement is ready in milliseconds and a parent holding JAX threads is never
forked.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing.connection import Connection, wait

from int_jax.grading.grade import Grade

_STARTUP_TIMEOUT_S = 120.0
_PRELOAD = ["int_jax.grading.equivalence"]


class _SoftTimeout(BaseException):
    """Raised by the worker's interval timer; a BaseException so that library code
    catching ``Exception`` cannot swallow it."""


def _on_alarm(signum, frame):
    raise _SoftTimeout()


def _grade_one(answer: str, gold: str, timeout_s: float) -> str:
    from int_jax.grading.equivalence import equivalent

    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            return equivalent(answer, gold).value
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _SoftTimeout:
        return Grade.TIMEOUT.value
    except Exception:  # a parser bug (or RecursionError) on odd input is not a correct answer
        return Grade.UNPARSABLE.value


def _worker_main(conn: Connection) -> None:
    import int_jax.grading.equivalence  # noqa: F401  (warm before reporting ready)

    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        seq, answer, gold, timeout_s = msg
        conn.send((seq, _grade_one(answer, gold, timeout_s)))


class _Worker:
    def __init__(self, ctx):
        parent_end, child_end = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child_end,), daemon=True)
        self.proc.start()
        child_end.close()
        self.conn = parent_end
        self.started = time.monotonic()
        self.ready = False
        self.in_flight: collections.deque[int] = collections.deque()
        self.head_since = 0.0  # when the worker began its current (head) item

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(timeout=5)
        finally:
            self.conn.close()


class GraderPool:
    """A fixed number of grading processes; ``grade_answers`` is safe from any thread
    (one batch at a time)."""

    def __init__(self, workers: int | None = None, *, grace_s: float = 1.0, depth: int = 4):
        self.size = max(1, workers or os.cpu_count() or 1)
        self.grace_s = grace_s
        self.depth = depth  # items queued per worker, to hide round-trip latency
        self.restarts = 0
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()
        self._workers = [_Worker(self._ctx) for _ in range(self.size)]
        self._closed = False

    @property
    def usable(self) -> bool:
        """False after ``close`` and in a forked child (the pipes belong to the parent)."""
        return not self._closed and os.getpid() == self._owner_pid

    def pids(self) -> list[int]:
        """Worker process ids (for monitoring, and for tests that kill or stop one)."""
        return [w.proc.pid for w in self._workers]

    def grade_answers(self, items: list[tuple[str, str]], timeout_s: float) -> list[Grade]:
        """Grade extracted (answer, gold) pairs; one ``Grade`` per item, in order."""
        if not self.usable:
            raise RuntimeError("GraderPool is closed or belongs to another process")
        with self._lock:
            return self._run(items, timeout_s)

    def _run(self, items: list[tuple[str, str]], timeout_s: float) -> list[Grade]:
        results: list[Grade | None] = [None] * len(items)
        pending = collections.deque(range(len(items)))
        remaining = len(items)
        hard_s = timeout_s + self.grace_s
        while remaining:
            now = time.monotonic()
            self._dispatch(items, pending, timeout_s, now)
            deadlines = [w.head_since + hard_s for w in self._workers if w.in_flight]
            deadlines += [w.started + _STARTUP_TIMEOUT_S for w in self._workers if not w.ready]
            wait_s = max(0.0, min(deadlines) - now) if deadlines else None
            readable = set(wait([w.conn for w in self._workers], timeout=wait_s))
            now = time.monotonic()
            for i, w in enumerate(self._workers):
                if w.conn in readable:
                    try:
                        while w.conn.poll():
                            msg = w.conn.recv()
                            if msg == "ready":
                                w.ready = True
                                continue
                            idx, value = msg
                            assert w.in_flight and w.in_flight[0] == idx, "out-of-order reply"
                            w.in_flight.popleft()
                            results[idx] = Grade(value)
                            remaining -= 1
                            w.head_since = now
                    except (EOFError, OSError):  # the worker died
                        if not w.ready:
                            raise RuntimeError("a grading worker died while starting") from None
                        remaining -= self._fail_head(i, results, pending)
                        continue
                if w.in_flight and now - w.head_since > hard_s:
                    remaining -= self._fail_head(i, results, pending)
                elif not w.ready and now - w.started > _STARTUP_TIMEOUT_S:
                    raise RuntimeError(f"grading worker did not start in {_STARTUP_TIMEOUT_S}s")
        return results  # type: ignore[return-value]

    def _dispatch(self, items, pending: collections.deque, timeout_s: float, now: float) -> None:
        """Hand out pending items round-robin, up to ``depth`` queued per worker."""
        progress = True
        while pending and progress:
            progress = False
            for i, w in enumerate(self._workers):
                if not (pending and w.ready and len(w.in_flight) < self.depth):
                    continue
                idx = pending.popleft()
                try:
                    answer, gold = items[idx]
                    w.conn.send((idx, answer, gold, timeout_s))
                except OSError:  # died while idle: nothing of ours was running there
                    pending.appendleft(idx)
                    self._requeue_and_replace(i, pending)
                    continue
                if not w.in_flight:
                    w.head_since = now
                w.in_flight.append(idx)
                progress = True

    def _fail_head(self, i: int, results: list, pending: collections.deque) -> int:
        """Kill worker ``i``: its current item is a timeout, its queued ones go back."""
        w = self._workers[i]
        done = 0
        if w.in_flight:
            results[w.in_flight.popleft()] = Grade.TIMEOUT
            done = 1
        self._requeue_and_replace(i, pending)
        return done

    def _requeue_and_replace(self, i: int, pending: collections.deque) -> None:
        """Put worker ``i``'s queued items back at the front of ``pending`` (in order)
        and start a replacement worker."""
        w = self._workers[i]
        pending.extendleft(reversed(w.in_flight))
        w.kill()
        self._workers[i] = _Worker(self._ctx)
        self.restarts += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._owner_pid:
            return
        for w in self._workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self._workers:
            w.proc.join(timeout=2)
            w.kill()

    def __enter__(self) -> "GraderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
