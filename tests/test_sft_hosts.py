"""Hosts agree on the SFT step count through a collective, and refuse different data.

Two hosts are stood in for by two threads whose `all_gather` really exchanges
values (a barrier), so each host only ever sees its own shard plus what the
collective returns, as on a pod.
"""

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from int_jax.data import host_sync, loaders


class ThreadAllGather:
    """`all_gather` for `n` threads: each contributes a row and gets all rows back."""

    def __init__(self, n: int):
        self.rows: dict[int, np.ndarray] = {}
        self.barrier = threading.Barrier(n, timeout=60)
        self.n = n

    def for_host(self, p: int):
        def all_gather(values):
            self.rows[p] = np.asarray(values, np.int64)
            self.barrier.wait()
            return np.stack([self.rows[i] for i in range(self.n)])
        return all_gather


def _run_hosts(n, fn):
    """Run fn(p, all_gather) on n threads; return their results or exceptions, by host."""
    gather, out = ThreadAllGather(n), {}

    def one(p):
        try:
            out[p] = fn(p, gather.for_host(p))
        except Exception as e:  # noqa: BLE001 - returned for the test to inspect
            out[p] = e

    threads = [threading.Thread(target=one, args=(p,)) for p in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return [out[p] for p in range(n)]


def _examples(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [{"ids": rng.integers(1, 96, n).astype(np.int32),
             "loss_weights": np.ones(n, np.float32),
             "example": np.full(n, i + 1, np.int32)} for i, n in enumerate(lengths)]


# Lengths chosen so the two shards pack into different numbers of rows.
PACK_LENGTHS = [15, 2, 14, 3, 13, 2, 12, 1, 16, 4, 11, 5, 10, 6, 9, 7, 8, 16, 16, 16, 15, 14]
PACK_SPEC = loaders.BatchSpec(rows=2, accum=1, seq_len=16, packing=True, seed=5, epochs=1)


def test_pack_mode_hosts_agree_on_the_smallest_shard_count():
    ex = _examples(PACK_LENGTHS)
    spec = PACK_SPEC
    actual = [sum(1 for _ in loaders.sft_dataset(ex, spec, process_index=p, process_count=2))
              for p in range(2)]
    assert actual[0] != actual[1], f"test data must pack unevenly across hosts, got {actual}"
    got = _run_hosts(2, lambda p, g: loaders.count_steps(ex, spec, 2, p, all_gather=g))
    assert got == [min(actual)] * 2


def test_pad_mode_count_is_shared_and_every_host_has_that_many_batches():
    ex = _examples([5, 7, 3, 8, 6, 2, 4, 8, 3])
    spec = loaders.BatchSpec(rows=2, accum=1, seq_len=8, seed=0, epochs=3)
    got = _run_hosts(2, lambda p, g: loaders.count_steps(ex, spec, 2, p, all_gather=g))
    assert got[0] == got[1]
    for p in range(2):
        assert sum(1 for _ in loaders.sft_dataset(ex, spec, process_index=p,
                                                  process_count=2)) >= got[0]


@pytest.mark.parametrize("packing", [False, True])
def test_hosts_with_different_data_fail_clearly(packing):
    ex = _examples(PACK_LENGTHS)
    spec = loaders.BatchSpec(rows=3, accum=1, seq_len=16, packing=packing, seed=1)
    # Host 1 read a longer file (e.g. a stale copy); same count but different lengths on host 2.
    per_host = [ex, ex + _examples([4], seed=9), ex[:-1] + _examples([3], seed=9)]
    got = _run_hosts(3, lambda p, g: loaders.count_steps(per_host[p], spec, 3, p,
                                                         all_gather=g))
    for err in got:  # every host stops, none waits forever in a later collective
        assert isinstance(err, host_sync.HostDisagreement)
        msg = str(err)
        assert "host 1: 23 examples" in msg and "host 2: 22 examples" in msg
        assert "host 0: 22 examples" in msg


def test_single_process_collective_is_the_identity():
    gathered = host_sync.process_all_gather(np.asarray([7, 3], np.int64))
    assert gathered.shape == (1, 2) and gathered.tolist() == [[7, 3]]
    ex = _examples(PACK_LENGTHS)
    spec = loaders.BatchSpec(rows=2, accum=1, seq_len=16, packing=True, seed=1)
    assert loaders.count_steps(ex, spec) == sum(1 for _ in loaders.sft_dataset(ex, spec))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_real_processes_agree_through_jax_distributed():
    """Two JAX processes (gloo collectives on CPU) pack different shards and both
    train the smaller count; extra data on one host fails on both."""
    port = _free_port()
    tests = Path(__file__).parent
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]))
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, str(tests / "sft_host_child.py"), str(p),
                               str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for p in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    local = [o["local"] for o in outs]
    assert local[0] != local[1], f"shards must pack unevenly, got {local}"
    assert [o["steps"] for o in outs] == [min(local)] * 2
    for o in outs:
        assert o["error"] and "host 1: 23 examples" in o["error"]
