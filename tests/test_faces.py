"""Faces in whole photos: detection on real photos, crops, paste-back that leaves the rest of
the photo bit-identical, photo modes, tracking and box smoothing."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exprengine.aus import AUPolicy
from exprengine.engine import EditResult
from exprengine.errors import UserError
from exprengine.faces.crop import FaceCrop
from exprengine.faces.detect import Box, FaceDetector
from exprengine.faces.editor import FaceEditor, select_faces
from exprengine.faces.paste import shape_mask
from exprengine.faces.tracking import FaceTracker, OneEuroFilter

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


def astronaut() -> np.ndarray:
    from skimage import data
    return data.astronaut()


def grace_hopper() -> np.ndarray:
    import matplotlib
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


class ShiftEngine:
    """A stand-in engine whose edit takes 40 off the red channel of every crop (attention 0):
    large enough to see where the paste-back puts the change."""
    image_size = 128

    def __init__(self):
        self.calls = 0
        self.policy = AUPolicy()

    def edit_detailed(self, faces, aus, attention=True):
        self.calls += 1
        out = faces.astype(np.int16)
        out[..., 0] -= 40
        return EditResult(np.clip(out, 0, 255).astype(np.uint8),
                          np.zeros(faces.shape[:3], np.float32) if attention else None,
                          np.zeros((len(faces), 17), np.float32))


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def test_detects_the_real_faces_and_filters_the_mission_patch(detector):
    boxes = detector.detect(astronaut())
    assert len(boxes) == 1
    b = boxes[0]
    assert abs(b.left - 175) <= 8 and abs(b.top - 76) <= 8 and abs(b.width - 90) <= 10, b
    loose = FaceDetector(min_score=0.0).detect(astronaut())      # face_recognition's own setting
    assert len(loose) == 2 and loose[1].top > 300                 # ... also finds the patch
    hopper = detector.detect(grace_hopper())
    assert len(hopper) == 1 and 150 < hopper[0].left < 210 and 110 < hopper[0].top < 170, hopper
    small = detector.detect(astronaut(), scale=0.5)               # detection on a downscaled copy
    assert len(small) == 1 and small[0].iou(b) > 0.7


def test_the_cnn_detector_finds_the_same_face():
    cnn = FaceDetector("cnn").detect(astronaut(), scale=0.5)     # half size: a few seconds on 2 cores
    hog = FaceDetector().detect(astronaut())
    assert len(cnn) == 1 and cnn[0].iou(hog[0]) > 0.6, (cnn, hog)
    with pytest.raises(UserError, match="hog or cnn"):
        FaceDetector("haar")


def test_several_faces_are_edited_in_one_engine_call_and_nothing_else_changes(detector):
    photo = np.concatenate([astronaut()[:, 100:400], grace_hopper()[:512, 100:400]], axis=1)
    engine = ShiftEngine()
    result = FaceEditor(engine, detector, mask="shape", colour_match=False).edit(photo, "happiness")
    assert len(result.found) == 2 and result.edited == [0, 1] and engine.calls == 1
    changed = np.any(result.image != photo, axis=2)
    inside = np.zeros_like(changed)
    for c in result.crops:
        top, left, side = c.region
        inside[top:top + side, left:left + side] = True
    assert changed.any() and not (changed & ~inside).any()       # outside the face squares: bit-identical
    for c in result.crops:                                        # the change is the face, not the square
        top, left, side = c.region
        d = result.image[top:top + side, left:left + side, 0].astype(int) - photo[top:top + side, left:left + side, 0]
        centre = d[side // 2 - 5:side // 2 + 5, side // 2 - 5:side // 2 + 5]
        assert np.all(centre <= -30), centre.max()                # ~ -40 in the middle
        assert np.all(d[:2, :2] == 0) and np.all(d[-2:, -2:] == 0)   # corners untouched
    assert np.array_equal(result.image[..., 1:], photo[..., 1:])  # green and blue untouched by a red shift


def test_detection_near_tracked_faces_finds_them_again(detector):
    photo = astronaut()
    full = detector.detect(photo)
    shifted = np.roll(photo, (6, -9), axis=(0, 1))                  # the face moved a little
    near = detector.detect_near(shifted, full)
    assert len(near) == 1 and near[0].iou(Box(full[0].left - 9, full[0].top + 6, full[0].right - 9,
                                             full[0].bottom + 6, 1.0)) > 0.6
    assert detector.detect_near(np.full_like(photo, 128), full) == []          # gone: nothing found


def test_face_selection(detector):
    boxes = [Box(0, 0, 50, 50, 2.0), Box(100, 0, 200, 100, 1.0)]
    assert select_faces(boxes, "all") == [0, 1]
    assert select_faces(boxes, "largest") == [1]
    assert select_faces(boxes, 0) == [0] and select_faces(boxes, "1") == [1]
    with pytest.raises(UserError, match="only 2 faces found"):
        select_faces(boxes, 2)
    with pytest.raises(UserError, match="all, largest"):
        select_faces(boxes, "biggest")
    assert select_faces([], "largest") == []


def test_paste_with_alignment_inverts_the_crop_geometry(detector):
    photo = astronaut()
    tilted = np.asarray(Image.fromarray(photo).rotate(12, Image.Resampling.BICUBIC, center=(220, 121)))
    editor = FaceEditor(ShiftEngine(), detector, align=True, mask="shape", colour_match=False)
    result = editor.edit(tilted, "happiness")
    crop = result.crops[0]
    assert crop.angle == pytest.approx(np.radians(12), abs=np.radians(4))    # the eyes were levelled
    level = crop.extract(tilted, 128).astype(int)
    left_eye, right_eye = detector.eye_centres(np.ascontiguousarray(np.asarray(Image.fromarray(
        level.astype(np.uint8)).resize((256, 256)))), Box(0, 0, 256, 256, 1.0))
    assert abs(left_eye[1] - right_eye[1]) < 8                    # level in the crop
    d = result.image[..., 0].astype(int) - tilted[..., 0]
    cy, cx = int(crop.cy), int(crop.cx)
    assert d[cy - 5:cy + 5, cx - 5:cx + 5].max() <= -30           # the change lands back on the face
    top, left, extent = crop.region
    outside = np.ones(d.shape, bool)
    outside[max(top, 0):top + extent, max(left, 0):left + extent] = False
    assert not d[outside].any()


def test_pixels_with_no_change_keep_their_bytes_and_photo_modes_survive(detector):
    rgb = astronaut()
    identity = FaceEditor(ShiftEngine(), detector)
    identity.engine.edit_detailed = lambda faces, aus, attention=True: EditResult(   # edits nothing
        faces.copy(), np.ones(faces.shape[:3], np.float32), np.zeros((len(faces), 17), np.float32))
    assert np.array_equal(identity.edit(rgb, "happiness").image, rgb)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    out = FaceEditor(ShiftEngine(), detector, mask="shape", colour_match=False).edit(gray, "happiness")
    assert out.image.shape == gray.shape and out.image.dtype == np.uint8 and len(out.found) == 1
    assert (out.image.astype(int) - gray).min() < -5              # red -40 seen through the luma
    rgba = np.dstack([rgb, np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None, :].repeat(rgb.shape[0], 0)])
    out = FaceEditor(ShiftEngine(), detector, mask="shape", colour_match=False).edit(rgba, "happiness")
    assert out.image.shape == rgba.shape and np.array_equal(out.image[..., 3], rgba[..., 3])
    assert np.any(out.image[..., :3] != rgb)
    with pytest.raises(UserError, match="uint8"):
        FaceEditor(ShiftEngine(), detector).edit(rgb.astype(np.float32), "happiness")


def test_colour_matching_removes_a_cast_but_keeps_the_expression():
    from exprengine.faces.paste import colour_matched
    m = shape_mask(128)
    local = np.zeros((128, 128, 3), np.float32)
    local[56:72, 48:80] = 30.0                                   # a mouth that changed
    cast = local + np.array([6.0, -4.0, 2.0], np.float32)       # plus a colour cast of the generator
    fixed = colour_matched(cast, m)
    assert np.abs(fixed[56:72, 48:80] - 30).max() < 1.0 and np.abs(fixed[10:20, 60:70]).max() < 1.0


def test_crop_is_the_thesis_square_and_handles_edges():
    img = np.arange(200 * 300 * 3, dtype=np.uint32).reshape(200, 300, 3).astype(np.uint8)
    crop = FaceCrop.from_box(Box(250, 150, 310, 200, 1.0), img.shape)          # runs off the corner
    top, left, side = crop.region
    assert side == 60 and top + side <= 200 and left + side <= 300
    turned = FaceCrop(280.0, 190.0, 60, 0.3)                                   # partly outside the frame
    assert turned.extract(img, 32).shape == (32, 32, 3)
    m = shape_mask(128)
    assert m[64, 64] == 1.0 and m[0, 0] == 0 and m[64, 1] == 0 and m[1, 64] < 0.1


def test_one_euro_filter_removes_jitter_without_losing_the_face():
    rng = np.random.default_rng(0)
    fps, n = 30.0, 240
    t = np.arange(n) / fps
    truth = np.stack([200 + 60 * np.sin(t), 150 + 5 * t, 100 + 0 * t], 1)      # a face moving slowly
    noisy = truth + rng.normal(0, 3.0, truth.shape)                            # detector jitter, 3 px
    f = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    smooth = np.stack([f(x, 1 / fps if i else 0.0) for i, x in enumerate(noisy)])
    raw_jitter = np.abs(np.diff(noisy[30:], axis=0)).mean()
    smooth_jitter = np.abs(np.diff(smooth[30:], axis=0)).mean()
    assert smooth_jitter < 0.35 * raw_jitter, (smooth_jitter, raw_jitter)
    assert np.abs(smooth[30:] - truth[30:]).mean() < np.abs(noisy[30:] - truth[30:]).mean()   # and closer to it
    assert np.abs(smooth[30:] - truth[30:]).max() < 10                         # lag stays small


def test_tracker_follows_faces_across_sparse_detections():
    tracker = FaceTracker(min_cutoff=1.0, beta=0.05)
    tracker.update([Box(100, 100, 200, 200, 1.0)])
    tracker.step(0.0)
    assert tracker.boxes() == [Box(100, 100, 200, 200, 1.0)] and not tracker.lost
    for i in range(1, 30):                                   # the face moved; detection every 5th frame
        if i % 5 == 0:
            tracker.update([Box(100 + 2 * i, 100, 200 + 2 * i, 200, 1.0)])
        tracker.step(i / 30)
    assert abs(tracker.boxes()[0].left - 150) < 12          # caught up, smoothly
    tracker.update([Box(400, 400, 450, 450, 1.0)])         # missed once, and a second face
    assert len(tracker.tracks) == 2 and tracker.lost
    tracker.update([])
    assert len(tracker.tracks) == 1                         # the first face missed twice: dropped
    tracker.update([])
    assert tracker.tracks == [] and tracker.lost
