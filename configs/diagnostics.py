"""On-policy diagnostics: `int-jax diagnostics --config=configs/diagnostics.py:<model> a.jsonl b.jsonl`."""

from ml_collections import ConfigDict

from int_jax.model_config import model_config


def get_config(arg: str = "tiny"):
    c = ConfigDict()
    c.model = model_config(arg)
    c.data_path = ""  # used when no file is given on the command line
    c.output_dir = f"runs/diagnostics_{arg}"
    c.cutoff_len = 512 if arg == "tiny" else 16384
    c.chunk_size = 512
    return c
