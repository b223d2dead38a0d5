"""Face crops (uint8 RGB, any size) -> uint8 batches of the network's size; the conversion to
the network's [-1, 1] tensors is `exprengine.pixels.to_network_input`.

A face crop is what `edit` and `morph` take. Today the user supplies crops; the faces
module (detection, alignment, paste-back) produces them from whole photos and frames.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from exprengine.errors import UserError
from exprengine.pixels import as_rgb


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
    return np.stack([resize_face(as_rgb(f, "a face image"), size) for f in faces])
