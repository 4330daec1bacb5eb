"""`int-jax diagnostics --config=configs/diagnostics.py:<model> SFT.jsonl [...]`:
mean NLL and next-token entropy of each SFT set, by segment, under `config.model`.

Writes `<output_dir>/diagnostics.json` ({file: {kind: {nll, entropy, tokens}}})
and prints a small table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ml_collections import ConfigDict

from int_jax.config_io import save_config
from int_jax.data.loaders import read_sft_jsonl
from int_jax.data.tokenizer import load_model_tokenizer
from int_jax.eval.diagnostics import segment_diagnostics
from int_jax.models import factory


def main(config: ConfigDict, args: list[str]) -> int:
    paths = list(args) or ([config.data_path] if config.data_path else [])
    if not paths:
        raise SystemExit("int-jax diagnostics: give SFT JSONL files as arguments "
                         "(or set config.data_path)")
    out = Path(config.output_dir)
    save_config(config, out)
    tokenizer = load_model_tokenizer(config.model)
    model = factory.build_model(config.model)
    results = {}
    for path in paths:
        records = read_sft_jsonl(path)
        results[str(path)] = segment_diagnostics(
            model, tokenizer, records, cutoff_len=int(config.cutoff_len),
            chunk_size=int(config.chunk_size), progress=True)
    tmp = out / "diagnostics.json.tmp"
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out / "diagnostics.json")
    for path, kinds in results.items():
        print(path)
        for kind, m in kinds.items():
            print(f"  {kind:<14} nll {m['nll']:.4f}  entropy {m['entropy']:.4f}  "
                  f"tokens {m['tokens']}")
    return 0
