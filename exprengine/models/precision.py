"""Reduced precision that keeps the normalisations accurate.

FP16 is known to break InstanceNorm and LayerNorm (SPEC section 6): the mean and variance of
a 128x128 plane (or of 256 to 1536 channels) summed in FP16 lose their low bits, and large
activations overflow. `half_with_fp32_norms` turns a generator into FP16 everywhere except
its norm layers, which run in FP32 between two casts:

    y = cast_fp16(norm_fp32(cast_fp32(x)))

In an ONNX graph this is Cast -> InstanceNormalization/LayerNormalization (float) -> Cast,
which a strongly typed TensorRT network keeps exactly as written; Inductor fuses the casts
into the neighbouring kernels.

This module also owns the names of the engines' precisions and their PyTorch dtypes
(`DTYPES`, `torch_dtype`): every backend, the CUDA pipeline and the benchmarks use it.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from exprengine.errors import UserError

NORM_TYPES = (nn.InstanceNorm2d, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)

#: An engine's precision name -> the PyTorch dtype its network runs in (in this order: the
#: precisions any backend may build; each backend says which of them it builds).
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16}
PRECISIONS: tuple[str, ...] = tuple(DTYPES)


def torch_dtype(precision: str) -> torch.dtype:
    """The dtype of `precision` ("fp32" -> torch.float32, "fp16" -> torch.float16);
    UserError for any other name."""
    if precision not in DTYPES:
        raise UserError(f"`precision` must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return DTYPES[precision]


class Fp32Norm(nn.Module):
    """y = norm(x.float()).to(x.dtype), the norm's parameters kept in FP32."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.float()).to(x.dtype)


def half_with_fp32_norms(generator: nn.Module) -> nn.Module:
    """A copy of `generator` in FP16 whose norm layers compute in FP32 (the original is untouched)."""
    model = copy.deepcopy(generator).half()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, NORM_TYPES):
                setattr(parent, name, Fp32Norm(child))
    return model
