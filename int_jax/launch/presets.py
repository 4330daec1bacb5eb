"""Accelerator presets: what a slice or a node holds, and the mesh our configs use on it.

Chips are JAX devices (a v5p chip is one device: its two TensorCores run as one
megacore). Meshes put every chip on `fsdp` (a 4B model's weights and AdamW state
split across chips; activations split by batch over the same axis), which is what
the paper's 4B runs need; change `model.mesh.*` for larger models.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TPUSlice:
    accelerator: str  # gcloud --accelerator-type
    runtime: str  # TPU VM software version
    chips: int
    hosts: int

    def mesh_flags(self) -> list[str]:
        return ["--config.model.mesh.data=1", f"--config.model.mesh.fsdp={self.chips}",
                "--config.model.mesh.tensor=1"]


TPU_SLICES = {
    "v5p-8": TPUSlice("v5p-8", "v2-alpha-tpuv5", chips=4, hosts=1),
    "v5p-32": TPUSlice("v5p-32", "v2-alpha-tpuv5", chips=16, hosts=4),
    "v5p-128": TPUSlice("v5p-128", "v2-alpha-tpuv5", chips=64, hosts=16),
    "v6e-8": TPUSlice("v6e-8", "v2-alpha-tpuv6e", chips=8, hosts=1),
    "v6e-64": TPUSlice("v6e-64", "v2-alpha-tpuv6e", chips=64, hosts=16),
}


@dataclasses.dataclass(frozen=True)
class GPUNode:
    gpus: int
    cuda_extra: str  # pip extra of jax for this card's CUDA

    def mesh_flags(self, nodes: int) -> list[str]:
        return ["--config.model.mesh.data=1", f"--config.model.mesh.fsdp={self.gpus * nodes}",
                "--config.model.mesh.tensor=1"]


GPU_NODES = {
    "8xh100": GPUNode(gpus=8, cuda_extra="cuda12"),
    "8xh200": GPUNode(gpus=8, cuda_extra="cuda12"),
}
