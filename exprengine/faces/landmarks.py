"""Google MediaPipe's Face Landmarker beside dlib: face boxes, the 478-point face mesh and the
52 blendshape scores, from the model file shipped in `exprengine/assets/face_landmarker.task`.

    detector = make_detector("mediapipe", min_size=40)   # or "hog" / "cnn" (dlib's FaceDetector)
    boxes = detector.detect(image)                       # [Box], most confident first
    left, right = detector.eye_centres(image, boxes[0])  # for aligned crops (`align`)
    points = detector.landmarks(image, boxes[0])         # float32 [1,478,3], image pixels
    names, scores = detector.blendshapes(image)          # 52 names, float32 [N,52] in 0..1

`MediaPipeDetector` offers FaceDetector's interface (detect, detect_near, eye_centres,
min_size), so FaceEditor, StreamEditor and `exprengine prepare` use either unchanged.

How it works: the `.task` file bundles BlazeFace (short range, 128x128 input), the 478-point
mesh model (192x192 face crops) and the blendshape model. `detect` runs the bundled BlazeFace
through the Tasks API's FaceDetector (IMAGE mode) and returns its boxes and confidences
(`min_confidence`, default 0.5, MediaPipe's own default); the mesh runs only when landmarks,
eye centres or blendshapes are asked for (FaceLandmarker, IMAGE mode, up to `num_faces`
faces, the same detection confidence). BlazeFace short range is made for faces that fill a
good part of the image (selfies, portraits): in a wide group photo a face narrower than about
a tenth of the image is missed; `detect_near` (tracking) looks at a window around each known
face, where the face is large. bench/results/detectors-cpu.md has the measured detection rates.

The model file is checked against its sha256 when loaded; a changed file is refused.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import os
import threading
import weakref
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from exprengine.errors import UserError
from exprengine.faces.detect import Box, BoxDetector, FaceDetector, _downscaled, face_window

MODEL_FILE = "face_landmarker.task"
#: sha256 of the shipped face_landmarker.task (3,758,596 bytes; Google, Apache-2.0).
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"

#: Largest image MediaPipe is given, in pixels: a larger one is downscaled first. Its models
#: see 128x128 (detector) and 192x192 (mesh) resamplings anyway, so nothing is lost at 4 MP,
#: and the copies MediaPipe makes stay bounded (4 MP RGB = 12 MB) whatever the photo's size.
MAX_WORK_PIXELS = 4_000_000

#: Mesh indices of the eye corners (MediaPipe's canonical face mesh): the eye centre is the
#: mean of its two corners, as dlib's 5-point model's eyes are (FaceDetector.eye_centres).
EYE_CORNERS = ((33, 133), (362, 263))

DETECTORS = ("mediapipe", "hog", "cnn")


def make_detector(name: str, min_size: int = 40):
    """The face detector called `name`: "mediapipe" (MediaPipeDetector), "hog" or "cnn" (dlib's
    FaceDetector). Faces with a side under `min_size` pixels are dropped. UserError otherwise."""
    if name == "mediapipe":
        return MediaPipeDetector(min_size=min_size)
    if name in ("hog", "cnn"):
        return FaceDetector(name, min_size=min_size)
    raise UserError(f"face detector must be one of {', '.join(DETECTORS)}, not {name!r}")


def model_path() -> Path:
    """Where the shipped Face Landmarker bundle lies: exprengine/assets/face_landmarker.task inside the
    installed package (not checked here; `read_model` checks its sha256).
    """
    return Path(str(resources.files("exprengine") / "assets" / MODEL_FILE))


def read_model(path: str | os.PathLike | None = None) -> bytes:
    """The Face Landmarker bundle's bytes, after checking its sha256 (UserError if missing or changed)."""
    path = Path(path) if path is not None else model_path()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read the face landmark model {path}: {e.strerror or e}") from None
    if hashlib.sha256(data).hexdigest() != MODEL_SHA256:
        raise UserError(f"the face landmark model {path} is not the shipped file (its sha256 differs); "
                        "reinstall exprengine")
    return data


def _mediapipe():
    try:
        import mediapipe
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError:
        raise UserError("the mediapipe face detector needs mediapipe (pip install mediapipe)") from None
    return mediapipe, BaseOptions, vision


