"""Train the miniature's base model from scratch with our own SFT trainer, once per config.

`build(config, out)`: the character tokenizer and a random tiny Qwen3 (`config.base.model`)
saved as an HF folder; then `config.base.rounds` times: fresh base data (`base_data.py`)
as SFT JSONL and `int-jax sft` (`config.sft`: packed rows, an end-of-turn token after
every response so the model learns to stop) from the previous round's weights; the last
`hf/` is copied to `out` with `build.json`. The
key is the fingerprint of the `base` and `sft` sections: a folder built with the same
config is never trained again, one built with another config is rebuilt.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ml_collections import ConfigDict

from int_jax.stages.base import fingerprint

log = logging.getLogger(__name__)

BUILD_FILE = "build.json"
SECTIONS = ("base", "sft")
HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "special_tokens_map.json")


def key(config: ConfigDict) -> str:
    return fingerprint(config, SECTIONS)


def built(out: Path, config: ConfigDict) -> bool:
    """True when `out` holds a base model built with this config."""
    file = out / BUILD_FILE
    if not file.exists():
        return False
    try:
        return json.loads(file.read_text())["key"] == key(config)
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{file}: field 'key' unreadable ({e}); delete the file to rebuild") from e


def init_model(config: ConfigDict, folder: Path) -> Path:
    """The random start: tokenizer + a tiny Qwen3 of `config.base.model`, as an HF folder."""
    from int_jax.models import hf, qwen3
    from int_jax.running_sum.tokenizer import save_tokenizer, vocabulary

    arch = qwen3.Qwen3Config(**config.base.model.to_dict())
    if arch.vocab_size < len(vocabulary()):
        raise ValueError(f"config.base.model.vocab_size={arch.vocab_size} is below the "
                         f"tokenizer's {len(vocabulary())} tokens")
    model = qwen3.create(arch, seed=int(config.base.seed))
    hf.save_pretrained(model, folder)
    save_tokenizer(folder)
    log.info("random base: %d parameters", arch.num_params)
    return folder


def write_data(config: ConfigDict, path: Path, seed: int) -> Path:
    from int_jax.data.records import write_records
    from int_jax.running_sum.base_data import examples

    b = config.base
    data = examples(int(b.examples), b.shares.to_dict(), seed, float(b.drop),
                    float(b.other_errors), str(b.get("verify_answer", "block")))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_records(path, data)
    return path


def own_token_ids(folder: Path) -> None:
    """config.json's bos / eos / pad ids are Qwen's as written by `hf.save_pretrained`;
    the character vocabulary has its own (no bos)."""
    from int_jax.running_sum.tokenizer import IM_END, PAD, special_ids

    ids = special_ids(folder)
    file = folder / "config.json"
    hf_config = json.loads(file.read_text())
    hf_config.update(bos_token_id=None, eos_token_id=ids[IM_END], pad_token_id=ids[PAD])
    file.write_text(json.dumps(hf_config, indent=2) + "\n")


def build(config: ConfigDict, out: str | Path) -> Path:
    """Train (or find) the base: `config.base.rounds` SFT runs in a row, each on
    `config.base.examples` fresh examples (data seed `seed + round - 1`) and each from the
    one before (the first from random weights): a tiny model from scratch keeps learning
    long after one pass, and a round is a resumable unit of work."""
    out = Path(out)
    if built(out, config):
        print(f"[running-sum] {out}: built with this config ({key(config)}); nothing to do")
        return out
    from int_jax.stages import sft as sft_stage

    work = Path(config.base.workdir) / key(config)
    start = work / "init"
    if not (start / "model.safetensors").exists():
        init_model(config, start)
    for r in range(1, int(config.base.rounds) + 1):
        data = work / f"round{r}" / "data" / "sft.jsonl"
        if not data.exists():
            write_data(config, data, int(config.base.seed) + r - 1)
        cfg = ConfigDict(config.sft.to_dict())
        cfg.output_dir = str(work / f"round{r}" / "sft")
        cfg.model.hf_path = str(start)
        cfg.data.train_path = str(data)
        if not (work / f"round{r}" / "sft" / "DONE").exists():
            sft_stage.main(cfg, [])
        start = work / f"round{r}" / "sft" / "hf"
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in HF_FILES:
        if (start / name).exists():
            shutil.copy2(start / name, tmp / name)
    own_token_ids(tmp)
    (tmp / BUILD_FILE).write_text(json.dumps(
        {"key": key(config), "config": {s: config[s].to_dict() for s in SECTIONS}},
        indent=2, sort_keys=True, default=str) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(f"[running-sum] base model: {out} (trained in {work})")
    return out
