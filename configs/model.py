"""Model configs: `--config=configs/model.py:<preset>`, one entry per preset.

`int-jax convert` uses this file directly; stage configs embed the same
sub-config through `int_jax.model_config.model_config(preset)`.
"""

from int_jax.model_config import PRESETS, model_config  # noqa: F401


def get_config(arg: str = "tiny"):
    return model_config(arg)
