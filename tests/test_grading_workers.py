"""Grading workers start from any caller: a plain script, no `__main__` guard."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "plain_script.py"
    script.write_text(textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)  # the checkout's int_jax, as the tests use it
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_grade_from_a_plain_script_without_main_guard(tmp_path):
    # A module in the caller's folder named like one the workers import must not be
    # picked up by them (they never look at the working directory).
    (tmp_path / "sympy.py").write_text("raise ImportError('the workers imported the cwd')\n")
    r = _run_script(tmp_path, r"""
        import time
        from int_jax.grading.verify import GraderPool, grade, grade_batch

        print("top-level", grade("so \\boxed{2}", "2").value, grade("\\boxed{3}", "2").value)
        t = time.perf_counter()
        print("hard-limit", grade("\\boxed{10^{10^{10^{10}}}}", "5", timeout_s=1.0).value,
              time.perf_counter() - t < 1.0 + 1.0 + 2.0)  # limit + grace + slack
        with GraderPool(1) as pool:
            print("own-pool", [g.value for g in grade_batch([("\\boxed{x+1}", "1+x")], pool=pool)])
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert "top-level correct wrong" in lines
    assert "hard-limit timeout True" in lines
    assert "own-pool ['correct']" in lines
    assert "bootstrapping" not in r.stderr and "cwd" not in r.stderr


def test_long_golds_never_block_the_parent_on_a_stopped_worker():
    """Messages queued to a worker that stopped reading stay under its pipe buffer, so
    the parent is never stuck writing and still enforces the hard limit."""
    import signal
    import threading

    from int_jax.grading.verify import Grade, GraderPool, grade_batch

    gold = "2" + " " * 30_000  # a gold given as long solution text: 30 KB per message
    pairs = [(f"\\boxed{{{i}}}", gold) for i in range(8)]
    with GraderPool(2) as pool:
        pool.wait_ready()
        os.kill(pool.pids()[0], signal.SIGSTOP)
        out = []
        t = threading.Thread(target=lambda: out.extend(grade_batch(pairs, pool=pool, timeout_s=1.0)),
                             daemon=True)
        t.start()
        t.join(timeout=120)
        assert not t.is_alive(), "grade_batch is stuck writing to a stopped worker"
    assert out.count(Grade.TIMEOUT) == 1 and out[2] == Grade.CORRECT
    assert all(g == Grade.WRONG for i, g in enumerate(out) if i != 2 and g != Grade.TIMEOUT)
