"""Face detection with face_recognition's models (dlib), and the thesis's square crops.

    detector = FaceDetector()                    # HOG, 1x upsampling, as face_recognition does
    boxes = detector.detect(image)               # [Box], most confident first
    crop = square_crop(image, boxes[0], 128)     # the thesis's "Ver 2.0" crop

The models are dlib's HOG frontal face detector and the CNN (MMOD) detector that
face_recognition uses, loaded from the `face_recognition_models` package; dlib comes from
the `dlib-bin` wheel (no compilation). face_recognition itself is not a dependency: its
install asks for `dlib` and would build it from source; it is a thin wrapper over these calls.

False positives: at face_recognition's setting (threshold 0, one upsampling) the HOG
detector also finds a "face" in the mission patch of `skimage.data.astronaut()` (score
0.12 against 1.16 for the face). Detections below `min_score` (default 0.3, HOG scores) or
smaller than `min_size` pixels are dropped.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from exprengine.errors import UserError


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int
    score: float

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


def _dlib():
    try:
        import dlib
    except ImportError:
        raise UserError("face detection needs dlib (pip install dlib-bin face_recognition_models 'setuptools<81')") from None
    return dlib


def _models():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")             # it imports pkg_resources
            import face_recognition_models
    except ImportError:
        raise UserError("face detection needs face_recognition_models (pip install face_recognition_models "
                        "'setuptools<81')") from None
    return face_recognition_models


class FaceDetector:
    def __init__(self, model: str = "hog", upsample: int = 1, min_score: float = 0.3, min_size: int = 40):
        if model not in ("hog", "cnn"):
            raise UserError(f"face detector model must be hog or cnn, not {model!r}")
        dlib = _dlib()
        self.model, self.upsample, self.min_score, self.min_size = model, upsample, min_score, min_size
        if model == "hog":
            self._detector = dlib.get_frontal_face_detector()
        else:
            self._detector = dlib.cnn_face_detection_model_v1(_models().cnn_face_detector_model_location())

    def detect(self, image: np.ndarray) -> list[Box]:
        """uint8 HxWx3 RGB -> faces, most confident first (after the false-positive filters)."""
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, image.shape
        h, w = image.shape[:2]
        if self.model == "hog":
            rects, scores, _ = self._detector.run(image, self.upsample, 0.0)
            found = [(r, s) for r, s in zip(rects, scores)]
        else:
            found = [(d.rect, d.confidence) for d in self._detector(image, self.upsample)]
        boxes = [Box(max(0, r.left()), max(0, r.top()), min(w, r.right()), min(h, r.bottom()), float(s))
                 for r, s in found]
        boxes = [b for b in boxes if b.score >= self.min_score and min(b.width, b.height) >= self.min_size]
        return sorted(boxes, key=lambda b: -b.score)


def square_box(box: Box, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The thesis's "Ver 2.0" crop: the detector's box made square (side = its longer edge,
    same centre), moved inside the image if it crosses an edge. Returns (top, left, side).

    The face box covers the crop's full width or height, so the face fills over 90 % of it
    (dlib's boxes are nearly square); the crop is only ever scaled uniformly (no stretching).
    """
    h, w = image_shape[:2]
    side = min(max(box.width, box.height), h, w)
    cy, cx = (box.top + box.bottom) / 2, (box.left + box.right) / 2
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    return top, left, side


def square_crop(image: np.ndarray, box: Box, size: int = 128) -> np.ndarray:
    """uint8 crop [size,size,3] of `image` around `box` (square_box), area-resampled."""
    from exprengine.preprocess import resize_face
    top, left, side = square_box(box, image.shape)
    return resize_face(np.ascontiguousarray(image[top:top + side, left:left + side]), size)
