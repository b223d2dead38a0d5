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

#: Largest image each detector works on, in pixels after its upsampling (each `upsample` step
#: doubles both sides); a larger image is detected on a downscaled copy, so memory and time are
#: bounded whatever the photo's size. Measured on the 2-core CPU machine: dlib's CNN (MMOD)
#: detector needs about 1 KB per working pixel (1000x1000 upsampled once = 4 MP: 3.9 GB peak,
#: 34 s), so its bound of 2 MP keeps it near 2 GB and 17 s; HOG needs about 15 bytes per
#: working pixel (12.8 MP: 190 MB, 1.5 s). At the CNN's bound a 3.2 MP photo is detected at
#: 0.4x, where faces of about 50 px and larger are still found.
MAX_WORK_PIXELS: dict[str, int] = {"hog": 16_000_000, "cnn": 2_000_000}


@dataclass(frozen=True)
class Box:
    """A detected face: its box's edges in image pixels (x right, y down; width = right - left,
    clipped to the image by the detectors) and the detector's `score` (dlib's HOG or MMOD
    score, MediaPipe's detection confidence, 1.0 for a box made from a face mesh; higher is
    surer).
    """

    left: int
    top: int
    right: int
    bottom: int
    score: float

    @property
    def width(self) -> int:
        """right - left, pixels."""
        return self.right - self.left

    @property
    def height(self) -> int:
        """bottom - top, pixels."""
        return self.bottom - self.top

    @property
    def area(self) -> int:
        """width * height, square pixels (negative sides are not clipped)."""
        return self.width * self.height

    def scaled(self, factor: float, image_shape: tuple[int, ...] | None = None) -> "Box":
        """This box in an image `factor` times larger (clipped to `image_shape` if given)."""
        left, top = int(round(self.left * factor)), int(round(self.top * factor))
        right, bottom = int(round(self.right * factor)), int(round(self.bottom * factor))
        if image_shape is not None:
            h, w = image_shape[:2]
            left, top, right, bottom = max(0, left), max(0, top), min(w, right), min(h, bottom)
        return Box(left, top, right, bottom, self.score)

    def iou(self, other: "Box") -> float:
        """Intersection over union with `other`, in [0, 1] (0 when the union is empty)."""
        w = min(self.right, other.right) - max(self.left, other.left)
        h = min(self.bottom, other.bottom) - max(self.top, other.top)
        inter = max(0, w) * max(0, h)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


def dlib_module(need: str = "face detection"):
    """The `dlib` module; UserError saying that `need` needs it (and how to install it) if missing."""
    try:
        import dlib
    except ImportError:
        raise UserError(f"{need} needs dlib (pip install dlib-bin face_recognition_models 'setuptools<81')") from None
    return dlib


