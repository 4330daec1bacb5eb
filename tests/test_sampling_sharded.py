"""The sampler on a data=2 x fsdp=2 x tensor=2 mesh of the 8 emulated CPU devices.

Decode rows and the KV pool's pages are split over data x fsdp and KV heads over
tensor, so every decode step runs partitioned (each row reads pages of its own shard).
Its greedy tokens and logprobs must equal the single-device sampler's; the pool the
engine steps must really be split 8 ways. Weights use the sampler's own layout
(`sampler.rules`: `embed` unsplit, so each fsdp device holds whole weights split over
tensor only and a step all-gathers no weight shards) while the trainer's model keeps
its fsdp layout; weights arriving in a trainer's layout (fsdp=8) must be moved onto
the sampler's device to device, without recompiling.
"""

import re

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from ml_collections import ConfigDict

from int_jax.model_config import model_config
from int_jax.models import factory, qwen3, sharding
from int_jax.sampling import decode as decode_lib
from int_jax.sampling import layout
from int_jax.sampling.sampler import JetStreamSampler
from int_jax.sampling.types import GREEDY, SamplingParams

CFG = qwen3.Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=16)
# Six prompts of mixed lengths for four slots: two requests reuse freed slots.
PROMPTS = [[5, 17, 3], list(range(40, 49)), list(range(100, 116)), [7, 7, 8, 9, 2],
           list(range(200, 212)), [1]]
MAX_NEW = 6
SLOTS, MAX_LEN, BUCKETS = 4, 32, (16,)
POOL_SPEC = P("tensor", ("data", "fsdp"), None, None)  # [kv_heads, pages, page, head_dim]
POOL_BYTES = 1 << 18  # per device: 64 pages of 16 tokens
TRAINER_GATE_SPEC, SAMPLER_GATE_SPEC = P("fsdp", "tensor"), P(None, "tensor")


def _sampler_cfg():
    return ConfigDict(dict(slots=SLOTS, max_len=MAX_LEN, buckets=BUCKETS, cache_dtype="float32",
                           stop_ids=(), progress=False, stall_timeout_s=120.0, use_tokenizer=False,
                           kv_pool_bytes=POOL_BYTES, rules=layout.SAMPLER_RULE_OVERRIDES))


