"""The sampler's own execution settings (issue 10, item 4): its weight and compute dtypes,
its attention kernel and no remat, whatever the trainer's model uses; `update_params`
casts and reshards the trainer's weights and frees the old copy first."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from int_jax.models import qwen3
from int_jax.sampling import reshard
from int_jax.sampling.sampler import JetStreamSampler
from int_jax.sampling.settings import SamplerSettings
from int_jax.sampling.types import GREEDY

# The trainer's settings: remat, and cuDNN attention, which raises on a decode step (T=1).
TRAINER_CFG = qwen3.Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                                num_heads=4, num_kv_heads=2, head_dim=16, remat=True,
                                attention_impl="cudnn")
SMALL = dict(slots=2, max_len=32, buckets=(8,), stop_ids=(), progress=False, stall_timeout_s=120)


def test_auto_settings_per_backend():
    s = SamplerSettings()
    cpu, gpu = s.resolve("cpu"), s.resolve("gpu")
    assert (cpu.param_dtype, cpu.compute_dtype, cpu.cache_dtype, cpu.prefill_kernel) == (
        "float32", "float32", "float32", "xla")
    assert (gpu.param_dtype, gpu.compute_dtype, gpu.cache_dtype, gpu.prefill_kernel) == (
        "bfloat16", "bfloat16", "bfloat16", "chunked")
    mixed = SamplerSettings(param_dtype="bfloat16", cache_dtype="float32").resolve("tpu")
    assert (mixed.compute_dtype, mixed.cache_dtype) == ("bfloat16", "float32")


def test_sampler_runs_its_own_dtype_and_kernel_not_the_trainers():
    trainer = qwen3.create(TRAINER_CFG, seed=2)  # fp32 weights
    sampler = JetStreamSampler(trainer, None, param_dtype="bfloat16", **SMALL)
    engine = sampler.engine
    assert {x.dtype for x in jax.tree.leaves(engine.params.state)} == {jnp.dtype(jnp.bfloat16)}
    cfg = engine.core.config
    assert cfg.remat in (False, "none") and cfg.attention_impl == "xla"
    assert engine.settings.cache_dtype == "bfloat16"  # auto: the compute dtype
    out = sampler.generate([[1, 2, 3], [4, 5]], n=1, sampling=GREEDY, max_new_tokens=4, seed=0)
    assert [len(r[0].tokens) for r in out] == [4, 4]
    # The trainer's own model still carries its settings and fp32 weights.
    assert trainer.config.remat in (True, "full")
    assert trainer.layers[0].mlp.gate_proj[...].dtype == jnp.float32
    # bf16 weights are fp32 ones rounded: the sampler's copy is exactly that rounding.
    gate = engine.params.state["layers"][0]["mlp"]["gate_proj"][...]
    np.testing.assert_array_equal(np.asarray(gate),
                                  np.asarray(trainer.layers[0].mlp.gate_proj[...].astype(jnp.bfloat16)))


def test_update_params_frees_the_old_copy_before_making_the_new(monkeypatch):
    sampler = JetStreamSampler(qwen3.create(TRAINER_CFG, seed=2), None, **SMALL)
    engine = sampler.engine
    old = jax.tree.leaves(engine.params.state)
    total, largest = sum(x.nbytes for x in old), max(x.nbytes for x in old)
    new_model = qwen3.create(TRAINER_CFG, seed=3)
    new_state = nnx.split(new_model)[1]
    placed, peaks, real = [], [], reshard.copy_onto

    def spy(x, sharding, dtype):
        out = real(x, sharding, dtype)
        placed.append(out)
        peaks.append(sum(a.nbytes for a in old if not a.is_deleted()) + sum(a.nbytes for a in placed))
        return out

    monkeypatch.setattr(reshard, "copy_onto", spy)
    engine.update_params(new_state)
    # Sampler-owned bytes never exceed one copy plus one weight (two copies before).
    assert len(peaks) == len(old) and max(peaks) <= total + largest
    assert all(x.is_deleted() for x in old)
    for got, want in zip(jax.tree.leaves(engine.params.state), jax.tree.leaves(new_state)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # A bad update is refused before anything is freed.
    current = jax.tree.leaves(engine.params.state)
    with pytest.raises(ValueError, match="was deleted"):
        engine.update_params(_with_deleted_leaf(new_model))
    assert not any(x.is_deleted() for x in current)


def _with_deleted_leaf(model):
    state = nnx.split(qwen3.create(model.config, seed=4))[1]
    jax.tree.leaves(state)[-1].delete()
    return state
