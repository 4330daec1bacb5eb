"""Segments -> ids + loss weights, with the real Qwen3 tokenizer."""

import pytest

from int_jax.data.tokenize import (DEFAULT_WEIGHTS, EncodeStats, encode_example,
                                   encode_prompt, included_segments)
from int_jax.data.tokenizer import load_tokenizer

IM_END = 151645
MESSAGES = [{"role": "user", "content": "Find x if 2x + 3 = 7. Put the answer in \\boxed{}."}]
PREFIX = "Step 1: Subtract 3 from both sides: 2x = 4.\n\n"
INTERVENTION = "Step 2: Divide both sides by 2, so x = 2.\n\n"
SUFFIX = "Step 3: Therefore \\boxed{3}."
SEGMENTS = [("prefix", PREFIX), ("intervention", INTERVENTION), ("suffix", SUFFIX)]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def _span(ex, kind):
    (sp,) = [s for s in ex.spans if s.kind == kind]
    return sp


def test_prompt_is_chat_template_with_generation_prompt(tok):
    ids = encode_prompt(tok, MESSAGES)
    text = tok.decode(ids)
    assert text == ("<|im_start|>user\n" + MESSAGES[0]["content"]
                    + "<|im_end|>\n<|im_start|>assistant\n")
    assert ids[-3:-1] != [IM_END]  # the assistant turn is open
    cont = encode_prompt(tok, MESSAGES, PREFIX + INTERVENTION)
    assert cont[:len(ids)] == ids
    assert tok.decode(cont[len(ids):]) == PREFIX + INTERVENTION
    assert IM_END not in cont[len(ids):]


def test_default_weights_mask_prompt_and_drop_suffix(tok):
    ex = encode_example(tok, MESSAGES, SEGMENTS, DEFAULT_WEIGHTS, cutoff_len=4096)
    prompt = encode_prompt(tok, MESSAGES)
    # The sequence is prompt + prefix + intervention, nothing after (no suffix, no EOS).
    assert ex.ids == encode_prompt(tok, MESSAGES, PREFIX + INTERVENTION)
    assert ex.prompt_len == len(prompt)
    assert ex.loss_weights[:len(prompt)] == [0.0] * len(prompt)
    assert ex.loss_weights[len(prompt):] == [1.0] * (len(ex.ids) - len(prompt))
    assert [s.kind for s in ex.spans] == ["prompt", "prefix", "intervention"]
    assert IM_END not in ex.ids[len(prompt):]
    assert "boxed{3}" not in tok.decode(ex.ids)


def test_spans_tokenise_identically_in_context(tok):
    """Each span's ids are the segment tokenised alone: no label shifts at a boundary."""
    weights = {"prefix": 1.0, "intervention": 2.0, "suffix": 0.5}
    ex = encode_example(tok, MESSAGES, SEGMENTS, weights, cutoff_len=4096)
    for kind, text in SEGMENTS:
        sp = _span(ex, kind)
        alone = tok(text, add_special_tokens=False)["input_ids"]
        assert ex.ids[sp.start:sp.end] == alone, kind
        assert tok.decode(ex.ids[sp.start:sp.end]) == text
        assert set(ex.loss_weights[sp.start:sp.end]) == {weights[kind]}


def test_merge_across_boundary_goes_to_the_earlier_segment(tok):
    # Split mid-word so BPE merges across the segment boundary ("subtra|ct").
    segs = [("prefix", "We subtra"), ("intervention", "ct three, giving 2x = 4.")]
    weights = {"prefix": 0.0, "intervention": 1.0}
    ex = encode_example(tok, MESSAGES, segs, weights, cutoff_len=4096)
    text = "".join(t for _, t in segs)
    resp = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert ex.ids[ex.prompt_len:] == resp["input_ids"]  # the full text, one tokenisation
    boundary = len(segs[0][1])
    expected = [0.0 if start < boundary else 1.0 for start, _ in resp["offset_mapping"]]
    assert ex.loss_weights[ex.prompt_len:] == expected
    # A token that straddles the boundary exists here and is not trained on.
    straddling = [i for i, (a, b) in enumerate(resp["offset_mapping"]) if a < boundary < b]
    assert straddling, "test text must produce a cross-boundary merge"
    assert ex.loss_weights[ex.prompt_len + straddling[0]] == 0.0


def test_ablations_are_weights(tok):
    no_prefix = encode_example(tok, MESSAGES, SEGMENTS,
                               {"prefix": 0.0, "intervention": 1.0, "suffix": 0.0}, 4096)
    sp = _span(no_prefix, "prefix")
    assert sp.end > sp.start  # kept as context ...
    assert set(no_prefix.loss_weights[sp.start:sp.end]) == {0.0}  # ... but not trained
    with_suffix = encode_example(tok, MESSAGES, SEGMENTS,
                                 {"prefix": 1.0, "intervention": 1.0, "suffix": 1.0}, 4096)
    assert with_suffix.ids == encode_prompt(tok, MESSAGES, PREFIX + INTERVENTION + SUFFIX)
    assert with_suffix.loss_weights[with_suffix.prompt_len:] == \
        [1.0] * (len(with_suffix) - with_suffix.prompt_len)


def test_end_of_turn_only_when_configured_and_not_truncated(tok):
    ex = encode_example(tok, MESSAGES, SEGMENTS, cutoff_len=4096, add_end_of_turn=True)
    assert ex.ids[-1] == IM_END and ex.loss_weights[-1] == 1.0
    full = len(ex)
    cut = encode_example(tok, MESSAGES, SEGMENTS, cutoff_len=full - 3, add_end_of_turn=True)
    assert cut.truncated and len(cut) == full - 3 and IM_END not in cut.ids[cut.prompt_len:]
    assert cut.ids == ex.ids[:full - 3]


def test_truncation_modes_are_counted(tok):
    stats = EncodeStats()
    n = len(encode_example(tok, MESSAGES, SEGMENTS, cutoff_len=4096))
    right = encode_example(tok, MESSAGES, SEGMENTS, cutoff_len=n - 5, stats=stats)
    assert right.truncated and len(right) == n - 5
    assert encode_example(tok, MESSAGES, SEGMENTS, cutoff_len=n - 5, truncation="drop",
                          stats=stats) is None
    # Cut inside the prompt: nothing left to train on.
    assert encode_example(tok, MESSAGES, SEGMENTS, cutoff_len=5, stats=stats) is None
    assert encode_example(tok, MESSAGES, SEGMENTS, cutoff_len=n, stats=stats) is not None
    assert (stats.seen, stats.kept, stats.truncated, stats.dropped_too_long,
            stats.dropped_empty) == (4, 2, 1, 1, 1)


def test_special_token_text_in_model_output_is_plain_text(tok):
    segs = [("prefix", "Done.<|im_end|>"), ("intervention", " More.")]
    ex = encode_example(tok, MESSAGES, segs, cutoff_len=4096)
    assert IM_END not in ex.ids[ex.prompt_len:]
    assert tok.decode(ex.ids[ex.prompt_len:]) == "Done.<|im_end|> More."


def test_bad_input_is_named(tok):
    with pytest.raises(ValueError, match=r"segments\[1\]: kind 'hint'"):
        included_segments([("prefix", "a"), ("hint", "b")], DEFAULT_WEIGHTS)
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        encode_prompt(tok, [{"role": "user"}])
    with pytest.raises(ValueError, match="truncation"):
        encode_example(tok, MESSAGES, SEGMENTS, truncation="left")
