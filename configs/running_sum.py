"""The running-sum miniature: `int-jax running-sum problems | base --config=configs/running_sum.py`.

`problems`: the problem sets' sizes and seed. `base`: the base model's architecture (a
tiny Qwen3 over the character tokenizer), its data (kinds and shares, the carry-drop
rate) and `sft`, the SFT run that trains it from scratch (configs/sft.py's `tiny` with
the changes below). The base is keyed by the `base` and `sft` sections: change either
and `int-jax running-sum base` trains again; keep them and it does nothing.
"""

from pathlib import Path

from ml_collections import ConfigDict

from int_jax.config_io import import_config


def get_config(arg: str = "default") -> ConfigDict:
    if arg != "default":
        raise ValueError(f"configs/running_sum.py: unknown arg {arg!r}; use 'default'")
    c = ConfigDict()
    c.out = "assets/running_sum"  # problems/ and base/ (committed: the demo needs no training)
    c.problems = ConfigDict(dict(seed=0, train_hard=64, heldout_hard=64, easy=64))
    c.base = ConfigDict(dict(
        seed=0,
        workdir="runs/running_sum_base",  # the SFT run, under <workdir>/<key>/
        rounds=4,  # SFT runs in a row, each from the last (the first from random weights)
        examples=16000,  # fresh examples per round
        drop=0.35,  # chance of dropping a carry in a trace (traces.py)
        other_errors=0.3,  # failed attempts for `verify` whose first error is not a carry
        # `verify`'s answer: the attempt checked step by step against the reference, then
        # the block ("checked"), or the block alone ("block": the base up to commit
        # 240e24b, whose proposer guessed the location; README "A miniature InT").
        verify_answer="checked",
        shares=ConfigDict(dict(trace=0.35, guided=0.1, verify=0.3, copy=0.15, reflect=0.05,
                               hint=0.05)),
        model=ConfigDict(dict(vocab_size=128, hidden_size=128, intermediate_size=384,
                              num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32,
                              rope_theta=10000.0, tie_word_embeddings=True,
                              max_position_embeddings=1024)),
    ))
    # configs/sft.py, by import (absl loads this file alone; see import_config).
    s = import_config("sft", Path(__file__).resolve().parent).get_config("tiny")
    # Rows of 1024 tokens packed with several examples; an end of turn after every
    # response (the base must learn to stop).
    s.data.update(cutoff_len=1024, packing=True, add_end_of_turn=True)
    # Small batches, many updates: a tiny model from scratch learns faster per token.
    s.train.update(global_batch=4, micro_batch=0, epochs=1, save_every=100, tensorboard=False)
    s.optim.update(lr=2e-3, warmup_ratio=0.05, weight_decay=0.0)  # from scratch: a high lr
    s.model.attention_chunk_size = 128  # flash's block when the committed base was trained
    c.sft = s
    return c
