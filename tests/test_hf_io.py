"""HF checkpoints in and out: round trips, sharded loading, and bad input."""

import json
import shutil

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest
import torch
import transformers
from hf_checkpoints import make_hf_checkpoint
from safetensors.numpy import load_file, save_file

from int_jax.models import convert, hf, qwen3, sharding


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    torch_model = make_hf_checkpoint(path, tie_word_embeddings=False, rope_theta=5e6)
    return path, torch_model


def _ids(b=2, t=24, seed=0):
    return np.random.RandomState(seed).randint(0, 512, (b, t))


@pytest.mark.parametrize("tied", [False, True])
def test_save_pretrained_loads_in_transformers(tmp_path, tied):
    cfg = qwen3.Qwen3Config(vocab_size=512, hidden_size=64, intermediate_size=96, num_layers=2,
                            num_heads=4, num_kv_heads=2, head_dim=24, rope_theta=5e6,
                            tie_word_embeddings=tied)
    model = qwen3.create(cfg, seed=3)
    hf.save_pretrained(model, tmp_path / "out")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert loaded.config.rope_parameters["rope_theta"] == 5e6
    ids = _ids()
    with torch.no_grad():
        ref = loaded(torch.tensor(ids)).logits.numpy()
    ours = np.asarray(model(jnp.asarray(ids)))
    # transformers' fp32 forward and ours: two evaluations of the chain (tests/numerics.py).
    numerics.assert_within(ours, ref, numerics.qwen3_logit_tol(model, ids.shape[1]),
                           "logits vs transformers")


def test_hf_orbax_hf_is_bit_identical(ckpt, tmp_path):
    path, _ = ckpt
    model = hf.from_pretrained(path)
    convert.save_orbax(model, tmp_path / "orbax")
    restored = convert.load_orbax(tmp_path / "orbax")
    hf.save_pretrained(restored, tmp_path / "back")
    a = load_file(str(path / "model.safetensors"))
    b = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert np.array_equal(a[name], b[name]), name


def test_bf16_checkpoint_round_trip_keeps_dtype(tmp_path):
    cfg = qwen3.preset("tiny", vocab_size=256)
    model = qwen3.create(cfg, param_dtype=jnp.bfloat16)
    hf.save_pretrained(model, tmp_path / "bf16")
    again = hf.from_pretrained(tmp_path / "bf16", param_dtype=jnp.bfloat16)
    hf.save_pretrained(again, tmp_path / "bf16_b")
    a = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    b = load_file(str(tmp_path / "bf16_b" / "model.safetensors"))
    assert all(a[k].dtype == np.dtype(jnp.bfloat16) and np.array_equal(a[k], b[k]) for k in a)


def test_many_shards_with_index(ckpt, tmp_path):
    path, torch_model = ckpt
    model = hf.from_pretrained(path)
    hf.save_pretrained(model, tmp_path / "sharded", max_shard_bytes=100_000)
    files = sorted((tmp_path / "sharded").glob("*.safetensors"))
    assert len(files) > 2
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    again = hf.from_pretrained(tmp_path / "sharded")
    ids = _ids()
    assert np.array_equal(np.asarray(again(jnp.asarray(ids))), np.asarray(model(jnp.asarray(ids))))
    # transformers reads the same sharded folder.
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "sharded").eval()
    with torch.no_grad():
        ref = loaded(torch.tensor(ids)).logits.numpy()
    numerics.assert_within(again(jnp.asarray(ids)), ref,
                           numerics.qwen3_logit_tol(again, ids.shape[1]), "logits vs transformers")