@pytest.fixture(scope="module")
def samplers():
    assert jax.device_count() == 8, "conftest sets 8 emulated CPU devices"
    single = JetStreamSampler(qwen3.create(CFG, seed=1), None, slots=SLOTS, max_len=MAX_LEN,
                              buckets=BUCKETS, cache_dtype=jnp.float32, stop_ids=(),
                              progress=False, stall_timeout_s=120, kv_pool_bytes=POOL_BYTES)
    # The sharded sampler comes from configs, as stages build it: the mesh is config data.
    model_cfg = model_config("tiny")
    model_cfg.mesh = ConfigDict(dict(data=2, fsdp=2, tensor=2))
    # The trainer's model, on the same mesh in the model's (fsdp) layout, as GRPO holds it.
    trainer = sharding.shard_model(qwen3.create(CFG, seed=1), factory.build_mesh(model_cfg),
                                   factory.rules_of(model_cfg))
    sharded = JetStreamSampler.from_config(model_cfg, _sampler_cfg(), model=trainer)
    assert dict(sharded.engine.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    return single, sharded, trainer


def _same_completions(a, b, model, temperature=1.0):
    """Same tokens; logprobs within the bound for two fp32 evaluations (partitioned
    reductions run in another order) of `model`'s logits over the MAX_LEN-row cache,
    through a log-softmax at `temperature` (tests/numerics.py)."""
    logit_tol = numerics.qwen3_logit_tol(model, MAX_LEN)
    bound = numerics.qwen3_logit_magnitude(model)
    model_tol = numerics.log_softmax_tol(logit_tol, bound, CFG.vocab_size)
    sample_tol = numerics.log_softmax_tol(logit_tol, bound, CFG.vocab_size, temperature)
    assert [[c.tokens for c in row] for row in a] == [[c.tokens for c in row] for row in b]
    for row_a, row_b in zip(a, b):
        for ca, cb in zip(row_a, row_b):
            assert ca.finish_reason == cb.finish_reason
            numerics.assert_within(ca.model_logprobs, cb.model_logprobs, model_tol, "model logprobs")
            numerics.assert_within(ca.logprobs, cb.logprobs, sample_tol, "logprobs")


def _record_decode_state(engine, seen):
    """Wrap the engine's generate so the test sees the pool and state it really steps."""
    real = engine.generate

    def generate(params, decode_state, sampler=None):
        before = engine.core.pool.k[0].sharding
        new_state, rows = real(params, decode_state)
        pool = engine.core.pool
        seen.append((before, pool.k[-1].sharding, pool.v[0].sharding, new_state.token.sharding,
                     new_state.page_table.sharding, [s.data.shape for s in pool.k[0].addressable_shards]))
        return new_state, rows

    engine.generate = generate


def test_sharded_sampler_equals_single_device_and_cache_is_split(samplers):
    single, sharded, _ = samplers
    model = qwen3.create(CFG, seed=1)  # the weights both samplers hold
    seen = []
    _record_decode_state(sharded.engine, seen)
    try:
        ref = single.generate(PROMPTS, n=1, sampling=GREEDY, max_new_tokens=MAX_NEW, seed=0)
        out = sharded.generate(PROMPTS, n=1, sampling=GREEDY, max_new_tokens=MAX_NEW, seed=0)
        _same_completions(ref, out, model)
        # Sampled (per-slot keys, top-k/top-p inside the partitioned step), n=2 per prompt.
        sampling = SamplingParams(temperature=0.8, top_p=0.9, top_k=20)
        ref_s = single.generate(PROMPTS[:2], n=2, sampling=sampling, max_new_tokens=MAX_NEW, seed=5)
        out_s = sharded.generate(PROMPTS[:2], n=2, sampling=sampling, max_new_tokens=MAX_NEW, seed=5)
        _same_completions(ref_s, out_s, model, temperature=0.8)
        assert ref_s[0][0].tokens != ref_s[0][1].tokens  # the two samples really differ
        # SLOTS samples of one prompt, one per shard: prefilled once, then copied shard to
        # shard in one call (a copy whose source pages are themselves being copied).
        ref_c = single.generate(PROMPTS[2:3], n=SLOTS, sampling=sampling, max_new_tokens=MAX_NEW,
                                seed=6)
        out_c = sharded.generate(PROMPTS[2:3], n=SLOTS, sampling=sampling, max_new_tokens=MAX_NEW,
                                 seed=6)
        _same_completions(ref_c, out_c, model, temperature=0.8)
    finally:
        del sharded.engine.generate  # back to the class method
    assert seen, "the sampler never stepped the engine"
    c = CFG
    pages = sharded.engine.core.layout.pages_per_shard
    for k_in, k_out, v_out, token, table, shard_shapes in seen:
        assert k_in.spec == k_out.spec == v_out.spec == POOL_SPEC
        assert token.spec == P(("data", "fsdp")) and table.spec == P(("data", "fsdp"), None)
        # 4 page shards over data x fsdp, 2 KV heads over tensor: 8 distinct pieces.
        assert shard_shapes == [(1, pages, 16, c.head_dim)] * 8
    assert sharded.engine.core._step._cache_size() == 1  # one decode step, whatever the lengths


def _gate(state):
    return state["layers"][0]["mlp"]["gate_proj"][...]


def test_sampler_layout_is_its_own_and_its_step_gathers_no_weights(samplers):
    _, sharded, trainer = samplers
    engine, core = sharded.engine, sharded.engine.core
    # The sampler's copy: whole along embed on every fsdp device, split over tensor only;
    # the trainer's model keeps its fsdp x tensor layout.
    gate = _gate(engine.params.state)
    assert gate.sharding.spec == SAMPLER_GATE_SPEC
    assert [sh.data.shape for sh in gate.addressable_shards] == [(64, 64)] * 8
    assert trainer.layers[0].mlp.gate_proj[...].sharding.spec == TRAINER_GATE_SPEC
    assert engine.core.rules == layout.sampler_rules(None)

    def gathered_shapes(c, params):
        none = np.full(SLOTS, -1, np.int32)
        text = c._step.lower(params, c.pool, c.init_state(), none, none).compile().as_text()
        return [tuple(int(d) for d in dims.split(",") if d)
                for dims in re.findall(r"= \w+\[([\d,]*)\]\S* all-gather\(", text)]

    # No all-gather in the compiled step yields anything hidden-sized (a weight or an
    # activation); the trainer's layout gathers weight shards every step.
    hidden = CFG.hidden_size
    assert not [s for s in gathered_shapes(core, engine.params.state) if hidden in s]
    fsdp_core = decode_lib.DecodeCore(trainer, slots=SLOTS, max_len=MAX_LEN, buckets=BUCKETS,
                                      cache_dtype=jnp.float32, mesh=engine.mesh,
                                      rules=sharding.DEFAULT_RULES, kv_pool_bytes=POOL_BYTES)
    assert [s for s in gathered_shapes(fsdp_core, nnx.split(trainer)[1]) if hidden in s]


def test_update_params_from_trainer_layout(samplers):
    single, sharded, _ = samplers
    engine = sharded.engine
    # update_params frees the sampler's previous copy: restore from fresh copies.
    original = nnx.split(qwen3.create(CFG, seed=1))[1]
    expected = jax.tree.map(lambda x: x.sharding, engine.params.state)
    compiles = engine.compile_stats.count
    # A trainer holding other weights fully sharded over fsdp=8 (a different mesh object).
    trainer_mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=8, tensor=1))
    trainer = sharding.shard_model(qwen3.create(CFG, seed=7), trainer_mesh)
    trainer_state = nnx.split(trainer)[1]
    trainer_gate = trainer.layers[0].mlp.gate_proj[...]
    # The trainer's layout: every device holds 1/8 of the embed dimension.
    assert [sh.data.shape for sh in trainer_gate.addressable_shards] == [(64 // 8, 128)] * 8
    single_original = nnx.split(qwen3.create(CFG, seed=1))[1]
    try:
        # Device to device: a host round trip (even an explicit one) raises here.
        with jax.transfer_guard_device_to_host("disallow_explicit"), \
                jax.transfer_guard_host_to_device("disallow_explicit"):
            sharded.update_params(trainer_state)
        got = jax.tree.map(lambda x: x.sharding, engine.params.state)
        assert jax.tree.leaves(got) == jax.tree.leaves(expected)
        assert _gate(engine.params.state).sharding.spec == SAMPLER_GATE_SPEC
        new_gate = engine.params.state["layers"][0]["mlp"]["gate_proj"][...]
        np.testing.assert_array_equal(np.asarray(new_gate), np.asarray(trainer_gate))
        # Same weights on one device, already where the single sampler keeps its own:
        # it must still copy, since a trainer donating its state would delete them.
        new_model = qwen3.create(CFG, seed=7)  # a copy: single_state's arrays get deleted
        single_state = nnx.split(qwen3.create(CFG, seed=7))[1]
        single.update_params(single_state)
        for leaf in jax.tree.leaves(single_state) + jax.tree.leaves(trainer_state):
            leaf.delete()  # what a donated train step does to the trainer's arrays
        ref = single.generate(PROMPTS[:3], n=1, sampling=GREEDY, max_new_tokens=MAX_NEW, seed=0)
        out = sharded.generate(PROMPTS[:3], n=1, sampling=GREEDY, max_new_tokens=MAX_NEW, seed=0)
        _same_completions(ref, out, new_model)
        assert engine.compile_stats.count == compiles  # same shapes, same shardings
    finally:
        sharded.update_params(original)
        single.update_params(single_original)


def test_sampler_rules_are_overrides_on_the_model_rules():
    model_rules = (("embed", "fsdp"), ("mlp", "tensor"), ("cache_batch", ["data", "fsdp"]))
    assert layout.sampler_rules(model_rules) == (
        ("embed", None), ("mlp", "tensor"), ("cache_batch", ("data", "fsdp")))
    assert layout.sampler_rules(model_rules, ()) == sharding.rules_from_config(model_rules)
    assert dict(layout.sampler_rules(None, [["mlp", None], ["extra", "data"]])) == {
        **dict(sharding.DEFAULT_RULES), "mlp": None, "extra": "data"}
    with pytest.raises(ValueError, match="sampler.rules: 'embed' maps to unknown mesh axes.*'model'"):
        layout.sampler_rules(None, [("embed", "model")])
    with pytest.raises(ValueError, match="sampler.rules: expected .* pairs"):
        layout.sampler_rules(None, ["embed"])
