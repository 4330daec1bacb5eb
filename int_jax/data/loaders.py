"""grain input pipeline for SFT: JSONL -> encoded examples -> shuffled, per-host,
padded or packed batches shaped [accum, rows, T], with a checkpointable iterator.

Pipeline (deterministic given the seed; identical on every resume):

    MapDataset(examples).shuffle(seed).repeat(epochs)[host::hosts]   # each epoch reshuffled
      -> pad mode:  batch `rows` examples, pad to the batch's length bucket
      -> pack mode: first-fit pack into rows of `seq_len` (segment ids 1, 2, ...;
                    positions restart per example), then batch `rows` rows

Pad mode keeps the paper's "global batch = N examples" meaning; buckets
(powers of two from 128 up to `seq_len`) bound recompilation while not padding a
2k-token batch to 16k. With several hosts every batch is padded to `seq_len` so
all hosts agree on the shape. Pack mode wastes least compute; the batch is then
`rows` rows of `seq_len` tokens.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import grain
import grain.experimental as grain_exp
import numpy as np

from int_jax.data import host_sync
from int_jax.data.records import SFTExample, read_records
from int_jax.data.tokenize import EncodedExample, EncodeStats, encode_example

FIELDS = ("ids", "loss_weights", "segment_ids", "positions", "example")
MIN_BUCKET = 128


@dataclasses.dataclass(frozen=True)
class SFTRecord:
    """What tokenisation needs from an `SFTExample`."""

    id: str
    messages: list[dict]
    segments: list[tuple[str, str]]


def sft_record(example: SFTExample) -> SFTRecord:
    return SFTRecord(id=example.id, messages=[dict(m) for m in example.messages],
                     segments=[(s.kind, s.text) for s in example.segments])


def read_sft_jsonl(path: str | os.PathLike) -> list[SFTRecord]:
    """`SFTExample` records of a JSONL file (from `int-jax select`, `reflect`, `reference`).

    Bad lines raise `RecordError` naming file, line and field; a torn last line
    (a writer killed mid-append) is skipped.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: SFT data file not found")
    return [sft_record(r) for r in read_records(path, SFTExample)]


def encode_records(tokenizer, records: Sequence[SFTRecord], *, weights, cutoff_len: int,
                   truncation: str = "right", add_end_of_turn: bool = False,
                   end_of_turn_weight: float = 1.0) -> tuple[list[dict], EncodeStats]:
    """Tokenise every record (kept ones become numpy feature dicts)."""
    stats = EncodeStats()
    out = []
    for rec in records:
        ex = encode_example(tokenizer, rec.messages, rec.segments, weights, cutoff_len,
                            truncation, add_end_of_turn, end_of_turn_weight, stats=stats)
        if ex is not None:
            out.append(example_features(ex, index=len(out)))
    return out, stats


def example_features(ex: EncodedExample, index: int) -> dict:
    n = len(ex.ids)
    return {"ids": np.asarray(ex.ids, np.int32),
            "loss_weights": np.asarray(ex.loss_weights, np.float32),
            # 1-based example index on every token: checks data order, 0 = padding.
            "example": np.full((n,), index + 1, np.int32)}


def length_bucket(length: int, seq_len: int, smallest: int = MIN_BUCKET) -> int:
    """The power of two (from `smallest`) holding `length`, capped at `seq_len`."""
    b = smallest
    while b < length:
        b *= 2
    return min(b, seq_len)


def _pad_batch(examples: Sequence[dict], seq_len: int, fixed: bool) -> dict:
    longest = max(len(e["ids"]) for e in examples)
    t = seq_len if fixed else length_bucket(longest, seq_len)
    out = {k: np.zeros((len(examples), t), np.float32 if k == "loss_weights" else np.int32)
           for k in FIELDS}
    for r, e in enumerate(examples):
        n = len(e["ids"])
        out["ids"][r, :n] = e["ids"]
        out["loss_weights"][r, :n] = e["loss_weights"]
        out["example"][r, :n] = e["example"]
        out["segment_ids"][r, :n] = 1
        out["positions"][r, :n] = np.arange(n)
    return out


def _from_packed(b: dict) -> dict:
    return {"ids": b["ids"], "loss_weights": b["loss_weights"], "example": b["example"],
            "segment_ids": b["ids_segment_ids"].astype(np.int32),
            "positions": b["ids_positions"].astype(np.int32)}


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    rows: int  # rows per optimizer step, all hosts together
    accum: int  # gradient-accumulation micro-batches per step
    seq_len: int
    packing: bool = False
    seed: int = 0
    epochs: int = 1

    def local_rows(self, process_count: int) -> int:
        if self.rows % (self.accum * process_count):
            raise ValueError(f"global batch {self.rows} rows is not divisible by accum "
                             f"{self.accum} x {process_count} hosts")
        return self.rows // process_count


def sft_dataset(examples: Sequence[dict], spec: BatchSpec, *, process_index: int = 0,
                process_count: int = 1) -> grain.IterDataset:
    """IterDataset of host-local batches {field: [accum, rows/accum/hosts, T]}."""
    if not examples:
        raise ValueError("no SFT examples to train on")
    for e in examples:
        if len(e["ids"]) > spec.seq_len:
            raise ValueError(f"example of {len(e['ids'])} tokens exceeds seq_len {spec.seq_len}")
    rows = spec.local_rows(process_count)
    ds = grain.MapDataset.source(list(examples)).shuffle(seed=spec.seed).repeat(spec.epochs)
    ds = ds[process_index::process_count]
    if spec.packing:
        it = grain_exp.FirstFitPackIterDataset(
            ds.to_iter_dataset(), length_struct={k: spec.seq_len for k in
                                                 ("ids", "loss_weights", "example")},
            num_packing_bins=rows, shuffle_bins=False)
        it = it.batch(rows, drop_remainder=True).map(_from_packed)
    else:
        fixed = process_count > 1
        it = ds.batch(rows, drop_remainder=True, batch_fn=lambda xs: _pad_batch(
            xs, spec.seq_len, fixed)).to_iter_dataset()
    accum = spec.accum
    return it.map(lambda b: {k: v.reshape(accum, v.shape[0] // accum, *v.shape[1:])
                             for k, v in b.items()})


def count_steps(examples: Sequence[dict], spec: BatchSpec, process_count: int = 1,
                process_index: int = 0, *,
                all_gather: host_sync.AllGather = host_sync.process_all_gather) -> int:
    """Optimizer steps in `spec.epochs` epochs, the same number on every host.

    Pad mode: a formula of the example count (no host yields fewer batches).
    Pack mode: how many rows a shard packs into depends on its lengths, so each
    host packs its own shard (lengths only) and the hosts take the minimum
    through a collective. Both modes also check, in that collective, that every
    host encoded the same examples. Every host must call this.
    """
    rows = spec.local_rows(process_count)
    if not spec.packing:
        local = len(examples) * spec.epochs // process_count // rows
    else:
        local = sum(1 for _ in _lengths_only(examples, spec, process_index, process_count))
    fingerprint = host_sync.data_fingerprint([len(e["ids"]) for e in examples])
    return host_sync.agree_on_steps(local, fingerprint, len(examples), all_gather=all_gather)


def _lengths_only(examples, spec, p, process_count):
    light = [{"ids": np.zeros(len(e["ids"]), np.int32),
              "loss_weights": np.zeros(len(e["ids"]), np.float32),
              "example": np.zeros(len(e["ids"]), np.int32)} for e in examples]
    return iter(sft_dataset(light, spec, process_index=p, process_count=process_count))
