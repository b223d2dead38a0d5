"""`torch`: eager PyTorch, the reference every compiled engine is checked against."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from exprengine.engines.backends.base import Backend
from exprengine.engines.manifest import Manifest
from exprengine.kernels.blend import blend
from exprengine.models import AttentionGenerator

WEIGHTS = "weights.safetensors"


class TorchBackend(Backend):
    name = "torch"
    description = "eager PyTorch (reference; CPU or CUDA)"

    def __init__(self, generator: AttentionGenerator, device: str = "cpu"):
        self.device = torch.device("cuda" if device == "cuda" else "cpu")
        self.generator = generator.eval().to(self.device)

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"torch": torch.__version__}

    @classmethod
    def build(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        from exprengine.checkpoints import save_weights
        save_weights(generator, directory / WEIGHTS)
        return [WEIGHTS]

    @classmethod
    def load(cls, directory: Path, manifest: Manifest, device: str) -> "TorchBackend":
        from exprengine.checkpoints import load_weights
        return cls(load_weights(directory / WEIGHTS), "cuda" if device == "cuda" else "cpu")

    @torch.inference_mode()
    def run(self, image: np.ndarray, aus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(image).to(self.device)
        a = torch.from_numpy(aus).to(self.device)
        color, attention = self.generator(x, a)
        return blend(x, color, attention).cpu().numpy(), attention.cpu().numpy()
