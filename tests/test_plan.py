"""`int-jax plan` (issue 10, item 5): the paper configs fit one 8-chip v5p / v6e host and one
8xH100 node, from abstract shapes only (nothing allocated on the target)."""

import math
from pathlib import Path

import pytest

from int_jax import plan as plan_lib
from int_jax.config_io import load_config_file
from int_jax.models import qwen3

ROOT = Path(__file__).resolve().parent.parent
PAPER = [("int.py", "paper"), ("eval.py", "paper"), ("grpo.py", "paper")]
GIB = 1 << 30


@pytest.mark.parametrize("target", ["h100x8", "v5p-8", "v6e-8"])
@pytest.mark.parametrize("name,arg", PAPER)
def test_paper_configs_fit(name, arg, target):
    config = load_config_file(ROOT / "configs" / name, arg)
    p = plan_lib.plan(config, target, measure=False)
    assert p.fits, p.lines()
    arch = qwen3.PRESETS["qwen3_4b_instruct_2507"]
    # The sampler's copy: bf16, whole on every device (no tensor split in the paper mesh).
    assert p.sampler_weights == pytest.approx(2 * arch.num_params, rel=1e-3)
    if name == "grpo.py":  # fp32 weights and two fp32 moments, split 8 ways (fsdp)
        assert p.trainer_weights == pytest.approx(4 * arch.num_params / 8, rel=1e-3)
        assert p.optimizer == pytest.approx(2 * p.trainer_weights, rel=1e-3)
    else:
        assert p.trainer_weights == p.optimizer == 0
    # 144 KiB of KV per token for Qwen3-4B in bf16; 64-token pages.
    assert p.page_bytes == 144 * 1024 * 64
    used = p.trainer_weights + p.optimizer + p.sampler_weights + p.reserve
    assert p.kv_pool == p.device_bytes - used and p.pages == p.kv_pool // p.page_bytes
    whole = math.ceil(49152 / 64) + 2  # one max_len sequence, as the engine requires
    assert p.pages >= whole and p.sequences["max_len"] >= 8


def test_measured_temporaries_fit_the_reserve():
    config = load_config_file(ROOT / "configs" / "grpo.py", "paper")
    p = plan_lib.plan(config, "h100x8")
    assert set(p.temporaries) == {"decode step", "prefill (2048 tokens)"}
    assert all(0 < size <= p.reserve for size in p.temporaries.values()), p.lines()
    assert p.fits and "fits" in p.lines()[-1]


def test_a_plan_that_does_not_fit_says_why():
    config = load_config_file(ROOT / "configs" / "grpo.py", "paper")
    config.sampler.kv_reserve_bytes = 30 * GIB  # leaves less than one sequence on a v6e
    p = plan_lib.plan(config, "v6e-8", measure=False)
    assert not p.fits and "less than one sequence of sampler.max_len=49152" in p.problems[0]
    with pytest.raises(ValueError, match="unknown plan target 'a100'"):
        plan_lib.plan(config, "a100", measure=False)
