"""Decode steps attend over a window of the KV cache, not all max_len rows.

The window is the smallest decode bucket covering the longest live position,
chosen on the host. What must hold (tiny random Qwen3, fp32, CPU):
* the windowed step's logits equal the whole-cache step's and a plain forward's,
  while sequences grow across buckets, finish, and slots are reused (a
  finished long sequence must not keep the window wide, nor break it);
* one compiled step per bucket at most, and none more on a second run;
* greedy decoding through JetStream's Driver with several windows equals
  greedy decoding by repeated full forwards;
* a host bound that is too short is an error, never silently wrong tokens.
"""

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest
from flax import nnx

from int_jax.models import qwen3
from int_jax.sampling import decode as decode_lib
from int_jax.sampling import decode_window
from int_jax.sampling.sampler import JetStreamSampler
from int_jax.sampling.types import GREEDY

CFG = qwen3.Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=16)
MAX_LEN = 64
DECODE_BUCKETS = (16, 32, 64)


@pytest.fixture(scope="module")
def model():
    return qwen3.create(CFG, seed=3)


@pytest.fixture(scope="module")
def sampler(model):
    """Two slots, one prefill bucket; its core's compiled programs serve every test here."""
    return JetStreamSampler(model, None, slots=2, max_len=MAX_LEN, buckets=(32,),
                            cache_dtype=jnp.float32, stop_ids=(), progress=False,
                            stall_timeout_s=120, decode_buckets=DECODE_BUCKETS)


@nnx.jit
def _forward(model, ids):
    return model(ids)[0]


def full_logits(model, seq):
    """Plain forward (no cache) of `seq`, right-padded to MAX_LEN (causal: padding is inert)."""
    ids = np.zeros((1, MAX_LEN), np.int32)
    ids[0, :len(seq)] = seq
    return np.asarray(_forward(model, jnp.asarray(ids)))[:len(seq)]


def test_buckets_and_host_bounds():
    assert decode_window.decode_buckets(20480, 256) == (256, 512, 1024, 2048, 4096, 8192, 16384, 20480)
    assert decode_window.decode_buckets(64, 256) == (64,)
    assert decode_window.check_buckets((16, 8), 64) == (8, 16, 64)  # the whole cache is always one
    with pytest.raises(ValueError, match="exceeds the cache length"):
        decode_window.check_buckets((128,), 64)
    b = decode_window.LiveBounds(slots=3, max_len=64)
    assert b.needed() == 1
    b.inserted(0, length=10, max_new=4, tag=7)  # decodes positions 10..13
    b.inserted(1, length=3, max_new=100, tag=8)
    assert b.needed() == 11
    for _ in range(5):
        b.stepped()
    assert b.needed() == 14  # slot 0 capped at its last position, 13
    b.finished(0, tag=99)  # a stale row of an earlier request: ignored
    assert b.needed() == 14
    b.finished(0, tag=7)
    assert b.needed() == 9  # slot 1: 3 + 5 steps
    b.inserted(2, length=60, max_new=100, tag=9)
    for _ in range(10):
        b.stepped()
    assert b.needed() == 64  # never past the end of the cache
    b.reset()
    assert b.needed() == 1


def _prefix(core, params, prompt, max_new, tag):
    padded, n = core.pad(prompt)
    kv, logits = core.prefill(params, padded, n)
    tok, lp, mlp = core.draw(logits, np.zeros(2, np.uint32), 0.0, 1.0, 0)
    return decode_lib.Prefix(
        kv=kv, length=jnp.int32(n), token=tok, logprob=lp, model_logprob=mlp,
        key=jnp.zeros(2, jnp.uint32), temperature=jnp.float32(0), top_p=jnp.float32(1),
        top_k=jnp.int32(0), max_new=jnp.int32(max_new), tag=jnp.int32(tag),
        shared_kv=True)  # as the engine makes them (its prefix cache keeps the KV)


