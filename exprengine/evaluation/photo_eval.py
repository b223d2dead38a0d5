"""Measure expression edits on real photos: does each AU move the face the right way, what
else moves, does the person stay the same person, and do pixels outside the faces stay put.

    from exprengine.evaluation.photo_eval import evaluate_photos, format_report
    report = evaluate_photos(engine, paths, sheet_dir="sheets/")
    print(format_report(report))

For every face the detector (MediaPipe's by default) finds in every photo, the face is edited
with each of the 17 AUs alone at each of `intensities` (default 1 and 2) and with every preset
at PRESET_INTENSITY (2), through `FaceEditor.edit_crops` (the same path as `exprengine edit`),
and measured:

(a) **Proxy change.** MediaPipe's 52 blendshape scores of the face before and after the edit,
    each AU read through its proxy blendshapes (PROXIES: the mean of a left/right pair). Both
    are measured on the same square (`FaceCrop`, MEASURE_CONTEXT times the edit crop's side,
    resampled to MEASURE_SIZE pixels) of the original and of the edited photo. Every proxy is
    the blendshape of the AU's own movement, so "the right way" is up for every AU (AU04:
    browDown up, AU15: mouthFrown up, AU45: eyeBlink up). **The proxy is uncalibrated**:
    blendshape scores are ARKit-style coefficients in 0..1 estimated by MediaPipe's model, not
    FACS AU intensities; they show direction and a rough size only. A face whose proxy is
    already near 1 (the astronaut smiles: mouthSmile 0.88) cannot rise by MOVE_THRESHOLD;
    `at_ceiling` counts those and `right_way_with_room` leaves them out (the targets do not:
    they count every face, as the issue states them).
(b) **What moved that should not**: the largest |change| among the proxies of the *other* AUs,
    leaving out AUs that share a proxy blendshape (AU25 and AU26 both read jawOpen) and the
    COUPLED pairs, where FACS codes the two together or one movement moves the other's
    blendshape by definition.
(c) **Identity**: the Euclidean distance between dlib's 128-d face descriptors
    (`dlib.face_recognition_model_v1`, the ResNet face_recognition uses, with dlib's 5-point
    shape predictor, both from the `face_recognition_models` package) of the original and the
    edited face, on the same measurement square. face_recognition treats 0.6 as another
    person (SAME_PERSON); the target is < IDENTITY_TARGET (0.35).
(d) **Change outside the faces**: each photo is also edited whole (`FaceEditor.edit`, every
    face, with WHOLE_PHOTO_PRESET: the preset with the most AUs, moving brows, lids, mouth and
    jaw) and the pixels outside the union of the edited faces' `FaceCrop.region` that differ
    from the input are counted; so are the pixels outside the face's region that each batched
    edit changes in its copy of the face's surroundings (see below). Both must be 0.

Batching: all of one face's edits (17 x len(intensities) + 8 rows) go to the editor in one
`edit_crops` call: the face's surroundings (the window holding its edit and measurement
squares, the frame's edge repeated outside the frame exactly as `FaceCrop.extract` does) are
stacked once per row into one tall image, with one crop per copy. Each copy is read back as
that row's edited photo; the result is the same as editing the photo itself row by row (tested).

Targets (the issue's): AU01, AU02, AU04, AU05, AU12, AU15, AU20, AU26 and AU45 at intensity 2
each move their proxy up by >= MOVE_THRESHOLD (0.15) on >= TARGET_FRACTION (90 %) of the faces;
every edit at intensity 2 keeps the identity distance < 0.35; no pixel outside the faces changes.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from exprengine.aus import AU_NAMES, AU_SCALE, NUM_AUS, PRESETS, AUs
from exprengine.errors import UserError, plural
from exprengine.faces.crop import FaceCrop
from exprengine.faces.detect import Box

#: Each AU's proxy: MediaPipe blendshapes (ARKit names) whose mean stands for it. Uncalibrated.
PROXIES: dict[str, tuple[str, ...]] = {
    "AU01": ("browInnerUp",),
    "AU02": ("browOuterUpLeft", "browOuterUpRight"),
    "AU04": ("browDownLeft", "browDownRight"),
    "AU05": ("eyeWideLeft", "eyeWideRight"),
    "AU06": ("cheekSquintLeft", "cheekSquintRight"),
    "AU07": ("eyeSquintLeft", "eyeSquintRight"),
    "AU09": ("noseSneerLeft", "noseSneerRight"),
    "AU10": ("mouthUpperUpLeft", "mouthUpperUpRight"),
    "AU12": ("mouthSmileLeft", "mouthSmileRight"),
    "AU14": ("mouthDimpleLeft", "mouthDimpleRight"),
    "AU15": ("mouthFrownLeft", "mouthFrownRight"),
    "AU17": ("mouthShrugLower",),
    "AU20": ("mouthStretchLeft", "mouthStretchRight"),
    "AU23": ("mouthPressLeft", "mouthPressRight"),
    "AU25": ("jawOpen",),
    "AU26": ("jawOpen",),
    "AU45": ("eyeBlinkLeft", "eyeBlinkRight"),
}

#: AU pairs left out of each other's "moved that should not" (besides AUs sharing a proxy):
#: one frontalis raises inner and outer brow (01+02); a blink closes the lid that 05 opens wide
#: and 07 narrows (05+45, 07+45: eyeBlink and eyeSquint/eyeWide read the same lid); the cheek
#: raiser squints the eye and comes with a smile (06+07, 06+12: ARKit's cheekSquint rises with
#: mouthSmile); the nose wrinkler lifts the upper lip (09+10); dimpler and smile both pull the
#: lip corners (12+14); the chin raiser comes with the lip corner depressor and lip pressing
#: (15+17, 17+23).
COUPLED: tuple[tuple[str, str], ...] = (
    ("AU01", "AU02"), ("AU05", "AU45"), ("AU07", "AU45"), ("AU06", "AU07"), ("AU06", "AU12"),
    ("AU09", "AU10"), ("AU12", "AU14"), ("AU15", "AU17"), ("AU17", "AU23"),
)

MOVE_THRESHOLD = 0.15          # proxy change that counts as "moved the right way" (the issue's)
TARGET_AUS = ("AU01", "AU02", "AU04", "AU05", "AU12", "AU15", "AU20", "AU26", "AU45")
TARGET_INTENSITY = 2.0
TARGET_FRACTION = 0.9          # of faces
IDENTITY_TARGET = 0.35         # dlib descriptor distance (the issue's)
SAME_PERSON = 0.6              # face_recognition's default tolerance: above it, another person
PRESET_INTENSITY = 2.0
WHOLE_PHOTO_PRESET = "fear"    # the whole-photo edit of (d)
MEASURE_SIZE = 256             # pixels of the measurement square
MEASURE_CONTEXT = 1.6          # its side / the edit crop's side (the mesh wants some context)
#: Pixels of one stacked canvas at most (larger batches are split): 32 MP = 96 MB of RGB.
CANVAS_PIXELS = 32_000_000

PROXY_NOTE = ("proxies are MediaPipe blendshape scores (ARKit coefficients in 0..1), not calibrated AU "
              "intensities: they show direction and rough size only")


def photo_paths(directory: str | os.PathLike) -> list[Path]:
    """The photos `evaluate_photos` takes from a directory (`photo_sets.list_photos`: image
    files directly in it, sorted); UserError when it is missing or holds none."""
    from exprengine.evaluation.photo_sets import list_photos
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"photo directory {d} does not exist (python -m exprengine.evaluation.photo_sets {d} "
                        "gathers a set)")
    paths = list_photos(d)
    if not paths:
        raise UserError(f"photo directory {d} holds no .jpg, .png, .webp or .bmp file")
    return paths


# --- proxies ----------------------------------------------------------------------------------
def proxy_values(names: Sequence[str], scores: np.ndarray) -> np.ndarray:
    """MediaPipe blendshape scores float [..., 52] (named `names`) -> float32 [..., 17] AU proxy
    values in AU_NAMES order (each the mean of its PROXIES). KeyError for a missing name."""
    scores = np.asarray(scores, np.float32)
    index = {n: i for i, n in enumerate(names)}
    return np.stack([scores[..., [index[b] for b in PROXIES[au]]].mean(-1) for au in AU_NAMES], -1)


def unrelated_aus(au: str) -> tuple[str, ...]:
    """The AUs whose proxies `au` should not move: all others except those sharing one of its
    proxy blendshapes and its COUPLED partners."""
    coupled = {b for pair in COUPLED if au in pair for b in pair}
    mine = set(PROXIES[au])
    return tuple(b for b in AU_NAMES if b != au and b not in coupled and not mine & set(PROXIES[b]))


def worst_other(changes: np.ndarray, aus: Sequence[str]) -> tuple[float, str | None]:
    """Largest |proxy change| among AUs unrelated to every AU of `aus` (changes: [17] in
    AU_NAMES order, NaN where unmeasured) and which AU it was; (nan, None) when none is measured."""
    others = set(AU_NAMES)
    for au in aus:
        others &= set(unrelated_aus(au))
    best, which = float("nan"), None
    for b in AU_NAMES:
        if b in others and np.isfinite(changes[AU_NAMES.index(b)]):
            v = abs(float(changes[AU_NAMES.index(b)]))
            if which is None or v > best:
                best, which = v, b
    return best, which


def judge_targets(report: dict) -> list[dict]:
    """The issue's targets from a report's "aus", "presets" and "outside_change_pixels":
    one dict each with name, what, value, goal, met (None when not measured) and extra numbers."""
    targets = []
    rows = {(r["au"], r["intensity"]): r for r in report["aus"]}
    for au in TARGET_AUS:
        r = rows.get((au, TARGET_INTENSITY))
        what = f"{'+'.join(PROXIES[au])} up by >= {MOVE_THRESHOLD:g} on >= {TARGET_FRACTION:.0%} of faces"
        if r is None or r["n"] == 0:
            targets.append({"name": f"{au}@{TARGET_INTENSITY:g}", "what": what, "value": None,
                            "goal": TARGET_FRACTION, "met": None})
            continue
        targets.append({"name": f"{au}@{TARGET_INTENSITY:g}", "what": what, "value": r["right_way"],
                        "goal": TARGET_FRACTION, "met": r["right_way"] >= TARGET_FRACTION,
                        "mean_change": r["mean_change"], "n": r["n"], "at_ceiling": r.get("at_ceiling", 0)})
    at_target = [r for r in report["aus"] if r["intensity"] == TARGET_INTENSITY and r["n"]]
    at_target += [r for r in report["presets"] if r["intensity"] == TARGET_INTENSITY and r["n"]]
    ids = [r["identity_max"] for r in at_target if r["identity_max"] is not None]
    means = [r["identity_mean"] for r in at_target if r["identity_mean"] is not None]
    targets.append({"name": "identity", "goal": IDENTITY_TARGET,
                    "what": f"dlib descriptor distance < {IDENTITY_TARGET:g} on every edit at intensity "
                            f"{TARGET_INTENSITY:g} (AUs and presets)",
                    "value": max(ids) if ids else None, "mean": float(np.mean(means)) if means else None,
                    "met": (max(ids) < IDENTITY_TARGET) if ids else None})
    outside = report["outside_change_pixels"]
    targets.append({"name": "outside", "what": "pixels outside the edited faces' regions that change",
                    "value": outside, "goal": 0, "met": outside == 0 if report["faces"] else None})
    return targets


# --- identity ---------------------------------------------------------------------------------
class IdentityModel:
    """dlib's face descriptor (face_recognition's ResNet, 128-d) and 5-point shape predictor,
    from the installed `face_recognition_models` package. UserError if dlib or it is missing."""

    def __init__(self):
        from exprengine.faces.detect import dlib_module, face_models
        dlib = self._dlib = dlib_module("the identity measurement")
        models = face_models("the identity measurement")
        self._shape = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def descriptor(self, image: np.ndarray, box: Box) -> np.ndarray:
        """float64 [128] descriptor of the face in `box` of `image` (uint8 HxWx3 RGB)."""
        image = np.ascontiguousarray(image)
        shape = self._shape(image, self._dlib.rectangle(box.left, box.top, box.right, box.bottom))
        return np.asarray(self._net.compute_face_descriptor(image, shape), np.float64)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        """Euclidean distance between two descriptors ([128] each): face_recognition's measure,
        where 0.6 (SAME_PERSON) separates people and IDENTITY_TARGET is this evaluation's bar."""
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


