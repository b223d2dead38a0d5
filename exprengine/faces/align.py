"""The age engines' face alignment: landmarks -> the FFHQ-style oriented square -> 256x256.

Lifespan Age Transformation Synthesis (LATS) was trained on FFHQ-Aging, whose faces were aligned
by the FFHQ data set's script (NVlabs/ffhq-dataset, `recreate_aligned_images`), and it aligns
photos "in the wild" the same way (royorel/Lifespan_Age_Transformation_Synthesis,
`util/preprocess_itw_im.py`, `align_in_the_wild_image`, out_size 256). The facts used here, from
those two scripts (no code copied):

- Landmarks: dlib's 68 points (`shape_predictor_68_face_landmarks`); the eye centres are the
  means of points 36-41 (the image's left eye) and 42-47; the mouth corners are points 48 and 54.
- eye_avg = (eye_left + eye_right) / 2, eye_to_eye = eye_right - eye_left,
  mouth_avg = (mouth_left + mouth_right) / 2, eye_to_mouth = mouth_avg - eye_avg.
- The square's x axis: x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1] (the eye line blended
  with the perpendicular of the eye-to-mouth line), normalised, then scaled to
  max(|eye_to_eye| * 2.0, |eye_to_mouth| * 2.2); y = flipud(x) * [-1, 1] (x turned a quarter,
  pointing down the face). LATS uses 2.2 where FFHQ uses 1.8 ("larger crops than the original
  FFHQ"): `MOUTH_SCALE`. The centre is c = eye_avg + 0.1 * eye_to_mouth, the corners
  c - x - y, c - x + y, c + x + y, c + x - y (top-left, bottom-left, bottom-right, top-right),
  and the square's side is qsize = 2 |x|.
- The square is resampled to 256x256 (the reference: a bilinear QUAD transform to 4096x4096,
  then an antialiased resize; a photo is first shrunk by a whole factor when qsize exceeds twice
  the output). Parts of the square outside the photo are filled by reflecting the photo, faded
  towards the photo's median colour over 0.3 * qsize.
- dlib's points are pixel indices (pixel centres); the reference adds 0.5 when it transforms.
  Here coordinates are continuous (x right, y down, pixel i spans [i, i+1)), so dlib's points get
  +0.5 and MediaPipe's (already continuous) are used as they are.

What is ours: the square is an oriented square (x and y are perpendicular and equally long), so
it is exactly a `FaceCrop` (centre, side, angle) and the expression edits' paste-back inverts it
unchanged (`paste.pasted_change`); its side is rounded to whole pixels (a scale change under
0.5 / qsize). The resampling is `FaceCrop`'s (bicubic turn, then area-averaging down or Lanczos
up). MediaPipe's mesh is mapped to the same points: eyes as the means of the six mesh points that
correspond to dlib's eye contours (`MESH_EYES`), mouth corners 61 and 291. The reference
also grays out the background with a face parsing network (labels 0, 14, 15, 16, 18); none
ships here, so the background is left as it is and the paste mask (`FaceAnchors.outline`)
keeps the change on the face.

A face whose square is under `MIN_QUAD_SIDE` pixels (64: a quarter of the engines' 256) is too
small to age: the engine would see a face upscaled more than four times. Squares from 64 to 255
pixels are upscaled, and callers say so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from exprengine.faces.crop import FaceCrop

#: The square's size relative to the eye-to-eye distance (FFHQ and LATS).
EYE_SCALE = 2.0
#: ... and to the eye-to-mouth distance: LATS's in-the-wild 2.2 (FFHQ's own is 1.8).
MOUTH_SCALE = 2.2
#: The centre lies this fraction of the eye-to-mouth vector below the eyes' midpoint.
CENTRE_SHIFT = 0.1
#: Outside the photo, reflected pixels fade to the median colour over this fraction of qsize.
PAD_FADE = 0.3
#: The smallest aligned square (pixels of the photo) that may be aged; see the module docstring.
MIN_QUAD_SIDE = 64

#: dlib's 68 points: the eyes' contours (image left, image right) and the mouth's corners.
DLIB_EYES = (tuple(range(36, 42)), tuple(range(42, 48)))
DLIB_MOUTH_CORNERS = (48, 54)
DLIB_JAW = tuple(range(0, 17))
DLIB_BROWS = tuple(range(17, 27))
#: MediaPipe's mesh: the points matching dlib's eye contours (image left, image right) and mouth corners.
MESH_EYES = ((33, 160, 158, 133, 153, 144), (362, 385, 387, 263, 373, 380))
MESH_MOUTH_CORNERS = (61, 291)
#: The forehead of the 68-point outline: the brows raised by this many eye-to-mouth distances.
FOREHEAD = 0.8


@dataclass(frozen=True)
class FaceAnchors:
    """The points the alignment needs, float64 (x, y) in the photo's continuous pixels: the eye
    centres and mouth corners ("left" is the image's left), and the face's `outline` [K,2] (a
    polygon around the face, forehead included) for the paste mask."""

    eye_left: np.ndarray
    eye_right: np.ndarray
    mouth_left: np.ndarray
    mouth_right: np.ndarray
    outline: np.ndarray

    @classmethod
    def from_dlib68(cls, points: np.ndarray) -> "FaceAnchors":
        """From dlib's 68 points [68,2] (pixel indices, as `shape.part(i)` gives them): +0.5 to
        continuous pixels; the outline is the jaw (0-16) then the brows (26 back to 17) raised
        FOREHEAD eye-to-mouth distances up the face. ValueError for another shape."""
        p = np.asarray(points, np.float64)
        if p.shape != (68, 2):
            raise ValueError(f"dlib's landmarks are [68,2], got {list(p.shape)}")
        p = p + 0.5
        eye_left, eye_right = (p[list(e)].mean(0) for e in DLIB_EYES)
        mouth_left, mouth_right = p[DLIB_MOUTH_CORNERS[0]], p[DLIB_MOUTH_CORNERS[1]]
        eye_to_mouth = (mouth_left + mouth_right) / 2 - (eye_left + eye_right) / 2
        brows = p[list(DLIB_BROWS)][::-1] - FOREHEAD * eye_to_mouth
        return cls(eye_left, eye_right, mouth_left, mouth_right, np.concatenate([p[list(DLIB_JAW)], brows]))

    @classmethod
    def from_mesh(cls, points: np.ndarray) -> "FaceAnchors":
        """From MediaPipe's face mesh [478,2|3] (continuous pixels): the points matching dlib's
        (`MESH_EYES`, `MESH_MOUTH_CORNERS`) and the mesh's face oval as the outline."""
        from exprengine.faces.paste import face_outline
        p = np.asarray(points, np.float64)[:, :2]
        eye_left, eye_right = (p[list(e)].mean(0) for e in MESH_EYES)
        return cls(eye_left, eye_right, p[MESH_MOUTH_CORNERS[0]], p[MESH_MOUTH_CORNERS[1]], face_outline(p))


def ffhq_quad(anchors: FaceAnchors) -> np.ndarray:
    """float64 [4,2]: the FFHQ-style square's corners (top-left, bottom-left, bottom-right,
    top-right; photo pixels) from `anchors` (module docstring). ValueError for degenerate
    anchors (eyes and mouth on one point, or not finite)."""
    eye_avg = (anchors.eye_left + anchors.eye_right) / 2
    eye_to_eye = anchors.eye_right - anchors.eye_left
    eye_to_mouth = (anchors.mouth_left + anchors.mouth_right) / 2 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = float(np.hypot(*x))
    if not (np.isfinite(x).all() and norm > 1e-6):
        raise ValueError("face landmarks too close together to align the face")
    x = x / norm * max(float(np.hypot(*eye_to_eye)) * EYE_SCALE, float(np.hypot(*eye_to_mouth)) * MOUTH_SCALE)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * CENTRE_SHIFT
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_side(anchors: FaceAnchors) -> float:
    """The aligned square's side in photo pixels (qsize = 2 |x|), before rounding."""
    q = ffhq_quad(anchors)
    return float(np.hypot(*(q[3] - q[0])))


def aligned_crop(anchors: FaceAnchors) -> FaceCrop:
    """The FFHQ-style square of `anchors` as a `FaceCrop`: centred on the square's centre, its
    side rounded to whole pixels (at least 1), turned so its x axis runs along the crop's rows.
    `FaceCrop.to_crop` carries the square's corners to the crop's corners."""
    q = ffhq_quad(anchors)
    centre = q.mean(0)
    x = q[3] - q[0]
    return FaceCrop(float(centre[0]), float(centre[1]), max(1, int(round(float(np.hypot(*x))))),
                    -math.atan2(float(x[1]), float(x[0])))


def extract_aligned(image: np.ndarray, crop: FaceCrop, size: int) -> np.ndarray:
    """uint8 [size,size,3]: `crop` (an `aligned_crop`) read from `image` (uint8 HxWx3) at `size`,
    the parts outside the photo filled as the reference fills them (its reflection, fading to
    its median colour over PAD_FADE of the side); inside the photo exactly `crop.extract`."""
    top, left, extent = crop.region
    h, w = image.shape[:2]
    t, l, b, r = max(top, 0), max(left, 0), min(top + extent, h), min(left + extent, w)
    if t >= b or l >= r or (t, l, b, r) == (top, left, top + extent, left + extent):
        return crop.extract(image, size)                   # wholly inside (or outside: nothing to reflect)
    inside = image[t:b, l:r, :3]
    pads = ((t - top, top + extent - b), (l - left, left + extent - r), (0, 0))
    patch = np.pad(inside, pads, mode="reflect" if min(inside.shape[:2]) > 1 else "edge").astype(np.float32)
    rows = np.arange(extent)[:, None] + top
    cols = np.arange(extent)[None, :] + left
    outside = np.maximum(np.maximum(t - rows, rows - (b - 1)).clip(0), np.maximum(l - cols, cols - (r - 1)).clip(0))
    fade = np.clip(outside / max(PAD_FADE * crop.side, 1.0), 0.0, 1.0)[..., None]
    median = np.median(inside.reshape(-1, 3), axis=0).astype(np.float32)
    patch += (median - patch) * fade
    return crop.extract_region(np.clip(np.rint(patch), 0, 255).astype(np.uint8), size)
