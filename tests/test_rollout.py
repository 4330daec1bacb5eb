"""The JetStream-backed sampler against plain full forwards (tiny random Qwen3, fp32, CPU).

One sampler (2 slots, so requests outnumber slots and slots are reused) is
compiled once per module and shared by the tests.
"""

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest
from flax import nnx

from hf_checkpoints import make_hf_checkpoint
from int_jax.models import hf
from int_jax.sampling import decode as decode_lib
from int_jax.sampling import sample as sample_lib
from int_jax.sampling.engine import Qwen3Engine
from int_jax.sampling.sampler import JetStreamSampler
from int_jax.sampling.types import GREEDY, SamplingParams

PROMPTS = [[5, 17, 3], list(range(40, 49)), list(range(100, 117)), [7, 7, 8, 9, 2], list(range(300, 312))]
MAX_NEW = 8
MAX_LEN = 64  # the sampler's cache: no reduction here runs over more keys or positions


def logit_tol(model):
    """Cached decode / prefill vs a plain forward: two fp32 evaluations of the chain."""
    return numerics.qwen3_logit_tol(model, MAX_LEN)


def logprob_tol(model, temperature=1.0):
    """Log-probabilities (also truncated ones) from logits within `logit_tol`."""
    return numerics.log_softmax_tol(logit_tol(model), numerics.qwen3_logit_magnitude(model),
                                    model.config.vocab_size, temperature)


_PAD_TO = 48


@nnx.jit
def _padded_forward(model, ids):
    return model(ids)[0]


def full_logits(model, ids, pad_to: int = _PAD_TO):
    """Plain forward (no cache) of `ids` right-padded to `pad_to` (one compile per length);
    right padding cannot change causal logits."""
    padded = np.zeros((1, pad_to), np.int32)
    padded[0, :len(ids)] = ids
    return _padded_forward(model, jnp.asarray(padded))[:len(ids)]


def greedy_reference(model, prompt, max_new, stop_ids=()):
    """Greedy by repeated full forwards, no cache."""
    seq, out = list(prompt), []
    for _ in range(max_new):
        tok = int(jnp.argmax(full_logits(model, seq)[-1]))
        out.append(tok)
        seq.append(tok)
        if tok in stop_ids:
            break
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    make_hf_checkpoint(path, vocab_size=512, hidden_size=64, num_layers=2, seed=0)
    model = hf.from_pretrained(path, dtype=jnp.float32, param_dtype=jnp.float32)
    free = [greedy_reference(model, p, MAX_NEW) for p in PROMPTS]
    # A stop id that ends prompt 0's greedy run early, so slots free up mid-batch.
    stop = free[0][3]
    refs = [greedy_reference(model, p, MAX_NEW, (stop,)) for p in PROMPTS]
    sampler = JetStreamSampler(model, None, slots=2, max_len=MAX_LEN, buckets=(8, 16, 32),
                               cache_dtype=jnp.float32, stop_ids=(stop,), progress=False,
                               stall_timeout_s=120)
    return dict(model=model, sampler=sampler, refs=refs, stop=stop, path=path)


def test_greedy_through_driver_equals_full_forward_greedy(setup):
    sampler, refs, stop = setup["sampler"], setup["refs"], setup["stop"]
    out = sampler.generate(PROMPTS, n=1, sampling=GREEDY, max_new_tokens=MAX_NEW, seed=0)
    assert [len(row) for row in out] == [1] * len(PROMPTS)
    assert any(len(r) < MAX_NEW for r in refs)  # some sequences stop early
    for prompt, row, ref in zip(PROMPTS, out, refs):
        c = row[0]
        assert c.tokens == ref, (prompt, c.tokens, ref)
        assert c.finish_reason == ("stop" if ref[-1] == stop else "length")
        assert len(c.logprobs) == len(c.model_logprobs) == len(c.tokens)
    # Identical-prompt reuse is not involved here; compiles stay bounded: pool, init, insert,
    # page copy, step, draw, and one prefill per (prompts per call: 1 or 2 slots) x bucket.
    assert sampler.engine.compile_stats.count <= 6 + 2 * 3


