"""grain SFT pipeline (order, epochs, hosts, packing isolation), JSONL errors, diagnostics."""

import json

import jax
import numerics
import numpy as np
import pytest

from int_jax.data import loaders
from int_jax.data.records import RecordError
from int_jax.data.tokenizer import load_tokenizer
from int_jax.eval.diagnostics import segment_diagnostics
from int_jax.models import qwen3


def _examples(lengths, vocab=96, seed=0):
    rng = np.random.default_rng(seed)
    return [{"ids": rng.integers(1, vocab, n).astype(np.int32),
             "loss_weights": np.ones(n, np.float32),
             "example": np.full(n, i + 1, np.int32)} for i, n in enumerate(lengths)]


def _order(batches):
    return [sorted(set(b["example"].ravel()) - {0}) for b in batches]


def test_pad_mode_epochs_shuffle_hosts_and_state():
    ex = _examples([5, 7, 3, 8, 6, 2, 4, 8])
    spec = loaders.BatchSpec(rows=4, accum=2, seq_len=8, seed=3, epochs=2)
    batches = list(loaders.sft_dataset(ex, spec))
    assert len(batches) == loaders.count_steps(ex, spec) == 4
    assert batches[0]["ids"].shape == (2, 2, 8)
    seen = [e for b in batches for e in b["example"][:, :, 0].ravel()]
    assert sorted(seen) == sorted(list(range(1, 9)) * 2)  # every example once per epoch
    assert seen[:8] != seen[8:]  # each epoch reshuffled
    assert sorted(seen[:8]) == list(range(1, 9))
    # Two hosts split the stream, disjoint and complete.
    h0 = list(loaders.sft_dataset(ex, spec, process_index=0, process_count=2))
    h1 = list(loaders.sft_dataset(ex, spec, process_index=1, process_count=2))
    assert h0[0]["ids"].shape == (2, 1, 8)
    got = sorted(e for hb in (h0, h1) for b in hb for e in b["example"][:, :, 0].ravel())
    assert got == sorted(seen)
    # Iterator state round trip: continue exactly where a checkpoint was taken.
    it = iter(loaders.sft_dataset(ex, spec))
    next(it)
    state = it.get_state()
    fresh = iter(loaders.sft_dataset(ex, spec))
    fresh.set_state(state)
    assert _order(list(fresh)) == _order(batches[1:])


def test_packed_rows_do_not_attend_across_examples():
    cfg = qwen3.Qwen3Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2,
                            num_heads=4, num_kv_heads=2, head_dim=8)
    model = qwen3.create(cfg, seed=0)
    ex = _examples([5, 9, 3, 7, 4, 6, 2, 8], seed=1)
    spec = loaders.BatchSpec(rows=2, accum=1, seq_len=16, packing=True, seed=0)
    batch = next(iter(loaders.sft_dataset(ex, spec)))
    ids, seg, pos = (batch[k][0] for k in ("ids", "segment_ids", "positions"))
    assert seg.max() >= 2, "test needs at least one row with two packed examples"
    forward = jax.jit(lambda i, p, s: model(i, p, segment_ids=s))
    packed = np.asarray(forward(ids, pos, seg))
    # Packed and alone: two fp32 forwards over <= seq_len keys, the chain bound.
    tol = numerics.qwen3_logit_tol(model, spec.seq_len)
    for r in range(ids.shape[0]):
        for s in set(seg[r]) - {0}:
            cols = np.where(seg[r] == s)[0]
            (idx,) = set(batch["example"][0, r, cols])
            alone = ex[idx - 1]["ids"]
            np.testing.assert_array_equal(ids[r, cols], alone)
            assert list(pos[r, cols]) == list(range(len(alone)))
            single = np.asarray(forward(alone[None], np.arange(len(alone))[None],
                                        np.ones((1, len(alone)), np.int32)))
            numerics.assert_within(packed[r, cols], single[0], tol, f"row {r} segment {s}")