@contextlib.contextmanager
def _quiet_stderr():
    """MediaPipe's C++ layers log INFO/WARNING lines to file descriptor 2 while they build their
    graphs (GLOG_minloglevel does not reach them all); hide those so the CLI's stderr stays clean."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


@dataclass
class FaceMesh:
    """One face's MediaPipe mesh (`MediaPipeDetector.meshes`): its box, the 478 points (float32
    [478,3], x and y in image pixels, z MediaPipe's relative depth scaled to pixels) and the 52
    blendshape scores (float32 [52] in 0..1, in the order of the detector's `blendshape_names`).
    """

    box: Box                      # the face's box (from the mesh's extent when no detector box was given)
    points: np.ndarray            # float32 [478,3]: x, y in image pixels; z in pixels too (MediaPipe's
    #                               depth, relative to the head's centre, smaller = nearer the camera)
    blendshapes: np.ndarray       # float32 [52] in 0..1, in the order of the detector's `blendshape_names`


class MediaPipeDetector(BoxDetector):
    """Face boxes, meshes and blendshapes from the shipped MediaPipe Face Landmarker (module
    docstring), with FaceDetector's interface (`BoxDetector`: detect, detect_near, eye_centres).

    `min_size`: faces narrower than this many pixels are dropped; `min_confidence` in (0, 1):
    BlazeFace's detection confidence and the mesher's face presence threshold (MediaPipe's default
    0.5); `num_faces`: at most this many meshes per image; `model`: another copy of the bundle
    (checked against MODEL_SHA256). Thread-safe (one MediaPipe run at a time); `close` frees it.

    Raises UserError for a confidence outside (0, 1), a missing or changed model file, or when
    mediapipe is not installed.
    """

    near_face_px = 160                 # BlazeFace short range wants faces of a good size

    def __init__(self, min_size: int = 40, min_confidence: float = 0.5, num_faces: int = 8,
                 model: str | os.PathLike | None = None):
        if not 0 < min_confidence < 1:
            raise UserError(f"face detection confidence must be between 0 and 1, got {min_confidence}")
        self.model, self.min_size, self.min_score, self.num_faces = "mediapipe", min_size, min_confidence, num_faces
        data = read_model(model)
        self._mp, BaseOptions, vision = _mediapipe()
        self._lock = threading.Lock()        # one graph run at a time (StreamEditor detects in a thread)
        with _quiet_stderr():
            detector_model = zipfile.ZipFile(io.BytesIO(data)).read("face_detector.tflite")
            self._detector = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_buffer=detector_model),
                running_mode=vision.RunningMode.IMAGE, min_detection_confidence=min_confidence))
            self._mesher = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_buffer=data), running_mode=vision.RunningMode.IMAGE,
                num_faces=num_faces, min_face_detection_confidence=min_confidence,
                min_face_presence_confidence=min_confidence, output_face_blendshapes=True))
            blank = np.zeros((64, 64, 3), np.uint8)          # first runs log too: do them now, quietly
            self._run_detector(blank)
            self._run_mesher(blank)
        self.blendshape_names: list[str] | None = None
        _close_at_exit(self)

    def close(self) -> None:
        """Free MediaPipe's graphs (quietly); the detector cannot be used afterwards."""
        with self._lock, _quiet_stderr():
            for task in (self._detector, self._mesher):
                if task is not None:
                    task.close()
            self._detector = self._mesher = None

    def __del__(self):
        if getattr(self, "_mesher", None) is not None:
            self.close()

    # --- MediaPipe calls ----------------------------------------------------------------------------
    def _image(self, rgb: np.ndarray):
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        return self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))

    def _call(self, task: str, rgb: np.ndarray):
        """MediaPipe task `task` ("_detector" or "_mesher") run on `rgb`, one run at a time."""
        with self._lock:
            runner = getattr(self, task)
            if runner is None:
                raise UserError("the mediapipe face detector was closed")
            return runner.detect(self._image(rgb))

    def _run_detector(self, rgb: np.ndarray) -> list[Box]:
        h, w = rgb.shape[:2]
        result = self._call("_detector", rgb)
        boxes = []
        for d in result.detections:
            b = d.bounding_box
            left, top = max(0, b.origin_x), max(0, b.origin_y)
            right, bottom = min(w, b.origin_x + b.width), min(h, b.origin_y + b.height)
            if right > left and bottom > top:
                boxes.append(Box(left, top, right, bottom, float(d.categories[0].score)))
        return boxes

    def _run_mesher(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(points float32 [478,3] in rgb's pixels, blendshapes float32 [52])] for every face found."""
        h, w = rgb.shape[:2]
        result = self._call("_mesher", rgb)
        out = []
        for marks, shapes in zip(result.face_landmarks, result.face_blendshapes):
            points = np.array([(m.x * w, m.y * h, m.z * w) for m in marks], np.float32)
            if self.blendshape_names is None:
                self.blendshape_names = [c.category_name for c in shapes]
            out.append((points, np.array([c.score for c in shapes], np.float32)))
        return out

    def _bounded(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """`image` downscaled to at most MAX_WORK_PIXELS, and the factor back to full size."""
        h, w = image.shape[:2]
        if h * w <= MAX_WORK_PIXELS:
            return image, 1.0
        small = _downscaled(image, (MAX_WORK_PIXELS / (h * w)) ** 0.5)
        return small, w / small.shape[1]

    # --- BoxDetector's detection ----------------------------------------------------------------------
    def _detect(self, image: np.ndarray) -> list[Box]:
        """Every face BlazeFace finds (score: its confidence in 0..1), on a copy of at most
        MAX_WORK_PIXELS; boxes in `image`'s coordinates."""
        work, factor = self._bounded(image)
        boxes = self._run_detector(work)
        return [b.scaled(factor, image.shape) for b in boxes] if factor != 1 else boxes

    def eye_centres(self, image: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """(left eye, right eye) centres in image (x, y), float64, each the mean of the mesh's two
        corners of that eye; "left" is the image's left. Falls back to dlib's 5-point model's
        when the mesh finds no face in the box's window."""
        meshes = self.meshes(image, [box])
        if not meshes:
            return FaceDetector.eye_centres(self, image, box)       # uses only self._landmarks
        p = meshes[0].points.astype(np.float64)
        a, b = (p[list(c), :2].mean(0) for c in EYE_CORNERS)
        return (a, b) if a[0] <= b[0] else (b, a)

    _landmarks = None                                           # dlib's 5-point model, for the fallback

    # --- the mesh ----------------------------------------------------------------------------------
    def meshes(self, image: np.ndarray, boxes: list[Box] | None = None, margin: float = 0.5) -> list[FaceMesh]:
        """The face mesh of each box (a window around it, grown by `margin`; the face there nearest
        the box's centre; a box where none is found is left out), or of every face in the image
        when `boxes` is None (up to `num_faces`, largest first). uint8 HxWx3 RGB or HxW luma."""
        assert image.dtype == np.uint8 and (image.ndim == 2 or image.ndim == 3 and image.shape[2] == 3), image.shape
        out = []
        if boxes is None:
            work, factor = self._bounded(image)
            for points, shapes in self._run_mesher(work):
                points = points * np.float32(factor)
                out.append(FaceMesh(_mesh_box(points, image.shape), points, shapes))
            return sorted(out, key=lambda m: -m.box.area)
        for box in boxes:
            window, left, top, factor = face_window(image, box, margin, face_px=512)
            found = self._run_mesher(window)
            if not found:
                continue
            cx, cy = ((box.left + box.right) / 2 - left) / factor, ((box.top + box.bottom) / 2 - top) / factor
            points, shapes = min(found, key=lambda f: float(np.hypot(*(f[0][:, :2].mean(0) - (cx, cy)))))
            points = points * np.float32(factor) + np.array([left, top, 0], np.float32)
            out.append(FaceMesh(box, points, shapes))
        return out

    def landmarks(self, image: np.ndarray, box: Box | None = None) -> np.ndarray:
        """float32 [N,478,3] face mesh points (x, y, z in image pixels) of the face in `box`
        (N = 1, or 0 if the mesh finds none there) or of every face (box None)."""
        meshes = self.meshes(image, None if box is None else [box])
        return np.stack([m.points for m in meshes]) if meshes else np.zeros((0, 478, 3), np.float32)

    def blendshapes(self, image: np.ndarray, box: Box | None = None) -> tuple[list[str], np.ndarray]:
        """(the 52 blendshape names, float32 [N,52] scores in 0..1) for the face in `box` or every
        face, in the same order as `landmarks`. The names are ARKit's ("_neutral", "browDownLeft",
        ..., "jawOpen", "mouthSmileLeft", ...); the scores are MediaPipe's, uncalibrated."""
        meshes = self.meshes(image, None if box is None else [box])
        scores = np.stack([m.blendshapes for m in meshes]) if meshes else np.zeros((0, 52), np.float32)
        return list(self.blendshape_names or []), scores


def _close_at_exit(detector: MediaPipeDetector) -> None:
    """Close `detector`'s MediaPipe tasks when Python exits, before the thread pools they close
    through shut down (their own __del__ at teardown prints tracebacks). A weak reference: a
    detector dropped earlier is closed by MediaPipe's own __del__."""
    ref = weakref.ref(detector)

    def close():
        d = ref()
        if d is not None:
            d.close()
    register = getattr(threading, "_register_atexit", None)   # runs before concurrent.futures' exit hook
    try:
        register(close) if register is not None else atexit.register(close)
    except RuntimeError:                                       # already shutting down
        atexit.register(close)


def _mesh_box(points: np.ndarray, shape: tuple[int, ...]) -> Box:
    """A box from a mesh's extent (x: cheek to cheek; y: the brows' top to the chin, as dlib's
    boxes span), score 1."""
    h, w = shape[:2]
    x0, x1 = float(points[:, 0].min()), float(points[:, 0].max())
    brows = float(points[[105, 334, 66, 296], 1].min())
    y1 = float(points[:, 1].max())
    return Box(max(0, int(round(x0))), max(0, int(round(brows))), min(w, int(round(x1))), min(h, int(round(y1))), 1.0)
