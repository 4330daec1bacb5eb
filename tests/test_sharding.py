"""Sharded forward on 8 emulated CPU devices equals the single-device forward."""

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


def test_indivisible_axis_is_replicated_not_an_error():
    cfg = _config().replace(num_kv_heads=1)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=4, tensor=2))
    model = sharding.shard_model(qwen3.create(cfg), mesh)
    # One KV head cannot be split over tensor=2: that dimension stays whole.
    assert model.layers[0].self_attn.k_proj[...].sharding.spec == P("fsdp", None, None)


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
