"""One grading worker: ``python -P -m int_jax.grading.worker`` (started by ``pool.py``).

A plain interpreter running this module, never a fork or a multiprocessing child,
so it never re-imports the caller's ``__main__``: ``grade()`` works from any script,
guarded by ``if __name__ == "__main__":`` or not.

Protocol: one JSON value per line (ASCII, so any string survives the pipe).

* worker -> parent: ``"ready"`` once equivalence checking is imported, then
  ``[seq, grade_value]`` per item, in the order the items came;
* parent -> worker: ``[seq, answer, gold, timeout_s]`` per item; ``null`` or end
  of input stops the worker.

The soft limit lives here (an interval timer that interrupts Python-level work); the
hard limit (killing a worker stuck in C code) is the parent's.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from int_jax.grading.grade import Grade


class _SoftTimeout(BaseException):
    """Raised by the interval timer; a BaseException so that library code catching
    ``Exception`` cannot swallow it."""


def _on_alarm(signum, frame):
    raise _SoftTimeout()


def grade_one(answer: str, gold: str, timeout_s: float) -> str:
    """The ``Grade`` value of one extracted answer, Python-level work bounded by
    ``timeout_s`` (needs ``_on_alarm`` installed for SIGALRM, as ``main`` does)."""
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


def _protocol_streams():
    """Private copies of stdin/stdout for the protocol; fd 0 becomes /dev/null and
    fd 1 points at stderr, so a library that prints cannot corrupt the protocol."""
    proto_in = os.fdopen(os.dup(0), "r", encoding="ascii", errors="replace")
    proto_out = os.fdopen(os.dup(1), "w", encoding="ascii")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


def _send(out, value) -> None:
    out.write(json.dumps(value) + "\n")
    out.flush()


def main() -> None:
    proto_in, proto_out = _protocol_streams()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    import int_jax.grading.equivalence  # noqa: F401  (warm before reporting ready)

    signal.signal(signal.SIGALRM, _on_alarm)
    try:
        _send(proto_out, "ready")
        for line in proto_in:
            msg = json.loads(line)
            if msg is None:
                return
            seq, answer, gold, timeout_s = msg
            _send(proto_out, [seq, grade_one(answer, gold, float(timeout_s))])
    except BrokenPipeError:  # the parent is gone
        pass


if __name__ == "__main__":
    sys.exit(main())
