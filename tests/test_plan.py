"""`int-jax plan` (issue 10 item 5, issue 15 item 5): the paper configs fit the launch
presets, from abstract shapes and pieces compiled on this CPU (nothing allocated on the
target), and the train step's memory model bounds a whole compiled step."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from int_jax import plan as plan_lib
from int_jax.config_io import load_config_file
from int_jax.launch import plan_check, presets
from int_jax.models import qwen3, sharding
from int_jax.train import memory, optim, sft, step, state

ROOT = Path(__file__).resolve().parent.parent
PAPER = [("int.py", "paper"), ("eval.py", "paper"), ("grpo.py", "paper")]
GIB = 1 << 30
ARCH = qwen3.PRESETS["qwen3_4b_instruct_2507"]
# Norm scales (ndim 1, logical axis `norm`) are replicated; every other weight has an
# `embed` axis, split over fsdp.
NORMS = ARCH.num_layers * (2 * ARCH.hidden_size + 2 * ARCH.head_dim) + ARCH.hidden_size


def fp32_weights(devices: int) -> int:
    """One device's fp32 parameters with every chip on fsdp, by hand."""
    return 4 * ((ARCH.num_params - NORMS) // devices + NORMS)


def test_targets_are_the_launch_presets():
    v5p = plan_lib.parse_target("v5p-8")
    assert v5p.devices == presets.TPU_SLICES["v5p-8"].chips == 4  # 8 TensorCores, 4 chips
    assert v5p.chip.hbm_bytes == 95 * GIB and v5p.chip.usable_bytes == 95 * GIB
    two = plan_lib.parse_target("8xh100:2")
    assert two.devices == 16 and two.name == "8xh100:2"
    assert two.chip.usable_bytes == int(81559 * (1 << 20) * presets.GPU_MEM_FRACTION)
    assert set(presets.TARGETS) == set(presets.TPU_SLICES) | set(presets.GPU_NODES)
    with pytest.raises(ValueError, match="unknown target 'a100'"):
        plan_lib.parse_target("a100")
    with pytest.raises(ValueError, match="TPU slice"):
        plan_lib.parse_target("v5p-8:2")


@pytest.mark.parametrize("target", ["8xh100", "v5p-8", "v6e-8"])
@pytest.mark.parametrize("name,arg", PAPER)
def test_paper_sampler_configs_fit(name, arg, target):
    config = load_config_file(ROOT / "configs" / name, arg)
    p = plan_lib.plan(config, target, measure=False)
    if (name, target) == ("grpo.py", "v6e-8"):  # GRPO's reserve holds its train step
        left = 32 * GIB - 3 * fp32_weights(8) - 2 * ARCH.num_params - 16 * GIB
        assert p.problems == [f"the pool ({left / GIB:.2f} GiB per device) holds less than "
                              "one sequence of sampler.max_len=49152 (lower config.sampler."
                              "max_len or kv_reserve_bytes, or use more or larger chips)"]
    else:
        assert p.fits, p.lines()
    devices = presets.target(target).devices
    # The sampler's copy: bf16, whole on every device (no tensor split in the paper mesh).
    assert p.sampler_weights == 2 * ARCH.num_params
    if name == "grpo.py":  # fp32 weights and two fp32 moments, split over fsdp
        assert p.trainer_weights == fp32_weights(devices)
        assert p.optimizer == 2 * p.trainer_weights
    else:
        assert p.trainer_weights == p.optimizer == 0 and p.train is None
    # 144 KiB of KV per token for Qwen3-4B in bf16; 64-token pages.
    assert p.page_bytes == 144 * 1024 * 64
    used = p.trainer_weights + p.optimizer + p.sampler_weights + p.reserve
    assert p.kv_pool == p.device_bytes - used and p.pages == p.kv_pool // p.page_bytes
    whole = math.ceil(49152 / 64) + 2  # one max_len sequence, as the engine requires
    assert (p.pages >= whole) == p.fits


# The paper's SFT (Qwen3-4B, 16384 tokens per example, batch 64) and GRPO (16 prompts x 8
# samples per update, 2048 + 16384 tokens per row) with the launch presets' micro-batches.
@pytest.mark.parametrize("target", ["8xh100", "v5p-8"])
@pytest.mark.parametrize("kind", ["sft", "grpo"])
def test_paper_train_steps_fit_with_the_preset_micro_batches(kind, target):
    t = presets.target(target)
    if kind == "sft":
        config = load_config_file(ROOT / "configs" / "sft.py", "qwen3_4b_instruct_2507")
        config.train.micro_batch = t.train.sft_rows * t.devices
        rows, seq, update_rows = t.train.sft_rows, 16384, 64
    else:
        config = load_config_file(ROOT / "configs" / "grpo.py", "paper")
        config.grpo.micro_batch = t.train.grpo_rows * t.devices
        config.sampler.kv_reserve_bytes = t.train.grpo_reserve_gib * GIB
        rows, seq, update_rows = t.train.grpo_rows, 2048 + 16384, 16 * 8
    config.model.mesh.fsdp = t.devices
    p = plan_lib.plan(config, t)
    assert p.fits, "\n".join(p.lines())
    m = p.train
    assert (m.rows, m.seq_len, m.accum) == (rows, seq, update_rows // (rows * t.devices))
    assert p.trainer_weights == fp32_weights(t.devices) and p.optimizer == 2 * p.trainer_weights
    assert m.gradients == m.update == p.trainer_weights
    assert m.accumulation == (p.trainer_weights if m.accum > 1 else 0)
    # Rows of one example in bf16: cuDNN on GPU, splash on TPU; neither compiles here.
    assert m.kernel == {"tpu": "splash", "gpu": "cudnn"}[t.chip.platform]
    assert m.compiled_kernel == "flash"
    # remat=full keeps each layer's input for the backward: rows x T x hidden in bf16.
    assert m.remat == "full" and m.saved == ARCH.num_layers * rows * seq * ARCH.hidden_size * 2
    state_bytes = p.trainer_weights + p.optimizer
    if kind == "sft":  # the step fits in what the train state leaves
        assert state_bytes + m.peak <= p.device_bytes
    else:  # the sampler's weights and pool stay: the step fits in the reserve
        assert m.peak <= p.reserve
        assert state_bytes + p.sampler_weights + p.reserve + p.kv_pool == p.device_bytes


@pytest.mark.parametrize("target", presets.TARGETS)
def test_every_preset_fits_the_paper_pipeline_but_grpo_on_a_v6e_8(target):
    """The launchers' settings for each preset (issue 13: each shown to fit), on the
    paper's InT + RL row; the sampler's temporaries are measured in the test above."""
    words = ["pipeline", f"--config={ROOT}/configs/experiments/int_rl.py:qwen3_4b_instruct_2507"]
    t = presets.target(target)
    words += plan_check.preset_flags(plan_check.config_of(words), t, distributed=True)
    plans = plan_lib.plan_all(plan_check.config_of(words), t, measure_sampler=False)
    trained = {p.section: p.train for p in plans if p.train is not None}
    assert sorted(trained) == ["grpo.", "sft."] and all(m.measured for m in trained.values())
    assert trained["sft."].rows == trained["grpo."].rows == 1
    failing = {p.section: p.problems for p in plans if not p.fits}
    if target == "v6e-8":
        assert list(failing) == ["grpo."] and "less than one sequence" in failing["grpo."][0]
    else:
        assert failing == {}, "\n".join(line for p in plans for line in p.lines())


def test_a_plan_that_does_not_fit_says_why():
    config = load_config_file(ROOT / "configs" / "grpo.py", "paper")
    config.sampler.kv_reserve_bytes = 30 * GIB  # leaves less than one sequence on a v6e
    p = plan_lib.plan(config, "v6e-8", measure=False)
    assert not p.fits and "less than one sequence of sampler.max_len=49152" in p.problems[0]
    sft_config = load_config_file(ROOT / "configs" / "sft.py", "qwen3_4b_instruct_2507")
    sft_config.train.micro_batch = 12  # 64 rows are not whole micro-batches of 12
    p = plan_lib.plan(sft_config, "8xh100", measure=False)
    assert "config.train.micro_batch=12 does not divide the 64 rows" in p.problems[0]
    assert "cannot be split" in p.problems[1]  # nor do 12 rows split over 8 devices


def test_measured_sampler_temporaries_fit_the_reserve():
    config = load_config_file(ROOT / "configs" / "eval.py", "paper")
    p = plan_lib.plan(config, "8xh100")
    assert set(p.temporaries) == {"decode step", "prefill (2048 tokens)"}
    assert all(0 < size <= p.reserve for size in p.temporaries.values()), p.lines()
    assert p.fits and "fits" in p.lines()[-1]


def test_a_pipeline_config_is_planned_per_section_it_runs():
    config = load_config_file(ROOT / "configs" / "experiments" / "int_rl.py",
                              "qwen3_4b_instruct_2507")
    plans = plan_lib.plan_all(config, "v5p-8", measure=False)
    assert [p.section for p in plans] == ["eval.", "grpo.", "int.", "sft."]  # sorted keys
    assert [p.train is not None for p in plans] == [False, True, False, True]
    assert [p.samples for p in plans] == [True, True, True, False]
    # The SFT ablation rows run no GRPO: their plan has no GRPO section (a v6e-8 fits them).
    config = load_config_file(ROOT / "configs" / "experiments" / "int_sft.py",
                              "qwen3_4b_instruct_2507")
    plans = plan_lib.plan_all(config, "v6e-8", measure=False)
    assert [p.section for p in plans] == ["eval.", "int.", "sft."] and all(p.fits for p in plans)
    rl = load_config_file(ROOT / "configs" / "experiments" / "rl.py", "qwen3_4b_instruct_2507")
    assert [prefix for prefix, _ in plan_lib.sections(rl)] == ["eval.", "grpo."]


SMALL = qwen3.Qwen3Config(vocab_size=512, hidden_size=128, intermediate_size=384, num_layers=4,
                          num_heads=4, num_kv_heads=2, head_dim=32, remat="none",
                          attention_impl="flash", attention_chunk_size=128)


def _small_step(rows: int, seq: int, accum: int):
    """(the plan's TrainMemory, XLA's bytes of the whole compiled train step beyond its
    donated state) for a 4-layer model whose activations dominate, on one CPU device,
    without remat: XLA's CPU scheduler computes a remat'd layer's recomputation early
    and keeps what the policy would drop (the plan assumes a TPU / GPU compiler, which
    keeps only what the policy saves), so only `none` compares on this CPU."""
    arch = SMALL
    model = nnx.eval_shape(lambda: qwen3.Qwen3(arch))
    model_def, params = state.ModelDef.split(model)
    mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1])
    rules = sharding.DEFAULT_RULES
    cfg = load_config_file(ROOT / "configs" / "sft.py", "tiny").optim
    tx, schedule = optim.make_optimizer(cfg, 10)
    shardings = state.state_shardings(params, tx, model_def.param_shardings(params, mesh, rules),
                                      mesh)
    train_state = state.TrainState(params=params, opt_state=jax.eval_shape(tx.init, params),
                                   step=jax.ShapeDtypeStruct((), jnp.int32),
                                   rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
    fn = step.make_train_step(model_def, tx, schedule,
                              lambda m, b, r: sft.sft_loss(m, b, r, chunk_size=128), mesh, rules,
                              shardings)
    ints = jax.ShapeDtypeStruct((accum, rows, seq), jnp.int32)
    batch = {"ids": ints, "positions": ints, "segment_ids": ints,
             "loss_weights": jax.ShapeDtypeStruct((accum, rows, seq), jnp.float32)}
    compiled = fn.lower(train_state, batch).compile().memory_analysis().temp_size_in_bytes
    planned = memory.step_memory(
        kind="SFT", arch=arch, kernel="flash",
        shape=memory.StepShape(arch, rows, seq, "float32", 128, False), layers=arch.num_layers,
        accum=accum, param_bytes=4 * arch.num_params)
    return planned, compiled


def test_the_step_model_bounds_the_whole_compiled_step():
    rows, seq = 2, 1024
    planned, compiled = _small_step(rows, seq, accum=2)
    assert planned.accumulation == planned.gradients == 4 * SMALL.num_params
    # The plan's promise: its pieces add up to at least the whole step.
    assert compiled <= planned.peak, (compiled, planned)
    # And not much more: what the pieces count twice is their arguments and outputs that
    # the totals count again (on one device: the weights and their gradients, each at most
    # the gradients' size) and the activations passed between pieces (the embedding and
    # final hidden states, a layer's input, output and their gradients: [rows, T, hidden]).
    activation = rows * seq * 128 * 4
    assert planned.peak - compiled <= 2 * planned.gradients + 6 * activation, (compiled, planned)

