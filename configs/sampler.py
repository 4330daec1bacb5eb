"""Sampler / server config: `int-jax serve --config=configs/sampler.py:<preset>`.

`sampler` holds the engine settings every stage's `config.sampler` also uses: the
values of `int_jax/sampling/settings.py` (preset `tiny` for the tiny model, `paper`
for the others); see `SamplerSettings` for what each key means. `serve` holds the
gRPC server's.
"""

from ml_collections import ConfigDict

from int_jax.model_config import model_config
from int_jax.sampling.settings import sampler_config


def get_config(arg: str = "tiny"):
    c = ConfigDict()
    c.model = model_config(arg)
    c.sampler = sampler_config("paper")
    c.serve = ConfigDict(dict(
        host="127.0.0.1",  # loopback by default; "::" or "0.0.0.0" to expose
        port=9000,
        threads=16,  # gRPC handler threads
        max_new_tokens=16384,  # when a request sets max_tokens=0 (the paper's budget)
        temperature=0.0,  # the server's sampling settings (gRPC requests carry none)
        top_p=1.0,
        top_k=0,
        seed=0,
        output_dir="",  # where to write the resolved config; "" = none
    ))

    # -- small runs: every override in one block -----------------------------------
    if arg == "tiny":
        c.sampler = sampler_config("tiny")
        c.serve.max_new_tokens = 256
    return c
