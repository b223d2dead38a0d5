"""The exported graph's interface, shared by every backend.

Inputs (float32, normalised outside the graph by `exprengine.pixels.to_network_input`):
    image     [N, 3, S, S] in [-1, 1]      (uint8 / 127.5 - 1)
    aus       [N, 17]      intensity / 5   (AU_NAMES order)
    landmarks [N, 478, 2]  the rig only (`graph_inputs`): MediaPipe's face mesh in the crop's
                           pixels (x right, y down, pixel i spanning [i, i+1))
Outputs depend on where the blend lives (`GraphOutputs`):
    "blended": output [N,3,S,S] in [-1,1] = A*image + (1-A)*C, attention [N,1,S,S]
               (portable backends: ONNX Runtime, AOTInductor, eager torch)
    "heads":   color [N,3,S,S] = C, attention [N,1,S,S] = A
               (GPU engines: the fused CUDA epilogue, exprengine/kernels/epilogue.cu, blends and writes uint8)
N is dynamic. Export with a batch of 2 (a batch-1 example lets the tracer specialise N=1).

A LATS age generator (`exprengine.models.lats.LATSGenerator`) is exported as two graphs
(`LATS_GRAPHS`; `exprengine.engines.manifest.LATS_GRAPHS` records them), each with the batch
axis dynamic (the decoder's two inputs share it):
    encoder: image [N,3,S,S] in [-1,1]                 -> features [N,C,S/4,S/4]
    decoder: features [N,C,S/4,S/4], style [N,D]       -> output [N,3,S,S] in [-1,1] (tanh)
The age styles are not a graph: the 6 class styles are computed once by eager PyTorch at
build time and interpolated outside (`interpolate_styles`).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from exprengine.pixels import blend
from exprengine.models import AttentionGenerator

GraphOutputs = Literal["blended", "heads"]
INPUT_NAMES = ("image", "aus")
RIG_INPUT_NAMES = ("image", "aus", "landmarks")
OUTPUT_NAMES: dict[str, tuple[str, str]] = {
    "blended": ("output", "attention"),
    "heads": ("color", "attention"),
}
EXAMPLE_BATCH = 2


def graph_inputs(model) -> tuple[str, ...]:
    """The names of the graph's inputs for `model`: the rig also takes the landmarks."""
    from exprengine.models import is_rig
    return RIG_INPUT_NAMES if is_rig(model) else INPUT_NAMES


