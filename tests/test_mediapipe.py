"""MediaPipe's Face Landmarker as a detector (exprengine.faces.landmarks) on a real photo."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="mediapipe is not installed (pip install mediapipe)")
skdata = pytest.importorskip("skimage.data", reason="scikit-image's astronaut photo is needed")

from exprengine.errors import UserError  # noqa: E402
from exprengine.faces import landmarks  # noqa: E402
from exprengine.faces.detect import FaceDetector  # noqa: E402


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()


@pytest.fixture(scope="module")
def mp_detector():
    return landmarks.make_detector("mediapipe", min_size=40)


@pytest.fixture(scope="module")
def dlib_face(astronaut):
    det = FaceDetector("hog")
    box = det.detect(astronaut)[0]
    return box, det.eye_centres(astronaut, box)


def test_finds_the_astronauts_face_where_dlib_does(astronaut, mp_detector, dlib_face):
    boxes = mp_detector.detect(astronaut)
    assert len(boxes) == 1                              # not the mission patch
    assert boxes[0].iou(dlib_face[0]) > 0.5
    assert 0.5 <= boxes[0].score <= 1


def test_mesh_is_478_points_inside_the_face(astronaut, mp_detector):
    box = mp_detector.detect(astronaut)[0]
    points = mp_detector.landmarks(astronaut, box)
    assert points.shape == (1, 478, 3) and points.dtype == np.float32
    grown = box.width * 0.15                            # the mesh reaches the forehead, above the box
    assert (points[0, :, 0] >= box.left - grown).all() and (points[0, :, 0] <= box.right + grown).all()
    assert (points[0, :, 1] >= box.top - grown).all() and (points[0, :, 1] <= box.bottom + grown).all()
    everyone = mp_detector.landmarks(astronaut)
    assert everyone.shape == (1, 478, 3) and np.abs(everyone - points).max() < 0.05 * box.width
    names, scores = mp_detector.blendshapes(astronaut, box)
    assert len(names) == 52 and "jawOpen" in names and "mouthSmileLeft" in names
    assert scores.shape == (1, 52) and scores.dtype == np.float32 and (0 <= scores).all() and (scores <= 1).all()


def test_eye_centres_match_dlibs(astronaut, mp_detector, dlib_face):
    box, (dl, dr) = dlib_face
    left, right = mp_detector.eye_centres(astronaut, mp_detector.detect(astronaut)[0])
    assert left[0] < right[0]
    assert np.hypot(*(left - dl)) < 0.05 * box.width and np.hypot(*(right - dr)) < 0.05 * box.width


def test_detect_near_and_luma_and_scale(astronaut, mp_detector):
    box = mp_detector.detect(astronaut)[0]
    assert mp_detector.detect_near(astronaut, [box])[0].iou(box) > 0.7
    assert mp_detector.detect(np.ascontiguousarray(astronaut[:, :, 1]))[0].iou(box) > 0.7
    assert mp_detector.detect(astronaut, scale=0.5)[0].iou(box) > 0.7
    assert landmarks.make_detector("mediapipe", min_size=200).detect(astronaut) == []
    with pytest.raises(UserError):
        mp_detector.detect(astronaut, scale=0)


def test_no_face_gives_no_faces(mp_detector):
    for image in (skdata.coffee(), np.zeros((300, 400, 3), np.uint8),
                  np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)):
        assert mp_detector.detect(np.ascontiguousarray(image)) == []
        assert mp_detector.landmarks(np.ascontiguousarray(image)).shape == (0, 478, 3)


def test_large_image_is_bounded(astronaut, mp_detector, monkeypatch):
    seen = []
    real = mp_detector._run_detector
    monkeypatch.setattr(mp_detector, "_run_detector", lambda img: seen.append(img.shape) or real(img))
    monkeypatch.setattr(landmarks, "MAX_WORK_PIXELS", 100_000)
    boxes = mp_detector.detect(astronaut)
    assert seen[0][0] * seen[0][1] <= 100_000 and len(boxes) == 1
    assert boxes[0].iou(landmarks.make_detector("mediapipe").detect(astronaut)[0]) > 0.7


def test_a_changed_model_file_is_refused(tmp_path):
    bad = tmp_path / "face_landmarker.task"
    data = bytearray(landmarks.model_path().read_bytes())
    data[1000] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(UserError) as e:
        landmarks.MediaPipeDetector(model=bad)
    assert "sha256" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="cannot read"):
        landmarks.read_model(tmp_path / "missing.task")


def test_unknown_detector_name():
    with pytest.raises(UserError, match="mediapipe, hog, cnn"):
        landmarks.make_detector("yolo")


def test_cli_edit_with_mediapipe_changes_only_the_face(astronaut, tmp_path):
    from PIL import Image

    from exprengine.cli import main
    from helpers import rig_face_region
    src, out = tmp_path / "astronaut.png", tmp_path / "o.png"
    Image.fromarray(astronaut).save(src)
    assert main(["edit", str(src), "--detector", "mediapipe", "--preset", "happiness", "--out", str(out)]) == 0
    edited = np.asarray(Image.open(out))
    assert edited.shape == astronaut.shape and (edited != astronaut).any()
    outside = np.ones(astronaut.shape[:2], bool)
    outside[rig_face_region(astronaut)] = False
    assert np.array_equal(edited[outside], astronaut[outside])


def test_cli_with_a_changed_model_is_one_line(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from exprengine.cli import main
    bad = tmp_path / "face_landmarker.task"
    shutil.copyfile(landmarks.model_path(), bad)
    with open(bad, "r+b") as f:
        f.seek(5000)
        f.write(b"\x00\x01\x02")
    monkeypatch.setattr(landmarks, "model_path", lambda: bad)
    src = tmp_path / "a.png"
    Image.fromarray(skdata.astronaut()).save(src)
    code = main(["edit", str(src), "--detector", "mediapipe", "--preset", "happiness", "--out", str(tmp_path / "o.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("exprengine: error: ") and "sha256" in err[0]
    assert not (tmp_path / "o.png").exists()
