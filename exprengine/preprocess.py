"""Vectorised pre-processing: face crops (uint8 RGB, any size) -> the network's input.

A face crop is what `edit` and `morph` take. Today the user supplies crops; the faces
module (detection, alignment, paste-back) produces them from whole photos and frames.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from exprengine.errors import UserError


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 uint8 -> HxWx3 uint8 (alpha dropped, gray replicated)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise UserError(f"face images must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise UserError(f"a face image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {list(a.shape)}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return a[:, :, :3]


def center_square(face: np.ndarray) -> np.ndarray:
    """The largest centred square of a crop (faces are never stretched)."""
    h, w = face.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return face[top:top + s, left:left + s]


def resize_face(face: np.ndarray, size: int) -> np.ndarray:
    """Resize one HxWx3 uint8 crop to size x size: centre square, area-averaging when shrinking."""
    if face.shape[:2] == (size, size):
        return face
    face = np.ascontiguousarray(center_square(face))
    shrink = face.shape[0] > size
    resample = Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(face).resize((size, size), resample))


def stack_faces(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """One face [H,W,C], a batch [N,H,W,C] or a list of faces of any sizes -> uint8 [N,size,size,3]."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.shape[1:3] == (size, size) and images.shape[3] == 3 and images.dtype == np.uint8:
            return images
        faces = list(images)
    elif isinstance(images, np.ndarray):
        faces = [images]
    else:
        faces = list(images)
    if not faces:
        raise UserError("no face images given")
    return np.stack([resize_face(as_rgb_uint8(f), size) for f in faces])


def to_network_input(faces: np.ndarray) -> np.ndarray:
    """uint8 [N,S,S,3] -> float32 [N,3,S,S] in [-1, 1] (x / 127.5 - 1), one vectorised pass."""
    assert faces.ndim == 4 and faces.shape[3] == 3 and faces.dtype == np.uint8, faces.shape
    x = faces.transpose(0, 3, 1, 2).astype(np.float32)
    x *= 1.0 / 127.5
    x -= 1.0
    return x
