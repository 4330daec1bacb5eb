"""Accelerator presets: what a slice or a node holds, and the settings our configs use
on it. The one table of targets: the launchers read it, and so does `int-jax plan`.

Chips are JAX devices (a v5p chip is one device: its two TensorCores run as one
megacore, so a v5p-8 slice is 4 devices). Meshes put every chip on `fsdp` (a 4B
model's weights and AdamW state split across chips; activations split by batch over
the same axis), which is what the paper's 4B runs need; change `model.mesh.*` for
larger models. Micro-batches are rows per chip times the chips: one 16K-token SFT row
and one 18K-token GRPO row per chip per micro-batch. `int-jax plan` shows the paper's
SFT fitting every preset and its GRPO every preset but v6e-8 (tests/test_plan.py).
"""

from __future__ import annotations

import dataclasses

GIB = 1 << 30
MIB = 1 << 20
# XLA's share of each GPU's memory (XLA_PYTHON_CLIENT_MEM_FRACTION, set by the GPU
# launcher); the rest is left to cuDNN workspaces and NCCL buffers.
GPU_MEM_FRACTION = 0.92


@dataclasses.dataclass(frozen=True)
class Chip:
    """One JAX device's kind and memory."""

    name: str
    platform: str  # jax platform name: "tpu" or "gpu"
    hbm_bytes: int
    usable_fraction: float = 1.0  # of hbm_bytes, what XLA may allocate

    @property
    def usable_bytes(self) -> int:
        return int(self.hbm_bytes * self.usable_fraction)


CHIPS = {
    "v5p": Chip("v5p", "tpu", 95 * GIB),
    "v6e": Chip("v6e", "tpu", 32 * GIB),
    # nvidia-smi's totals: 81559 MiB (H100 SXM 80GB), 143771 MiB (H200 141GB).
    "h100": Chip("h100", "gpu", 81559 * MIB, GPU_MEM_FRACTION),
    "h200": Chip("h200", "gpu", 143771 * MIB, GPU_MEM_FRACTION),
}


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What the launchers set for training on a target (`launch/plan_check.py`)."""

    sft_rows: int = 1  # rows per chip of an SFT micro-batch: train.micro_batch = this x chips
    grpo_rows: int = 1  # of a GRPO micro-batch: grpo.micro_batch = this x chips
    # sampler.kv_reserve_bytes of GRPO: the learner's engine keeps its weights and KV pool
    # through an update, so the train step's gradients and activations live in the reserve.
    grpo_reserve_gib: int = 16


@dataclasses.dataclass(frozen=True)
class TPUSlice:
    accelerator: str  # gcloud --accelerator-type
    runtime: str  # TPU VM software version
    chips: int
    hosts: int
    chip: Chip
    train: TrainSettings = TrainSettings()


# GRPO's reserve per preset: `int-jax plan` measures its train step at 18.3 GiB per chip
# on 4 chips, 14.5 on 8, 12.6 on 16 and 11.2 on 64 (one 18K-token row per chip; the
# gradients and their running sum shrink as chips are added, activations do not).
TPU_SLICES = {
    "v5p-8": TPUSlice("v5p-8", "v2-alpha-tpuv5", chips=4, hosts=1, chip=CHIPS["v5p"],
                      train=TrainSettings(grpo_reserve_gib=20)),
    "v5p-32": TPUSlice("v5p-32", "v2-alpha-tpuv5", chips=16, hosts=4, chip=CHIPS["v5p"],
                       train=TrainSettings(grpo_reserve_gib=14)),
    "v5p-128": TPUSlice("v5p-128", "v2-alpha-tpuv5", chips=64, hosts=16, chip=CHIPS["v5p"],
                        train=TrainSettings(grpo_reserve_gib=12)),
    # GRPO does not fit a v6e-8 at the paper's settings: 32 GiB holds the train state,
    # the sampler's whole bf16 weights and this reserve, but not then a 49K-token sequence.
    "v6e-8": TPUSlice("v6e-8", "v2-alpha-tpuv6e", chips=8, hosts=1, chip=CHIPS["v6e"],
                      train=TrainSettings(grpo_reserve_gib=16)),
    "v6e-64": TPUSlice("v6e-64", "v2-alpha-tpuv6e", chips=64, hosts=16, chip=CHIPS["v6e"],
                       train=TrainSettings(grpo_reserve_gib=12)),
}


@dataclasses.dataclass(frozen=True)
class GPUNode:
    gpus: int
    cuda_extra: str  # pip extra of jax for this card's CUDA
    chip: Chip
    train: TrainSettings = TrainSettings()


GPU_NODES = {  # per node; GRPO's reserve holds its train step on one node (8 GPUs)
    "8xh100": GPUNode(gpus=8, cuda_extra="cuda12", chip=CHIPS["h100"],
                      train=TrainSettings(grpo_reserve_gib=16)),
    "8xh200": GPUNode(gpus=8, cuda_extra="cuda12", chip=CHIPS["h200"],
                      train=TrainSettings(grpo_reserve_gib=16)),
}


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a run goes, as `int-jax plan` and the launchers see it."""

    name: str
    devices: int
    chip: Chip
    train: TrainSettings


def target(name: str, nodes: int = 1) -> Target:
    """A TPU slice, or `nodes` GPU nodes of a kind; unknown names are an error."""
    if name in TPU_SLICES:
        s = TPU_SLICES[name]
        if nodes != 1:
            raise ValueError(f"{name} is a TPU slice: choose a larger slice, not nodes={nodes}")
        return Target(name, s.chips, s.chip, s.train)
    if name in GPU_NODES:
        g = GPU_NODES[name]
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        return Target(name if nodes == 1 else f"{name}:{nodes}", g.gpus * nodes, g.chip, g.train)
    raise ValueError(f"unknown target {name!r}; choose one of {sorted(TARGETS)}")


TARGETS = (*TPU_SLICES, *GPU_NODES)


def mesh_flags(devices: int, prefix: str = "") -> list[str]:
    """Every chip on fsdp, for the config section at `prefix` ("" or "sft." ...)."""
    return [f"--config.{prefix}model.mesh.data=1", f"--config.{prefix}model.mesh.fsdp={devices}",
            f"--config.{prefix}model.mesh.tensor=1"]
