"""The accelerator training kernels compute the `xla` reference function, forward and
gradients, on packed and padded rows with grouped-query heads; `auto` picks each
backend's kernel.

Where each runs here (a CPU):
- `splash` (TPU Pallas) and `triton` (GPU Pallas Triton) run in Pallas's interpreter
  (`interpret=True`): the kernels' own code, on CPU;
- `cudnn` cannot run at all without an NVIDIA GPU (XLA:CPU has no cuDNN custom call):
  our call of `jax.nn.dot_product_attention` (causal flag, lengths for padding, GQA
  heads) is checked through jax's XLA implementation of the same call.
"""

import functools

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest
from ml_collections import ConfigDict

from int_jax.models import attention, factory, qwen3, sharding, splash, triton
from int_jax.models.sharding import DEFAULT_RULES, MeshConfig, make_mesh


def _inputs(seed, b, t, h, kh, d):
    r = np.random.default_rng(seed)
    return tuple(jnp.asarray(r.standard_normal(shape, np.float32))
                 for shape in ((b, t, h, d), (b, t, kh, d), (b, t, kh, d)))


def _segments(b, t, packed: bool):
    """Packed: row 0 holds two examples, the last row ends in padding (segment 0).
    Unpacked: every row one example, the first and last right-padded."""
    seg = np.ones((b, t), np.int32)
    if packed:
        seg[0, t // 3:] = 2
    else:
        seg[0, 2 * t // 3:] = 0
    seg[-1, t - 5:] = 0
    return jnp.asarray(seg)


def _kernel(name):
    return {
        "splash": functools.partial(splash.splash_attention, interpret=True),
        "triton": functools.partial(triton.triton_attention, interpret=True),
        "cudnn": functools.partial(attention.cudnn_attention, implementation="xla"),
    }[name]


# name: (b, t, h, kh, d). t not a multiple of the kernels' blocks pads the sequence.
CASES = {"gqa2_t100": (2, 100, 4, 2, 16), "gqa3_t37": (2, 37, 6, 2, 8),
         "mha_t128": (1, 128, 2, 2, 8)}
# The longest online-softmax key block chain among these kernels: splash blocks of 128
# keys, triton's backward blocks of 32 (more blocks: more rescalings) -> count with 32.
BLOCK = 32


def _check_against_xla(kernel, q, k, v, seg, mesh=None):
    b, t = seg.shape
    q_index = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))

    def run(fn):
        def call(q, k, v):
            if mesh is None:
                return fn(q, k, v, q_index, seg, seg)
            with sharding.activation_rules(mesh, DEFAULT_RULES, indivisible="error"):
                return fn(q, k, v, q_index, seg, seg)
        return jax.jit(call)

    ref, ours = run(attention.xla_attention), run(kernel)
    real = (np.asarray(seg) != 0)[:, :, None, None]
    out = np.asarray(ours(q, k, v))
    assert np.isfinite(out).all()
    # Padding queries are don't-care (each kernel returns something finite); real rows:
    # two fp32 evaluations of the blocked chain (tests/numerics.py), magnitude max|v|.
    tol = numerics.reduction_tol(numerics.attention_forward_chain(q, k, t, BLOCK),
                                 float(jnp.abs(v).max()))
    numerics.assert_within(np.where(real, out, 0), np.where(real, ref(q, k, v), 0), tol, "output")
    cot = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape, np.float32) * real)
    grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) * cot), argnums=(0, 1, 2)))(q, k, v)
             for f in (ref, ours)]
    chain = numerics.attention_backward_chain(q, k, t, BLOCK)
    for name, want, got in zip("qkv", *grads):
        assert np.isfinite(np.asarray(got)).all(), f"d{name}"
        numerics.assert_within(got, want, numerics.leaf_tol(want, chain), f"d{name}")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", ["splash", "triton"])
def test_segment_kernels_match_xla_on_packed_and_padded_rows(name, case):
    b, t, h, kh, d = CASES[case]
    _check_against_xla(_kernel(name), *_inputs(0, b, t, h, kh, d), _segments(b, t, packed=True))


@pytest.mark.parametrize("case", sorted(CASES))
def test_cudnn_call_matches_xla_on_right_padded_rows(case):
    b, t, h, kh, d = CASES[case]
    _check_against_xla(_kernel("cudnn"), *_inputs(0, b, t, h, kh, d),
                       _segments(b, t, packed=False))


