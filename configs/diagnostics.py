"""On-policy diagnostics: `int-jax diagnostics --config=configs/diagnostics.py:<model> a.jsonl b.jsonl`."""

from ml_collections import ConfigDict

from int_jax.model_config import model_config


def get_config(arg: str = "tiny"):
    c = ConfigDict()
    c.model = model_config(arg)
    c.data_path = ""  # used when no file is given on the command line
    c.output_dir = f"runs/diagnostics_{arg}"
    c.cutoff_len = 16384  # the SFT cutoff (configs/sft.py)
    c.chunk_size = 512

    # -- small runs: every override in one block -----------------------------------
    if arg == "tiny":
        c.cutoff_len = 512
    return c
