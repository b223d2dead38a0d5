"""`torch-compile`: the generator through `torch.compile(mode="max-autotune")` on CUDA.

A baseline and fallback for GPUs without TensorRT. The engine directory holds the weights;
compilation happens when the engine is loaded and for each new batch size (Inductor
autotunes its kernels, which takes minutes the first time; Inductor caches them on disk).
max-autotune captures CUDA graphs itself, so the pipeline around it (CUDA prologue and
epilogue, pinned memory) runs uncaptured.
"""
from __future__ import annotations

from pathlib import Path

import torch

from exprengine.engines.backends.base import Backend
from exprengine.engines.backends.torch_backend import (WEIGHTS, HeadsNetwork, TorchBackend, check_weights_metadata,
                                                       load_verified_weights)
from exprengine.engines.manifest import Manifest
from exprengine.errors import EngineError

MODE = "max-autotune"


class TorchCompileBackend(Backend):
    """`generator` compiled by torch.compile in `precision` ("fp16" or "fp32") inside the CUDA
    pipeline (uncaptured: max-autotune captures its own graphs) for batches up to `max_batch`
    of `image_size` crops; EngineError without a GPU."""
    name = "torch-compile"
    description = f"torch.compile(mode={MODE!r}) on CUDA, FP32 or FP16, compiled at load time"
    precisions = ("fp16", "fp32")
    default_precision = "fp32"
    devices = ("cuda",)
    default_device = "cuda"
    device_bound = True
    artifacts = {"weights": WEIGHTS}

    def __init__(self, generator, precision: str, image_size: int, max_batch: int):
        network = HeadsNetwork(generator, precision)
        self.module = network.module
        network.module = torch.compile(network.module, mode=MODE, dynamic=False, fullgraph=True)
        self.use_cuda_pipeline(network, image_size, max_batch, precision, graphs=False)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if not torch.cuda.is_available():
            return "the torch-compile backend runs on CUDA, and no NVIDIA GPU is visible here"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"torch": torch.__version__}

    @classmethod
    def build(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        if manifest.device != "cuda":
            raise EngineError("the torch-compile backend builds CUDA engines only (`device` 'cuda')")
        return TorchBackend.build(generator, directory, manifest)

    @classmethod
    def check_metadata(cls, manifest: Manifest, directory: Path, role: str, name: str, data: bytes) -> None:
        check_weights_metadata(manifest, directory, name, data)

    @classmethod
    def load(cls, directory: Path, manifest: Manifest, device: str) -> "TorchCompileBackend":
        if device == "cpu":
            raise EngineError("a torch-compile engine runs on CUDA only")
        return cls(load_verified_weights(directory, manifest, cls), manifest.precision, manifest.image_size,
                   manifest.max_batch)
