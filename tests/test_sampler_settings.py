"""One place for the sampler's settings: the frozen `SamplerSettings`, its presets, and the
config sections built from them (configs/sampler.py, configs/int.py, configs/eval.py)."""

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

from int_jax.sampling import settings as settings_lib
from int_jax.sampling.settings import SamplerSettings

ROOT = Path(__file__).resolve().parent.parent


def _config(name, arg):
    spec = importlib.util.spec_from_file_location(f"_cfg_{name}", ROOT / "configs" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_config_sections_are_the_presets():
    paper, tiny = settings_lib.settings("paper"), settings_lib.settings("tiny")
    assert SamplerSettings.from_config(_config("int.py", "paper").sampler) == paper
    assert SamplerSettings.from_config(_config("eval.py", "paper").sampler) == paper
    assert SamplerSettings.from_config(_config("sampler.py", "qwen3_4b").sampler) == paper
    assert SamplerSettings.from_config(_config("int.py", "tiny").sampler) == tiny
    assert SamplerSettings.from_config(_config("sampler.py", "tiny").sampler) == tiny
    # A config round trip keeps every value.
    assert SamplerSettings.from_config(paper.to_config()) == paper


def test_settings_are_frozen_checked_and_normalised():
    s = SamplerSettings(buckets=[32, 8, 8], stop_ids=[3], cache_dtype="float32",
                        rules=[["embed", None], ["mlp", ["tensor"]]])
    assert s.buckets == (8, 32) and s.prefill_buckets == (8, 32) and s.stop_ids == (3,)
    assert s.rules == (("embed", None), ("mlp", ("tensor",)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.slots = 3
    short = SamplerSettings(max_len=64, prefill_chunk=1024)
    assert short.prefill_buckets == (16, 32, 64) and short.longest_prompt == 63
    chunked = SamplerSettings(max_len=4096, prefill_chunk=256, max_prefill_length=3000)
    assert chunked.prefill_buckets[-1] == 256 and chunked.longest_prompt == 3000
    with pytest.raises(ValueError, match="leaves no room"):
        SamplerSettings(max_len=64, max_prefill_length=64)
    with pytest.raises(ValueError, match="largest prefill bucket 128 exceeds max_len 64"):
        SamplerSettings(max_len=64, buckets=(128,))
    with pytest.raises(ValueError, match="sampler.slots=0"):
        SamplerSettings(slots=0)
    with pytest.raises(ValueError, match="unknown dtype"):
        SamplerSettings(cache_dtype="int8")
    with pytest.raises(ValueError, match=r"sampler.share_prompts='no': must be True or False"):
        SamplerSettings(share_prompts="no")  # a truthy string must not mean True


def test_unknown_config_keys_are_errors_and_stage_keys_are_skipped():
    cfg = settings_lib.sampler_config("tiny")
    cfg.kind, cfg.script, cfg.delay_s = "jetstream", "", 0.0
    assert SamplerSettings.from_config(cfg) == settings_lib.settings("tiny")
    cfg.slot = 4  # a typo of `slots`
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['slot'\]"):
        SamplerSettings.from_config(cfg)
    with pytest.raises(ValueError, match="unknown sampler preset"):
        settings_lib.settings("huge")


def test_no_sampler_default_is_written_twice():
    """pad id, stop ids and the presets' values appear only in settings.py / vocab.py."""
    for path in [*(ROOT / "int_jax" / "sampling").glob("*.py"), *(ROOT / "configs").glob("*.py")]:
        if path.name in ("settings.py", "scripted.py"):
            continue
        text = path.read_text()
        assert not re.search(r"15164[35]", text), f"{path} writes a Qwen3 special token id"
        assert not re.search(r"\b(slots|max_len|pad_id|max_top_k)=\d", text), \
            f"{path} writes a sampler default"
