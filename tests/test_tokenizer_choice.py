"""Which tokenizer a model config gets: tokenizer_path, else the checkpoint's, else the bundled one."""

import json
import shutil

import pytest
from ml_collections import ConfigDict

from int_jax.data.tokenizer import bundled_tokenizer_dir, load_model_tokenizer, tokenizer_dir
from int_jax.model_config import model_config

MARK_TEMPLATE = ("{% for m in messages %}[[{{ m['role'] }}::{{ m['content'] }}]]{% endfor %}"
                 "{% if add_generation_prompt %}[[assistant::{% endif %}")
CHAT = [{"role": "user", "content": "What is 2+2?"}]


def _tokenizer_folder(path, template):
    """A copy of the bundled Qwen3 tokenizer files with another chat template."""
    path.mkdir()
    for f in bundled_tokenizer_dir().iterdir():
        shutil.copy(f, path / f.name)
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    cfg["chat_template"] = template
    (path / "tokenizer_config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture
def checkpoint(tmp_path):
    """An HF checkpoint folder holding tokenizer files with a distinctive chat template."""
    folder = _tokenizer_folder(tmp_path / "hf", MARK_TEMPLATE)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    return folder


def _render(tokenizer):
    return tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)


def test_checkpoint_tokenizer_is_the_default_when_hf_path_has_one(checkpoint):
    cfg = model_config("tiny")
    cfg.hf_path = str(checkpoint)
    assert tokenizer_dir(cfg) == checkpoint
    assert _render(load_model_tokenizer(cfg)) == "[[user::What is 2+2?]][[assistant::"


def test_stage_context_uses_the_checkpoint_tokenizer(checkpoint):
    from int_jax.stages.common import Context

    config = ConfigDict({"model": model_config("tiny")})
    config.model.hf_path = str(checkpoint)
    assert _render(Context(config).tokenizer).startswith("[[user::What is 2+2?]]")


def test_tokenizer_path_wins_over_the_checkpoint(checkpoint, tmp_path):
    other = _tokenizer_folder(tmp_path / "tok", "{% for m in messages %}<{{ m['content'] }}>{% endfor %}")
    cfg = model_config("tiny")
    cfg.hf_path, cfg.tokenizer_path = str(checkpoint), str(other)
    assert tokenizer_dir(cfg) == other
    assert _render(load_model_tokenizer(cfg)) == "<What is 2+2?>"


def test_bundled_tokenizer_without_tokenizer_files_or_paths(tmp_path):
    weights_only = tmp_path / "weights_only"
    weights_only.mkdir()
    (weights_only / "config.json").write_text("{}")
    cfg = model_config("tiny")
    assert tokenizer_dir(cfg) is None
    cfg.hf_path = str(weights_only)
    assert tokenizer_dir(cfg) is None
    rendered = _render(load_model_tokenizer(cfg))
    assert rendered.startswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant")
