"""The paged KV cache (issue 10): kernels, page accounting, admission by memory.

* Every paged decode kernel (the plain-JAX gather reference, the blocked CPU kernel, and
  the Pallas GPU / TPU kernels in Pallas interpret mode) equals dense attention computed
  in float64, for random page tables, lengths that are not multiples of the page size,
  pages shared between sequences, and grouped-query heads.
* Decode logits through the pages equal a plain forward at every step while sequences
  cross pages, finish, and rows are reused; chunked prefill of a long prompt and several
  short prompts prefilled in one call equal plain forwards too.
* With a pool too small for all requests at once, every request completes with the same
  tokens as with a large pool (requests wait), through the sampler and through
  JetStream's Driver; after every run, failed ones included, every page is free.
* With `share_prompts=False` every sample prefills its own prompt into pages of its own,
  none cached, and samples the same tokens as with sharing.
* A request that could never fit is a clear error at the start.

Tolerances: fp32 rounding bounds from tests/numerics.py (the chain of reductions each
value goes through), and for the TPU kernel, whose interpreter runs its matmuls as the
TPU does (one bfloat16 pass), the bfloat16 rounding of its probabilities.
"""

import math
import queue
import time

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest

from int_jax.models import attention as attention_lib
from int_jax.models import qwen3
from int_jax.sampling import decode as decode_lib
from int_jax.sampling import jetstream_compat as compat
from int_jax.sampling import pages as pages_lib
from int_jax.sampling.engine import Qwen3Engine, RequestSpec, request_key
from int_jax.sampling.sampler import JetStreamSampler
from int_jax.sampling.types import GREEDY, SamplingParams

import test_rollout as rollout_tests

CFG = qwen3.Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=16)
MAX_LEN = 64
PAGE = 4
# Bytes of one 4-token page of CFG in fp32 (2 layers x keys and values x 2 heads x 16).
PAGE_BYTES = 2 * 2 * 2 * PAGE * 16 * 4


# --------------------------------------------------------------------------- kernels


def _case(seed, lengths, width, pages=24, kv_heads=2, groups=4, dim=16, shared=False):
    rng = np.random.default_rng(seed)
    batch = len(lengths)
    q = rng.standard_normal((batch, kv_heads * groups, dim)).astype(np.float32)
    k = rng.standard_normal((kv_heads, pages, PAGE, dim)).astype(np.float32)
    v = rng.standard_normal((kv_heads, pages, PAGE, dim)).astype(np.float32)
    if shared:  # every sequence starts with the same two pages (a shared prompt)
        rest = rng.permutation(np.arange(2, pages))[:batch * (width - 2)].reshape(batch, width - 2)
        table = np.concatenate([np.tile([[0, 1]], (batch, 1)), rest], axis=1)
    else:
        table = rng.permutation(pages)[:batch * width].reshape(batch, width)
    return q, k, v, np.asarray(lengths, np.int32), table.astype(np.int32)


