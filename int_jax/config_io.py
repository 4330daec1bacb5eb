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
