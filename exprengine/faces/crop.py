"""Where a face sits in a frame, and its crop at the model's size.

A `FaceCrop` is a square of side `side` pixels centred on (cx, cy), turned by `angle`
(radians, counter-clockwise in the image, 0 without alignment). Without alignment it is
exactly the thesis's "Ver 2.0" crop (`square_box`: the detector's box made square and moved
inside the frame); with alignment the square turns so the eyes lie level in the crop, and the
parts of it outside the frame repeat the frame's edge. `paste.py` inverts the same geometry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from exprengine.faces.detect import Box, square_box
from exprengine.preprocess import resize_face


@dataclass(frozen=True)
class FaceCrop:
    cx: float
    cy: float
    side: int
    angle: float = 0.0

    @classmethod
    def from_box(cls, box: Box, image_shape: tuple[int, ...], eyes: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> "FaceCrop":
        """The crop of a detected face; `eyes` ((x, y) of the left and right eye) turns it level."""
        top, left, side = square_box(box, image_shape)
        if eyes is None:
            return cls(left + side / 2, top + side / 2, side, 0.0)
        (lx, ly), (rx, ry) = eyes
        angle = -math.atan2(ry - ly, rx - lx)           # image y points down: a positive tilt turns back
        return cls((box.left + box.right) / 2, (box.top + box.bottom) / 2, side, angle)

    @property
    def region(self) -> tuple[int, int, int]:
        """(top, left, extent): the axis-aligned square of the frame this crop reads from."""
        half = self.side / 2 * (abs(math.cos(self.angle)) + abs(math.sin(self.angle)))
        extent = int(math.ceil(2 * half - 1e-9))
        if self.angle == 0.0:
            extent = self.side
        return int(round(self.cy - extent / 2)), int(round(self.cx - extent / 2)), extent

    def extract(self, image: np.ndarray, size: int) -> np.ndarray:
        """uint8 [size,size,C] crop of `image` (HxWxC uint8)."""
        return self.extract_region(_read_region(image, *self.region), size)

    def extract_region(self, patch: np.ndarray, size: int) -> np.ndarray:
        """The crop from `patch`, the frame's pixels over `region` already read (and converted:
        a YUV frame converts only this square to RGB)."""
        if self.angle != 0.0:
            patch = _rotate(patch, math.degrees(-self.angle))
            k = (patch.shape[0] - self.side) // 2
            patch = patch[k:k + self.side, k:k + self.side]
        return resize_face(np.ascontiguousarray(patch), size)


def _read_region(image: np.ndarray, top: int, left: int, extent: int) -> np.ndarray:
    """image[top:top+extent, left:left+extent], the frame's edge repeated where it runs outside."""
    h, w = image.shape[:2]
    t, l, b, r = max(top, 0), max(left, 0), min(top + extent, h), min(left + extent, w)
    patch = image[t:b, l:r]
    pads = ((t - top, top + extent - b), (l - left, left + extent - r)) + ((0, 0),) * (image.ndim - 2)
    if any(p for pair in pads for p in pair):
        patch = np.pad(patch, pads, mode="edge")
    return patch


def _rotate(patch: np.ndarray, degrees: float) -> np.ndarray:
    """Turn an uint8 HxWx3 patch about its centre (bicubic, same size)."""
    return np.asarray(Image.fromarray(patch).rotate(degrees, Image.Resampling.BICUBIC))
