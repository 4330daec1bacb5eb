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

Each worker is a fresh interpreter running ``python -P -m int_jax.grading.worker``
(``worker.py``) that talks JSON lines over its stdin/stdout. Not multiprocessing:
its spawn and forkserver children re-import the caller's ``__main__``, so a plain
script calling ``grade()`` at top level (no ``if __name__ == "__main__":`` guard)
would die with multiprocessing's bootstrapping error; and a parent holding JAX
threads is never forked (``subprocess`` execs at once). A worker is ready once it has
imported sympy and math-verify (about half a second); the pool keeps grading on the
other workers meanwhile.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from multiprocessing.connection import wait
from pathlib import Path

from int_jax.grading.grade import Grade

_STARTUP_TIMEOUT_S = 120.0
# Bytes of queued messages a worker may hold unread: below any OS's pipe buffer, so a
# write to a worker that stopped reading (hung in C code, or stopped) never blocks the
# parent, which must stay free to enforce the hard limit. A worker with nothing queued
# takes one message of any size.
_PIPE_BUDGET = 16 * 1024
_WORKER_MODULE = "int_jax.grading.worker"
# The folder holding the int_jax package: a worker imports the same int_jax as its
# parent, installed or not, and never the caller's working directory (`-P`).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _worker_command() -> list[str]:
    if not sys.executable:
        raise RuntimeError("cannot start grading workers: sys.executable is unknown")
    return [sys.executable, "-P", "-m", _WORKER_MODULE]


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    return env


class _Worker:
    """One worker process and its pipes."""

    def __init__(self):
        self.proc = subprocess.Popen(_worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=_worker_env(), bufsize=0)
        self._out_fd = self.proc.stdout.fileno()
        self._buf = b""
        self.started = time.monotonic()
        self.ready = False
        self.in_flight: collections.deque[int] = collections.deque()
        self.sizes: collections.deque[int] = collections.deque()  # bytes of each in-flight message
        self.head_since = 0.0  # when the worker began its current (head) item

    def fileno(self) -> int:  # for multiprocessing.connection.wait
        return self._out_fd

    def takes(self, data: bytes) -> bool:
        """Whether `data` may be queued now without risking a blocked write."""
        return not self.in_flight or sum(self.sizes) + len(data) <= _PIPE_BUDGET

    def push(self, idx: int, size: int) -> None:
        self.in_flight.append(idx)
        self.sizes.append(size)

    def pop(self) -> int:
        self.sizes.popleft()
        return self.in_flight.popleft()

    def send(self, data: bytes) -> None:
        """Raises OSError (BrokenPipeError) when the worker is gone."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.proc.stdin.fileno(), view):]

    def receive(self) -> list:
        """The complete messages that have arrived (call when readable); EOFError when
        the worker is gone."""
        data = os.read(self._out_fd, 1 << 16)
        if not data:
            raise EOFError
        *lines, self._buf = (self._buf + data).split(b"\n")
        return [json.loads(line) for line in lines]

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            self.proc.stdin.close()
            self.proc.stdout.close()


class GraderPool:
    """A fixed number of grading processes; ``grade_answers`` is safe from any thread
    (one batch at a time)."""

    def __init__(self, workers: int | None = None, *, grace_s: float = 1.0, depth: int = 4):
        self.size = max(1, workers or os.cpu_count() or 1)
        self.grace_s = grace_s
        self.depth = depth  # items queued per worker, to hide round-trip latency
        self.restarts = 0
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()
        self._workers = [_Worker() for _ in range(self.size)]
        self._closed = False

    @property
    def usable(self) -> bool:
        """False after ``close`` and in a forked child (the pipes belong to the parent)."""
        return not self._closed and os.getpid() == self._owner_pid

    def pids(self) -> list[int]:
        """Worker process ids (for monitoring, and for tests that kill or stop one)."""
        return [w.proc.pid for w in self._workers]

    def wait_ready(self) -> None:
        """Block until every worker has started (they start in the background, and a
        batch uses those that are ready); RuntimeError if one dies or takes too long."""
        if not self.usable:
            raise RuntimeError("GraderPool is closed or belongs to another process")
        with self._lock:
            while not all(w.ready for w in self._workers):
                starting = [w for w in self._workers if not w.ready]
                left = min(w.started for w in starting) + _STARTUP_TIMEOUT_S - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"grading worker did not start in {_STARTUP_TIMEOUT_S}s")
                for w in wait(starting, timeout=left):
                    try:
                        w.ready = w.ready or "ready" in w.receive()
                    except EOFError:
                        raise RuntimeError("a grading worker died while starting") from None

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
            readable = set(wait(self._workers, timeout=wait_s))
            now = time.monotonic()
            for i, w in enumerate(self._workers):
                if w in readable:
                    try:
                        for msg in w.receive():
                            if msg == "ready":
                                w.ready = True
                                continue
                            idx, value = msg
                            assert w.in_flight and w.in_flight[0] == idx, "out-of-order reply"
                            w.pop()
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
                idx = pending[0]
                answer, gold = items[idx]
                data = (json.dumps([idx, answer, gold, timeout_s]) + "\n").encode("ascii")
                if not w.takes(data):
                    continue
                pending.popleft()
                try:
                    w.send(data)
                except OSError:  # died while idle: nothing of ours was running there
                    pending.appendleft(idx)
                    self._requeue_and_replace(i, pending)
                    continue
                if not w.in_flight:
                    w.head_since = now
                w.push(idx, len(data))
                progress = True

    def _fail_head(self, i: int, results: list, pending: collections.deque) -> int:
        """Kill worker ``i``: its current item is a timeout, its queued ones go back."""
        w = self._workers[i]
        done = 0
        if w.in_flight:
            results[w.pop()] = Grade.TIMEOUT
            done = 1
        self._requeue_and_replace(i, pending)
        return done

    def _requeue_and_replace(self, i: int, pending: collections.deque) -> None:
        """Put worker ``i``'s queued items back at the front of ``pending`` (in order)
        and start a replacement worker."""
        w = self._workers[i]
        pending.extendleft(reversed(w.in_flight))
        w.kill()
        self._workers[i] = _Worker()
        self.restarts += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._owner_pid:
            return
        for w in self._workers:
            try:
                w.send(b"null\n")
            except OSError:
                pass
        for w in self._workers:
            try:
                w.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            w.kill()

    def __enter__(self) -> "GraderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