def test_scanned_layers_load_and_save(ckpt, tmp_path):
    path, _ = ckpt
    plain = hf.from_pretrained(path)
    scanned = hf.from_pretrained(path, scan_layers=True)
    assert scanned.layers.mlp.gate_proj[...].shape[0] == plain.config.num_layers
    ids = jnp.asarray(_ids())
    # One model, layers in a Python loop or a scan: two fp32 programs, the chain bound.
    numerics.assert_within(scanned(ids), plain(ids),
                           numerics.qwen3_logit_tol(plain, ids.shape[1]),
                           "scanned vs plain logits")
    hf.save_pretrained(scanned, tmp_path / "from_scan")
    a = load_file(str(path / "model.safetensors"))
    b = load_file(str(tmp_path / "from_scan" / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_load_onto_mesh_places_each_shard(ckpt):
    path, _ = ckpt
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    model = hf.from_pretrained(path, mesh=mesh)
    q = model.layers[0].self_attn.q_proj[...]
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    # Each device holds a quarter of the weight (fsdp x tensor), not a full copy.
    shard_shapes = {s.data.shape for s in q.addressable_shards}
    assert shard_shapes == {(q.shape[0] // 2, q.shape[1] // 2, q.shape[2])}


# --------------------------------------------------------------------------- bad input


def _copy(ckpt_path, tmp_path):
    dst = tmp_path / "ck"
    shutil.copytree(ckpt_path, dst)
    return dst


def test_missing_tensor_is_named(ckpt, tmp_path):
    dst = _copy(ckpt[0], tmp_path)
    tensors = load_file(str(dst / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(dst / "model.safetensors"))
    with pytest.raises(hf.CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        hf.from_pretrained(dst)


def test_shape_mismatch_is_named(ckpt, tmp_path):
    dst = _copy(ckpt[0], tmp_path)
    tensors = load_file(str(dst / "model.safetensors"))
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((10, 64), np.float32)
    save_file(tensors, str(dst / "model.safetensors"))
    with pytest.raises(hf.CheckpointError, match=r"self_attn\.k_proj\.weight.*\(10, 64\)"):
        hf.from_pretrained(dst)


def test_unknown_model_type_is_named(ckpt, tmp_path):
    dst = _copy(ckpt[0], tmp_path)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["model_type"] = "llama"
    (dst / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(hf.CheckpointError, match=r"config\.json.*'llama'"):
        hf.from_pretrained(dst)


def test_corrupt_safetensors_is_named(ckpt, tmp_path):
    dst = _copy(ckpt[0], tmp_path)
    data = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(b"\xff" * 16 + data[16:1000])
    with pytest.raises(hf.CheckpointError, match=r"model\.safetensors"):
        hf.from_pretrained(dst)


def test_failed_save_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    model = qwen3.create(qwen3.preset("tiny", vocab_size=256))
    hf.save_pretrained(model, tmp_path / "out")
    before = sorted(p.name for p in (tmp_path / "out").iterdir())

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(hf, "save_file", boom)
    with pytest.raises(OSError):
        hf.save_pretrained(model, tmp_path / "out")
    # The previous checkpoint is intact and no temporary folder is left behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_config_from_hf_both_rope_layouts():
    base = dict(model_type="qwen3", vocab_size=10, hidden_size=8, intermediate_size=16,
                num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=4)
    legacy = qwen3.Qwen3Config.from_hf({**base, "rope_theta": 5e6})
    nested = qwen3.Qwen3Config.from_hf({**base, "rope_parameters": {"rope_type": "default",
                                                                     "rope_theta": 5e6}})
    assert legacy.rope_theta == nested.rope_theta == 5e6
    assert qwen3.preset("qwen3_4b_instruct_2507").rope_theta == 5e6
    assert qwen3.preset("qwen3_4b_instruct_2507").max_position_embeddings == 262144
    with pytest.raises(ValueError, match="rope_type"):
        qwen3.Qwen3Config.from_hf({**base, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0}})


def test_loading_holds_at_most_one_extra_copy_of_the_largest_tensor(tmp_path):
    """Host memory while loading stays near one tensor, not the whole model."""
    import tracemalloc

    make_hf_checkpoint(tmp_path / "big", vocab_size=8192, num_layers=6, intermediate_size=1024)
    tensors = load_file(str(tmp_path / "big" / "model.safetensors"))
    largest = max(a.nbytes for a in tensors.values())
    total = sum(a.nbytes for a in tensors.values())
    del tensors
    assert total > 3 * largest
    hf.from_pretrained(tmp_path / "big")  # one-time imports and tracing caches
    tracemalloc.start()
    hf.from_pretrained(tmp_path / "big")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= 1.5 * largest, f"peak {peak} bytes vs largest tensor {largest}"
