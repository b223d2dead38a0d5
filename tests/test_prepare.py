"""`exprengine prepare`: real photos in, square face crops and a report out, resumable."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from exprengine.data.prepare import JOURNAL, prepare_photos
from exprengine.errors import UserError

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    astronaut = skimage_data.astronaut()
    Image.fromarray(astronaut).save(d / "astronaut.jpg", quality=95)            # one face (and the patch)
    Image.fromarray(np.concatenate([astronaut[:, 100:400]] * 2, axis=1)).save(d / "twins.png")   # two faces
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(d / "wall.png")  # none
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")               # unreadable
    return d


def test_prepare_crops_single_faces_and_reports_the_rest(photos, tmp_path):
    report = prepare_photos(photos, tmp_path / "ds", progress=False)
    assert report["kept"] == 1 and report["photos"] == 4
    assert report["several_faces"] == ["twins.png"] and report["no_face"] == ["wall.png"]
    assert report["unreadable"] == ["broken.jpg"]
    crop = np.asarray(Image.open(tmp_path / "ds" / "imgs" / "astronaut.png"))
    assert crop.shape == (128, 128, 3)
    entry = [json.loads(line) for line in (tmp_path / "ds" / JOURNAL).read_text().splitlines()
             if '"astronaut"' in line][0]
    top, left, side = entry["crop"]
    assert 80 <= side <= 100 and 150 <= left <= 190 and 50 <= top <= 90        # the face, not the patch
    assert json.loads((tmp_path / "ds" / "report.json").read_text())["kept"] == 1
    ids = (tmp_path / "ds" / "train_ids.csv").read_text().split() + (tmp_path / "ds" / "test_ids.csv").read_text().split()
    assert ids == ["astronaut"]
    assert not list((tmp_path / "ds").rglob("*.part*"))
    assert (photos / "broken.jpg").read_bytes() == b"\xff\xd8\xff\xe0 truncated"     # inputs untouched


def test_prepare_resumes_after_an_interruption(photos, tmp_path, monkeypatch):
    from exprengine.faces import detect
    calls = []
    real = detect.FaceDetector.detect

    def interrupted(self, image):
        calls.append(image.shape)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, image)
    monkeypatch.setattr(detect.FaceDetector, "detect", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_photos(photos, tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds" / "report.json").exists()
    done = (tmp_path / "ds" / JOURNAL).read_text().splitlines()
    calls.clear()
    monkeypatch.setattr(detect.FaceDetector, "detect", lambda self, image: (calls.append(1), real(self, image))[1])
    report = prepare_photos(photos, tmp_path / "ds", progress=False)
    assert report["kept"] == 1 and report["photos"] == 4
    assert len(calls) == 4 - len(done)               # only the photos not in the journal are processed again


def test_prepare_with_openface_labels(photos, tmp_path):
    from test_labels import openface_csv
    labels = tmp_path / "openface"
    labels.mkdir()
    openface_csv(labels / "astronaut.csv", [{"lead": ["0", "0.97"], "aus": np.linspace(0, 2, 17)}])
    report = prepare_photos(photos, tmp_path / "ds", openface=labels, progress=False)
    assert report["labelled"] == 1 and report["unlabelled"] == []
    from exprengine.data.datasets import FaceFolder
    ds = FaceFolder(tmp_path / "ds", "all")
    np.testing.assert_allclose(ds.aus(0), np.linspace(0, 2, 17), atol=1e-4)


def test_prepare_refuses_bad_arguments(photos, tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        prepare_photos(tmp_path / "nope", tmp_path / "ds")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not a data set made by"):
        prepare_photos(photos, tmp_path / "mine")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="holds no photos"):
        prepare_photos(empty, tmp_path / "ds2")


def test_prepare_with_feature_extraction_fdir_csv(photos, tmp_path):
    """`FeatureExtraction -fdir DATASET/imgs -aus -out_dir of` writes of/imgs.csv, a row per crop."""
    from test_labels import fdir_csv
    report = prepare_photos(photos, tmp_path / "ds", progress=False)
    assert report["labelled"] is None
    of = tmp_path / "of"
    of.mkdir()
    fdir_csv(of / "imgs.csv", [0.98])
    report = prepare_photos(photos, tmp_path / "ds", openface=of, progress=False)
    assert report["labelled"] == 1 and report["unlabelled"] == [] and report["openface"]["note"] == ""
    from exprengine.data.datasets import FaceFolder
    np.testing.assert_allclose(FaceFolder(tmp_path / "ds", "all").aus(0), 0.25, atol=1e-4)


def test_prepare_says_why_crops_are_not_labelled(photos, tmp_path):
    from test_labels import fdir_csv, openface_csv
    of = tmp_path / "of"
    of.mkdir()
    fdir_csv(of / "imgs.csv", [0.98, 0.97, 0.9])                     # made from another set of images
    report = prepare_photos(photos, tmp_path / "ds", openface=of, progress=False)
    assert report["labelled"] == 0
    assert report["openface"]["note"].startswith("labelled 0 of 1 crops: imgs.csv has 3 frames but")
    assert (tmp_path / "ds" / "aus.csv").read_text().count("\n") == 1
    # FaceLandmarkImg output with a face fitted at confidence 0.05: not a label, and said so
    low = tmp_path / "low"
    low.mkdir()
    openface_csv(low / "astronaut.csv", [{"lead": ["0", "0.05"], "aus": np.full(17, 2.0)}])
    report = prepare_photos(photos, tmp_path / "ds", openface=low, progress=False)
    assert report["labelled"] == 0 and report["unlabelled"] == ["astronaut"]
    assert report["openface"]["dropped_low_confidence"] == 1 and "below 0.725" in report["openface"]["note"]
    with pytest.raises(UserError, match="does not exist"):
        prepare_photos(photos, tmp_path / "ds", openface=tmp_path / "nope", progress=False)
