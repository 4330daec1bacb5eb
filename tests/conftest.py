"""Test-wide set-up: 8 emulated CPU devices (sharding tests) and fp32 matmuls.

XLA reads XLA_FLAGS once, when the backend starts, so this must run before any
test imports jax.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# grain worker processes parse absl flags; pytest never does.
try:
    from absl import flags  # noqa: E402

    flags.FLAGS.mark_as_parsed()
except Exception:  # pragma: no cover
    pass