@pytest.mark.parametrize("name", ["splash", "triton"])
def test_segment_kernels_run_per_shard_under_the_trainers_rules(name):
    """Under activation rules (rows over data, heads over tensor) the Pallas kernels run
    per shard through shard_map and still compute the reference function."""
    mesh = make_mesh(MeshConfig(data=2, fsdp=1, tensor=2), jax.devices()[:4])
    b, t, h, kh, d = 2, 64, 4, 2, 8
    _check_against_xla(_kernel(name), *_inputs(2, b, t, h, kh, d), _segments(b, t, packed=True),
                       mesh=mesh)


def test_cudnn_names_what_it_cannot_do():
    q, k, v = _inputs(0, 1, 8, 2, 2, 8)
    idx, seg = jnp.arange(8)[None], jnp.ones((1, 8), jnp.int32)
    with pytest.raises(ValueError, match="bfloat16"):
        attention.cudnn_attention(q, k, v, idx, seg, seg)  # float32
    with pytest.raises(ValueError, match="T == S"):
        attention.cudnn_attention(q, k[:, :4], v[:, :4], idx, seg, seg[:, :4])


def test_auto_picks_each_backends_kernel():
    choose = attention.choose_kernel
    assert choose("tpu", packed=True, dtype=jnp.bfloat16) == "splash"
    assert choose("tpu", packed=False, dtype=jnp.float32) == "splash"
    assert choose("gpu", packed=False, dtype=jnp.bfloat16) == "cudnn"
    assert choose("cuda", packed=False, dtype=jnp.float16) == "cudnn"
    assert choose("gpu", packed=True, dtype=jnp.bfloat16) == "triton"  # segment ids
    assert choose("gpu", packed=False, dtype=jnp.float32) == "triton"  # cuDNN rejects fp32
    assert choose("cpu", packed=False, dtype=jnp.bfloat16) == "flash"
    assert choose("cpu") == "flash"
    assert set(choose(p, packed=x, dtype=dt) for p in ("tpu", "gpu", "cpu")
               for x in (True, False) for dt in (jnp.float32, jnp.bfloat16)) <= set(attention.KERNELS)
    # Named kernels pass through; auto resolves; decoding over a cache takes flash.
    assert attention.resolve("xla", "gpu", packed=False, dtype=jnp.bfloat16) == "xla"
    assert attention.resolve("auto", "gpu", packed=False, dtype=jnp.bfloat16) == "cudnn"
    flash = attention.get_kernel("auto", chunk_size=32, decoding=True)
    assert flash.keywords == {"block_size": 32}


def test_model_config_resolves_auto_by_platform_packing_and_dtype():
    mc = ConfigDict(dict(preset="tiny", hf_path="", seed=0, dtype="bfloat16",
                         param_dtype="float32", remat=False, scan_layers=False,
                         attention_impl="auto", attention_chunk_size=128))
    pick = {(platform, packed): factory.model_config(mc, platform=platform,
                                                     packed=packed).attention_impl
            for platform in ("tpu", "gpu", "cpu") for packed in (True, False)}
    assert pick == {("tpu", True): "splash", ("tpu", False): "splash",
                    ("gpu", True): "triton", ("gpu", False): "cudnn",
                    ("cpu", True): "flash", ("cpu", False): "flash"}
    mc.attention_impl = "chunked"  # overridable
    assert factory.model_config(mc, platform="gpu", packed=False).attention_impl == "chunked"
    assert factory.model_config(mc).remat == "none"  # the boolean of earlier configs


def test_unresolved_auto_runs_this_backends_kernel():
    """A Qwen3Config built with "auto" directly resolves at trace time (here: flash)."""
    cfg = qwen3.Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1,
                            num_heads=4, num_kv_heads=2, head_dim=8, attention_chunk_size=16)
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 24)))
    auto = qwen3.create(cfg.replace(attention_impl="auto"), seed=3)
    flash = qwen3.create(cfg.replace(attention_impl="flash"), seed=3)
    np.testing.assert_array_equal(jax.jit(lambda i: auto(i))(ids), jax.jit(lambda i: flash(i))(ids))

