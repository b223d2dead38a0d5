"""Whole photos and frames aged by an age engine (LATS): find the faces, align each the reference's
way (`faces.align`: landmarks -> FFHQ-style square -> 256x256), age every chosen face in one
engine call, paste the changes back as expression edits are pasted (`paste.pasted_change`).

    editor = AgeEditor(Engine.load("engines/age"))            # dlib's HOG detector and 68 points
    result = editor.age(photo, 60)                            # every face, to 60 years
    result = editor.age(photo, parse_age("30-39"), select="largest")
    result.image, result.found, result.aged                  # same shape and mode as `photo`
    frames = editor.traverse(photo)                           # the largest face across the lifespan

Landmarks: with dlib's detectors (HOG, CNN) each face's 68 points come from dlib's
`shape_predictor_68_face_landmarks` (shipped by face_recognition_models, as the reference's
in-the-wild preprocessing uses it); with MediaPipe's detector its mesh is mapped to the same
points (`FaceAnchors.from_mesh`). The paste mask is the face's outline (`FaceAnchors.outline`),
feathered (`paste.outline_mask`): pixels outside it, and outside every aged face, keep their
values bit for bit.

Ages are years, 0 to 70 (`exprengine.ages.check_age`), or one of the six LATS classes as the
reference names them ("30-39" stands for its centre, 34.5 years: `parse_age`).

A face whose aligned square is under `align.MIN_QUAD_SIDE` (64) pixels is refused (UserError
naming it) rather than upscaled more than four times; larger squares under the engine's size
are upscaled, and `AgeEdit.upscaled` says which.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from numbers import Real

import numpy as np

from exprengine.ages import AGE_CLASSES, CLASS_CENTRES, age_of_position, check_age, class_label, class_position
from exprengine.errors import UserError
from exprengine.faces.align import MIN_QUAD_SIDE, FaceAnchors, aligned_crop, extract_aligned, quad_side
from exprengine.faces.crop import FaceCrop
from exprengine.faces.detect import Box, FaceDetector, dlib_module, face_models
from exprengine.faces.editor import select_faces
from exprengine.faces.paste import apply_changes, pasted_change
from exprengine.pixels import as_rgb

#: The reference's traversal step in class positions (`--interp_step 0.05`: 101 frames over 6 classes).
TRAVERSAL_STEP = 0.05
_CLASS = re.compile(r"^\s*(?:class\s+)?(\d+)\s*-\s*(\d+)\s*$")


def parse_age(spec, name: str = "age") -> float:
    """Years from an age as a user gives it: a number of years 0..70 (42, "42", "42.5"), or an age
    class as the reference names it ("30-39", "class 30-39"), which stands for its centre
    (`exprengine.ages.CLASS_CENTRES`: "30-39" -> 34.5). UserError, quoting the argument `name`,
    for anything else (an age outside 0..70, a range that is not one of the six classes)."""
    wrong = UserError(f"`{name}` must be years (0 to 70) or an age class such as 30-39, got {spec!r}")
    if isinstance(spec, str):
        m = _CLASS.match(spec)
        if m:
            span = (int(m.group(1)), int(m.group(2)))
            if span not in AGE_CLASSES:
                raise UserError(f"`{name}` {spec.strip()!r} is not an age class; the classes are "
                                f"{', '.join(class_label(i) for i in range(len(AGE_CLASSES)))}")
            return CLASS_CENTRES[AGE_CLASSES.index(span)]
        try:
            years = float(spec)
        except ValueError:
            raise wrong from None
    elif isinstance(spec, Real) and not isinstance(spec, bool):
        years = spec
    else:
        raise wrong
    try:
        return check_age(years)
    except UserError as e:                      # check_age quotes `age`: say the caller's argument
        raise UserError(str(e).replace("`age`", f"`{name}`", 1)) from None


def traversal_ages(start=None, end=None, frames: int | None = None) -> np.ndarray | None:
    """The ages (years, float32 [K]) of a traversal from `start` to `end` (ages as `parse_age`
    takes them; default the whole lifespan, the first class's centre to the last's), spaced evenly
    in class position as the reference's traversal is (its styles step evenly between classes).
    `frames` (>= 2; or 1 for one frame at `end`): how many; default one per TRAVERSAL_STEP of class
    position (the reference's 101 over the lifespan). None for the reference's own traversal
    (no start, end or frames): `Engine.traverse` then renders its 101 frames.
    UserError for a bad age or frame count."""
    if start is None and end is None and frames is None:
        return None
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1):
        raise UserError(f"`frames` must be a whole number, at least 1, got {frames!r}")
    a = class_position(parse_age(start, "start")) if start is not None else 0.0
    b = class_position(parse_age(end, "end")) if end is not None else float(len(AGE_CLASSES) - 1)
    if frames is None:
        frames = int(round(abs(b - a) / TRAVERSAL_STEP)) + 1
    positions = np.linspace(a, b, frames) if frames > 1 else np.array([b])
    return np.array([age_of_position(float(p)) for p in positions], np.float32)


def is_age_engine(engine) -> bool:
    """True for an engine that ages faces (a LATS engine: `engine.is_age`, or a manifest of the
    LATS family); False for expression engines (generators and the rig)."""
    flag = getattr(engine, "is_age", None)
    if flag is not None:
        return bool(flag() if callable(flag) else flag)
    config = getattr(getattr(engine, "manifest", None), "model_config", None)
    return isinstance(config, dict) and config.get("family") == "lats"


def require_age_engine(engine, name: str = "engine") -> None:
    """UserError (quoting argument `name`) unless `engine` is an age engine (`is_age_engine`)."""
    if not is_age_engine(engine):
        model = getattr(getattr(engine, "manifest", None), "model", type(engine).__name__)
        raise UserError(f"`{name}` ({model}) edits expressions, not ages: give an age engine (built from a LATS model)")


def _face_name(found: list[Box], i: int) -> str:
    b = found[i]
    return f"face #{i} ({b.width}x{b.height} at ({b.left},{b.top}))"


@dataclass
class AgeEdit:
    """What `AgeEditor.age` did to a photo: the aged `image` (same shape and dtype as the input),
    every face `found` (most confident first), the indices into `found` that were `aged`, their
    aligned `crops` and `sides` (the aligned square's side in photo pixels), the target `age` in
    years, and the chosen faces left `unlandmarked` (no landmarks found: left as they were)."""

    image: np.ndarray
    found: list[Box]
    aged: list[int] = field(default_factory=list)
    crops: list[FaceCrop] = field(default_factory=list)
    sides: list[float] = field(default_factory=list)
    age: float = 0.0
    size: int = 256
    unlandmarked: list[int] = field(default_factory=list)

    @property
    def upscaled(self) -> list[int]:
        """The aged faces whose aligned square was smaller than the engine's size (upscaled to it)."""
        return [i for i, s in zip(self.aged, self.sides) if s < self.size]


class AgeEditor:
    """Ages the faces of photos and video frames with `engine` (an age `Engine`: `age(images,
    ages)` uint8 [N,S,S,3] -> uint8 [N,S,S,3]; `traverse(image, ages)`; `image_size`).

    `detector`: the face detector (dlib's HOG by default; `faces.landmarks.MediaPipeDetector`
    gives its meshes as landmarks); `colour_match`: remove the change's mean colour along the
    mask's fading ring (`paste.colour_matched`); `min_side`: the smallest aligned square aged, in
    pixels (None: `align.MIN_QUAD_SIDE`); `detect_scale` in (0, 1]: detect on a downscaled copy.
    UserError when `engine` is not an age engine (an expression engine).
    """

    def __init__(self, engine, detector=None, colour_match: bool = True, min_side: int | None = None,
                 detect_scale: float = 1.0):
        require_age_engine(engine)
        self.engine, self.colour_match, self.detect_scale = engine, colour_match, detect_scale
        self.min_side = MIN_QUAD_SIDE if min_side is None else min_side
        self.detector = detector or FaceDetector()
        self._predictor = None

    @property
    def size(self) -> int:
        """The engine's face size (256 for LATS)."""
        return int(self.engine.image_size)

    # --- landmarks and crops -----------------------------------------------------------------
    def anchors_for(self, rgb: np.ndarray, boxes: list[Box]) -> list[FaceAnchors | None]:
        """Each box's `FaceAnchors` (photo pixels), or None where no landmarks were found: MediaPipe's
        mesh when the detector is MediaPipe's, else dlib's 68 points in the box. `rgb`: uint8
        HxWx3, or a video frame's HxW luma plane."""
        if not boxes:
            return []
        from exprengine.faces.landmarks import MediaPipeDetector
        rgb = np.ascontiguousarray(rgb)
        if isinstance(self.detector, MediaPipeDetector):
            found = {m.box: m.points for m in self.detector.meshes(rgb, boxes)}
            return [FaceAnchors.from_mesh(found[b]) if b in found else None for b in boxes]
        dlib = dlib_module("face landmarks")
        if self._predictor is None:
            self._predictor = dlib.shape_predictor(face_models("face landmarks").pose_predictor_model_location())
        out = []
        for b in boxes:
            shape = self._predictor(rgb, dlib.rectangle(b.left, b.top, b.right, b.bottom))
            out.append(FaceAnchors.from_dlib68(np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)])))
        return out

    def locate(self, rgb: np.ndarray, boxes: list[Box], anchors: list[FaceAnchors | None] | None = None
               ) -> tuple[list[FaceCrop], list[FaceAnchors], list[float], list[int], list[int]]:
        """(aligned crops, their anchors, their squares' sides in pixels, the indices of `boxes`
        kept, the indices left out for want of landmarks) for the faces in `boxes`."""
        anchors = self.anchors_for(rgb, boxes) if anchors is None else anchors
        crops, kept_anchors, sides, kept, missing = [], [], [], [], []
        for i, a in enumerate(anchors):
            try:
                crop, side = (aligned_crop(a), quad_side(a)) if a is not None else (None, 0.0)
            except ValueError:
                crop, side = None, 0.0
            if crop is None:
                missing.append(i)
                continue
            crops.append(crop)
            kept_anchors.append(a)
            sides.append(side)
            kept.append(i)
        return crops, kept_anchors, sides, kept, missing

    def extract(self, rgb: np.ndarray, crops: list[FaceCrop]) -> np.ndarray:
        """uint8 [N,S,S,3]: each aligned crop read from `rgb` (uint8 HxWx3) at the engine's size."""
        return np.stack([extract_aligned(rgb, c, self.size) for c in crops])

    def age_faces(self, originals: np.ndarray, ages) -> np.ndarray:
        """The engine's aging of aligned faces, one call: originals uint8 [N,S,S,3], ages (years) one
        for all or one per face -> uint8 [N,S,S,3]."""
        ages = np.broadcast_to(np.asarray(ages, np.float32), (len(originals),)).copy()
        return self.engine.age(originals, ages)

    def changes(self, crops: list[FaceCrop], originals: np.ndarray, aged: np.ndarray,
                anchors: list[FaceAnchors]) -> list[tuple[np.ndarray, tuple[int, int]]]:
        """Each face's change to the frame (`paste.pasted_change`: aged - original, under the feathered
        mask of the face's outline, colour-matched), ready for `paste.apply_changes`."""
        size = originals.shape[1]
        return [pasted_change(c, originals[i], aged[i], None, "shape", self.colour_match,
                              c.to_crop(anchors[i].outline, size)) for i, c in enumerate(crops)]

    def check_sizes(self, found: list[Box], indices: list[int], sides: list[float]) -> None:
        """UserError naming the first face whose aligned square is under `min_side` pixels."""
        for i, side in zip(indices, sides):
            if side < self.min_side:
                raise UserError(f"{_face_name(found, i)} is too small to age: its aligned square is {side:.0f} px, "
                                f"under {self.min_side} px (the engine works at {self.size}x{self.size}); "
                                "choose other faces with `select`")

    def _chosen(self, photo: np.ndarray, select: str | int):
        rgb = np.ascontiguousarray(as_rgb(photo, "a photo"))
        found = self.detector.detect(rgb, self.detect_scale)
        chosen = select_faces(found, select)
        crops, anchors, sides, kept, missing = self.locate(rgb, [found[i] for i in chosen])
        aged = [chosen[i] for i in kept]
        self.check_sizes(found, aged, sides)
        return rgb, found, crops, anchors, sides, aged, [chosen[i] for i in missing]

    # --- photos --------------------------------------------------------------------------------
    def age(self, photo: np.ndarray, age, select: str | int = "all") -> AgeEdit:
        """Age the faces `select` picks ("all", "largest", or a face number) to `age` (years or an
        age class, `parse_age`) in one engine call, and paste them back. `photo`: uint8 HxW, HxWx3
        or HxWx4 (alpha kept). Returns an AgeEdit (a photo without a face comes back unchanged).
        UserError for a bad photo or age, a face number not found, or a chosen face too small."""
        years = parse_age(age)
        rgb, found, crops, anchors, sides, aged, missing = self._chosen(photo, select)
        if not crops:
            return AgeEdit(photo.copy(), found, [], [], [], years, self.size, missing)
        originals = self.extract(rgb, crops)
        result = self.age_faces(originals, years)
        image = apply_changes(photo, self.changes(crops, originals, result, anchors))
        return AgeEdit(image, found, aged, crops, sides, years, self.size, missing)

    def aligned_faces(self, photo: np.ndarray, select: str | int = "largest") -> tuple[np.ndarray, AgeEdit]:
        """(uint8 [N,S,S,3] the aligned crops of the faces `select` picks, an AgeEdit naming them
        with the photo unchanged). UserError as `age`, and when no face is found."""
        rgb, found, crops, anchors, sides, aged, missing = self._chosen(photo, select)
        if not crops:
            why = "no face found" if not found else f"no face landmarks found for face #{missing[0]}"
            raise UserError(f"{why} in the photo, so there is no face to age")
        return self.extract(rgb, crops), AgeEdit(photo.copy(), found, aged, crops, sides, 0.0, self.size, missing)

    def traverse(self, photo: np.ndarray, ages=None, select: str | int = "largest") -> tuple[np.ndarray, AgeEdit]:
        """One face of `photo` (`select`: "largest" or a face number) aligned and rendered at each of
        `ages` (years, float [K]; None: the reference's 101 frames over the lifespan) in one
        engine traversal -> (uint8 [K,S,S,3], the AgeEdit naming the face). UserError as `age`,
        for select "all", and when no face is found."""
        if select == "all":
            raise UserError("a traversal is of one face: `select` 'largest' or a face number")
        faces, info = self.aligned_faces(photo, select)
        return self.engine.traverse(faces[0], ages), info
