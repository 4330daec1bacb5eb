"""The running-sum tokenizer: one token per character, as a `transformers` fast tokenizer
with a Qwen-style chat template, so every stage (chat encoding, SFT offsets, the
sampler's stop and pad ids) runs unchanged.

Why characters: the domain's texts are digits, `+`, `=` and a few words; a character
vocabulary makes every digit its own decision (a dropped carry is one token) and keeps
the embedding tiny. The alphabet is printable ASCII and ASCII whitespace, so every text
the pipeline writes (templates, problems, JSON intervention blocks) encodes and decodes
back exactly, whitespace included; anything else is `[UNK]`.

Saved as tokenizer.json + tokenizer_config.json (chat template inside), the files
`int_jax.data.tokenizer.load_tokenizer` reads; `special_ids` reads the ids back from
tokenizer.json without importing transformers, for config files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PAD, IM_START, IM_END, UNK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "[UNK]"
SPECIALS = (PAD, IM_START, IM_END)
ALPHABET = "\n\t\r\x0b\x0c" + "".join(chr(c) for c in range(32, 127))  # whitespace, printable
# Qwen's template, without tools or thinking: <|im_start|>role\ncontent<|im_end|>\n per
# message, then <|im_start|>assistant\n when a generation prompt is asked for.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def vocabulary() -> dict[str, int]:
    """Specials first (pad 0, im_start 1, im_end 2), then [UNK], then the alphabet."""
    tokens = [*SPECIALS, UNK, *ALPHABET]
    return {t: i for i, t in enumerate(tokens)}


def build_tokenizer():
    """The tokenizer as a `transformers.PreTrainedTokenizerFast`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab=vocabulary(), unk_token=UNK))
    # Every character is its own piece (`[\s\S]`: newlines too); nothing is normalised.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()  # pieces joined with nothing between them
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=IM_END, unk_token=UNK,
        clean_up_tokenization_spaces=False, chat_template=CHAT_TEMPLATE,
        model_max_length=4096)


def save_tokenizer(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save_pretrained(str(folder))
    return folder


def special_ids(folder: str | os.PathLike) -> dict[str, int]:
    """Special token -> id, read from `folder/tokenizer.json` (no transformers import)."""
    file = Path(folder) / "tokenizer.json"
    try:
        added = json.loads(file.read_text(encoding="utf-8"))["added_tokens"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: no tokenizer (build it: int-jax running-sum base)") from None
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{file}: not a tokenizers JSON file ({e})") from e
    ids = {t["content"]: int(t["id"]) for t in added}
    missing = [t for t in SPECIALS if t not in ids]
    if missing:
        raise ValueError(f"{file}: field 'added_tokens' lacks {missing}")
    return ids


def sampler_ids(folder: str | os.PathLike) -> dict:
    """`config.sampler` pad_id and stop_ids for this tokenizer: stop at end of turn or text."""
    ids = special_ids(folder)
    return dict(pad_id=ids[PAD], stop_ids=(ids[IM_END], ids[PAD]))
