"""How on-policy is an SFT set? Mean NLL and mean next-token entropy per segment
kind under a given model (the authors' figure, next-token entropy after SFT on each set:
InT 0.26, the base model 0.29, self-reflections 0.43, reference solutions 1.66).

Every response token counts once (weights are ignored: the diagnostic measures
the data, not the loss recipe), grouped by the segment kind it belongs to
(`prefix`, `intervention`, `suffix`, `response`, ...), plus `all`. Token `i` is
scored by the model's distribution at position `i - 1`.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from int_jax.data.loaders import SFTRecord, length_bucket
from int_jax.data.tokenize import PROMPT, encode_example
from int_jax.train.vocab import token_stats
from int_jax.train.state import ModelDef


@functools.lru_cache(maxsize=8)
def _scorer(model_def: ModelDef, chunk_size: int):
    @jax.jit
    def score(params, ids, segment_ids):
        model = model_def.merge(params)
        hidden = model.hidden_states(ids, segment_ids=segment_ids)
        targets = jnp.concatenate([ids[:, 1:], jnp.zeros_like(ids[:, :1])], axis=1)
        return token_stats(model, hidden, targets, chunk_size=chunk_size, entropy=True)
    return score


def segment_diagnostics(model, tokenizer, records: list[SFTRecord], *, cutoff_len: int = 16384,
                        chunk_size: int = 512, progress: bool = False) -> dict:
    """{kind: {"nll": mean, "entropy": mean, "tokens": count}} over all records."""
    model_def, params = ModelDef.split(model)
    score = _scorer(model_def, chunk_size)
    sums = defaultdict(lambda: np.zeros(3))  # nll, entropy, count
    kinds = {k for r in records for k, _ in r.segments}
    weights = {k: 1.0 for k in kinds}
    it = records
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(records, desc="diagnostics")
    for rec in it:
        ex = encode_example(tokenizer, rec.messages, rec.segments, weights, cutoff_len)
        if ex is None:
            continue
        n = len(ex.ids)
        t = length_bucket(n, cutoff_len, smallest=64)  # n <= cutoff_len: encode cuts there
        ids = np.zeros((1, t), np.int32)
        ids[0, :n] = ex.ids
        seg = np.zeros((1, t), np.int32)
        seg[0, :n] = 1
        nll, ent = jax.device_get(score(params, ids, seg))
        for span in ex.spans:
            if span.kind == PROMPT or span.end <= span.start:
                continue
            # Token i is predicted at position i - 1 (i >= 1 always: the prompt is first).
            sl = slice(span.start - 1, span.end - 1)
            for key in (span.kind, "all"):
                sums[key] += (nll[0, sl].sum(), ent[0, sl].sum(), span.end - span.start)
    return {k: {"nll": float(v[0] / v[2]), "entropy": float(v[1] / v[2]), "tokens": int(v[2])}
            for k, v in sorted(sums.items()) if v[2] > 0}
