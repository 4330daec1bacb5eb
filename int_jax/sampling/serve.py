"""`int-jax serve --config=configs/sampler.py:<preset>`: JetStream's gRPC server.

The same `Qwen3Engine` the rollouts use, behind JetStream's own
`JetStreamServer` / `LLMOrchestrator` (the `jetstream_pb2` Decode API), bound
to loopback unless `serve.host` says otherwise. gRPC requests carry no sampling
settings, so the server samples with `serve.temperature/top_p/top_k`. A
failing Driver thread stops the server and the command exits with an error;
Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import dataclasses
import logging

from ml_collections import ConfigDict

from int_jax.sampling import jetstream_compat as compat
from int_jax.sampling.engine import Qwen3Engine
from int_jax.sampling.types import SamplingParams

log = logging.getLogger("int_jax.serve")


@dataclasses.dataclass
class RunningServer:
    """A started server and its Driver; `stop()` is idempotent."""

    server: object
    driver: compat.GuardedDriver
    host: str
    port: int
    _stopped: bool = False

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.server.stop()  # stops the Driver, then gRPC


def start_server(engine: Qwen3Engine, *, host: str = "127.0.0.1", port: int = 9000,
                 threads: int = 16) -> RunningServer:
    """Start JetStream's gRPC server over `engine` (interleaved prefill + decode)."""
    driver = compat.GuardedDriver(engine, engine.params)
    try:
        server = compat.make_server(driver, port=port, host=host, threads=threads)
        server.start()
    except BaseException:
        driver.stop()
        raise
    return RunningServer(server=server, driver=driver, host=host, port=port)


def configure_engine(engine: Qwen3Engine, serve: ConfigDict) -> None:
    """The server's sampling defaults (gRPC requests carry no settings)."""
    engine.default_sampling = SamplingParams(temperature=float(serve.temperature),
                                             top_p=float(serve.top_p), top_k=int(serve.top_k))
    engine.default_max_new_tokens = int(serve.max_new_tokens)
    engine.seed = int(serve.seed)


def main(config: ConfigDict, args: list[str]) -> int:
    from int_jax.config_io import save_config  # noqa: PLC0415
    from int_jax.sampling.sampler import JetStreamSampler  # noqa: PLC0415

    if args:
        raise SystemExit(f"int-jax serve takes no positional arguments, got {args}")
    sampler_cfg = ConfigDict(config.sampler.to_dict())
    sampler = JetStreamSampler.from_config(config.model, sampler_cfg)
    configure_engine(sampler.engine, config.serve)
    if config.serve.get("output_dir"):
        save_config(config, config.serve.output_dir)
    running = start_server(sampler.engine, host=config.serve.host, port=int(config.serve.port),
                           threads=int(config.serve.threads))
    print(f"int-jax serve: JetStream gRPC on {running.host}:{running.port} "
          f"({compat.describe()}); Ctrl-C to stop", flush=True)
    try:
        while not running.driver.failed.wait(1.0):
            pass
    except KeyboardInterrupt:
        print("int-jax serve: stopping", flush=True)
        running.stop()
        return 0
    running.stop()
    running.driver.check()  # raises the thread's exception
    return 1
