"""Everything JetStream needs patched or worked around, in one place.

Supported: PyPI google-jetstream 0.2.2 and upstream 0.3.0. What differs or
breaks, and what this module does about it:

* API version. 0.3.0's `prefill` returns `(prefix, first tokens)` and adds
  `bulk_insert`, `prefill_multisampling` and chunked-prefill properties;
  `API_VERSION` tells the engine which contract to follow by default
  (`Qwen3Engine(api_version=...)` overrides it; tests drive 0.3.0 by hand).
* 0.2.2's orchestrator calls `jax.tree_map` (removed from JAX) when it frees a
  prefix; the thread would die. `orchestrator.delete_pytree` is replaced by one
  using `jax.tree.map` (the engine's prefixes hold no arrays of their own to free:
  their keys and values live in the engine's page pool).
* A failing Driver thread calls `os.kill(SIGKILL)` on the whole process.
  `GuardedDriver` builds its threads from `_GuardedThread` instead: the
  exception is recorded (traceback intact), the thread ends, and the caller
  re-raises it after a clean `stop()`. All threads are daemons, so a caller that
  forgets `stop()` cannot hang interpreter exit (0.2.2's detokenizer is not).
* 0.2.2's orchestrator sets the root logger to DEBUG and adds a stdout handler
  at import, logging every decode step; both are undone right after import.
* The Driver pads token prompts with a BOS (Qwen3 has none) and silently keeps
  the last tokens of an over-long prompt. `GuardedDriver` pads itself (no BOS)
  and rejects a prompt longer than the largest bucket when it is submitted.
* No per-request sampling settings reach `Engine.prefill`. The Driver binds
  the request being prefilled to its prefill thread (`bind_request`) and the
  engine reads it (`take_bound_request`); requests without settings (plain
  gRPC) get the engine's defaults.
* Log-probabilities and finish reasons never come back through the Driver.
  The engine's step rows carry them (`StepRows`); when the detokenizer pulls a
  step to host, `StepRows.convert_to_numpy` hands the rows to a listener, then
  puts them in slot order (the engine maps JetStream's slots onto its rows).
* The Driver admits by free slots only. The engine's prefill waits for KV pages;
  `GuardedDriver.stop` tells such a wait to give up (`Stopped`), quietly. While it
  waits, the Driver's prefill queue reads as empty: in interleaved mode the generate
  thread otherwise keeps waiting for that prefill instead of stepping the sequences
  whose end would free the pages (a deadlock).
* `server_lib` binds gRPC to all interfaces; `make_server` binds a chosen host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import inspect
import logging
import queue
import sys
import threading
from typing import Any, Sequence

import flax.struct
import jax
import numpy as np

from int_jax.sampling.types import SamplerFailure
from jetstream.engine import engine_api, tokenizer_api


def _import_orchestrator_quietly():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    from jetstream.core import orchestrator  # noqa: PLC0415 - import side effects undone below

    root.setLevel(level)
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    return orchestrator


orchestrator = _import_orchestrator_quietly()

try:
    JETSTREAM_VERSION = importlib.metadata.version("google-jetstream")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
    JETSTREAM_VERSION = "unknown"

# 0.3.0 API: prefill returns (prefix, first-token ResultTokens); insert takes request_id.
PREFILL_RETURNS_FIRST_TOKEN = hasattr(engine_api.Engine, "bulk_insert")
API_VERSION = (0, 3) if PREFILL_RETURNS_FIRST_TOKEN else (0, 2)
_DRIVER_PARAMS = set(inspect.signature(orchestrator.Driver.__init__).parameters)


# --------------------------------------------------------------------------- freeing prefixes


def _delete_pytree(prefix):
    """Free a prefill result's device buffers early (0.2.2 calls jax.tree_map here)."""
    for leaf in jax.tree.leaves(prefix):
        if isinstance(leaf, jax.Array) and not leaf.is_deleted():
            leaf.delete()


if hasattr(orchestrator, "delete_pytree"):
    orchestrator.delete_pytree = _delete_pytree


# --------------------------------------------------------------------------- step rows


