"""Rerun a stage with exactly the config a run saved next to its outputs:

    int-jax <stage> --config=configs/saved.py:runs/<name>/<stage>/run_config.json

(every stage writes its resolved config as run_config.json; overrides such as
`--config.run.name=...` still apply on top).
"""

from int_jax.config_io import load_saved_config


def get_config(path: str = ""):
    if not path:
        raise ValueError("configs/saved.py needs the saved config's path: "
                         "--config=configs/saved.py:runs/<name>/<stage>/run_config.json")
    return load_saved_config(path)