# --- rows -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EditRow:
    """One edit of the evaluation (`edit_rows`): its `label` ("AU12@2", "happiness@2"), `kind`
    ("au" or "preset"), `name` (the AU or the preset), `intensity` (OpenFace 0..5) and the AUs
    it raises."""

    label: str                 # "AU12@2", "happiness@2"
    kind: str                  # "au" or "preset"
    name: str                  # the AU or the preset
    intensity: float
    aus: tuple[str, ...]       # AUs it raises


def edit_rows(intensities: Sequence[float]) -> tuple[list[EditRow], np.ndarray]:
    """Every AU alone at each intensity, then every preset at PRESET_INTENSITY ->
    (rows, float32 [R,17] AU vectors)."""
    rows, vectors = [], []
    for au in AU_NAMES:
        for x in intensities:
            rows.append(EditRow(f"{au}@{x:g}", "au", au, float(x), (au,)))
            vectors.append(AUs.from_dict({au: x}).values)
    for name, preset in PRESETS.items():
        rows.append(EditRow(f"{name}@{PRESET_INTENSITY:g}", "preset", name, PRESET_INTENSITY, preset.aus))
        vectors.append(AUs.preset(name, PRESET_INTENSITY).values)
    return rows, np.stack(vectors).astype(np.float32)


