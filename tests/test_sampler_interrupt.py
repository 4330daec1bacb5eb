"""Ctrl-C in the middle of `generate` stops cleanly and promptly.

A child process runs a long generation; once the Driver is stepping, the test
sends it SIGINT. The child must surface KeyboardInterrupt from `generate` (after
the Driver has stopped: no Driver thread left, no non-daemon thread that would
hang interpreter exit), and then die of the interrupt as any Python program
does: exit status -SIGINT, never SIGKILL, never a hang.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

SCRIPT = textwrap.dedent("""
    import threading, time, traceback
    import jax.numpy as jnp
    from int_jax.models import qwen3
    from int_jax.sampling.sampler import JetStreamSampler
    from int_jax.sampling.types import GREEDY

    cfg = qwen3.Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                            num_heads=4, num_kv_heads=2, head_dim=16)
    s = JetStreamSampler(qwen3.create(cfg), None, slots=2, max_len=1024, buckets=(8,),
                         cache_dtype=jnp.float32, stop_ids=(), progress=False)
    engine, real = s.engine, s.engine.generate
    steps = [0]
    def counting(params, state, sampler=None):
        steps[0] += 1
        if steps[0] == 20:  # compiled and well into decoding
            print("DECODING", flush=True)
        if steps[0] >= 20:  # however fast a step is, the run outlasts the signal's delivery
            time.sleep(0.005)
        return real(params, state)
    engine.generate = counting
    status = open("/proc/self/status").read().splitlines()
    print("SIGNALS", [l for l in status if l.startswith(("SigBlk", "SigIgn"))], flush=True)
    before = set(threading.enumerate())
    try:
        s.generate([[1, 2, 3]] * 8, n=1, sampling=GREEDY, max_new_tokens=1000, seed=0)
    except KeyboardInterrupt:
        frames = [f.name for f in traceback.extract_tb(__import__("sys").exc_info()[2])]
        print("INTERRUPTED in", "generate" if "generate" in frames else frames, flush=True)
        left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
        non_daemon = [t.name for t in threading.enumerate()
                      if t is not threading.main_thread() and not t.daemon and t.is_alive()]
        print("LEFT", left, "NON_DAEMON", non_daemon, "STEPS", steps[0], flush=True)
        raise
    print("FINISHED WITHOUT INTERRUPT", flush=True)
""")


def test_ctrl_c_mid_generate_stops_cleanly_and_promptly():
    # The child starts as from a terminal: SIGINT neither ignored nor blocked. Run as a
    # background job (`make test &` in a script), pytest and its children start with
    # SIGINT ignored (POSIX, for a non-interactive shell), and Python installs no handler
    # for an ignored SIGINT: the child would never see the signal.
    def as_from_a_terminal():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1,
                            preexec_fn=as_from_a_terminal)
    lines = []
    try:
        for line in proc.stdout:  # compile + start: bounded by the outer pytest timeout
            lines.append(line)
            if line.startswith("DECODING"):
                break
        assert lines and lines[-1].startswith("DECODING"), "".join(lines)[-4000:]
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        stopped_after = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines) + rest
    assert proc.returncode == -signal.SIGINT, f"exit status {proc.returncode} (-9 = SIGKILL):\n{out[-4000:]}"
    assert "INTERRUPTED in generate" in out, out[-4000:]
    assert "LEFT [] NON_DAEMON []" in out, out[-4000:]  # Driver threads joined, none left
    assert "FINISHED WITHOUT INTERRUPT" not in out
    # Stop + interpreter exit take ~3 s here; the bound leaves room for a loaded machine.
    assert stopped_after < 30, f"took {stopped_after:.1f} s to stop after SIGINT"