def _dense(q, k, v, lengths, table):
    """Float64 attention over each sequence's pages, gathered by hand."""
    batch, heads, dim = q.shape
    kv_heads = k.shape[0]
    out = np.zeros((batch, heads, dim))
    for b in range(batch):
        keys = np.concatenate([k[:, p] for p in table[b]], axis=1)[:, :lengths[b]].astype(np.float64)
        vals = np.concatenate([v[:, p] for p in table[b]], axis=1)[:, :lengths[b]].astype(np.float64)
        qb = q[b].astype(np.float64).reshape(kv_heads, heads // kv_heads, dim)
        s = np.einsum("kgd,ksd->kgs", qb, keys) / math.sqrt(dim)
        p = np.exp(s - s.max(-1, keepdims=True))
        out[b] = np.einsum("kgs,ksd->kgd", p / p.sum(-1, keepdims=True), vals).reshape(heads, dim)
    return out


def _attention_tol(q, k, v, span, evaluations=1):
    """fp32 bound: scores (head_dim products and the scale) into exp, the softmax sum and
    the probability-weighted sum over <= span keys, a few elementwise roundings."""
    dim = q.shape[-1]
    score = float(np.linalg.norm(q, axis=-1).max() * np.linalg.norm(k, axis=-1).max()) / math.sqrt(dim)
    chain = numerics.score_terms(dim, score) + 2 * span + 8
    return numerics.reduction_tol(chain, float(np.abs(v).max()), evaluations)


KERNELS = ["reference", "blocked", "pallas_gpu", "pallas_tpu"]


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("shared", [False, True])
def test_paged_kernels_equal_dense_attention(name, shared):
    lengths, width = [1, 7, 18, 13], 5  # not multiples of the 4-token page; up to 20 slots
    q, k, v, lengths, table = _case(3, lengths, width, shared=shared)
    tol = _attention_tol(q, k, v, width * PAGE)
    if name == "pallas_tpu":
        # The TPU interpreter runs the kernel's matmuls in one bfloat16 pass, as a TPU does
        # at default precision: inputs that are bfloat16 values multiply exactly, and the
        # probabilities (<= 1, summing to 1) are rounded to bfloat16 before P @ V, which
        # moves the output by <= 2^-9 max|v| (bfloat16's unit roundoff is 2^-9).
        q, k, v = (np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32)) for x in (q, k, v))
        tol += 2.0 ** -9 * float(np.abs(v).max())
    kernel = attention_lib.get_paged_kernel(name, interpret=True)
    got = jax.jit(kernel)(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(lengths),
                          jnp.asarray(table))
    numerics.assert_within(got, _dense(q, k, v, lengths, table), tol, name)


def test_unknown_paged_kernel_is_an_error():
    with pytest.raises(ValueError, match="unknown paged attention kernel 'flash'"):
        attention_lib.get_paged_kernel("flash")


# --------------------------------------------------------------------------- host accounting


def _manager(pages=20, slots=4, shards=1, cache=4, share_prompts=True):
    return pages_lib.PageManager(shards=shards, pages_per_shard=pages, page_size=PAGE, slots=slots,
                                 max_len=MAX_LEN, cache_entries=cache, share_prompts=share_prompts)


def test_shared_prompt_pages_copy_only_the_partial_page():
    m = _manager()
    key = ("v0", b"prompt")
    holds, logits = m.admit(key, length=10, max_new=3, n=3)  # 2 full pages + a partial one
    assert logits is None and len(holds) == 3 and m.misses == 1 and m.hits == 2
    prompt = holds[0].pages
    assert len(prompt) == 3 and all(h.pages == prompt for h in holds)
    m.remember(key, "logits")
    assert list(m.refs[list(prompt)]) == [4, 4, 4]  # three samples and the cache
    tables, copies = [], []
    for slot, hold in enumerate(holds):
        row, table, copied = m.insert(hold, slot, tag=slot)
        tables.append(table)
        copies += copied
    # Full pages shared by reference; each sample writes its own copy of the partial page.
    assert all(t[:2] == list(prompt[:2]) for t in tables)
    assert len({t[2] for t in tables}) == 3 and prompt[2] not in {t[2] for t in tables}
    assert sorted(copies) == sorted((prompt[2], t[2]) for t in tables)
    assert list(m.refs[list(prompt)]) == [4, 4, 1]  # the partial page: the cache alone
    # A later identical prompt shares the cached pages: no new prompt page.
    free = m.free_pages()
    (again,), cached = m.admit(key, length=10, max_new=3)
    assert cached == "logits" and again.pages == prompt and m.free_pages() == free
    m.release(again)
    for slot in range(3):
        m.finished(m.bound[slot], tag=slot)
    assert m.pages_in_use(exclude_cache=True) == 0 and m.pages_in_use() == 3
    m.forget_cache()
    assert m.pages_in_use() == 0 and m.free_pages() == 19  # all but the null page


