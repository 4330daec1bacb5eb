"""Typed records that flow between pipeline stages, stored as JSON Lines.

problems -> rollouts -> proposals -> interventions (+ continuations) -> SFT examples,
and eval samples.
Every record carries the ids of what it came from (provenance). Files are append-only:
``append_records`` writes each record as one whole line in a single ``write`` and
fsyncs, so a crash can at worst cut off the last line. ``read_records`` skips such a
cut-off last line with a warning; any other malformed line is an error that names the
file, the line and the field, because silently dropping data corrupts paper tables.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from int_jax.grading.grade import Grade

R = TypeVar("R", bound="Record")

SEGMENT_KINDS = ("prefix", "intervention", "suffix", "response")
# What a continuation is conditioned on, after the problem (see stages/continuation.py).
CONTINUATION_CONDITIONS = ("intervention", "problem", "prefix", "original")
_GRADES = frozenset(g.value for g in Grade)


class RecordError(ValueError):
    """A record that does not match its type; says where (file, line) and which field."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None,
                 line: int | None = None, field: str | None = None):
        self.reason, self.path, self.line, self.field = message, path, line, field
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        elif line is not None:
            where = f"line {line}: "
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}{what}{message}")


def _check(value: Any, tp: Any, field: str) -> Any:
    """Validate (and for nested records, build) one field value against its type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, field)
            except RecordError:
                pass
        raise RecordError(f"expected {tp}, got {type(value).__name__}", field=field)
    if origin is list:
        if not isinstance(value, list):
            raise RecordError(f"expected a list, got {type(value).__name__}", field=field)
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_check(v, item_tp, f"{field}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecordError(f"expected an object, got {type(value).__name__}", field=field)
        return value
    if tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, Record):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise RecordError(f"expected an object, got {type(value).__name__}", field=field)
        try:
            return tp.from_dict(value)
        except RecordError as e:
            inner = f"{field}.{e.field}" if e.field else field
            raise RecordError(e.reason, field=inner) from None
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise RecordError(f"expected {tp.__name__}, got {type(value).__name__}", field=field)
    return value


@dataclasses.dataclass
class Record:
    """Base of all records: strict ``from_dict`` and a stable ``to_json``."""

    _hints: ClassVar[dict[type, dict[str, Any]]] = {}

    @classmethod
    def _types(cls) -> dict[str, Any]:
        if cls not in Record._hints:
            Record._hints[cls] = typing.get_type_hints(cls)
        return Record._hints[cls]

    @classmethod
    def from_dict(cls: type[R], data: dict) -> R:
        if not isinstance(data, dict):
            raise RecordError(f"expected a JSON object for {cls.__name__}, got "
                              f"{type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in fields:
                raise RecordError(f"unknown field for {cls.__name__}", field=key)
        hints = cls._types()
        kwargs = {}
        for name, f in fields.items():
            if name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise RecordError(f"missing required field of {cls.__name__}", field=name)
                continue
            kwargs[name] = _check(data[name], hints[name], name)
        try:
            return cls(**kwargs)
        except RecordError:
            raise
        except (TypeError, ValueError) as e:
            raise RecordError(str(e)) from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """One line of JSON; keys in field order, so equal records give equal lines."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls: type[R], line: str) -> R:
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordError(f"invalid JSON ({e.msg} at column {e.colno})") from None
        return cls.from_dict(data)