# --- pixels -----------------------------------------------------------------------------------
def _padded(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """image[top:top+height, left:left+width] (a copy), the frame's edge repeated outside it,
    as FaceCrop.extract reads a square that runs over the edge."""
    h, w = image.shape[:2]
    t, l = min(max(top, 0), h - 1), min(max(left, 0), w - 1)
    b, r = max(min(top + height, h), t + 1), max(min(left + width, w), l + 1)
    patch = image[t:b, l:r]
    pads = ((t - top, top + height - b), (l - left, left + width - r), (0, 0))
    return np.pad(patch, pads, mode="edge") if any(p for pair in pads for p in pair) else patch.copy()


def outside_pixels(original: np.ndarray, edited: np.ndarray, regions: Sequence[tuple[int, int, int]]) -> int:
    """Pixels (any channel) where `edited` differs from `original` outside the union of the
    (top, left, extent) squares."""
    diff = np.any(np.asarray(original) != np.asarray(edited), axis=-1) if original.ndim == 3 else original != edited
    for top, left, extent in regions:
        diff[max(top, 0):max(top + extent, 0), max(left, 0):max(left + extent, 0)] = False
    return int(diff.sum())


def _shifted(crop: FaceCrop, dy: float, dx: float) -> FaceCrop:
    return FaceCrop(crop.cx + dx, crop.cy + dy, crop.side, crop.angle)


def edit_face_rows(editor, rgb: np.ndarray, crop: FaceCrop, measure: FaceCrop, vectors: np.ndarray
                   ) -> tuple[np.ndarray, tuple[int, int], list[np.ndarray], int]:
    """Edit one face (at `crop`) with every row of `vectors` ([R,17]) in as few `edit_crops`
    calls as CANVAS_PIXELS allows, on copies of its window stacked into one image.

    Returns (the original window, its (top, left) in the photo, R edited windows, pixels outside
    `crop.region` that the edits changed). The window covers `crop.region` and
    `measure.region`; a window is what the photo edited by that row alone holds there.
    """
    h_img, w_img = rgb.shape[:2]
    (ct, cl, ce), (mt, ml, me) = crop.region, measure.region
    top, left = min(ct, mt), min(cl, ml)
    top, left = top - top % 2, left - left % 2           # even shifts keep round() of the regions
    height, width = max(ct + ce, mt + me) - top, max(cl + ce, ml + me) - left
    slot = height + height % 2
    window = _padded(rgb, top, left, height, width)
    inside = (slice(max(top, 0) - top, min(top + height, h_img) - top),
              slice(max(left, 0) - left, min(left + width, w_img) - left))
    per_call = max(1, int(CANVAS_PIXELS // (slot * width)))
    edited, leaked = [], 0
    for start in range(0, len(vectors), per_call):
        chunk = vectors[start:start + per_call]
        n = len(chunk)
        canvas = np.zeros((n * slot, width, 3), np.uint8)
        crops = []
        for i in range(n):
            canvas[i * slot:i * slot + height] = window
            c = _shifted(crop, i * slot - top, -left)
            if c.region != (ct - top + i * slot, cl - left, ce):
                raise RuntimeError(f"stacked crop region {c.region} is not the face's {crop.region} moved")
            crops.append(c)
        out = editor.edit_crops(canvas, crops, chunk)
        for i in range(n):
            got = out[i * slot:(i + 1) * slot]
            leaked += outside_pixels(canvas[i * slot:(i + 1) * slot], got, [(ct - top, cl - left, ce)])
            # the frame's own part of the copy, its edge repeated outside as in the edited photo
            edited.append(_padded(got[:height][inside], -inside[0].start, -inside[1].start, height, width))
    return window, (top, left), edited, leaked


# --- measurement ------------------------------------------------------------------------------
def measure_crop(crop: FaceCrop) -> FaceCrop:
    """The square the measurements read: `crop` grown MEASURE_CONTEXT times about its centre."""
    return FaceCrop(crop.cx, crop.cy, int(round(crop.side * MEASURE_CONTEXT)), crop.angle)


def _face_box() -> Box:
    """The edit crop's square inside a MEASURE_SIZE measurement image."""
    half = MEASURE_SIZE / MEASURE_CONTEXT / 2
    lo, hi = int(round(MEASURE_SIZE / 2 - half)), int(round(MEASURE_SIZE / 2 + half))
    return Box(lo, lo, hi, hi, 1.0)


class _Meter:
    """Blendshape proxies and identity descriptors of measurement images."""

    def __init__(self, mediapipe, identity: IdentityModel):
        self.mp, self.identity, self.box = mediapipe, identity, _face_box()

    def measure(self, image: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(float32 [17] proxies, or None when the mesh finds no face; float64 [128] descriptor)."""
        names, scores = self.mp.blendshapes(image, self.box)
        proxies = proxy_values(names, scores[0]) if len(scores) else None
        return proxies, self.identity.descriptor(image, self.box)


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return (float(np.mean(v)), float(np.max(v))) if v else (None, None)


def _round(x, digits: int = 4):
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def evaluate_photos(engine, paths: Sequence[str | os.PathLike], detector="mediapipe",
                    intensities: Sequence[float] = (1.0, 2.0), sheet_dir: str | os.PathLike | None = None,
                    progress: bool = False) -> dict:
    """Edit and measure every face in `paths` (see the module's docstring) -> the report.

    `engine`: anything `FaceEditor` takes (`Engine.load`, `Engine.from_generator`). `detector`:
    a detector name for `make_detector` ("mediapipe", "hog", "cnn") or a detector object; the
    blendshapes are MediaPipe's whatever finds the faces. `intensities`: the single-AU
    intensities, each in (0, 5]. `sheet_dir`: write one contact sheet PNG per face there
    (`<photo stem>-face<k>.png`: the original, every AU at each intensity, every preset;
    measurement squares of MEASURE_SIZE px, labelled with the proxy change and identity distance).
    `progress`: one line per photo on stderr.

    Report keys: photos, faces, faces_unmeasured, photos_without_face (names), detector,
    intensities, preset_intensity, threshold, outside_change_pixels (whole-photo edits plus
    batched edits), seconds, note, aus (one dict per AU and intensity: au, intensity, proxy,
    n, mean_change, right_way (fraction of faces moved up by >= threshold), at_ceiling,
    missing, worst_other, worst_other_au, mean_worst_other, identity_mean, identity_max,
    at_ceiling: faces whose proxy starts above 1 - threshold, right_way_with_room: the fraction
    among the others),
    presets (preset, intensity, n, proxies {AU: mean change}, right_way {AU: fraction},
    worst_other, worst_other_au, identity_mean, identity_max), per_face (photo, face, box,
    measured, original {AU: proxy}, rows {label: {"changes": [17] or None, "identity"}}),
    targets (`judge_targets`), targets_met (True only when every target is met).
    UserError for no photos, a bad intensity, or a photo that cannot be read.
    """
    from exprengine.faces.editor import FaceEditor
    from exprengine.faces.landmarks import MediaPipeDetector, make_detector
    from exprengine.media import read_image
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no photos to evaluate")
    intensities = tuple(float(x) for x in intensities)
    if not intensities or not all(math.isfinite(x) and 0 < x <= AU_SCALE for x in intensities):
        raise UserError(f"intensities must be numbers in (0, {AU_SCALE:g}], got {list(intensities)}")
    started = time.perf_counter()
    finder = make_detector(detector) if isinstance(detector, str) else detector
    mediapipe = finder if isinstance(finder, MediaPipeDetector) else make_detector("mediapipe")
    meter = _Meter(mediapipe, IdentityModel())
    editor = FaceEditor(engine, detector=finder)
    rows, vectors = edit_rows(intensities)
    sheets = Path(sheet_dir) if sheet_dir is not None else None
    if sheets is not None:
        sheets.mkdir(parents=True, exist_ok=True)
    per_face, no_face, outside, unmeasured = [], [], 0, 0
    for number, path in enumerate(paths, 1):
        t0 = time.perf_counter()
        rgb = read_image(path)
        result = editor.edit(rgb, AUs.preset(WHOLE_PHOTO_PRESET, PRESET_INTENSITY).values)   # (d), every face
        outside += outside_pixels(rgb, result.image, [c.region for c in result.crops])
        crops, found = result.crops, [result.found[i] for i in result.edited]
        if not crops:
            no_face.append(path.name)
        for k, crop in enumerate(crops):
            face, leaked, tiles = _measure_face(editor, meter, rgb, crop, rows, vectors, sheets is not None)
            outside += leaked
            b = found[k]
            face.update(photo=path.name, face=k, box=[b.left, b.top, b.right, b.bottom])
            per_face.append(face)
            unmeasured += not face["measured"]
            if sheets is not None and face["measured"]:
                _write_sheet(sheets / f"{path.stem}-face{k}.png", tiles, rows, face, intensities)
        if progress:
            print(f"[{number}/{len(paths)}] {path.name}: {plural(len(crops), 'face')}, "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    report = _aggregate(per_face, rows, intensities)
    report.update(photos=len(paths), faces=len(per_face) - unmeasured, faces_unmeasured=unmeasured,
                  photos_without_face=no_face, detector=getattr(finder, "model", str(detector)),
                  intensities=list(intensities), preset_intensity=PRESET_INTENSITY, threshold=MOVE_THRESHOLD,
                  outside_change_pixels=int(outside), note=PROXY_NOTE, per_face=per_face)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["targets"] = judge_targets(report)
    report["targets_met"] = all(t["met"] is True for t in report["targets"])
    return {k: report[k] for k in ("photos", "faces", "faces_unmeasured", "photos_without_face", "detector",
                                   "intensities", "preset_intensity", "threshold", "outside_change_pixels",
                                   "seconds", "note", "targets_met", "targets", "aus", "presets", "per_face")}


def run_photo_evaluation(engine, photos: str | os.PathLike, *, photo_sheets: str | os.PathLike | None = None,
                         json_path: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """`evaluate_photos` on every photo in the directory `photos` (`photo_paths`), with
    the output places checked before any edit; returns the report with "engine" (the engine's
    directory, `Engine.path`, as text; None for an engine made in memory) first.

    `photo_sheets`: a new or empty directory that gets one contact sheet PNG per measured face;
    it appears whole when the evaluation succeeds, or not at all (`files.atomic_directory`).
    `json_path`: the report as JSON (written atomically). `progress`: one line per photo on stderr.
    UserError: `photos` missing or holding no photo; `json_path` not writable; `photo_sheets`
    a file or a directory that is not empty; no face found and measured in any photo.
    """
    import json

    from exprengine.files import atomic_directory, write_bytes
    from exprengine.media import check_output_path
    paths = photo_paths(photos)
    if json_path:
        check_output_path(json_path, "file")
    if photo_sheets:
        sheets = Path(photo_sheets)
        if sheets.exists() and not sheets.is_dir():
            raise UserError(f"`photo_sheets` {photo_sheets} exists and is not a directory; give a new or empty "
                            "directory for the contact sheets")
        if sheets.is_dir() and any(sheets.iterdir()):
            raise UserError(f"`photo_sheets` {photo_sheets} is not empty; give a new or empty directory for the "
                            "contact sheets")

    def measured(sheet_dir=None) -> dict:
        found = evaluate_photos(engine, paths, sheet_dir=sheet_dir, progress=progress)
        if not found["faces"]:
            raise UserError(f"no face was found and measured in any of the {plural(len(paths), 'photo')} in {photos}")
        return found
    if photo_sheets:
        with atomic_directory(photo_sheets) as tmp:
            report = measured(tmp)
    else:
        report = measured()
    where = getattr(engine, "path", None)
    report = {"engine": None if where is None else str(where), **report}
    if json_path:
        write_bytes(json_path, (json.dumps(report, indent=2) + "\n").encode())
    return report


def _measure_face(editor, meter: _Meter, rgb, crop, rows, vectors, keep_tiles: bool):
    """One face's per-row measurements (a per_face entry without photo/face/box), the pixels its
    batched edits leaked outside its region, and the measurement images if `keep_tiles`."""
    measure = measure_crop(crop)
    original_img = measure.extract(rgb, MEASURE_SIZE)
    before, descriptor = meter.measure(original_img)
    face = {"measured": before is not None, "crop_side": crop.side}
    if before is None:
        return face, 0, []
    window, (top, left), edited, leaked = edit_face_rows(editor, rgb, crop, measure, vectors)
    local = _shifted(measure, -top, -left)
    tiles = [original_img] if keep_tiles else []
    face["original"] = {au: _round(v) for au, v in zip(AU_NAMES, before)}
    face["rows"] = {}
    for row, win in zip(rows, edited):
        img = local.extract(win, MEASURE_SIZE)
        after, d = meter.measure(img)
        changes = None if after is None else (after - before)
        face["rows"][row.label] = {"changes": None if changes is None else [_round(x) for x in changes],
                                   "identity": _round(meter.identity.distance(descriptor, d))}
        if keep_tiles:
            tiles.append(img)
    return face, leaked, tiles


def _aggregate(per_face: list[dict], rows: list[EditRow], intensities) -> dict:
    faces = [f for f in per_face if f["measured"]]
    aus, presets = [], []
    for row in rows:
        changes = [f["rows"][row.label]["changes"] for f in faces]
        ids = [f["rows"][row.label]["identity"] for f in faces]
        arr = np.array([[np.nan if x is None else x for x in c] if c is not None else [np.nan] * NUM_AUS
                        for c in changes], np.float64).reshape(len(faces), NUM_AUS)
        missing = sum(c is None for c in changes)
        worst = [(v, b) for v, b in (worst_other(a, row.aus) for a in arr) if np.isfinite(v)]
        w_vals = [v for v, _ in worst]
        id_mean, id_max = _stats(ids)
        common = {"intensity": row.intensity, "n": len(faces), "missing": missing,
                  "worst_other": _round(max(worst)[0]) if worst else None,
                  "worst_other_au": max(worst)[1] if worst else None,
                  "mean_worst_other": _round(float(np.mean(w_vals))) if w_vals else None,
                  "identity_mean": _round(id_mean), "identity_max": _round(id_max)}
        if row.kind == "au":
            j = AU_NAMES.index(row.name)
            col = arr[:, j]
            room = np.array([f["original"][row.name] <= 1 - MOVE_THRESHOLD for f in faces], bool)
            moved = col >= MOVE_THRESHOLD
            aus.append({"au": row.name, "proxy": "+".join(PROXIES[row.name]),
                        "mean_change": _round(float(np.nanmean(col))) if np.isfinite(col).any() else None,
                        "right_way": _round(float(moved.sum() / len(faces))) if faces else None,
                        "at_ceiling": int((~room).sum()),
                        "right_way_with_room": _round(float((moved & room).sum() / room.sum())) if room.any() else None,
                        **common})
        else:
            cols = {au: arr[:, AU_NAMES.index(au)] for au in row.aus}
            presets.append({"preset": row.name,
                            "proxies": {au: _round(float(np.nanmean(c))) if np.isfinite(c).any() else None
                                        for au, c in cols.items()},
                            "right_way": {au: _round(float(np.sum(c >= MOVE_THRESHOLD) / len(faces))) if faces else None
                                          for au, c in cols.items()}, **common})
    return {"aus": aus, "presets": presets}


def _write_sheet(path: Path, tiles: list[np.ndarray], rows: list[EditRow], face: dict, intensities) -> None:
    """The original, then each AU's intensities side by side (several AUs a line), then the presets."""
    from exprengine.media import contact_sheet, write_image
    per_line = max(1, 4 // len(intensities))
    columns = per_line * len(intensities)
    blank = np.full_like(tiles[0], 255)
    frames, labels = [tiles[0]], ["original"]

    def pad():
        while len(frames) % columns:
            frames.append(blank)
            labels.append("")
    pad()
    for row, previous, tile in zip(rows, [None] + rows[:-1], tiles[1:]):
        if row.kind == "preset" and previous is not None and previous.kind == "au":
            pad()                                     # the presets start a new line
        m = face["rows"][row.label]
        text = f"{row.label} id {m['identity']:.2f}"
        if row.kind == "au":
            c = m["changes"]
            v = None if c is None else c[AU_NAMES.index(row.name)]
            text = f"{row.label} {PROXIES[row.name][0].replace('Left', '')} " \
                   f"{'n/a' if v is None else f'{v:+.2f}'} id {m['identity']:.2f}"
        frames.append(tile)
        labels.append(text)
    pad()
    write_image(path, contact_sheet(np.stack(frames), columns=columns, labels=labels))


# --- text -------------------------------------------------------------------------------------
def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def format_report(report: dict) -> str:
    """The report as a readable table: one line per AU and intensity, one per preset, the targets."""
    lines = [f"photos {report['photos']}, faces {report['faces']}"
             + (f" (+{report['faces_unmeasured']} the mesh could not measure)" if report["faces_unmeasured"] else "")
             + f", {report['seconds']:.0f} s; detector {report['detector']}; {report['note']}",
             f"{'AU':5} {'x':>4}  {'proxy':34} {'mean chg':>8} {'>=' + format(report['threshold'], 'g'):>6}"
             f"  {'worst other':>16}  {'identity mean/max':>17}"]
    for r in report["aus"]:
        worst = f"{_fmt(r['worst_other'], '.3f')} {r['worst_other_au'] or ''}".strip()
        lines.append(f"{r['au']:5} {r['intensity']:>4g}  {r['proxy']:34} {_fmt(r['mean_change'], '+.3f'):>8} "
                     f"{_fmt(r['right_way'], '.0%'):>6}  {worst:>16}  "
                     f"{_fmt(r['identity_mean'], '.3f'):>8}/{_fmt(r['identity_max'], '.3f'):<8}")
    lines.append(f"{'preset':10} {'x':>4}  {'identity mean/max':>17}  proxies: mean change "
                 f"(share of faces >= {report['threshold']:g})")
    for r in report["presets"]:
        proxies = ", ".join(f"{au} {_fmt(v, '+.2f')} ({_fmt(r['right_way'][au], '.0%')})"
                            for au, v in r["proxies"].items())
        proxies = proxies or f"none; the largest proxy change {_fmt(r['worst_other'], '.3f')}"
        lines.append(f"{r['preset']:10} {r['intensity']:>4g}  "
                     f"{_fmt(r['identity_mean'], '.3f'):>8}/{_fmt(r['identity_max'], '.3f'):<8}  {proxies}")
    lines.append(f"pixels changed outside the faces: {report['outside_change_pixels']}")
    lines.append("targets:")
    for t in report["targets"]:
        state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        if t["name"] == "identity":
            value = f"max {_fmt(t['value'], '.3f')}, mean {_fmt(t['mean'], '.3f')}"
        elif t["name"] == "outside":
            value = f"{t['value']}"
        else:
            value = f"{_fmt(t['value'], '.0%')} of faces (mean change {_fmt(t.get('mean_change'), '+.3f')}" \
                    + (f"; {plural(t['at_ceiling'], 'face')} already above {1 - report['threshold']:g})"
                       if t.get("at_ceiling")
                       else ")")
        lines.append(f"  {t['name']:9} {t['what']}: {value}  {state}")
    return "\n".join(lines)
