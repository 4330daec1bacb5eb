"""`int-jax serve`: a real gRPC Decode request against JetStream's server over our engine."""

import socket

import grpc
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hf_checkpoints import make_hf_checkpoint
from int_jax.models import hf
from int_jax.sampling import serve
from int_jax.sampling.engine import Qwen3Engine
from jetstream.core.proto import jetstream_pb2, jetstream_pb2_grpc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@nnx.jit
def _forward(model, ids):
    return model(ids)[0]


def _greedy(model, prompt, n, pad_to=16):
    """Greedy by repeated full forwards (no cache), jitted once at a fixed padded length:
    right padding cannot change causal logits."""
    seq = list(prompt)
    for _ in range(n):
        padded = np.zeros((1, pad_to), np.int32)
        padded[0, :len(seq)] = seq
        seq.append(int(jnp.argmax(_forward(model, jnp.asarray(padded))[len(seq) - 1])))
    return seq[len(prompt):]


def test_grpc_decode_streams_greedy_tokens(tmp_path):
    make_hf_checkpoint(tmp_path, vocab_size=256, hidden_size=64, num_layers=2, seed=3)
    model = hf.from_pretrained(tmp_path, dtype=jnp.float32, param_dtype=jnp.float32)
    engine = Qwen3Engine(model, slots=2, max_len=64, buckets=(8, 16), cache_dtype=jnp.float32,
                         stop_ids=(), default_max_new_tokens=4)
    port = _free_port()
    running = serve.start_server(engine, host="127.0.0.1", port=port, threads=4)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = jetstream_pb2_grpc.OrchestratorStub(channel)
            prompt = [11, 42, 7, 99, 5]

            def decode(ids, max_tokens):
                req = jetstream_pb2.DecodeRequest(
                    max_tokens=max_tokens,
                    token_content=jetstream_pb2.DecodeRequest.TokenContent(token_ids=ids))
                return [t for r in stub.Decode(req, timeout=120)
                        for s in r.stream_content.samples for t in s.token_ids]

            assert decode(prompt, 6) == _greedy(model, prompt, 6)
            assert decode(prompt, 0) == _greedy(model, prompt, 4)  # 0: the server default
            with pytest.raises(grpc.RpcError) as err:
                decode(list(range(20)), 3)  # longer than the largest bucket (16)
            assert "largest prefill bucket" in err.value.details()
            assert stub.HealthCheck(jetstream_pb2.HealthCheckRequest(), timeout=30).is_live
    finally:
        running.stop()
    assert running.driver.failure is None