def _check_grade(value: str | None, field: str = "grade", *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if value not in _GRADES:
        raise RecordError(f"unknown grade {value!r}; expected one of {sorted(_GRADES)}",
                          field=field)


@dataclasses.dataclass
class Problem(Record):
    """A problem with its gold answer (and, for training problems, a reference solution)."""

    id: str
    problem: str
    answer: str
    reference_solution: str | None = None
    source: str = ""
    meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Rollout(Record):
    """One sampled attempt at a problem, graded."""

    id: str
    problem_id: str
    sample_index: int
    prompt: str
    completion: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""  # "stop" | "length" | sampler-specific
    grade: str | None = None  # a Grade value
    answer: str | None = None  # the extracted final answer
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_grade(self.grade)

    @property
    def correct(self) -> bool:
        return self.grade == Grade.CORRECT.value


@dataclasses.dataclass
class Proposal(Record):
    """One self-proposed intervention for a failed rollout, parsed or rejected."""

    id: str
    rollout_id: str
    problem_id: str
    index: int
    text: str  # the raw model output
    location: int | None = None  # 1-based step number
    content: str | None = None  # the replacement step
    rejection: str | None = None  # why it was dropped (unparsable, out of range, leaky...)
    completion_tokens: int = 0
    finish_reason: str = ""  # "stop" | "length" | sampler-specific
    meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Intervention(Record):
    """A proposal that passed the filters, with its counterfactual continuation counts."""

    id: str
    problem_id: str
    rollout_id: str
    proposal_id: str
    location: int
    content: str
    num_steps: int
    continuations: int = 0
    correct_continuations: int = 0
    meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Continuation(Record):
    """m graded continuations of one intervention's unfinished attempt under one
    conditioning (the counterfactual check and the controls of the paper's Table 1)."""

    id: str
    intervention_id: str
    problem_id: str
    condition: str  # one of CONTINUATION_CONDITIONS
    grades: list[str]  # Grade values, one per continuation
    answers: list[str | None]  # the extracted final answers
    completion_tokens: list[int]
    finish_reasons: list[str]
    texts: list[str] | None = None  # kept only when asked for (large)
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.condition not in CONTINUATION_CONDITIONS:
            raise RecordError(f"unknown condition {self.condition!r}; expected one of "
                              f"{CONTINUATION_CONDITIONS}", field="condition")
        for i, g in enumerate(self.grades):
            _check_grade(g, f"grades[{i}]", optional=False)
        lists = {"answers": self.answers, "completion_tokens": self.completion_tokens,
                 "finish_reasons": self.finish_reasons}
        if self.texts is not None:
            lists["texts"] = self.texts
        for name, values in lists.items():
            if len(values) != len(self.grades):
                raise RecordError(f"{len(values)} entries for {len(self.grades)} grades",
                                  field=name)

    @property
    def m(self) -> int:
        return len(self.grades)

    @property
    def num_correct(self) -> int:
        return sum(g == Grade.CORRECT.value for g in self.grades)


@dataclasses.dataclass
class Segment(Record):
    """A piece of an SFT response; ``kind`` decides whether it carries loss."""

    kind: str
    text: str

    def __post_init__(self) -> None:
        if self.kind not in SEGMENT_KINDS:
            raise RecordError(f"unknown segment kind {self.kind!r}; expected one of "
                              f"{SEGMENT_KINDS}", field="kind")


@dataclasses.dataclass
class SFTExample(Record):
    """A training example: chat messages as the prompt, the response as segments."""

    id: str
    problem_id: str
    messages: list[dict]  # [{"role": ..., "content": ...}] before the response
    segments: list[Segment]
    intervention_id: str | None = None
    rollout_id: str | None = None
    proposal_id: str | None = None
    meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class EvalSample(Record):
    """One graded evaluation sample of a benchmark problem."""

    problem_id: str
    benchmark: str
    sample_index: int
    text: str
    grade: str
    answer: str | None = None
    num_tokens: int = 0
    finish_reason: str = ""
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_grade(self.grade)


# ---- JSON Lines I/O ---------------------------------------------------------------


def _drop_torn_tail(path: Path) -> None:
    """Before appending, cut a crash-truncated last line so that it cannot fuse with
    the next record into a malformed middle line."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        block = 1 << 16
        end = size
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            end = start
        else:
            keep = 0
        warnings.warn(f"{path}: dropping a cut-off last line ({size - keep} bytes) "
                      "before appending", stacklevel=3)
        f.truncate(keep)


def append_records(path: str | os.PathLike, records: Iterable[Record]) -> int:
    """Append records, one whole line per ``write``; fsync before returning.

    Returns the number written. A crash mid-call leaves whole lines plus at most one
    cut-off last line, which readers skip and the next append removes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _drop_torn_tail(path)
    n = 0
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for record in records:
            data = (record.to_json() + "\n").encode("utf-8")
            written = os.write(fd, data)
            while written < len(data):  # only on exotic filesystems; keep the line whole
                written += os.write(fd, data[written:])
            n += 1
        os.fsync(fd)
    finally:
        os.close(fd)
    return n


def write_records(path: str | os.PathLike, records: Iterable[Record]) -> int:
    """Replace ``path`` with these records, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    n = append_records(tmp, records)
    os.replace(tmp, path)
    return n


def iter_records(path: str | os.PathLike, cls: type[R]) -> Iterator[R]:
    """Records of type ``cls`` from a JSONL file (see the module doc for errors)."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")  # after a final newline, the last entry is empty (skipped)
    torn_candidate = not raw.endswith(b"\n")
    last = len(lines)
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
            yield cls.from_json(text)
        except (RecordError, UnicodeDecodeError) as e:
            if torn_candidate and lineno == last:
                warnings.warn(f"{path}:{lineno}: skipping a cut-off last line", stacklevel=2)
                return
            if isinstance(e, RecordError):
                raise RecordError(e.reason, path=path, line=lineno, field=e.field) from None
            raise RecordError(f"not UTF-8 ({e.reason})", path=path, line=lineno) from None


def read_records(path: str | os.PathLike, cls: type[R]) -> list[R]:
    return list(iter_records(path, cls))