def test_windowed_step_logits_equal_whole_cache_and_full_forward(model, sampler):
    core = sampler.engine.core  # driven by hand here, as the engine drives it
    params = sampler.engine.params.state
    state = core.init_state()
    # (slot, prompt, max_new), each inserted once its slot is free, in this order: a long
    # sequence crossing into the 32 and 64 windows beside short ones; slot 0 reused
    # over its stale rows by a short one that then runs alone in a 16 window while
    # slot 1's finished sequence sits at position 21, outside it.
    queue = [(0, list(range(100, 117)), 20), (1, [5, 17, 3], 4), (1, [2, 4, 6, 8], 17),
             (0, [7, 7, 1], 6), (0, list(range(30, 39)), 4)]
    seqs, windows = {}, []
    tol = numerics.qwen3_logit_tol(model, MAX_LEN)
    for step in range(40):
        free = [s for s in (0, 1) if s not in seqs]
        while queue and queue[0][0] in free:
            slot, prompt, max_new = queue.pop(0)
            state = core.insert(state, _prefix(core, params, prompt, max_new, tag=step * 2 + slot), slot)
            seqs[slot], free = list(prompt), [s for s in free if s != slot]
        if not seqs:
            break
        window = core.window()
        windows.append(window)
        assert window == min(b for b in DECODE_BUCKETS if b > max(int(state.position[s]) for s in seqs))
        windowed = np.asarray(core.step_logits(params, state))
        whole = np.asarray(core.step_logits(params, state, window=MAX_LEN))
        for slot in seqs:
            seqs[slot].append(int(state.token[slot]))
            # Each pair is two fp32 forwards over <= MAX_LEN keys: the chain bound.
            numerics.assert_within(windowed[slot], whole[slot], tol, f"step {step} window")
            numerics.assert_within(windowed[slot], full_logits(model, seqs[slot])[-1], tol,
                                   f"step {step} full forward")
        state, out = core.step(params, state)
        rows = np.asarray(out)
        core.observe_rows(rows)  # what the engine does when JetStream pulls rows to host
        for slot in list(seqs):
            if rows[slot, decode_lib.OUT_FINISH] != decode_lib.FINISH_NONE:
                del seqs[slot]
    assert not queue and not seqs and len(windows) > 20
    assert set(windows) == set(DECODE_BUCKETS)
    assert windows.index(16, windows.index(64)) > 0  # narrowed again after the long one ended
    # One compiled step per window, and nothing new on a second pass over the same windows.
    assert core._step._cache_size() == len(DECODE_BUCKETS)
    compiles = core.compile_stats.count
    state = core.init_state()
    for w in DECODE_BUCKETS:
        state, _ = core.step(params, state, window=w)
    assert core.compile_stats.count == compiles


def test_a_window_that_misses_a_live_position_is_an_error(sampler):
    core, params = sampler.engine.core, sampler.engine.params.state
    state = core.insert(core.init_state(), _prefix(core, params, list(range(20)), 5, tag=0), 0)
    assert core.window() == 32
    _, out = core.step(params, state, window=16)  # forced: position 20 is outside rows 0..15
    with pytest.raises(decode_lib.DecodeWindowError, match="too short a cache window"):
        core.observe_rows(np.asarray(out))


def greedy_reference(model, prompt, max_new):
    seq = list(prompt)
    for _ in range(max_new):
        seq.append(int(np.argmax(full_logits(model, seq)[-1])))
    return seq[len(prompt):]


MAX_NEW = 24


def test_driver_greedy_with_windows_equals_full_forward_greedy(model, sampler):
    core = sampler.engine.core
    used, real_window = [], core.window
    core.window = lambda: used.append(real_window()) or used[-1]
    # Mixed lengths in two slots (slots are reused); the long one crosses into the whole cache.
    prompts = [[5, 17, 3], list(range(100, 117)), [9, 8, 7, 6, 5], list(range(30, 39))]
    try:
        out = sampler.generate(prompts, n=1, sampling=GREEDY, max_new_tokens=MAX_NEW, seed=0)
    finally:
        del core.window  # back to the class method
    for prompt, row in zip(prompts, out):
        assert row[0].tokens == greedy_reference(model, prompt, MAX_NEW), prompt
    assert set(used) == set(DECODE_BUCKETS)
    assert core._step._cache_size() <= len(DECODE_BUCKETS)
