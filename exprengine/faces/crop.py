"""Where a face sits in a frame, and its crop at the model's size.

A `FaceCrop` is a square of side `side` pixels centred on (cx, cy), turned by `angle`
(radians, counter-clockwise in the image, 0 without alignment). Without alignment it is
exactly the thesis's "Ver 2.0" crop (`square_box`: the detector's box made square and moved
inside the frame); with alignment the square turns so the eyes lie level in the crop, and the
parts of it outside the frame repeat the frame's edge. `paste.py` inverts the same geometry.

The rig's crop is made from MediaPipe's face mesh instead (`from_landmarks`): centred
CROP_CENTRE inter-ocular distances (IOD) below the eye midpoint, down the face, with a side
of CROP_SIDE IOD (the constants of `exprengine.models.rig`), turned level with `align`.
`to_crop` carries points (e.g. the mesh) from the frame's pixels into the crop's, exactly
as `extract` samples (rotation included); `to_image` carries them back. Coordinates are
continuous pixels: x right, y down, pixel i spanning [i, i+1).
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
    """A face's crop in a frame (module docstring): a square of `side` pixels centred on (cx, cy)
    (frame pixels, continuous), turned by `angle` radians (counter-clockwise in the image; 0
    without alignment). Made with `from_box` or `from_landmarks`; `extract` reads it at a size.
    """

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

    @classmethod
    def from_landmarks(cls, points: np.ndarray, image_shape: tuple[int, ...], align: bool = False,
                       centre: float | None = None, side: float | None = None) -> "FaceCrop":
        """The rig's crop of a face from its MediaPipe mesh: points [478,2|3] in the frame's pixels
        (x, y first). Each eye's centre is the mean of its corners (33/133, 362/263); IOD is the
        distance between them. The crop is centred `centre` IOD (default the rig's CROP_CENTRE)
        below the eyes' midpoint along the face's own down direction, `side` IOD wide (default
        CROP_SIDE), and turned so the eyes lie level with `align`. Without `align` it is moved
        inside the frame (`image_shape`, HxW...) when it fits there, as `from_box`'s squares are;
        parts outside the frame repeat its edge. ValueError if the eyes are not two distinct
        finite points."""
        from exprengine.models.rig import CROP_CENTRE, CROP_SIDE, LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS
        p = np.asarray(points, np.float64)[:, :2]
        right, left = p[list(RIGHT_EYE_CORNERS)].mean(0), p[list(LEFT_EYE_CORNERS)].mean(0)
        axis = left - right
        iod = float(np.hypot(*axis))
        if not (np.isfinite(axis).all() and np.isfinite(right).all() and iod >= 1.0):
            raise ValueError(f"a face mesh needs two distinct, finite eye centres (inter-ocular distance {iod:.3g} px)")
        ex = axis / iod
        down = np.array([-ex[1], ex[0]])                     # the face's y axis (the rig's face frame)
        cx, cy = (right + left) / 2 + (CROP_CENTRE if centre is None else centre) * iod * down
        length = max(8, int(round((CROP_SIDE if side is None else side) * iod)))
        if align:
            return cls(float(cx), float(cy), length, -math.atan2(ex[1], ex[0]))
        h, w = image_shape[:2]
        if length <= h:
            cy = round(min(max(cy - length / 2, 0), h - length)) + length / 2
        if length <= w:
            cx = round(min(max(cx - length / 2, 0), w - length)) + length / 2
        return cls(float(cx), float(cy), length, 0.0)

    def to_crop(self, points: np.ndarray, size: int) -> np.ndarray:
        """float32 [...,2]: points [...,2|3] (x, y first; frame pixels) in the pixels of this crop
        extracted at `size` (`extract`): the region's offset, the turn about its centre, the
        square cut out of the turned region, and the scale to `size`."""
        xy = np.asarray(points, np.float64)[..., :2]
        top, left, extent = self.region
        q = xy - (left, top)
        if self.angle != 0.0:
            c, s = math.cos(self.angle), math.sin(self.angle)
            q = q - extent / 2
            q = np.stack([c * q[..., 0] - s * q[..., 1], s * q[..., 0] + c * q[..., 1]], axis=-1) + extent / 2
            q = q - (extent - self.side) // 2
        return (q * (size / self.side)).astype(np.float32)

    def to_image(self, points: np.ndarray, size: int) -> np.ndarray:
        """float64 [...,2]: points [...,2] in the pixels of this crop at `size`, in the frame's
        pixels (the inverse of `to_crop`)."""
        q = np.asarray(points, np.float64)[..., :2] * (self.side / size)
        top, left, extent = self.region
        if self.angle != 0.0:
            c, s = math.cos(self.angle), math.sin(self.angle)
            q = q + (extent - self.side) // 2 - extent / 2
            q = np.stack([c * q[..., 0] + s * q[..., 1], -s * q[..., 0] + c * q[..., 1]], axis=-1) + extent / 2
        return q + (left, top)

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
