"""The `int-jax` command line: config files, overrides, the resolved config on disk."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from hf_checkpoints import make_hf_checkpoint
from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parents[1]


def _int_jax(*args, cwd=REPO):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.run([sys.executable, "-m", "int_jax.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_convert_round_trip_via_cli_with_overrides(tmp_path):
    make_hf_checkpoint(tmp_path / "hf", seed=2)
    cfg = f"--config={REPO / 'configs/model.py'}:tiny"
    r = _int_jax("convert", cfg, f"--config.convert.src={tmp_path / 'hf'}",
                 f"--config.convert.dst={tmp_path / 'orbax'}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _int_jax("convert", cfg, "--config.convert.direction=orbax_to_hf",
                 f"--config.convert.src={tmp_path / 'orbax'}", f"--config.convert.dst={tmp_path / 'back'}")
    assert r.returncode == 0, r.stderr[-2000:]
    a = load_file(str(tmp_path / "hf" / "model.safetensors"))
    b = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # The resolved config, overrides included, sits next to the outputs.
    saved = json.loads((tmp_path / "back" / "run_config.json").read_text())
    assert saved["convert"]["direction"] == "orbax_to_hf"
    assert saved["preset"] == "tiny"


def test_unknown_command_and_bad_override_fail_clearly(tmp_path):
    r = _int_jax("frobnicate", f"--config={REPO / 'configs/model.py'}:tiny")
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
    r = _int_jax("convert", f"--config={REPO / 'configs/model.py'}:tiny", "--config.no_such_key=1")
    assert r.returncode != 0 and "no_such_key" in r.stderr
    r = _int_jax("convert", f"--config={REPO / 'configs/model.py'}:gpt5")
    assert r.returncode != 0 and "gpt5" in r.stderr


def test_model_config_has_every_preset():
    sys.path.insert(0, str(REPO))
    from configs import model

    from int_jax.models import factory, qwen3

    for name in model.PRESETS:
        cfg = model.get_config(name)
        assert factory.model_config(cfg) == qwen3.preset(name, **factory.execution_overrides(cfg))


def test_data_fetch_offline_fails_clearly(tmp_path):
    r = _int_jax("data", "fetch", "amo_bench", str(tmp_path / "d"))
    assert r.returncode == 1 and "int-jax data fetch: cannot" in r.stderr, r.stderr[-1500:]
    r = _int_jax("data", "fetch")
    assert r.returncode == 2 and "usage: int-jax data fetch NAME DIR" in r.stderr