def test_jsonl_errors_name_file_line_and_field(tmp_path):
    good = {"id": "a", "problem_id": "p", "messages": [{"role": "user", "content": "q"}],
            "segments": [{"kind": "prefix", "text": "x"}]}
    bad = dict(good, id="b", segments=[{"kind": "hint", "text": "x"}])
    p = tmp_path / "sft.jsonl"
    p.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(RecordError, match=r"sft.jsonl:2: .*'hint'"):
        loaders.read_sft_jsonl(p)
    p.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"sft.jsonl:2: invalid JSON"):
        loaders.read_sft_jsonl(p)
    # A torn last line (killed writer, no newline) is skipped, not an error.
    p.write_text(json.dumps(good) + "\n" + json.dumps(good)[:20])
    with pytest.warns(UserWarning, match="cut-off"):
        records = loaders.read_sft_jsonl(p)
    assert [(r.id, r.segments) for r in records] == [("a", [("prefix", "x")])]


def test_diagnostics_match_direct_computation():
    tok = load_tokenizer()
    cfg = qwen3.preset("tiny", hidden_size=16, intermediate_size=32, num_layers=1,
                       num_heads=2, num_kv_heads=1, head_dim=8)
    model = qwen3.create(cfg, seed=0)
    records = [loaders.SFTRecord(id=str(i), messages=[{"role": "user", "content": f"Add {i} and 2."}],
                                 segments=[("prefix", f"Step 1: {i} + 2.\n\n"),
                                           ("intervention", f"Step 2: it is {i + 2}.\n\n"),
                                           ("suffix", "Done.")]) for i in range(3)]
    cutoff = 256
    got = segment_diagnostics(model, tok, records, cutoff_len=cutoff, chunk_size=16)

    from int_jax.data.tokenize import encode_example
    sums = {}
    for rec in records:
        ex = encode_example(tok, rec.messages, rec.segments,
                            {"prefix": 1, "intervention": 1, "suffix": 1}, cutoff)
        logits = np.asarray(jax.jit(model)(np.asarray([ex.ids])), np.float64)[0]
        lp = logits - logits.max(-1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
        ent = -(np.exp(lp) * lp).sum(-1)
        for sp in ex.spans[1:]:
            for i in range(sp.start, sp.end):
                s = sums.setdefault(sp.kind, [0.0, 0.0, 0])
                s[0] += -lp[i - 1, ex.ids[i]]
                s[1] += ent[i - 1]
                s[2] += 1
    assert set(got) == {"prefix", "intervention", "suffix", "all"}
    # Per token: the fp32 scorer against float64 from another fp32 forward's logits, which
    # differ by <= logit_tol (two forwards over <= cutoff_len keys). nll = lse - z_y is then
    # within log_softmax_tol (one fp32 log-softmax over V). Entropy = lse - sum_v p_v z_v
    # moves by <= 2 max|z| logit_tol through the logits; its own rounding is lse's (`own`),
    # plus (gamma_V + p_v's relative error, <= own) * sum_v p_v |z_v| <= max|z|.
    # Means over tokens (float64 on the host) keep the per-token bounds.
    vocab, bound = model.config.vocab_size, numerics.qwen3_logit_magnitude(model)
    logit_tol = numerics.qwen3_logit_tol(model, cutoff)
    nll_tol = numerics.log_softmax_tol(logit_tol, bound, vocab, evaluations=1)
    own = numerics.log_softmax_tol(0.0, bound, vocab, evaluations=1)
    ent_tol = 2 * bound * logit_tol + own + (numerics.gamma(vocab) + own) * bound
    for kind, (nll, ent, n) in sums.items():
        assert got[kind]["tokens"] == n
        assert abs(got[kind]["nll"] - nll / n) <= nll_tol, (kind, got[kind]["nll"], nll / n)
        assert abs(got[kind]["entropy"] - ent / n) <= ent_tol, (kind, got[kind]["entropy"], ent / n)
    assert got["all"]["tokens"] == sum(s[2] for s in sums.values())
