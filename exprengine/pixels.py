"""Pixels: the one owner of the conventions between image bytes and the networks' tensors.

    network input  x     = u8 / 127.5 - 1          float32 [N,3,S,S] NCHW, in [-1, 1]
    blend          out   = A * I0 + (1 - A) * C    I0, C in [-1, 1]; A in [0, 1] (1 keeps the pixel)
    output         pixel = rint((out + 1) * 127.5) clamped to [0, 255], uint8 [N,S,S,3] NHWC

The convention is GANimation's (Pumarola et al., ECCV 2018, eq. 1 for the blend; images in
[-1, 1] as its tanh colour head). Rounding is round-half-to-even (numpy.rint, torch.round, CUDA
rintf). `to_network_input` and `blend_to_uint8_nhwc` are the plain references of the fused CUDA
prologue and epilogue (`exprengine/kernels/epilogue.cu`, launched by `exprengine/kernels/cuda.py`),
which GPU engines run instead, bit for bit (tests/test_cuda.py); `to_uint8_nhwc` is the reference
of its output kernel (`exprengine_to_u8_*`, a LATS decoder's tanh image to uint8,
tests/test_lats_engine.py). `as_rgb` is the one coercion of
photos and crops (gray, gray+alpha-less, RGBA) to RGB.
"""
from __future__ import annotations

import numpy as np

from exprengine.errors import UserError

#: Half the uint8 range: u8 / PIXEL_SCALE - 1 maps [0, 255] onto [-1, 1].
PIXEL_SCALE = 127.5


def as_rgb(image: np.ndarray, what: str = "an image") -> np.ndarray:
    """uint8 HxW, HxWx1, HxWx3 or HxWx4 -> HxWx3 uint8 (alpha dropped, gray replicated; a view
    where possible). `what` names the argument in the error ("a photo", "a face image").

    Raises UserError (one sentence) for another dtype, rank, channel count or an empty image.
    """
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)) or 0 in a.shape:
        raise UserError(f"{what} must be uint8 HxW, HxWx3 or HxWx4, got {a.dtype} {list(a.shape)}")
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    return a[:, :, :3] if a.shape[2] == 4 else a


def to_network_input(faces: np.ndarray) -> np.ndarray:
    """uint8 [N,S,S,3] NHWC -> float32 [N,3,S,S] NCHW in [-1, 1], x = u8 * (1 / 127.5) - 1.

    One vectorised pass; bit-identical to the CUDA prologue. AssertionError on another shape or dtype.
    """
    assert faces.ndim == 4 and faces.shape[3] == 3 and faces.dtype == np.uint8, (faces.shape, faces.dtype)
    x = faces.transpose(0, 3, 1, 2).astype(np.float32)
    x *= 1.0 / PIXEL_SCALE
    x -= 1.0
    return x


def network_tensor(faces: np.ndarray):
    """uint8 [N,S,S,3] -> torch.float32 [N,3,S,S] in [-1, 1] (`to_network_input` as a tensor)."""
    import torch
    return torch.from_numpy(to_network_input(faces))


def to_uint8_nhwc(image: np.ndarray) -> np.ndarray:
    """float [N,3,H,W] in [-1, 1] -> uint8 [N,H,W,3], rint((x + 1) * 127.5) clamped to [0, 255].

    AssertionError on another shape.
    """
    assert image.ndim == 4 and image.shape[1] == 3, f"expected [N,3,H,W], got {image.shape}"
    pixels = np.rint((np.asarray(image, dtype=np.float32) + 1.0) * PIXEL_SCALE)
    return np.clip(pixels, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1).copy()


def blend(image, color, attention):
    """A * image + (1 - A) * C (GANimation eq. 1) for image/color [N,3,H,W] and attention
    [N,1,H,W]: torch tensors (also inside exported graphs) or NumPy arrays, any float dtype."""
    return attention * image + (1 - attention) * color


def blend_to_uint8_nhwc(image: np.ndarray, color: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """Reference of the fused epilogue: image/color float [N,3,H,W], attention [N,1,H,W] ->
    uint8 [N,H,W,3] (`blend` in float32, then `to_uint8_nhwc`). AssertionError on mismatched shapes."""
    assert color.shape == image.shape and attention.shape == (image.shape[0], 1, *image.shape[2:])
    image, color, attention = (np.asarray(a, dtype=np.float32) for a in (image, color, attention))
    return to_uint8_nhwc(blend(image, color, attention))
