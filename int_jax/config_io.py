"""Write the resolved config of a run next to its outputs (configs are data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ml_collections import ConfigDict


def save_config(config: ConfigDict, directory: str | os.PathLike, name: str = "run_config.json") -> Path:
    """Atomically write every value the run used; returns the file written.

    Named run_config.json so it never collides with a checkpoint's HF config.json.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / name
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out)
    return out


def load_saved_config(path: str | os.PathLike) -> ConfigDict:
    return ConfigDict(json.loads(Path(path).read_text()))


def load_config_file(path: str | os.PathLike, arg: str | None = None) -> ConfigDict:
    """`get_config(arg)` of a config file, loaded by path as absl's config flag loads it
    (a config file builds on another: configs/grpo.py on configs/eval.py)."""
    import importlib.util  # noqa: PLC0415

    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)