@flax.struct.dataclass
class StepRows(engine_api.ResultTokens):
    """JetStream's ResultTokens plus extra columns, handed to `listener` on host.

    `order[slot]` is the row holding `slot` (None: rows are slots)."""

    listener: Any = flax.struct.field(pytree_node=False, default=None)
    order: Any = flax.struct.field(pytree_node=False, default=None)

    def convert_to_numpy(self) -> "StepRows":
        host = np.asarray(self.data)
        if self.listener is not None:
            self.listener(host)
        if self.order is not None:
            host = host[self.order]
        return dataclasses.replace(self, data=host, listener=None, order=None)


def step_rows(data, listener=None, samples_per_slot: int = 1, order=None) -> StepRows:
    """Rows laid out as decode.OUT_*: token, valid, length, then extras."""
    return StepRows(data=data, tokens_idx=(0, 1), valid_idx=(1, 2), length_idx=(2, 3),
                    samples_per_slot=int(samples_per_slot), listener=listener, order=order)


# --------------------------------------------------------------------------- request binding

_BOUND = threading.local()


def bind_request(request) -> None:
    """Record the request the calling (prefill) thread is about to prefill."""
    _BOUND.request = request


def take_bound_request():
    """The request bound by this thread, once (None when none was bound)."""
    request = getattr(_BOUND, "request", None)
    _BOUND.request = None
    return request


# --------------------------------------------------------------------------- tokenizers


class HFTokenizer(tokenizer_api.Tokenizer):
    """JetStream's tokenizer API over a transformers tokenizer; no BOS is added."""

    def __init__(self, tokenizer, stop_ids: Sequence[int], pad_id: int):
        self._tok = tokenizer
        self._stop = set(int(s) for s in stop_ids)
        self._pad = int(pad_id)

    def encode(self, s: str, **kwargs):
        ids = np.asarray(self._tok.encode(s, add_special_tokens=False), np.int32)
        return ids, len(ids)

    def decode(self, token_ids: list[int], **kwargs) -> str:
        return self._tok.decode(token_ids, skip_special_tokens=False)

    @property
    def pad_id(self) -> int:
        return self._pad

    @property
    def eos_id(self) -> int:
        return min(self._stop) if self._stop else self._pad

    @property
    def bos_id(self) -> int:
        return self._pad  # never used: GuardedDriver adds no BOS

    @property
    def stop_tokens(self) -> set[int]:
        return set(self._stop)


class IdTokenizer(HFTokenizer):
    """Token ids as text ("5 17 3"): for models without a real tokenizer (tests)."""

    def __init__(self, stop_ids: Sequence[int], pad_id: int):
        super().__init__(None, stop_ids, pad_id)

    def encode(self, s: str, **kwargs):
        ids = np.asarray([int(w) for w in s.split()], np.int32)
        return ids, len(ids)

    def decode(self, token_ids: list[int], **kwargs) -> str:
        return " ".join(str(int(t)) for t in token_ids)


# --------------------------------------------------------------------------- driver


class DriverFailure(SamplerFailure):
    """A JetStream Driver thread raised; the original exception is the __cause__."""


class _GuardedThread(threading.Thread):
    """A Driver thread that reports its exception to the Driver instead of SIGKILL."""

    def __init__(self, *args, owner: "GuardedDriver", **kwargs):
        kwargs["daemon"] = True
        super().__init__(*args, **kwargs)
        self._owner = owner

    def run(self):
        try:
            super().run()
        except BaseException as e:  # noqa: BLE001 - every failure must reach the caller
            self._owner._record_failure(self.name, e)


_CONSTRUCT_LOCK = threading.Lock()


class RequestChannel:
    """A request's return channel: signals completion (tokens arrive as step rows)."""

    def __init__(self, key, done: "queue.Queue"):
        self.key = key
        self._done = done

    def add_result(self, result) -> None:
        pass  # the engine's listener already has every row

    def close(self) -> None:
        self._done.put(self.key)

    def cancel(self, unused=None) -> None:
        self.close()


def new_request(prompt: Sequence[int], max_tokens: int, channel: RequestChannel, spec=None):
    """An ActiveRequest for token ids (no BOS, ids returned, never detokenized per token)."""
    req = orchestrator.ActiveRequest(max_tokens=int(max_tokens), return_channel=channel,
                                     prefill_content=[int(t) for t in prompt],
                                     is_client_side_tokenization=True)
    req.int_jax_spec = spec
    return req


