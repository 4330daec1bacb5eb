"""The engine under JetStream 0.3.0's contract, driven by hand as 0.3.0's orchestrator would.

PyPI has only google-jetstream 0.2.2, whose Driver never calls the 0.3.0
methods, so `run_030` below plays 0.3.0's Driver (interleaved mode) against an
engine built with `api_version=(0, 3)`:

* prefill / prefill_multisampling return (prefix, first-token rows); the
  detokenizer reads the first token(s) at slot 0 of those rows, i.e. the first
  `samples_per_slot` rows;
* the prefix goes into a free slot with `insert`, or into `num_samples` free
  slots with `bulk_insert`, even when its first token already finished it;
* every generate step's rows are read at the request's slot(s); a sample is
  complete once its row's length exceeds max_tokens, or its token is a stop
  token or invalid (that token is still appended, as 0.3.0 does); a request's
  slots are freed when all its samples are complete;
* the engine's chunked-prefill properties must keep 0.3.0 off its chunked path.

What comes back must equal the 0.2.2 path (the real 0.2.2 Driver over a
default engine) token for token, with the same log-probabilities.
"""

import dataclasses

import jax.numpy as jnp
import numerics
import numpy as np
import pytest
from flax import nnx

from int_jax.models import qwen3
from int_jax.sampling import decode as decode_lib
from int_jax.sampling import jetstream_compat as compat
from int_jax.sampling.engine import Qwen3Engine, RequestSpec, request_key
from int_jax.sampling.sampler import JetStreamSampler
from int_jax.sampling.types import GREEDY, SamplingParams

CFG = qwen3.Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=16)
PROMPTS = [[5, 17, 3], list(range(40, 49)), list(range(100, 116)), [7, 7, 8, 9, 2], [1, 2]]
MAX_NEW = 6
ENGINE_KW = dict(slots=3, max_len=32, buckets=(16,), cache_dtype=jnp.float32)


@dataclasses.dataclass
class _Request:
    prompt: list
    max_tokens: int
    num_samples: int
    tokens: list = None  # what JetStream's return channel receives, per sample
    complete: np.ndarray = None

    def __post_init__(self):
        self.tokens = [[] for _ in range(self.num_samples)]
        self.complete = np.zeros(self.num_samples, bool)


def _read(request: _Request, rows: np.ndarray, stop_tokens) -> None:
    """0.3.0's detokenizer rule for one request's rows (one row per sample)."""
    request.complete |= rows[:, decode_lib.OUT_LENGTH] > request.max_tokens
    for i, row in enumerate(rows):
        if request.complete[i]:
            continue
        token, valid = int(row[decode_lib.OUT_TOKEN]), bool(row[decode_lib.OUT_VALID])
        request.tokens[i].append(token)
        if token in stop_tokens or not valid:
            request.complete[i] = True


def run_030(engine: Qwen3Engine, prompts, *, num_samples=1, sampling=GREEDY,
            max_tokens=MAX_NEW, seed=0):
    """Requests through 0.3.0's engine calls; returns (requests, listener rows by tag)."""
    assert engine.prefill_returns_first_token
    stop = set(engine.stop_ids)
    by_tag: dict[int, list] = {}
    engine.listener = lambda rows: [by_tag.setdefault(int(r[decode_lib.OUT_TAG]), []).append(r)
                                    for r in rows if r[decode_lib.OUT_VALID]]
    params = engine.load_params()
    state = engine.init_decode_state()
    free = list(range(engine.max_concurrent_decodes))
    pending = [_Request(list(p), max_tokens, num_samples) for p in prompts]
    requests, live = list(pending), {}  # live: slots tuple -> request
    try:
        while pending or live:
            while pending and len(free) >= num_samples:  # interleaved: prefill into free slots
                request = pending.pop(0)
                index = len(requests) - len(pending) - 1
                spec = RequestSpec(tag=index * num_samples, sampling=sampling,
                                   max_new_tokens=max_tokens, key=request_key(seed, index))
                compat.bind_request(compat.new_request(request.prompt, max_tokens, None, spec))
                padded, length = engine.pad_prompt(request.prompt)
                assert not (engine.use_chunked_prefill and length >= engine.prefill_chunk_size)
                if num_samples == 1:
                    prefix, first = engine.prefill(params=params, padded_tokens=padded,
                                                   true_length=length)
                else:
                    prefix, first = engine.prefill_multisampling(
                        params=params, padded_tokens=padded, true_length=length,
                        num_samples=num_samples)
                first = first.convert_to_numpy()
                _read(request, first.data[:first.samples_per_slot], stop)  # slot 0
                slots = tuple(free.pop(0) for _ in range(num_samples))
                if num_samples == 1:
                    state = engine.insert(prefix, state, slots[0])
                else:
                    state = engine.bulk_insert(prefix, state, slots=list(slots))
                live[slots] = request
            state, result = engine.generate(params, state)
            rows = result.convert_to_numpy().data
            for slots, request in list(live.items()):
                _read(request, rows[list(slots)], stop)
                if request.complete.all():
                    del live[slots]
                    free.extend(slots)
                    for slot in slots:
                        engine.free_resource(slot)
    finally:
        engine.listener = None
    return requests, by_tag