def test_unshared_prompts_take_pages_of_their_own_and_stay_out_of_the_cache():
    m = _manager(share_prompts=False)
    key = ("v0", b"prompt")
    first, logits = m.admit(key, length=10, max_new=3, n=3)  # one sample, whatever n says
    assert logits is None and len(first) == 1 and not m.cache
    m.remember(key, "logits")
    (second,), logits = m.admit(key, length=10, max_new=3)
    assert logits is None and not set(second.pages) & set(first[0].pages)  # prefilled again
    assert (m.misses, m.hits) == (2, 0)
    assert list(m.refs[list(second.pages)]) == [1, 1, 1]
    for slot, hold in enumerate(first + [second]):
        _, _, copies = m.insert(hold, slot, tag=slot)
        assert copies == []  # its own partial page: written in place
        m.finished(m.bound[slot], tag=slot)
    assert m.pages_in_use() == 0 and m.free_pages() == 19


def test_growth_stays_within_the_reservation_and_admission_waits():
    m = _manager(pages=12, slots=4)
    # A 6-token prompt with 9 new tokens writes positions 6..14: pages 1..3, three of them.
    assert m.own_pages(6, 9) == 3
    (hold,), _ = m.admit(None, length=6, max_new=9)
    assert m.promised[0] == 3
    row, table, copies = m.insert(hold, slot=0, tag=7)
    assert len(table) == 2 and not copies  # its own partial page: no copy
    grown = 0
    for _ in range(20):  # more steps than it has tokens: growth stops at its cap
        new, index = m.grow()
        if new[row] >= 0:
            assert index[row] == len(table) + grown
            grown += 1
    assert grown == 2 and m.promised[0] == 0
    # 11 usable pages: 4 in use, so a request needing 2 prompt + 3 own pages fits once more...
    (other,), _ = m.admit(None, length=6, max_new=9)
    assert m.admit(None, length=6, max_new=9) is None  # ...but not twice: it waits
    m.finished(row, tag=7)
    assert m.admit(None, length=6, max_new=9) is not None  # a finished sequence made room
    with pytest.raises(pages_lib.PoolTooSmallError, match="raise sampler.kv_pool_bytes"):
        m.admit(None, length=30, max_new=30)


