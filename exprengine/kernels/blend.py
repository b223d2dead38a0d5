"""Where the blend happens.

    out   = A * I0 + (1 - A) * C          I0, C in [-1, 1]; A in [0, 1] (1 keeps the pixel)
    pixel = rint((out + 1) * 127.5)       clamped to [0, 255], uint8, NHWC

`blend` is used by the PyTorch generator and inside the exported "blended" graphs;
`blend_to_uint8_nhwc` is the plain reference of the fused CUDA epilogue kernel
(`csrc/epilogue.cu`, which GPU engines run instead; bit-identical, tests/test_cuda.py).
Rounding is round-half-to-even (numpy.rint, torch.round, CUDA rintf).
"""
from __future__ import annotations

import numpy as np
import torch


def blend(image: torch.Tensor, color: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """A * image + (1 - A) * C for image/color [N,3,H,W] and attention [N,1,H,W]."""
    return attention * image + (1 - attention) * color


def to_uint8_nhwc(image: np.ndarray) -> np.ndarray:
    """[N,3,H,W] float in [-1, 1] -> [N,H,W,3] uint8 (vectorised, one pass per op)."""
    assert image.ndim == 4 and image.shape[1] == 3, f"expected [N,3,H,W], got {image.shape}"
    pixels = np.rint((np.asarray(image, dtype=np.float32) + 1.0) * 127.5)
    return np.clip(pixels, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1).copy()


def blend_to_uint8_nhwc(image: np.ndarray, color: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """Reference of the fused epilogue: heads + input frame -> uint8 NHWC."""
    assert color.shape == image.shape and attention.shape == (image.shape[0], 1, *image.shape[2:])
    image, color, attention = (np.asarray(a, dtype=np.float32) for a in (image, color, attention))
    return to_uint8_nhwc(attention * image + (1.0 - attention) * color)
