"""`--config.train.profile_steps=a,b` writes a profiler trace of those steps that
TensorBoard's profile plugin opens, and the trace reads by named scope."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from int_jax.train import profile

ROOT = Path(__file__).resolve().parents[1]

# The step's phases (train/step.py, train/vocab.py) and the model's modules (qwen3.py).
SCOPES = ["forward", "loss", "backward", "optimizer", "embed", "layer_0", "layer_1",
          "decoder_layer", "attention", "kernel_flash", "mlp", "norm", "lm_head"]


def test_two_profiled_steps_of_the_tiny_model_hold_the_named_scopes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "int_jax.cli", "sft", "--config=configs/sft.py:tiny",
           f"--config.output_dir={out}", "--config.train.max_steps=2",
           "--config.train.profile_steps=1,2", "--config.train.export_hf=False",
           "--config.train.progress=False", "--config.data.cutoff_len=128"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one device, as a user's run would have
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Where TensorBoard's profile plugin looks: <logdir>/plugins/profile/<run>/<host>.xplane.pb
    traces = list((out / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1, traces
    data = traces[0].read_bytes()
    missing = [s for s in SCOPES if s.encode() not in data]
    assert not missing, f"scopes not in the trace: {missing}"
    # The scopes nest as the step runs them: the model's forward under `forward`, its
    # gradient under `backward`.
    assert b"forward/jvp(layer_0)/decoder_layer/attention/kernel_flash" in data
    assert b"backward/transpose(jvp(layer_1))/decoder_layer/attention" in data
    # The MLP's hand-written backward (models/swiglu.py) runs under the same scopes.
    assert b"backward/transpose(forward)/jvp(layer_1)/decoder_layer/mlp" in data


def test_profile_steps_setting():
    assert profile.parse_steps("") is None and profile.parse_steps(None) is None
    assert profile.parse_steps("3,5") == (3, 5) and profile.parse_steps("4") == (4, 4)
    assert profile.parse_steps((2, 3)) == (2, 3)
    for bad in ("5,3", "0,1", "a,b", "1,2,3"):
        with pytest.raises(ValueError, match="train.profile_steps"):
            profile.parse_steps(bad)