def test_rows_and_pages_stay_in_their_shard():
    m = _manager(pages=10, slots=4, shards=2)
    holds = []
    for _ in range(4):
        got = m.admit(None, length=5, max_new=3)
        assert got is not None
        holds += got[0]
    assert sorted(h.shard for h in holds) == [0, 0, 1, 1]  # rows: two per shard
    for slot, hold in enumerate(holds):
        row, table, _ = m.insert(hold, slot, tag=slot)
        assert m.shard_of_row(row) == hold.shard
        assert all(p // 10 == hold.shard and p % 10 != 0 for p in table)  # never a null page
    assert sorted(m.order()) == [0, 1, 2, 3]


def test_samples_in_other_shards_copy_the_prompt_instead_of_prefilling_it():
    m = _manager(pages=10, slots=2, shards=2)  # one row per shard
    key = ("v0", b"prompt")
    (first,), logits = m.admit(key, length=6, max_new=2, n=2)
    assert logits is None and first.source is None  # to prefill, in shard 0
    (second,), pending = m.admit(key, length=6, max_new=2, n=1)
    assert isinstance(pending, pages_lib.Pending) and pending.key == key
    assert second.shard != first.shard and second.source == first.pages  # copy, not prefill
    assert (m.misses, m.hits) == (1, 1)
    m.remember(key, "logits")
    assert {e.logits for e in m.cache.values()} == {"logits"}  # both shards' entries
    m.copied(second)
    for slot, hold in enumerate((first, second)):
        m.insert(hold, slot, tag=slot)
        m.finished(m.bound[slot], tag=slot)
    m.forget_cache()
    assert m.pages_in_use() == 0


# --------------------------------------------------------------------------- through the model


@pytest.fixture(scope="module")
def model():
    return qwen3.create(CFG, seed=3)


def full_logits(model, seq):
    return np.asarray(rollout_tests.full_logits(model, seq, MAX_LEN))


def _engine(model, **fields):
    kw = dict(slots=2, max_len=MAX_LEN, buckets=(8, 16), max_prefill_length=40, page_size=PAGE,
              cache_dtype=jnp.float32, stop_ids=(), kv_pool_bytes=64 * PAGE_BYTES)
    return Qwen3Engine(model, **{**kw, **fields})


def test_decode_logits_equal_full_forward_as_sequences_cross_pages(model):
    engine = _engine(model)
    params, pages = engine.params, engine.pages
    state = engine.init_decode_state()
    # (slot, prompt, max_new), each inserted once its slot is free: a long sequence crossing
    # many 4-token pages beside short ones; slots (and rows, and pages) reused.
    todo = [(0, list(range(100, 117)), 20), (1, [5, 17, 3], 4), (1, [2, 4, 6, 8], 17),
            (0, [7, 7, 1], 6), (0, list(range(30, 39)), 4)]
    tol = numerics.qwen3_logit_tol(model, MAX_LEN, MAX_LEN - 1)
    seqs, steps = {}, 0
    while todo or seqs:
        while todo and todo[0][0] not in seqs:
            slot, prompt, max_new = todo.pop(0)
            holds, logits = engine.admit(prompt, max_new)
            logits = engine.prefill_admitted(params, [(prompt, holds, logits)])[0]
            prefix = engine.make_prefixes(logits, holds, [(steps * 2 + slot, np.zeros(2, np.uint32))],
                                          GREEDY, max_new)[0]
            state = engine.insert(prefix, state, slot)
            seqs[slot] = list(prompt)
        new_pages, new_index = pages.grow()  # what generate does before its step
        order = pages.order()
        logits = np.asarray(engine.core.step_logits(params.state, state))
        for slot in seqs:
            seqs[slot].append(int(state.token[slot]))
            numerics.assert_within(logits[slot], full_logits(model, seqs[slot])[-1], tol,
                                   f"step {steps} slot {slot}")
        state, out = engine.core.step(params.state, state, new_pages, new_index)
        rows = compat.step_rows(out, lambda host: engine._rows_to_host(None, host), order=order)
        data = rows.convert_to_numpy().data  # frees finished rows' pages; slot order
        for slot in list(seqs):
            if data[slot, decode_lib.OUT_FINISH] != decode_lib.FINISH_NONE:
                del seqs[slot]
        steps += 1
    assert steps > 20
    assert pages.pages_in_use(exclude_cache=True) == 0  # every sequence gave its pages back
    assert engine.release_all() == dict(pages=0, rows=0, pending=0)
    assert engine.core._step._cache_size() == 1  # one decode program for every length


def test_chunked_and_batched_prefill_equal_full_forwards(model):
    engine = _engine(model, slots=4)
    params = engine.params
    tol = numerics.qwen3_logit_tol(model, MAX_LEN, MAX_LEN - 1)
    calls = []
    real = engine.core._prefill_call
    engine.core._prefill_call = lambda *a: calls.append(a[2:]) or real(*a)  # (start, size)
    try:
        long = list(range(50, 87))  # 37 tokens: chunks of the largest bucket, 16
        holds, _ = engine.admit(long, 2)
        (logits,) = engine.prefill_admitted(params, [(long, holds, None)])
        assert calls == [(0, 16), (16, 16), (32, 16)]
        numerics.assert_within(logits, full_logits(model, long)[-1], tol, "chunked prefill")
        calls.clear()
        short = [[5, 17, 3], list(range(40, 49)), [9, 8, 7, 6, 5]]
        admitted = [(p, engine.admit(p, 2)[0], None) for p in short]
        out = engine.prefill_admitted(params, admitted)
        assert calls == [(0, 16)]  # three prompts, one call (of the bucket of the longest)
        for p, logits in zip(short, out):
            numerics.assert_within(logits, full_logits(model, p)[-1], tol, f"batched {p}")
    finally:
        del engine.core._prefill_call
        engine.release_all()


PROMPTS = [[5, 17, 3], list(range(100, 117)), [9, 8, 7, 6, 5], list(range(30, 39)), [1, 2]]
SAMPLED = SamplingParams(temperature=1.0, top_p=0.95, top_k=0)


def test_small_pool_waits_and_gives_the_same_tokens(model):
    kw = dict(slots=4, max_len=MAX_LEN, buckets=(8, 16), max_prefill_length=40, page_size=PAGE,
              cache_dtype=jnp.float32, stop_ids=(), progress=False)
    big = JetStreamSampler(model, None, kv_pool_bytes=256 * PAGE_BYTES, **kw)
    # 17 usable pages, the least that holds one whole sequence (max_len 64 = 16 pages,
    # and a copy of a shared partial page): the ten samples need ~8 each.
    small = JetStreamSampler(model, None, kv_pool_bytes=18 * PAGE_BYTES, **kw)
    assert small.engine.pages.pages_per_shard == 18
    args = dict(n=2, sampling=SAMPLED, max_new_tokens=14, seed=5)
    want = big.generate(PROMPTS, **args)
    got = small.generate(PROMPTS, **args)
    assert [[c.tokens for c in row] for row in got] == [[c.tokens for c in row] for row in want]
    assert [[c.finish_reason for c in row] for row in got] == [["length"] * 2] * len(PROMPTS)
    assert small.last_run["waits"] > 0 and big.last_run["waits"] == 0
    assert small.last_run["peak_live"] < big.last_run["peak_live"] == 4
    for s in (big, small):  # every page free after the run, nothing reclaimed by force
        assert s.engine.pages.pages_in_use() == 0
        assert s.engine.pages.free_pages() == s.engine.pages.pages_per_shard - 1


def test_unshared_prompts_prefill_every_sample_and_give_the_same_tokens(model):
    """share_prompts=False (benchmarks/eval.py's 'not shared'): one prefill per sample, into
    pages of its own, and the same tokens as with sharing (a sample's random stream depends
    only on seed, request and position; its prompt's keys and values are the same)."""
    # One prefill bucket and batches of up to 4 prompts: few programs to compile.
    kw = dict(slots=4, max_len=MAX_LEN, buckets=(16,), max_prefill_length=16, max_prefill_batch=4,
              page_size=PAGE, cache_dtype=jnp.float32, stop_ids=(), progress=False,
              kv_pool_bytes=64 * PAGE_BYTES)
    shared = JetStreamSampler(model, None, **kw)
    alone = JetStreamSampler(model, None, share_prompts=False, **kw)
    prefilled = []  # prompts each prefill call of `alone` ran
    real = alone.engine.core.prefill
    alone.engine.core.prefill = lambda params, prompts: prefilled.append(len(prompts)) or real(
        params, prompts)
    args = dict(n=3, sampling=SAMPLED, max_new_tokens=6, seed=5)
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[3]]  # 3, 5 and 9 tokens: partial last pages
    want = shared.generate(prompts, **args)
    got = alone.generate(prompts, **args)
    assert [[c.tokens for c in row] for row in got] == [[c.tokens for c in row] for row in want]
    assert sum(prefilled) == len(prompts) * 3  # every sample prefilled its prompt
    assert alone.engine.prefix_cache_stats == (0, len(prompts) * 3)  # (shared, prefilled)
    assert shared.engine.prefix_cache_stats == (len(prompts) * 2, len(prompts))
    pages = alone.engine.pages
    assert not pages.cache and pages.pages_in_use() == 0
    assert pages.free_pages() == pages.pages_per_shard - 1  # all but the null page