class ExportedGenerator(nn.Module):
    """Wraps a generator with the graph interface above."""

    def __init__(self, generator: AttentionGenerator, outputs: GraphOutputs = "blended"):
        super().__init__()
        if outputs not in OUTPUT_NAMES:
            raise ValueError(f"outputs must be one of {list(OUTPUT_NAMES)}, got {outputs!r}")
        self.generator = generator.eval()
        self.outputs = outputs

    def forward(self, image: torch.Tensor, aus: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image [N,3,S,S] in [-1,1], aus [N,17] (intensity / 5) -> ("blended") output [N,3,S,S] in [-1,1]
        = A*image + (1-A)*C and attention A [N,1,S,S], or ("heads") color C and attention A.
        """
        color, attention = self.generator(image, aus)
        if self.outputs == "heads":
            return color, attention
        return blend(image, color, attention), attention


class ExportedRig(nn.Module):
    """Wraps the rig (`FaceRig`) with the graph interface above (three inputs)."""

    def __init__(self, rig, outputs: GraphOutputs = "blended"):
        super().__init__()
        if outputs not in OUTPUT_NAMES:
            raise ValueError(f"outputs must be one of {list(OUTPUT_NAMES)}, got {outputs!r}")
        self.rig = rig.eval()
        self.outputs = outputs

    def forward(self, image: torch.Tensor, aus: torch.Tensor, landmarks: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """image [N,3,S,S] in [-1,1], aus [N,17] (intensity / 5), landmarks [N,478,2] (crop pixels) ->
        the same two outputs as `ExportedGenerator.forward`.
        """
        color, attention = self.rig(image, aus, landmarks)
        if self.outputs == "heads":
            return color, attention
        return blend(image, color, attention), attention


def exported_module(model, outputs: GraphOutputs = "blended") -> nn.Module:
    """The graph-interface wrapper of a generator or of the rig, in eval mode."""
    from exprengine.models import is_rig
    return (ExportedRig if is_rig(model) else ExportedGenerator)(model, outputs).eval()


def example_inputs(generator: AttentionGenerator, batch: int = EXAMPLE_BATCH, seed: int = 0):
    """Random inputs in the network's ranges, on the generator's device and in its dtype (for
    the rig also plausible landmarks: `export.inputs.random_rig_inputs`)."""
    from exprengine.models import is_rig
    if is_rig(generator):
        from exprengine.export.inputs import random_rig_inputs
        return tuple(torch.from_numpy(a) for a in random_rig_inputs(batch, generator.config.image_size, seed))
    cfg = generator.config
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, cfg.image_size, cfg.image_size, generator=g) * 2 - 1
    aus = torch.rand(batch, cfg.num_aus, generator=g) * 0.4
    weight = next(generator.parameters())
    return image.to(weight.device, weight.dtype), aus.to(weight.device, weight.dtype)


def dynamic_shapes(max_batch: int, inputs: tuple[str, ...] = INPUT_NAMES) -> dict:
    """torch.export's `dynamic_shapes` for the graph: axis 0 of each of `inputs` is one shared Dim
    "batch" in 1..`max_batch`.
    """
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    return {name: {0: batch} for name in inputs}


def export_program(generator: AttentionGenerator, outputs: GraphOutputs = "blended",
                   max_batch: int = 256) -> torch.export.ExportedProgram:
    """torch.export the wrapped generator (or rig) with a dynamic batch axis."""
    module = exported_module(generator, outputs)
    with torch.no_grad():
        return torch.export.export(module, example_inputs(generator),
                                   dynamic_shapes=dynamic_shapes(max_batch, graph_inputs(generator)), strict=False)


# --- LATS: two graphs ----------------------------------------------------------------------------
LATS_GRAPHS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "encoder": (("image",), ("features",)),
    "decoder": (("features", "style"), ("output",)),
}


class ExportedLATSEncoder(nn.Module):
    """A LATS generator's identity encoder as a graph: image [N,3,S,S] in [-1,1] -> features [N,C,S/4,S/4]."""

    def __init__(self, generator):
        super().__init__()
        self.generator = generator.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """`LATSGenerator.encode`."""
        return self.generator.encode(image)


class ExportedLATSDecoder(nn.Module):
    """A LATS generator's decoder as a graph: features [N,C,S/4,S/4], style [N,D] -> output
    [N,3,S,S] in [-1,1] (tanh)."""

    def __init__(self, generator):
        super().__init__()
        self.generator = generator.eval()

    def forward(self, features: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """`LATSGenerator.decode` (the batch-independent modulated conv)."""
        return self.generator.decode(features, style)


def lats_graph_module(generator, graph: str) -> nn.Module:
    """The wrapper of graph `graph` ("encoder" or "decoder", `LATS_GRAPHS`) of a LATS generator,
    in eval mode. ValueError for another graph name."""
    if graph not in LATS_GRAPHS:
        raise ValueError(f"graph must be one of {list(LATS_GRAPHS)}, got {graph!r}")
    return (ExportedLATSEncoder if graph == "encoder" else ExportedLATSDecoder)(generator).eval()


def lats_example_inputs(generator, graph: str, batch: int = EXAMPLE_BATCH, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Example inputs of a LATS graph on the generator's device and in its dtype: the encoder's
    image uniform in [-1,1]; the decoder's features (the encoder's own, of random images) and
    styles at random class positions (`LATSGenerator.style_at`)."""
    cfg = generator.config
    g = torch.Generator().manual_seed(seed)
    weight = next(generator.parameters())
    image = (torch.rand(batch, 3, cfg.image_size, cfg.image_size, generator=g) * 2 - 1).to(weight.device, weight.dtype)
    if graph == "encoder":
        return (image,)
    with torch.no_grad():
        features = generator.encode(image)
        style = generator.style_at((torch.rand(batch, generator=g) * (cfg.num_classes - 1)).tolist())
    return features, style.to(weight.dtype)


def export_lats_program(generator, graph: str, max_batch: int = 256) -> torch.export.ExportedProgram:
    """torch.export one graph of a LATS generator ("encoder" or "decoder") with a dynamic batch axis."""
    module = lats_graph_module(generator, graph)
    with torch.no_grad():
        return torch.export.export(module, lats_example_inputs(generator, graph),
                                   dynamic_shapes=dynamic_shapes(max_batch, LATS_GRAPHS[graph][0]), strict=False)