def face_models(need: str = "face detection"):
    """The `face_recognition_models` module (dlib's model files); UserError naming `need` if missing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")             # it imports pkg_resources
            import face_recognition_models
    except ImportError:
        raise UserError(f"{need} needs face_recognition_models (pip install face_recognition_models "
                        "'setuptools<81')") from None
    return face_recognition_models


class BoxDetector:
    """What every face detector shares (dlib's `FaceDetector`, `landmarks.MediaPipeDetector`):
    whole-image detection at a scale, detection near known faces for tracking, and the
    false-positive filters. A subclass sets `min_score`, `min_size` and `near_face_px` and
    implements `_detect(image) -> [Box]`: every face in `image` (uint8 HxWx3 or HxW), in its
    coordinates, with the subclass's own memory bound."""

    min_score: float
    min_size: int
    #: Face size detect_near scales its windows to (what the detector needs to find a face).
    near_face_px: int = 80

    def _detect(self, image: np.ndarray) -> list[Box]:
        raise NotImplementedError

    def detect(self, image: np.ndarray, scale: float = 1.0) -> list[Box]:
        """uint8 HxWx3 RGB (or HxW luma) -> faces, most confident first (after the false-positive filters).

        `scale` < 1 detects on a downscaled copy (faster: detection time grows with the pixel
        count) and returns boxes in the full image's coordinates; `min_size` applies at full
        size. UserError for a scale outside (0, 1].
        """
        assert image.dtype == np.uint8 and (image.ndim == 2 or image.ndim == 3 and image.shape[2] == 3), image.shape
        if not 0 < scale <= 1:
            raise UserError(f"detection scale must be in (0, 1], got {scale}")
        if scale < 1:
            small = _downscaled(image, scale)
            boxes = [b.scaled(image.shape[1] / small.shape[1], image.shape) for b in self._detect(small)]
        else:
            boxes = self._detect(image)
        return sorted(self._kept(boxes), key=lambda b: -b.score)

    def _kept(self, boxes: list[Box]) -> list[Box]:
        """The false-positive filters: score at least `min_score`, both sides at least `min_size`."""
        return [b for b in boxes if b.score >= self.min_score and min(b.width, b.height) >= self.min_size]

    def detect_near(self, image: np.ndarray, around: list[Box], margin: float = 0.75,
                    face_px: int | None = None) -> list[Box]:
        """Faces near known ones (tracking): each box grown by `margin` of its size on every side,
        that window scaled so the face is about `face_px` pixels (default `near_face_px`),
        detected, and mapped back; much cheaper than a whole-frame scan. Duplicates are merged
        by overlap; most confident first."""
        h, w = image.shape[:2]
        found: list[Box] = []
        for b in around:
            window, left, top, factor = face_window(image, b, margin, face_px or self.near_face_px)
            if min(window.shape[:2]) < 8:
                continue
            for d in self._detect(window):
                d = d.scaled(factor)
                found.append(Box(d.left + left, d.top + top, min(w, d.right + left), min(h, d.bottom + top), d.score))
        merged: list[Box] = []
        for b in sorted(self._kept(found), key=lambda b: -b.score):
            if all(b.iou(k) < 0.3 for k in merged):
                merged.append(b)
        return merged


def face_window(image: np.ndarray, box: Box, margin: float, face_px: int | None = None
                ) -> tuple[np.ndarray, int, int, float]:
    """The part of `image` around `box` (grown by `margin` of its longer side on every side),
    downscaled so the face is at most `face_px` pixels; with the window's (left, top) in `image`
    and the factor from window to full-size pixels."""
    h, w = image.shape[:2]
    side = max(box.width, box.height, 1)
    m = int(round(margin * side))
    left, top, right, bottom = max(0, box.left - m), max(0, box.top - m), min(w, box.right + m), min(h, box.bottom + m)
    window = np.ascontiguousarray(image[top:bottom, left:right])
    scale = min(1.0, face_px / side) if face_px else 1.0
    if scale < 1 and min(window.shape[:2]) > 0:
        small = _downscaled(window, scale)
        return small, left, top, window.shape[1] / small.shape[1]
    return window, left, top, 1.0


class FaceDetector(BoxDetector):
    """dlib's HOG or CNN (MMOD) face detector, as face_recognition uses them."""

    def __init__(self, model: str = "hog", upsample: int = 1, min_score: float = 0.3, min_size: int = 40):
        if model not in ("hog", "cnn"):
            raise UserError(f"face detector model must be hog or cnn, not {model!r}")
        dlib = dlib_module()
        self.model, self.upsample, self.min_score, self.min_size = model, upsample, min_score, min_size
        self._landmarks = None
        if model == "hog":
            self._detector = dlib.get_frontal_face_detector()
        else:
            self._detector = dlib.cnn_face_detection_model_v1(face_models().cnn_face_detector_model_location())

    def _detect(self, image: np.ndarray) -> list[Box]:
        h, w = image.shape[:2]
        work = h * w * 4 ** self.upsample
        if work > MAX_WORK_PIXELS[self.model]:          # bounded memory: see MAX_WORK_PIXELS
            scale = (MAX_WORK_PIXELS[self.model] / work) ** 0.5
            small = _downscaled(image, scale)
            return [b.scaled(w / small.shape[1], image.shape) for b in self._run(small)]
        return self._run(image)

    def _run(self, image: np.ndarray) -> list[Box]:
        h, w = image.shape[:2]
        if self.model == "hog":
            rects, scores, _ = self._detector.run(image, self.upsample, 0.0)
            found = [(r, s) for r, s in zip(rects, scores)]
        else:
            found = [(d.rect, d.confidence) for d in self._detector(image, self.upsample)]
        return [Box(max(0, r.left()), max(0, r.top()), min(w, r.right()), min(h, r.bottom()), float(s))
                for r, s in found]

    def eye_centres(self, image: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """(left eye, right eye) centres in image (x, y) from dlib's 5-point landmark model
        (the one face_recognition uses for alignment); "left" is the image's left."""
        if self._landmarks is None:
            self._landmarks = dlib_module().shape_predictor(face_models().pose_predictor_five_point_model_location())
        dlib = dlib_module()
        shape = self._landmarks(image, dlib.rectangle(box.left, box.top, box.right, box.bottom))
        pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float64)
        a, b = pts[0:2].mean(0), pts[2:4].mean(0)          # the two eyes' corner pairs
        return (a, b) if a[0] <= b[0] else (b, a)


def _downscaled(image: np.ndarray, scale: float) -> np.ndarray:
    """`image` (uint8 HxW or HxWx3) resized by `scale` < 1, bilinear."""
    from PIL import Image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


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