class _PrefillBacklog(queue.Queue):
    """The Driver's prefill queue; empty while the engine's prefill waits for memory."""

    engine_waiting: Any = staticmethod(lambda: False)

    def empty(self) -> bool:
        return self.engine_waiting() or super().empty()


class GuardedDriver(orchestrator.Driver):
    """JetStream's Driver over one interleaved engine, made safe to embed.

    Use `check()` (raises `DriverFailure` from the thread's exception) while
    waiting on results and always `stop()` when done.
    """

    def __init__(self, engine, params, *, interleaved: bool = True):
        self.failure: tuple[str, BaseException] | None = None
        self.failed = threading.Event()
        self._engine = engine
        kwargs = dict(prefill_engines=[engine], generate_engines=[engine],
                      prefill_params=[params], generate_params=[params],
                      interleaved_mode=interleaved, jax_padding=False)
        kwargs = {k: v for k, v in kwargs.items() if k in _DRIVER_PARAMS}
        engine.pages.allow_waiting()
        with _CONSTRUCT_LOCK:
            original = orchestrator.JetThread
            orchestrator.JetThread = _thread_factory(self)
            try:
                super().__init__(**kwargs)
            finally:
                orchestrator.JetThread = original
        # The threads already use this queue object: change its class, not the object.
        self._prefill_backlog.__class__ = _PrefillBacklog
        self._prefill_backlog.engine_waiting = lambda: engine.pages.waiting > 0

    def _record_failure(self, thread_name: str, error: BaseException) -> None:
        if getattr(error, "quiet_stop", False):  # a wait given up because we stop
            return
        if self.failure is None:
            self.failure = (thread_name, error)
        self.failed.set()
        self.live = False

    def check(self) -> None:
        """Raise the first Driver-thread exception, if any (the caller then stops)."""
        if self.failure is not None:
            name, error = self.failure
            raise DriverFailure(f"JetStream Driver thread {name!r} failed: "
                                f"{type(error).__name__}: {error}") from error

    def stop(self) -> None:
        """Stop the threads; a prefill waiting for KV pages gives up first."""
        self._engine.pages.stop_waiting()
        super().stop()

    def place_request_on_prefill_queue(self, request) -> None:
        """Reject a request that could never run (too long a prompt, or more KV pages than
        the pool has) before it is queued."""
        content = request.prefill_content
        length = (len(content) if not isinstance(content, str)
                  else len(self._engine.tokenizer_adapter().encode(content)[0]))
        if not request.max_tokens or request.max_tokens <= 0:
            request.max_tokens = self._engine.default_max_new_tokens
        self._engine.check_request(length, request.max_tokens)
        super().place_request_on_prefill_queue(request)

    def _process_prefill_content(self, request, tokenizer, *args, **kwargs):
        """Pad to a bucket with no BOS; bind the request for the engine's prefill."""
        content = request.prefill_content
        ids = tokenizer.encode(content)[0] if isinstance(content, str) else content
        padded, length = self._engine.pad_prompt(ids)
        bind_request(request)
        return padded, length


def _thread_factory(owner):
    def make(*args, **kwargs):
        return _GuardedThread(*args, owner=owner, **kwargs)

    return make


# --------------------------------------------------------------------------- server


@contextlib.contextmanager
def _server_host(host: str):
    from jetstream.core import server_lib  # noqa: PLC0415

    with _CONSTRUCT_LOCK:
        original = server_lib._HOST
        server_lib._HOST = host
        try:
            yield server_lib
        finally:
            server_lib._HOST = original


def make_server(driver, *, port: int, host: str = "127.0.0.1", threads: int = 16):
    """JetStream's gRPC server (not yet started) bound to host:port."""
    import grpc  # noqa: PLC0415

    with _server_host(host if ":" not in host else f"[{host}]") as server_lib:
        return server_lib.JetStreamServer(driver, threads, port, grpc.insecure_server_credentials())


def describe() -> str:
    return f"google-jetstream {JETSTREAM_VERSION} (API {API_VERSION[0]}.{API_VERSION[1]}), python {sys.version.split()[0]}"
