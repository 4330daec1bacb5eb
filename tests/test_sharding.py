"""Sharded forward on 8 emulated CPU devices equals the single-device forward; what
the rules do with a dimension the mesh does not divide; the mesh's device placement."""

import logging

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from int_jax.models import qwen3, sharding


def _config(**kw):
    return qwen3.Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                             num_heads=4, num_kv_heads=2, head_dim=16, **kw)


@pytest.mark.parametrize("scan", [False, True])
def test_data_fsdp_tensor_mesh_matches_single_device(scan):
    assert jax.device_count() == 8, "conftest sets 8 emulated CPU devices"
    cfg = _config(scan_layers=scan)
    ids = jnp.asarray(np.random.RandomState(0).randint(0, 256, (4, 32)))
    ref_model = qwen3.create(cfg, seed=1)
    ref = np.asarray(ref_model(ids))

    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    model = sharding.shard_model(qwen3.create(cfg, seed=1), mesh)

    @nnx.jit
    def forward(model, ids):
        with sharding.activation_rules(mesh):
            return model(ids)

    out = forward(model, jax.device_put(ids, jax.sharding.NamedSharding(mesh, P(("data", "fsdp")))))
    # Two fp32 forwards (one partitioned, so reduced in another order): the chain bound.
    numerics.assert_within(out, ref, numerics.qwen3_logit_tol(ref_model, ids.shape[1]),
                           "sharded logits")

    layers = model.layers if scan else model.layers[0]
    gate = layers.mlp.gate_proj[...]
    lead = (None,) if scan else ()
    assert gate.sharding.spec == P(*lead, "fsdp", "tensor")
    assert len({s.device for s in gate.addressable_shards}) == 8
    assert model.embed_tokens[...].sharding.spec == P("tensor", "fsdp")


@pytest.fixture
def fresh_log(caplog):
    """Sharding messages are logged once per process: start from none logged."""
    sharding._LOGGED.clear()
    caplog.set_level(logging.WARNING, logger="int_jax.models.sharding")
    yield caplog
    sharding._LOGGED.clear()


def _sharding_messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "int_jax.models.sharding"]


def test_indivisible_weight_axis_is_replicated_and_logged_once(fresh_log):
    cfg = _config().replace(num_kv_heads=1)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=4, tensor=2))
    model = sharding.shard_model(qwen3.create(cfg), mesh)
    # One KV head cannot be split over tensor=2: that dimension stays whole ...
    assert model.layers[0].self_attn.k_proj[...].sharding.spec == P("fsdp", None, None)
    sharding.shard_model(qwen3.create(cfg), mesh)  # built again: nothing new to say
    # ... and that is said once, for k_proj and v_proj of both layers, both builds.
    assert _sharding_messages(fresh_log) == [
        "sharding: kv_heads of size 1 is replicated: tensor = 2 devices does not divide it "
        "(mesh data=1 fsdp=4 tensor=2)"]


def test_indivisible_batch_axis_is_an_error_naming_axis_size_and_mesh(fresh_log):
    from int_jax.train import step

    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=4, tensor=1))
    with pytest.raises(sharding.ShardingError) as e:
        step.batch_sharding(mesh, sharding.DEFAULT_RULES, (1, 4, 16))
    assert str(e.value).startswith(
        "activation_batch of size 4 cannot be split over data x fsdp = 8 devices (mesh data=2 "
        "fsdp=4 tensor=1): make it a multiple of 8, or map activation_batch to None in "
        "model.rules to replicate it")
    assert "train.micro_batch" in str(e.value) and "grpo.micro_batch" in str(e.value)
    assert step.batch_sharding(mesh, sharding.DEFAULT_RULES, (1, 8, 16)).spec == P(
        None, ("data", "fsdp"), None)
    # Activations inside the trainer's context: the same error, at trace time.
    x = jnp.zeros((4, 16, 64))
    with pytest.raises(sharding.ShardingError, match="activation_batch of size 4"):
        with sharding.activation_rules(mesh, sharding.DEFAULT_RULES, indivisible="error"):
            jax.jit(lambda x: sharding.constrain(
                x, ("activation_batch", "activation_length", "activation_embed")))(x)
    assert _sharding_messages(fresh_log) == []


def test_mapping_the_batch_axis_to_none_asks_for_replication(fresh_log):
    from int_jax.train import step

    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=4, tensor=1))
    rules = sharding.rules_from_config(
        [[name, None if name == "activation_batch" else target]
         for name, target in sharding.DEFAULT_RULES])
    assert step.batch_sharding(mesh, rules, (1, 4, 16)).spec == P(None, None, None)
    assert _sharding_messages(fresh_log) == []


def test_other_contexts_replicate_an_indivisible_batch_and_log_once(fresh_log):
    """The sampler's contexts (prefill: one prompt at a time) keep the default mode."""
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=4, tensor=1))
    axes = ("activation_batch", "activation_length", "activation_embed")
    with sharding.activation_rules(mesh):
        for _ in range(2):
            out = jax.jit(lambda x: sharding.constrain(x, axes))(jnp.ones((1, 8, 64)))
    assert out.sharding.is_fully_replicated
    assert _sharding_messages(fresh_log) == [
        "sharding: activation_batch of size 1 is replicated: data x fsdp = 8 devices does not "
        "divide it (mesh data=2 fsdp=4 tensor=1)"]


def test_make_mesh_surfaces_failures_and_logs_its_fallback(monkeypatch, fresh_log):
    def broken(shape, devices):
        raise RuntimeError("topology query failed")

    monkeypatch.setattr(sharding.mesh_utils, "create_device_mesh", broken)
    with pytest.raises(RuntimeError, match="topology query failed"):
        sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=4, tensor=1))

    def cannot_place(shape, devices):
        raise NotImplementedError("8 devices do not tile this torus")

    monkeypatch.setattr(sharding.mesh_utils, "create_device_mesh", cannot_place)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=4, tensor=1))
    assert list(mesh.devices.flat) == jax.devices()  # in order
    (message,) = _sharding_messages(fresh_log)
    assert "8 devices do not tile this torus" in message and "using them in order" in message


def test_mesh_config_errors():
    with pytest.raises(ValueError, match="needs 12 devices"):
        sharding.MeshConfig(data=3, fsdp=2, tensor=2).shape(8)
    assert sharding.MeshConfig(data=2, fsdp=-1, tensor=2).shape(8) == (2, 2, 2)


def test_rules_from_config_change_the_layout():
    cfg = _config()
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=8, tensor=1))
    rules = sharding.rules_from_config([["embed", None], ["mlp", ["fsdp"]]])
    model = sharding.shard_model(qwen3.create(cfg), mesh, rules)
    assert model.layers[0].mlp.gate_proj[...].sharding.spec == P(None, "fsdp")


def test_distributed_start_up_runs_before_any_backend(tmp_path):
    """jax.distributed.initialize refuses once a backend exists: nothing may touch one first."""
    import subprocess
    import sys

    script = (
        "import jax, jax._src.xla_bridge as xb\n"
        "from int_jax.models import sharding\n"
        "seen = []\n"
        "jax.distributed.initialize = lambda: seen.append(xb.backends_are_initialized())\n"
        "sharding.maybe_initialize_distributed(True)\n"
        "sharding.maybe_initialize_distributed(False)\n"
        "print(seen)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[False]"
