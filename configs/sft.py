"""Masked-prefix SFT: `int-jax sft --config=configs/sft.py:<model>[,<ablation>]`.

<model>: a preset from int_jax.model_config (`tiny` runs in seconds on CPU on a
built-in toy set; the paper uses qwen3_4b_instruct_2507 with `model.hf_path`).
<ablation>: `no_prefix_cloning` (prefix is context only) or `suffix_cloning`
(the suffix is trained too). Paper defaults otherwise: lr 1e-6, warmup 10%,
cosine to 0.1 x lr, 4 epochs, global batch 64, weight decay 0 (the authors'
LLaMA-Factory default; ours was 0.01), clip 1.0,
cutoff 16384, no end-of-turn after the intervention.
"""

from ml_collections import ConfigDict

from int_jax.model_config import model_config

ABLATIONS = {
    "": dict(prefix=1.0, intervention=1.0, suffix=0.0, response=1.0),
    "no_prefix_cloning": dict(prefix=0.0, intervention=1.0, suffix=0.0, response=1.0),
    "suffix_cloning": dict(prefix=1.0, intervention=1.0, suffix=1.0, response=1.0),
}


def get_config(arg: str = "tiny"):
    preset, _, ablation = arg.partition(",")
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose one of {sorted(ABLATIONS)}")
    c = ConfigDict()
    c.model = model_config(preset)
    # Training attention, chosen per backend (attention.choose_kernel): TPU `splash`;
    # GPU `cudnn` (rows of one example in bf16) or `triton` (packed rows, fp32); CPU
    # `flash` (int_jax/models/flash.py: exact, never builds [T, S] scores, skips causally
    # masked blocks, hand-written backward; on CPU at 2048 tokens a layer's attention
    # step is ~10x faster than `xla`). Any KERNELS name overrides it. flash's block:
    # 256 tokens (the ~100M model's SFT step at 2048 tokens on 2 CPU cores: 11.7 s with
    # 256, 12.1 s with 128, 13.3 s with 512); splash, triton and cudnn ignore it.
    c.model.attention_impl = "auto"
    c.model.attention_chunk_size = 256
    c.output_dir = f"runs/sft_{preset}" + (f"_{ablation}" if ablation else "")

    c.data = ConfigDict()
    c.data.train_path = ""  # SFT JSONL from `int-jax select`; empty: the toy set (tiny only)
    c.data.weights = ConfigDict(ABLATIONS[ablation])  # loss weight per segment kind
    c.data.cutoff_len = 16384  # paper: 16384 tokens
    # right: cut the example's end (prompt kept whole); drop: skip long examples. The
    # authors' LLaMA-Factory splits the cut between prompt and response in proportion;
    # with short prompts both keep the prompt and the response's start.
    c.data.truncation = "right"  # right | drop
    c.data.add_end_of_turn = False  # paper: no end-of-sequence after the intervention
    c.data.end_of_turn_weight = 1.0
    c.data.packing = False  # True: first-fit packing into rows of cutoff_len tokens
    c.data.seed = 0

    c.train = ConfigDict()
    c.train.global_batch = 64  # paper: 64 examples (rows when packing) per step
    # Rows per accumulation step (0: the whole batch at once): one 16K-token row per chip
    # of an 8-chip host (`int-jax plan 8xh100`; the launchers set it per target).
    c.train.micro_batch = 8
    c.train.epochs = 4  # paper
    c.train.max_steps = -1  # > 0: stop early
    c.train.seed = 0
    c.train.loss_chunk_size = 512  # positions per vocab projection in the loss
    c.train.save_every = 50
    c.train.log_every = 1  # metrics reach the host (and the logs) every N steps
    c.train.keep = 3
    c.train.async_save = True
    c.train.resume = True  # continue from the latest checkpoint in output_dir
    c.train.tensorboard = True
    # "a,b": a profiler trace of steps a..b (from 1) under output_dir/tensorboard/
    # (TensorBoard's profile tab); "" for none.
    c.train.profile_steps = ""
    c.train.progress = True
    c.train.peak_flops_per_device = 0.0  # 0: look up by device kind (for MFU)
    c.train.export_hf = True  # final safetensors under output_dir/hf
    c.train.export_dtype = ""  # "" keeps the parameter dtype; e.g. bfloat16

    # The paper: lr 1e-6, warmup 10%, cosine to 0.1 x lr, weight decay 0, clip 1.0.
    c.optim = ConfigDict(dict(lr=1e-6, warmup_ratio=0.1, min_lr_ratio=0.1,
                              weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0))

    # -- small runs: every override in one block -----------------------------------
    if preset == "tiny":
        c.data.cutoff_len = 512
        c.train.global_batch = 8
        c.train.micro_batch = 4
        c.train.epochs = 2
        c.train.save_every = 2
        c.train.tensorboard = False
        c.optim.lr = 1e-4
    return c
