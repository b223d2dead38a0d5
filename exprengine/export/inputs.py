"""Fresh random inputs in each model's ranges: what builds are verified on (`engines.build.
verify_against_eager`) and what graphs are exported with (`export.graph.example_inputs`).

For the rig the inputs are plausible (`random_rig_inputs`): a real MediaPipe mesh under a
random similarity transform plus noise, AU intensities drawn from the whole 0..5 scale, and a
random band-limited image (a warp's pointwise error is |image gradient| x |flow error|, so
1-pixel white noise would measure the float32 rounding of the flow, not the engine).
"""
from __future__ import annotations

import functools
import os

import numpy as np
import torch


def random_network_inputs(batch: int, size: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fresh random inputs in the network's ranges: image in [-1, 1], aus (intensity/5) in [0, 0.4]."""
    rng = np.random.default_rng(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
    image = rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    aus = rng.uniform(0, 0.4, (batch, 17)).astype(np.float32)
    return image, aus


#: The random similarity transforms of `random_rig_inputs`: roll (radians), scale, shift (fraction
#: of the crop) and per-point noise (fraction of the crop; 0.8 px at 256, about MediaPipe's own
#: frame-to-frame jitter on a still face).
RIG_ROLL, RIG_SCALE, RIG_SHIFT, RIG_NOISE = 0.35, (0.85, 1.15), 0.04, 0.003
#: Side of the random coarse grid that `random_smooth_images` upsamples (bicubic) to the crop.
SMOOTH_GRID = 16


@functools.lru_cache(maxsize=4)
def reference_mesh(size: int) -> np.ndarray:
    """float32 [478,2]: MediaPipe's mesh of the bundled face photo (`exprengine/assets/face.png`),
    in the pixels of the rig's crop of it (`FaceCrop.from_landmarks`) at `size`: what the faces
    pipeline gives the rig for that photo. UserError if MediaPipe is missing or finds no face."""
    from exprengine.media import bundled_face
    from exprengine.errors import UserError
    from exprengine.faces.crop import FaceCrop
    from exprengine.faces.landmarks import MediaPipeDetector
    face = bundled_face()
    detector = MediaPipeDetector()
    try:
        points = detector.landmarks(face)
    finally:
        detector.close()
    if len(points) == 0:
        raise UserError("MediaPipe finds no face mesh in the bundled face photo")
    crop = FaceCrop.from_landmarks(points[0], face.shape)
    return crop.to_crop(points[0], size).astype(np.float32)


def random_smooth_images(rng: np.random.Generator, batch: int, size: int) -> np.ndarray:
    """float32 [batch,3,size,size] in [-1,1]: uniform noise on a SMOOTH_GRID grid, upsampled bicubically."""
    coarse = torch.from_numpy(rng.uniform(-1, 1, (batch, 3, SMOOTH_GRID, SMOOTH_GRID)).astype(np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return fine.clamp(-1, 1).numpy()


def random_rig_inputs(batch: int, size: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fresh random, plausible inputs of the rig: (image float32 [N,3,S,S] in [-1,1], band-limited;
    aus float32 [N,17] = intensity / 5 with intensities uniform in 0..5; landmarks float32
    [N,478,2] in crop pixels: `reference_mesh` turned by up to RIG_ROLL about the crop's centre,
    scaled by RIG_SCALE, shifted by up to RIG_SHIFT of the crop, plus Gaussian noise RIG_NOISE)."""
    rng = np.random.default_rng(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
    mesh = reference_mesh(size).astype(np.float64)
    centre = np.array([size / 2, size / 2])
    marks = []
    for _ in range(batch):
        a, s = rng.uniform(-RIG_ROLL, RIG_ROLL), rng.uniform(*RIG_SCALE)
        turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        shift = rng.uniform(-RIG_SHIFT, RIG_SHIFT, 2) * size
        marks.append((mesh - centre) @ turn.T * s + centre + shift + rng.normal(0, RIG_NOISE * size, mesh.shape))
    aus = rng.uniform(0, 1, (batch, 17)).astype(np.float32)
    return random_smooth_images(rng, batch, size), aus, np.stack(marks).astype(np.float32)