def _driver_generate(engine, prompts, n, sampling, max_new, seed):
    """Requests through JetStream's Driver (its slot-only admission; the engine's prefill
    waits for pages), collected from the step rows by tag."""
    tokens, done = {}, queue.Queue()

    def listen(rows):
        toks, valid, _, tags, *_ = decode_lib.unpack_rows(rows)
        for r in np.nonzero(valid)[0]:
            tokens.setdefault(int(tags[r]), []).append(int(toks[r]))

    engine.listener = listen
    driver = compat.GuardedDriver(engine, engine.params)
    try:
        for i, prompt in enumerate(prompts):
            for j in range(n):
                tag = i * n + j
                spec = RequestSpec(tag=tag, sampling=sampling, max_new_tokens=max_new,
                                   key=request_key(seed, tag))
                driver.place_request_on_prefill_queue(
                    compat.new_request(prompt, max_new, compat.RequestChannel(tag, done), spec))
        deadline = time.monotonic() + 300
        for _ in range(len(prompts) * n):
            while True:
                driver.check()
                try:
                    done.get(timeout=0.05)
                    break
                except queue.Empty:
                    assert time.monotonic() < deadline, "the Driver stalled"
    finally:
        driver.stop()
        engine.listener = None
    driver.check()
    return [[tokens[i * n + j] for j in range(n)] for i in range(len(prompts))]


