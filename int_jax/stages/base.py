"""Resumable pipeline stages: append-only JSONL, a commit ledger, a manifest last.

A stage writes under `<root>/<run>/<stage>/`:

* its output files (`*.jsonl`), append-only, one typed record per line
  (`int_jax.data.records`; each file holds one record type, declared by the
  stage, so a reader's error names the file, line and field);
* `ledger.jsonl`: one line per committed batch, written *after* that batch's
  records, holding the keys it completed, its counters and the byte size of
  every output file at that point;
* `run_config.json` (the whole resolved config) when the stage starts, and
  `manifest.json` (counts, outputs, config fingerprint) atomically when it ends.

Crash safety without per-record bookkeeping: on (re)start, every output file is
truncated back to the size recorded by the last intact ledger line, so records
of a batch that was being written when the process died (even a torn line)
vanish, and that batch is redone. Work is keyed by stable ids and split into
batches by position in the (deterministic) item list, so a resumed run sends
the sampler the same batches with the same seeds as an uninterrupted one, and
its outputs are byte-identical. A stage with a manifest is skipped.

No stale reuse: a stage declares the stages it reads (`StageRun(inputs=...)`;
reading an undeclared one through `require`/`read_stage` is an error) and
records the fingerprint of each input's manifest in its partial-run marker and
its manifest. When an input (or any stage upstream of it) was rerun since, the
stage refuses to skip or resume and says which folder to delete.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from ml_collections import ConfigDict

from int_jax.config_io import save_config
from int_jax.data.records import Record, read_records

R = TypeVar("R", bound=Record)

log = logging.getLogger("int_jax.stages")

LEDGER = "ledger.jsonl"
MANIFEST = "manifest.json"
MARKER = "fingerprint"  # written when a stage starts: its config and input fingerprints
# Config values that change how a run behaves operationally but not what it writes.
EPHEMERAL_KEYS = frozenset({"progress", "delay_s", "fsync"})


class StageError(RuntimeError):
    """A stage cannot run: missing input, changed config, damaged outputs."""


def _plain(value: Any) -> Any:
    if isinstance(value, ConfigDict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in sorted(value.items()) if k not in EPHEMERAL_KEYS}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def fingerprint(config: ConfigDict, sections: Sequence[str]) -> str:
    """Hash of the config sections that decide a stage's output."""
    data = {s: _plain(config.get(s)) for s in sections}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def stable_seed(*parts: Any) -> int:
    """A 31-bit seed from stable values (ids, stage names), the same in every process."""
    blob = json.dumps([str(p) for p in parts]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little") & 0x7FFFFFFF


def stage_dir(config: ConfigDict, stage: str) -> Path:
    return Path(config.run.root) / config.run.name / stage


def read_manifest(directory: Path) -> dict | None:
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StageError(f"{path}: damaged manifest ({e.msg}); delete it to rerun the stage") from e


def manifest_fingerprint(directory: Path) -> str | None:
    """Hash of a stage's manifest bytes (None when it has not finished). Any rerun of
    the stage writes a new manifest (counts, sizes, finish time), so a new hash."""
    try:
        data = (directory / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None
    return hashlib.sha256(data).hexdigest()[:16]


def check_inputs(config: ConfigDict, stage: str, recorded: Mapping[str, str],
                 since: str = "this stage ran", _seen: set[str] | None = None) -> None:
    """Raise when a manifest that `stage` read (`recorded`: input stage -> its manifest
    fingerprint then) has changed, or when any stage upstream of those inputs is stale
    in the same way (upstream first, so the error names the first folder to redo)."""
    seen = set() if _seen is None else _seen
    for name in recorded:
        if name not in seen:
            seen.add(name)
            upstream = read_manifest(stage_dir(config, name))
            if upstream and upstream.get("inputs"):
                check_inputs(config, name, upstream["inputs"], _seen=seen)
    directory = stage_dir(config, stage)
    for name, old in recorded.items():
        new = manifest_fingerprint(stage_dir(config, name))
        if new == old:
            continue
        what = f"has no {MANIFEST} now" if new is None else f"changed since {since} (manifest " \
                                                           f"{old} -> {new})"
        raise StageError(f"{directory}: input stage {name!r} {what}; rerun `int-jax {stage}` "
                         f"after deleting {directory}, or use another --config.run.name")


def read_manifests(config: ConfigDict, stages: Sequence[str]) -> dict[str, dict | None]:
    """The manifests of `stages` (None for one not finished), each checked against the
    inputs it read (`check_inputs`): a report never mixes outputs of different runs."""
    out = {}
    for name in stages:
        out[name] = read_manifest(stage_dir(config, name))
        if out[name] is not None:
            check_inputs(config, name, out[name].get("inputs") or {})
    return out


# Every stage folder `require` handed out, in order; a StageRun checks that it
# declared each one it read (see `StageRun._undeclared_reads`).
_READ_LOG: list[Path] = []


def require(config: ConfigDict, stage: str) -> Path:
    """The folder of a finished earlier stage, or a clear error saying what to run."""
    directory = stage_dir(config, stage)
    if read_manifest(directory) is None:
        raise StageError(f"{directory}: stage {stage!r} has not finished (no {MANIFEST}); "
                         f"run `int-jax {stage}` with this config first")
    _READ_LOG.append(directory)
    return directory


def read_stage(config: ConfigDict, stage: str, name: str, cls: type[R]) -> list[R]:
    """The `cls` records of output `name` of the finished stage `stage`.

    A malformed line is the records module's error (file, line, field); a file whose
    record count or size no longer matches the stage's manifest (cut short, appended
    to) is an error too, so no stage reads silently lost or foreign records.
    """
    directory = require(config, stage)
    path = directory / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a cut-off last line is reported below
        records = read_records(path, cls)
    want = (read_manifest(directory) or {}).get("outputs", {}).get(name)
    size = path.stat().st_size
    if want is not None and (len(records), size) != (want["records"], want["bytes"]):
        raise StageError(f"{path}: {len(records)} records in {size} bytes, but stage {stage!r} "
                         f"finished with {want['records']} in {want['bytes']}; the file was "
                         "changed afterwards: restore it or rerun that stage")
    return records


@dataclasses.dataclass
class ItemResult:
    """What one work item produced: records per output file, counters, tokens sampled."""

    records: dict[str, list[Record]] = dataclasses.field(default_factory=dict)
    counters: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    tokens: int = 0


@dataclasses.dataclass(frozen=True)
class Item:
    key: str
    payload: Any = None


def _append(path: Path, lines: Sequence[str], sync: bool) -> None:
    if not lines:
        return
    data = "".join(lines).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _dump(entry: dict) -> str:
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def _read_marker(path: Path) -> tuple[str, dict[str, str] | None]:
    """(config fingerprint, input fingerprints) of a partial-run marker; None for the
    inputs of a marker written before stages recorded them (a bare fingerprint)."""
    text = path.read_text().strip()
    if not text.startswith("{"):
        return text, None
    try:
        data = json.loads(text)
        return str(data["fingerprint"]), dict(data["inputs"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise StageError(f"{path}: damaged marker ({e}); delete that folder to rerun the "
                         "stage") from e


class StageRun:
    """One stage's folder. Use: `finished()`, `begin()`, `run_pass(...)` one or more
    times, `finish()`. `outputs` maps each output file to its record type; `inputs`
    names the earlier stages it reads (in pipeline order), whose manifests it records
    and checks."""

    def __init__(self, config: ConfigDict, stage: str, outputs: Mapping[str, type[Record]],
                 sections: Sequence[str], inputs: Sequence[str] = ()):
        self.config = config
        self.stage = stage
        self.dir = stage_dir(config, stage)
        self.outputs = dict(outputs)
        self.inputs = tuple(inputs)
        self._reads_from = len(_READ_LOG)
        self._input_fingerprints: dict[str, str] = {}
        self.fingerprint = fingerprint(config, sections)
        self.progress = bool(config.run.get("progress", True))
        self.sync = bool(config.run.get("fsync", True))
        self._done: dict[str, set[str]] = collections.defaultdict(set)
        self._counters: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter)

    def path(self, output: str) -> Path:
        return self.dir / output

    def read(self, output: str) -> list[Record]:
        """The committed records of one of this stage's outputs (e.g. an earlier pass's)."""
        return read_records(self.path(output), self.outputs[output])

    # -- start / recovery -------------------------------------------------

    def finished(self) -> dict | None:
        """The manifest when the stage already finished with this config (then there is
        nothing to do); None when it has to run."""
        manifest = read_manifest(self.dir)
        if manifest is None:
            return None
        if manifest.get("fingerprint") != self.fingerprint:
            raise StageError(
                f"{self.dir}: stage {self.stage!r} finished with a different config "
                f"(fingerprint {manifest.get('fingerprint')} != {self.fingerprint}); "
                "use another run name (--config.run.name=...) or delete that folder")
        recorded = manifest.get("inputs")
        if recorded is None and self.inputs:
            log.warning("%s: finished before stages recorded their inputs; whether %s changed "
                        "since cannot be checked", self.dir, ", ".join(self.inputs))
        check_inputs(self.config, self.stage, recorded or {})
        print(f"[{self.stage}] already complete: {self.dir}")
        return manifest

    def _undeclared_reads(self) -> None:
        read = {d.name for d in _READ_LOG[self._reads_from:] if d.parent == self.dir.parent}
        undeclared = sorted(read - set(self.inputs) - {self.stage})
        if undeclared:
            raise StageError(f"stage {self.stage!r} read stage {undeclared[0]!r} without "
                             f"declaring it: add it to StageRun(..., inputs=(...)) so a rerun "
                             "of it is noticed")

    def begin(self) -> None:
        self._undeclared_reads()
        current = {name: manifest_fingerprint(require(self.config, name)) for name in self.inputs}
        self.dir.mkdir(parents=True, exist_ok=True)
        marker = self.dir / MARKER
        recorded = None
        if marker.exists():
            config_fp, recorded = _read_marker(marker)
            if config_fp != self.fingerprint:
                raise StageError(
                    f"{self.dir}: partial outputs were written with a different config; "
                    "rerun with the original config to resume, or delete that folder")
        if recorded is not None:
            check_inputs(self.config, self.stage, recorded,
                         since="this stage's partial outputs were written")
        else:
            if marker.exists() and self.inputs:
                log.warning("%s: partial outputs written before stages recorded their inputs; "
                            "whether %s changed since cannot be checked", self.dir,
                            ", ".join(self.inputs))
            check_inputs(self.config, self.stage, current)  # the stages upstream of them
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "inputs": current},
                                      sort_keys=True) + "\n")
            os.replace(tmp, marker)
        self._input_fingerprints = current
        save_config(self.config, self.dir)
        self._recover()

    def _recover(self) -> None:
        ledger = self.dir / LEDGER
        sizes: dict[str, int] = {}
        good_bytes = 0
        if ledger.exists():
            raw = ledger.read_bytes()
            pos = 0
            while pos < len(raw):
                end = raw.find(b"\n", pos)
                if end < 0:
                    log.warning("%s: dropping a torn last ledger line (interrupted commit)", ledger)
                    break
                try:
                    entry = json.loads(raw[pos:end])
                except json.JSONDecodeError as e:
                    raise StageError(f"{ledger}: damaged entry at byte {pos} ({e.msg}); "
                                     "delete the stage folder to redo it") from e
                self._done[entry["pass"]].update(entry["keys"])
                self._counters[entry["pass"]].update(entry["counters"])
                sizes = entry["sizes"]
                pos = good_bytes = end + 1
            if good_bytes < len(raw):
                with ledger.open("r+b") as f:
                    f.truncate(good_bytes)
        for name in self.outputs:
            path = self.path(name)
            want = int(sizes.get(name, 0))
            have = path.stat().st_size if path.exists() else 0
            if have < want:
                raise StageError(f"{path}: {have} bytes but the ledger committed {want}; "
                                 "the file was changed outside the pipeline")
            if have > want:
                log.info("%s: discarding %d bytes of an interrupted batch", path, have - want)
                with path.open("r+b") as f:
                    f.truncate(want)
            elif not path.exists():
                path.touch()

    # -- work -------------------------------------------------------------

    def _commit(self, pass_name: str, keys: list[str], results: list[ItemResult]) -> None:
        counters: collections.Counter = collections.Counter()
        lines: dict[str, list[str]] = collections.defaultdict(list)
        for result in results:
            counters.update(result.counters)
            for name, records in result.records.items():
                cls = self.outputs.get(name)
                if cls is None:
                    raise StageError(f"stage {self.stage!r} wrote to undeclared output {name!r}")
                for record in records:
                    if type(record) is not cls:
                        raise StageError(f"stage {self.stage!r}: {name} holds {cls.__name__} "
                                         f"records, got {type(record).__name__}")
                    lines[name].append(record.to_json() + "\n")
        for name in self.outputs:
            _append(self.path(name), lines.get(name, []), self.sync)
        sizes = {name: self.path(name).stat().st_size for name in self.outputs}
        entry = {"pass": pass_name, "keys": keys, "counters": dict(counters), "sizes": sizes}
        _append(self.dir / LEDGER, [_dump(entry)], self.sync)
        self._done[pass_name].update(keys)
        self._counters[pass_name].update(counters)

    def run_pass(self, pass_name: str, items: Sequence[Item],
                 process: Callable[[list[Item], int], list[ItemResult]],
                 batch_size: int, seed: int = 0) -> None:
        """Process `items` in fixed batches; `process(batch, seed)` returns one result per item.

        Batches are cut from the full item list (done or not), so a resumed run
        regroups nothing; a batch with every key committed is skipped.
        """
        from tqdm.auto import tqdm

        keys = [it.key for it in items]
        if len(set(keys)) != len(keys):
            dup = next(k for k, c in collections.Counter(keys).items() if c > 1)
            raise StageError(f"stage {self.stage!r} pass {pass_name!r}: duplicate item key {dup!r}")
        batch_size = max(1, int(batch_size))
        done = self._done[pass_name]
        bar = tqdm(total=len(items), initial=sum(k in done for k in keys), unit="item",
                   desc=f"{self.stage}:{pass_name}", disable=not self.progress, dynamic_ncols=True)
        tokens, t0 = 0, time.perf_counter()
        try:
            for start in range(0, len(items), batch_size):
                batch = list(items[start:start + batch_size])
                todo = [i for i, it in enumerate(batch) if it.key not in done]
                if not todo:
                    continue
                results = process(batch, stable_seed(seed, self.stage, pass_name, batch[0].key))
                if len(results) != len(batch):
                    raise StageError(f"stage {self.stage!r}: {len(results)} results for "
                                     f"{len(batch)} items")
                self._commit(pass_name, [batch[i].key for i in todo], [results[i] for i in todo])
                tokens += sum(results[i].tokens for i in todo)
                bar.update(len(todo))
                elapsed = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(tok_s=f"{tokens / elapsed:.0f}", refresh=False)
        finally:
            bar.close()
        log.info("%s:%s counters %s", self.stage, pass_name, dict(self._counters[pass_name]))

    # -- end --------------------------------------------------------------

    def finish(self, extra: Mapping[str, Any] | None = None) -> dict:
        self._undeclared_reads()
        outputs = {}
        for name in self.outputs:
            path = self.path(name)
            with path.open("rb") as f:
                n = sum(1 for line in f if line.strip())
            outputs[name] = {"records": n, "bytes": path.stat().st_size}
        manifest = {
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            "inputs": self._input_fingerprints,
            "counts": {p: dict(sorted(c.items())) for p, c in sorted(self._counters.items())},
            "outputs": outputs,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **dict(extra or {}),
        }
        tmp = self.dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if self.sync:
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, self.dir / MANIFEST)
        print(f"[{self.stage}] done: {self.dir}  counts={json.dumps(manifest['counts'])}")
        return manifest


def command(stage: str, run: Callable[[ConfigDict], Any]) -> Callable[[ConfigDict, list[str]], int]:
    """The `int-jax <stage>` entry point (see int_jax/cli.py) of a stage's `run`."""

    def main(config: ConfigDict, args: list[str]) -> int:
        if args:
            raise SystemExit(f"int-jax {stage} takes no positional arguments, got {args}")
        run(config)
        return 0

    main.__doc__ = f"`int-jax {stage}`: {run.__module__}.run(config)."
    return main
