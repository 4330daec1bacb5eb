"""Make every host of a multi-host run agree on data-derived numbers.

Each host builds its own input pipeline, so anything computed from data (how
many steps pack mode yields on this host's shard, how many examples were read)
can differ between hosts. A host that stops early leaves the others blocked
in a collective forever, so such numbers go through `all_gather` across
processes before they steer the train loop. `all_gather` is a parameter so
tests can stand in for several hosts.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np

# int64 [n] of this host -> int64 [process_count, n], row p from host p.
AllGather = Callable[[np.ndarray], np.ndarray]


def process_all_gather(values: np.ndarray) -> np.ndarray:
    """The real collective over `jax.process_count()` processes (identity on one)."""
    import jax

    values = np.asarray(values, np.int64)
    if jax.process_count() == 1:
        return values[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values, tiled=False)).reshape(
        jax.process_count(), *values.shape)


class HostDisagreement(RuntimeError):
    """Hosts hold different data where they must hold the same."""


def data_fingerprint(lengths: Sequence[int]) -> int:
    """A 62-bit hash of the example lengths in order: equal on hosts that read the same set."""
    h = hashlib.sha256(np.asarray(lengths, np.int64).tobytes()).digest()
    return int.from_bytes(h[:8], "little") >> 2


def agree_on_steps(local_steps: int, fingerprint: int, n_examples: int, *,
                   all_gather: AllGather = process_all_gather) -> int:
    """The step count every host runs: the minimum over hosts of their own counts.

    Also checks that every host encoded the same examples (count and length
    fingerprint), because the shards, and so the counts, are only meaningful
    if they cut up one data set; otherwise raises `HostDisagreement` naming
    the hosts that differ from host 0.
    """
    gathered = np.asarray(all_gather(np.asarray([local_steps, fingerprint, n_examples],
                                                np.int64)))
    steps, prints, counts = gathered[:, 0], gathered[:, 1], gathered[:, 2]
    differ = [p for p in range(len(prints))
              if prints[p] != prints[0] or counts[p] != counts[0]]
    if differ:
        detail = "; ".join(f"host {p}: {counts[p]} examples, length fingerprint "
                           f"{prints[p]:016x}" for p in [0, *differ])
        raise HostDisagreement(
            f"hosts encoded different SFT data ({detail}): give every host the same "
            "data.train_path, tokenizer and data settings")
    return int(steps.min())
