"""The exported graph's interface, shared by every backend.

Inputs (float32, normalised outside the graph by `exprengine.engine.preprocess`):
    image [N, 3, S, S] in [-1, 1]          (uint8 / 127.5 - 1)
    aus   [N, 17]      intensity / 5       (AU_NAMES order)
Outputs depend on where the blend lives (`GraphOutputs`):
    "blended": output [N,3,S,S] in [-1,1] = A*image + (1-A)*C, attention [N,1,S,S]
               (portable backends: ONNX Runtime, AOTInductor, eager torch)
    "heads":   color [N,3,S,S] = C, attention [N,1,S,S] = A
               (GPU engines: the fused CUDA epilogue in csrc/ blends and writes uint8)
N is dynamic. Export with a batch of 2 (a batch-1 example lets the tracer specialise N=1).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from exprengine.kernels.blend import blend
from exprengine.models import AttentionGenerator

GraphOutputs = Literal["blended", "heads"]
INPUT_NAMES = ("image", "aus")
OUTPUT_NAMES: dict[str, tuple[str, str]] = {
    "blended": ("output", "attention"),
    "heads": ("color", "attention"),
}
EXAMPLE_BATCH = 2


class ExportedGenerator(nn.Module):
    """Wraps a generator with the graph interface above."""

    def __init__(self, generator: AttentionGenerator, outputs: GraphOutputs = "blended"):
        super().__init__()
        if outputs not in OUTPUT_NAMES:
            raise ValueError(f"outputs must be one of {list(OUTPUT_NAMES)}, got {outputs!r}")
        self.generator = generator.eval()
        self.outputs = outputs

    def forward(self, image: torch.Tensor, aus: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        color, attention = self.generator(image, aus)
        if self.outputs == "heads":
            return color, attention
        return blend(image, color, attention), attention


def example_inputs(generator: AttentionGenerator, batch: int = EXAMPLE_BATCH, seed: int = 0):
    """Random inputs in the network's ranges, on the generator's device and in its dtype."""
    cfg = generator.config
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, cfg.image_size, cfg.image_size, generator=g) * 2 - 1
    aus = torch.rand(batch, cfg.num_aus, generator=g) * 0.4
    weight = next(generator.parameters())
    return image.to(weight.device, weight.dtype), aus.to(weight.device, weight.dtype)


def dynamic_shapes(max_batch: int) -> dict:
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    return {"image": {0: batch}, "aus": {0: batch}}


def export_program(generator: AttentionGenerator, outputs: GraphOutputs = "blended",
                   max_batch: int = 256) -> torch.export.ExportedProgram:
    """torch.export the wrapped generator with a dynamic batch axis."""
    module = ExportedGenerator(generator, outputs).eval()
    with torch.no_grad():
        return torch.export.export(module, example_inputs(generator),
                                   dynamic_shapes=dynamic_shapes(max_batch), strict=False)