def test_driver_with_a_small_pool_waits_in_prefill_and_gives_the_same_tokens(model):
    kw = dict(slots=4, max_len=MAX_LEN, buckets=(8, 16), max_prefill_length=40, page_size=PAGE,
              cache_dtype=jnp.float32, stop_ids=(), progress=False)
    want = JetStreamSampler(model, None, kv_pool_bytes=256 * PAGE_BYTES, **kw).generate(
        PROMPTS, n=2, sampling=SAMPLED, max_new_tokens=14, seed=5)
    engine = Qwen3Engine(model, kv_pool_bytes=18 * PAGE_BYTES, **kw)
    got = _driver_generate(engine, PROMPTS, 2, SAMPLED, 14, seed=5)
    assert got == [[c.tokens for c in row] for row in want]
    assert engine.pages.pages_in_use(exclude_cache=True) == 0
    engine.release_all()
    assert engine.pages.pages_in_use() == 0


def test_a_run_that_fails_midway_frees_every_page(model):
    sampler = JetStreamSampler(model, None, slots=2, max_len=MAX_LEN, buckets=(8, 16),
                               max_prefill_length=40, page_size=PAGE, cache_dtype=jnp.float32,
                               stop_ids=(), progress=False, kv_pool_bytes=64 * PAGE_BYTES)
    engine, real = sampler.engine, sampler.engine.generate
    steps = [0]

    def failing(params, state, sampler=None):
        steps[0] += 1
        if steps[0] == 5:
            raise RuntimeError("injected")
        return real(params, state)

    engine.generate = failing
    try:
        with pytest.raises(Exception, match="injected"):
            sampler.generate(PROMPTS[:3], n=2, sampling=GREEDY, max_new_tokens=10, seed=0)
    finally:
        del engine.generate
    assert engine.pages.pages_in_use() == 0 and not engine.pages.bound
    assert engine.pages.free_pages() == engine.pages.pages_per_shard - 1


def test_a_pool_that_cannot_hold_one_sequence_is_an_error_at_start(model):
    with pytest.raises(ValueError, match=r"the KV pool holds 17 pages of 4 tokens per device.*less "
                                         r"than one sequence of sampler.max_len=64; raise "
                                         r"sampler.kv_pool_bytes"):
        JetStreamSampler(model, None, max_len=MAX_LEN, buckets=(8,), page_size=PAGE,
                         cache_dtype=jnp.float32, kv_pool_bytes=17 * PAGE_BYTES)
