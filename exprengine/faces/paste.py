"""Paste edited faces back into the frame so that a viewer cannot see the seam.

The frame keeps its own resolution: what is pasted is the *change* the model made to the
crop, delta = edit - crop (at the model's size), scaled up to the face's size in the frame
and added under a feathered mask:

    out = frame + mask * delta        (rounded; only inside the face's region)

so a 400-pixel face keeps its own detail where the expression did not move it, instead of
being replaced by a blurred 128-pixel copy. The mask is the face's shape (an ellipse that
fades to zero before the crop's border; or, when the face's MediaPipe mesh is known, the
face's own outline: `outline_mask` over MediaPipe's FACE_OVAL polygon), optionally multiplied
by where the model's attention map says it changed something (1 - A, blurred). Colour matching removes the mean
change along the mask's fading ring, so a colour cast of the generator does not show as a
seam. Every pixel where mask * delta is zero, all pixels outside the face regions included,
is left bit-identical.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image

from exprengine.faces.crop import FaceCrop

MASKS = ("attention", "shape")
#: The outline mask: MediaPipe's face oval grown by OUTLINE_GROW about its centroid, fading to
#: zero at the grown outline over OUTLINE_FEATHER of the oval's mean radius (so the fade's middle
#: lies near the oval itself, and the forehead and jaw the edit moves stay inside).
OUTLINE_GROW, OUTLINE_FEATHER = 0.08, 0.16


@functools.lru_cache(maxsize=1)
def face_oval() -> tuple[int, ...]:
    """The face's outline as an ordered polygon of mesh indices (36 of the 478), chained from
    MediaPipe's own FACE_LANDMARKS_FACE_OVAL connections (mediapipe.tasks)."""
    from mediapipe.tasks.python.vision import FaceLandmarksConnections
    edges = {c.start: c.end for c in FaceLandmarksConnections.FACE_LANDMARKS_FACE_OVAL}
    first = min(edges)
    polygon = [first]
    while edges[polygon[-1]] != first:
        polygon.append(edges[polygon[-1]])
    assert len(polygon) == len(edges), "MediaPipe's face oval is not one closed loop"
    return tuple(polygon)


def face_outline(mesh: np.ndarray) -> np.ndarray:
    """The outline polygon [36,2] (x, y) of a face mesh [478,2|3] (any coordinates)."""
    return np.asarray(mesh)[list(face_oval()), :2]