@pytest.fixture(scope="module")
def engines():
    assert compat.API_VERSION == (0, 2), "the reference is the PyPI 0.2.2 Driver"
    model = qwen3.create(CFG, seed=3)
    # A stop id that prompt 0's greedy run meets at its 3rd token: requests then finish at
    # different steps and slots are reused mid-run.
    forward = nnx.jit(lambda m, ids: m(ids)[0])
    seq = list(PROMPTS[0])
    for _ in range(3):
        padded = np.zeros((1, 16), np.int32)
        padded[0, :len(seq)] = seq  # right padding cannot change causal logits
        seq.append(int(jnp.argmax(forward(model, jnp.asarray(padded))[len(seq) - 1])))
    stop = seq[-1]
    # Logprobs of one model from two engines (its programs may reduce in other orders):
    # the chain bound over the 32-row cache, through a log-softmax (tests/numerics.py).
    logprob_tol = numerics.log_softmax_tol(numerics.qwen3_logit_tol(model, ENGINE_KW["max_len"]),
                                           numerics.qwen3_logit_magnitude(model), CFG.vocab_size)
    reference = JetStreamSampler(model, None, stop_ids=(stop,), progress=False, **ENGINE_KW)
    engine = Qwen3Engine(model, stop_ids=(stop,), api_version=(0, 3), **ENGINE_KW)
    return dict(reference=reference, engine=engine, stop=stop, logprob_tol=logprob_tol)


def test_030_prefill_insert_generate_equals_022_driver(engines):
    engine, stop = engines["engine"], engines["stop"]
    ref = engines["reference"].generate(PROMPTS, n=1, sampling=GREEDY, max_new_tokens=MAX_NEW,
                                        seed=0)
    assert ref[0][0].finish_reason == "stop" and len(ref[0][0].tokens) == 3
    assert any(row[0].finish_reason == "length" for row in ref)
    assert engine.use_chunked_prefill is False
    assert engine.prefill_chunk_size == engine.max_prefill_length == 16
    requests, by_tag = run_030(engine, PROMPTS)
    for i, (request, row) in enumerate(zip(requests, ref)):
        c = row[0]
        assert request.tokens == [c.tokens], (i, request.tokens, c.tokens)
        rows = np.stack(by_tag[i])
        assert rows[:, decode_lib.OUT_TOKEN].tolist() == c.tokens
        _, _, lengths, _, lps, mlps, finish = decode_lib.unpack_rows(rows)
        assert lengths.tolist() == list(range(1, len(c.tokens) + 1))
        numerics.assert_within(mlps, c.model_logprobs, engines["logprob_tol"], "model logprobs")
        numerics.assert_within(lps, c.logprobs, engines["logprob_tol"], "logprobs")
        expected_finish = decode_lib.FINISH_STOP if c.finish_reason == "stop" else decode_lib.FINISH_LENGTH
        assert finish.tolist() == [decode_lib.FINISH_NONE] * (len(c.tokens) - 1) + [expected_finish]


def test_030_multisampling_and_bulk_insert(engines):
    engine, stop = engines["engine"], engines["stop"]
    prompts = [PROMPTS[1], PROMPTS[3]]
    ref = engines["reference"].generate(prompts, n=1, sampling=GREEDY, max_new_tokens=MAX_NEW,
                                        seed=0)
    # Greedy: three samples per prompt in three slots, each equal to the 0.2.2 greedy output,
    # every first token delivered through the request's channel (not only sample 0's).
    requests, by_tag = run_030(engine, prompts, num_samples=3)
    for i, (request, row) in enumerate(zip(requests, ref)):
        assert request.tokens == [row[0].tokens] * 3
        for j in range(3):
            rows = np.stack(by_tag[3 * i + j])
            numerics.assert_within(decode_lib.unpack_rows(rows)[5], row[0].model_logprobs,
                                   engines["logprob_tol"], "model logprobs")
    # Sampled: each sample has its own key, so one prefill yields different continuations.
    sampling = SamplingParams(temperature=1.0, top_p=1.0, top_k=0)
    requests, _ = run_030(engine, prompts[:1], num_samples=3, sampling=sampling, seed=4)
    samples = requests[0].tokens
    assert len({tuple(s) for s in samples}) == 3, samples
    # One prefix for several slots would decode one sample several times: refused.
    padded, length = engine.pad_prompt(prompts[0])
    prefix, _ = engine.prefill(params=engine.load_params(), padded_tokens=padded, true_length=length)
    with pytest.raises(ValueError, match="1 prefixes for 2 slots"):
        engine.bulk_insert(prefix, engine.init_decode_state(), slots=[0, 1])
