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


def import_config(name: str, configs_dir: str | os.PathLike):
    """The config module `name` (dotted, relative to `configs_dir`: "sft",
    "experiments.common") imported as a submodule of a package rooted at `configs_dir`.

    Why: absl's `--config=FILE` loads FILE as a lone top-level module (ml_collections'
    SourceFileLoader), so FILE cannot `import` a sibling: configs/ is not on sys.path
    and is not an installed package. This registers configs/ once as a package (its
    name derived from its path, so two checkouts never mix) and imports through it:
    each shared file runs once and is cached in sys.modules like any module, and files
    inside the package import each other with ordinary relative imports
    (`from .. import sft`). A config file calls
    `import_config("experiments.common", Path(__file__).parents[1])`.
    """
    import hashlib  # noqa: PLC0415
    import importlib  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import types  # noqa: PLC0415

    root = Path(configs_dir).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no configs folder")
    package = "_int_jax_configs_" + hashlib.sha256(str(root).encode()).hexdigest()[:10]
    if package not in sys.modules:
        module = types.ModuleType(package, f"the config files under {root}")
        module.__path__ = [str(root)]  # a package: its submodules are root's files and folders
        sys.modules[package] = module
    return importlib.import_module(f"{package}.{name}")