def outline_mask(outline: np.ndarray, size: int, grow: float = OUTLINE_GROW,
                 feather: float = OUTLINE_FEATHER) -> np.ndarray:
    """float32 [size,size] in [0,1]: the face inside its outline polygon [K,2] (crop pixels,
    x right, y down), grown by `grow` about the polygon's centroid: 1 inside, falling smoothly
    (smoothstep) to 0 at the grown outline over `feather` of the polygon's mean radius."""
    from PIL import ImageDraw
    from scipy.ndimage import distance_transform_edt
    pts = np.asarray(outline, np.float64)
    centre = pts.mean(0)
    grown = centre + (pts - centre) * (1.0 + grow)
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in grown - 0.5], fill=1)   # pixel centres
    inside = np.asarray(canvas, bool)
    radius = float(np.hypot(*(pts - centre).T).mean())
    depth = distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]       # px to the nearest pixel outside
    t = np.clip((depth - 0.5) / max(feather * radius, 1.0), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def shape_mask(size: int, feather: float = 0.18) -> np.ndarray:
    """float32 [size,size] in [0,1]: 1 on the face's ellipse (96 % of the crop wide, all of it
    high), falling smoothly to 0 over the outer `feather` of its radius, 0 at the corners."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
    r = np.sqrt((x / 0.48) ** 2 + (y / 0.5) ** 2)
    t = np.clip((1.0 - r) / feather, 0.0, 1.0)
    mask = (t * t * (3 - 2 * t)).astype(np.float32)          # smoothstep
    mask.flags.writeable = False                              # cached: shared by every call
    return mask


def attention_mask(attention: np.ndarray, blur: float = 2.0, gain: float = 4.0) -> np.ndarray:
    """float32 [S,S] in [0,1] from an attention map (1 keeps the input): where the model changed
    the face, widened by a blur so the edit's own edges fade."""
    change = np.clip(1.0 - attention.astype(np.float32), 0.0, 1.0)
    from scipy.ndimage import gaussian_filter
    blurred = gaussian_filter(change, blur, mode="nearest")
    return np.clip(blurred * gain, 0.0, 1.0)


def face_mask(size: int, attention: np.ndarray | None, mode: str = "attention",
              outline: np.ndarray | None = None) -> np.ndarray:
    """float32 [size,size] in [0,1]: the face's shape (the outline polygon [K,2] in crop pixels
    when given, `outline_mask`; else the ellipse, `shape_mask`), times `attention_mask` in mode
    "attention"."""
    if mode not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, not {mode!r}")
    mask = shape_mask(size) if outline is None else outline_mask(outline, size)
    if mode == "attention" and attention is not None:
        mask = mask * attention_mask(attention)
    return mask


def colour_matched(delta: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """delta minus its mean along the mask's fading ring (weight mask * (1 - mask)), per channel."""
    ring = mask * (1.0 - mask)
    total = float(ring.sum())
    if total < 1e-6:
        return delta
    shift = (delta * ring[..., None]).sum((0, 1)) / total
    return delta - shift.astype(np.float32)


def pasted_change(crop: FaceCrop, original: np.ndarray, edited: np.ndarray, attention: np.ndarray | None,
                  mask: str = "attention", colour_match: bool = True, outline: np.ndarray | None = None
                  ) -> tuple[np.ndarray, tuple[int, int]]:
    """The change one face makes to the frame: float32 [E,E,3] (mask * delta at frame scale)
    and the (top, left) of that square in the frame. Zero wherever the mask is zero.
    `outline`: the face's outline polygon [K,2] in the crop's pixels (`face_outline` of the
    mesh carried by `FaceCrop.to_crop`), for a mask of the face's own shape."""
    size = original.shape[0]
    assert original.shape == edited.shape == (size, size, 3), (original.shape, edited.shape)
    delta = edited.astype(np.float32) - original.astype(np.float32)
    m = face_mask(size, attention, mask, outline)
    if colour_match:
        delta = colour_matched(delta, m)
    change = delta * m[..., None]
    side = crop.side
    scaled = np.stack([_resize_float(change[..., c], side) for c in range(3)], axis=-1)
    top, left, extent = crop.region
    if crop.angle != 0.0:
        canvas = np.zeros((extent, extent, 3), np.float32)
        k = (extent - side) // 2
        canvas[k:k + side, k:k + side] = scaled
        scaled = np.stack([_rotate_float(canvas[..., c], math.degrees(crop.angle)) for c in range(3)], axis=-1)
    return scaled, (top, left)


def apply_changes(frame: np.ndarray, changes: list[tuple[np.ndarray, tuple[int, int]]],
                  in_place: bool = False) -> np.ndarray:
    """frame (uint8 HxW, HxWx3 or HxWx4) plus each face's change, rounded: a new array, or
    `frame` itself changed with `in_place` (a frame the caller owns: saves a copy per frame).
    Colour images take the change per channel, grayscale its luma (BT.601), alpha is never touched."""
    out = frame if in_place else frame.copy()
    h, w = frame.shape[:2]
    for change, (top, left) in changes:
        e = change.shape[0]
        t, l, b, r = max(top, 0), max(left, 0), min(top + e, h), min(left + e, w)
        if t >= b or l >= r:
            continue
        c = change[t - top:b - top, l - left:r - left]
        if frame.ndim == 2:
            add_rounded(out[t:b, l:r], np.einsum("...k,k->...", c, np.array([0.299, 0.587, 0.114], np.float32)))
        else:
            add_rounded(out[t:b, l:r, :3], c)
    return out


def add_rounded(region: np.ndarray, delta: np.ndarray) -> None:
    """region (uint8) += delta, rounded and clipped, in place; where |delta| < 0.5 the region's
    own bytes stay (they are not even rewritten)."""
    changed = np.abs(delta) >= 0.5
    if changed.any():
        np.copyto(region, np.clip(np.rint(region + delta), 0, 255).astype(np.uint8), where=changed)


def _resize_float(a: np.ndarray, side: int) -> np.ndarray:
    if a.shape[0] == side:
        return a
    resample = Image.Resampling.BILINEAR if side > a.shape[0] else Image.Resampling.BOX
    return np.asarray(Image.fromarray(np.ascontiguousarray(a, np.float32)).resize((side, side), resample))


def _rotate_float(a: np.ndarray, degrees: float) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(a, np.float32)).rotate(degrees, Image.Resampling.BILINEAR))
