"""The model sub-config every stage config embeds (`config.model`).

Lives in the package, not in configs/, so any config file can import it
regardless of where absl loads that file from.
"""

from ml_collections import ConfigDict

PRESETS = ("qwen3_0_6b", "qwen3_1_7b", "qwen3_4b", "qwen3_4b_instruct_2507", "qwen3_8b", "tiny")


def model_config(arg: str = "tiny") -> ConfigDict:
    if arg not in PRESETS:
        raise ValueError(f"unknown model preset {arg!r}; choose one of {PRESETS}")
    c = ConfigDict()
    c.preset = arg
    # A local HF folder (config.json + *.safetensors). Empty: random init from
    # the preset with `seed` (tests, benchmarks, the demo).
    c.hf_path = ""
    c.seed = 0
    c.dtype = "float32" if arg == "tiny" else "bfloat16"  # compute
    c.param_dtype = "float32"  # storage (fp32 master weights)
    # Per decoder layer: none | full (recompute the layer) | dots (keep weight-matmul
    # outputs) | names (keep the activations in remat_names; see qwen3.ACTIVATION_NAMES).
    c.remat = "none" if arg == "tiny" else "full"
    c.remat_names = ()  # for remat=names; empty: qwen3.DEFAULT_REMAT_NAMES
    c.scan_layers = False
    # auto: splash on TPU, cuDNN (rows of one example, bf16) or Pallas Triton (packed
    # rows, fp32) on GPU, flash elsewhere (attention.choose_kernel); or a KERNELS name.
    c.attention_impl = "xla" if arg == "tiny" else "auto"
    c.attention_chunk_size = 512
    c.tokenizer_path = ""  # empty: hf_path's tokenizer if it has one, else the bundled Qwen3 one
    c.mesh = ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    c.distributed = False  # jax.distributed.initialize() on multi-host slices
    c.rules = None  # None: int_jax.models.sharding.DEFAULT_RULES
    # For `int-jax convert`.
    c.convert = ConfigDict(dict(direction="hf_to_orbax", src="", dst=""))
    return c