def test_logprobs_match_a_plain_forward_and_results_stay_in_order(setup):
    model, sampler, stop = setup["model"], setup["sampler"], setup["stop"]
    sampling = SamplingParams(temperature=0.8, top_p=0.9, top_k=20)
    prompts = [PROMPTS[1], PROMPTS[3]]
    hits0, misses0 = sampler.engine.prefix_cache_stats
    out = sampler.generate(prompts, n=3, sampling=sampling, max_new_tokens=6, seed=11)
    # n identical prompts are prefilled (at most) once each.
    hits, misses = sampler.engine.prefix_cache_stats
    assert misses - misses0 <= len(prompts) and hits - hits0 + misses - misses0 == 3 * len(prompts)
    assert [len(row) for row in out] == [3, 3]
    for prompt, row in zip(prompts, out):
        for c in row:
            logits = full_logits(model, prompt + c.tokens)[len(prompt) - 1:-1]  # predicts each token
            idx = np.arange(len(c.tokens))
            model_lp = np.asarray(jax.nn.log_softmax(logits, -1))[idx, c.tokens]
            numerics.assert_within(c.model_logprobs, model_lp, logprob_tol(model), "model logprobs")
            n = len(c.tokens)
            probs = np.asarray(sample_lib.truncated_distribution(
                logits, jnp.full((n,), 0.8), jnp.full((n,), 0.9), jnp.full((n,), 20)))
            numerics.assert_within(c.logprobs, np.log(probs[idx, c.tokens]),
                                   logprob_tol(model, temperature=0.8), "sampling logprobs")
            # finish_reason is `length` exactly when max_new_tokens was hit.
            if c.finish_reason == "length":
                assert len(c.tokens) == 6 and stop not in c.tokens
            else:
                assert c.tokens[-1] == stop and stop not in c.tokens[:-1] and len(c.tokens) <= 6
    # Same seed, same layout: the same samples.
    again = sampler.generate(prompts, n=3, sampling=sampling, max_new_tokens=6, seed=11)
    assert [[c.tokens for c in row] for row in again] == [[c.tokens for c in row] for row in out]


def test_kv_cache_logits_equal_full_forward_at_every_step(setup):
    """Prefill into pages + insert + decode steps, for two rows at different lengths,
    with 4-token pages so sequences cross pages while decoding."""
    model = setup["model"]
    engine = Qwen3Engine(model, slots=2, max_len=MAX_LEN, buckets=(8, 16, 32),
                         cache_dtype=jnp.float32, stop_ids=(), page_size=4)
    params = engine.params
    state = engine.init_decode_state()
    prompts = [PROMPTS[0], PROMPTS[2]]
    for slot, prompt in enumerate(prompts):
        holds, _ = engine.admit(prompt, 50)
        logits = engine.prefill_admitted(params, [(prompt, holds, None)])[0]
        numerics.assert_within(logits, full_logits(model, prompt)[-1], logit_tol(model), "prefill")
        prefix = engine.make_prefixes(logits, holds, [(slot, np.zeros(2, np.uint32))], GREEDY, 50)[0]
        state = engine.insert(prefix, state, slot)
    seqs = [list(p) for p in prompts]
    for _ in range(6):
        step_logits = engine.core.step_logits(params.state, state)  # what the next step computes
        for slot in range(2):
            seqs[slot].append(int(state.token[slot]))
            ref = full_logits(model, seqs[slot])[-1]
            numerics.assert_within(step_logits[slot], ref, logit_tol(model), "decode step")
        state, _ = engine.generate(params, state)


def test_bad_prompts_are_clear_errors(setup):
    sampler = setup["sampler"]
    with pytest.raises(decode_lib.PromptTooLongError, match="prompt 1.*largest prefill bucket"):
        sampler.generate([[1, 2], list(range(33))], n=1, sampling=GREEDY, max_new_tokens=2, seed=0)
    with pytest.raises(ValueError, match="prompt 0.*max_len=64"):
        sampler.generate([list(range(30))], n=1, sampling=GREEDY, max_new_tokens=40, seed=0)
    with pytest.raises(ValueError, match="prompt 0: token id outside"):
        sampler.generate([[1, 600]], n=1, sampling=GREEDY, max_new_tokens=2, seed=0)
    with pytest.raises(ValueError, match="prompt 0: expected a non-empty"):
        sampler.generate([[]], n=1, sampling=GREEDY, max_new_tokens=2, seed=0)


def test_update_params_swaps_weights_without_recompiling(setup, tmp_path):
    sampler, stop = setup["sampler"], setup["stop"]
    make_hf_checkpoint(tmp_path, vocab_size=512, hidden_size=64, num_layers=2, seed=1)
    other = hf.from_pretrained(tmp_path, dtype=jnp.float32, param_dtype=jnp.float32)
    sampler.generate(PROMPTS[:2], n=1, sampling=GREEDY, max_new_tokens=2, seed=0)  # compiled
    compiles = sampler.engine.compile_stats.count
    original = nnx.split(setup["model"])[1]
    try:
        sampler.update_params(nnx.split(other)[1])
        out = sampler.generate(PROMPTS[:2], n=1, sampling=GREEDY, max_new_tokens=MAX_NEW, seed=0)
        for prompt, row in zip(PROMPTS[:2], out):
            assert row[0].tokens == greedy_reference(other, prompt, MAX_NEW, (stop,))
        assert sampler.engine.compile_stats.count == compiles
    finally:
        sampler.update_params(original)
    back = sampler.generate(PROMPTS[:1], n=1, sampling=GREEDY, max_new_tokens=MAX_NEW, seed=0)
    assert back[0][0].tokens == setup["refs"][0]
