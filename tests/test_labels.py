"""Real-data labels: OpenFace CSVs of both kinds, GANimation's pickle (safely), data set layouts."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from exprengine.aus import AU_NAMES
from exprengine.data.datasets import FaceFolder
from exprengine.data.labels import (image_labels_from_openface, read_ganimation_pickle, read_id_list,
                                    read_openface_csv)
from exprengine.errors import UserError

R = [f"AU{n}_r" for n in ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45")]
C = [f"AU{n}_c" for n in ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "28", "45")]


def openface_csv(path, rows, kind="image", shuffle=False, drop=None):
    """Write a CSV shaped like OpenFace's (space-padded headers, _r then _c columns, or shuffled)."""
    lead = ["face", "confidence"] if kind == "image" else ["frame", "face_id", "timestamp", "confidence", "success"]
    aus = [c for c in R if c != drop]
    header = lead + ["gaze_0_x", "pose_Tx"] + aus + C
    order = list(range(len(header)))
    if shuffle:
        order = order[::-1]
    lines = [", ".join(header[i] for i in order)]
    for r in rows:
        values = r["lead"] + ["0.1", "3.2"] + [f"{v}" for k, v in zip(R, r["aus"]) if k != drop] + ["1"] * len(C)
        lines.append(", ".join(values[i] for i in order))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_face_landmark_img_csv_by_header_name_and_most_confident_face(tmp_path):
    a, b = np.linspace(0, 3, 17), np.linspace(3, 0, 17)
    for shuffle in (False, True):
        d = tmp_path / f"s{shuffle}"
        d.mkdir()
        openface_csv(d / "img1.csv", [{"lead": ["0", "0.6"], "aus": a}, {"lead": ["1", "0.98"], "aus": b}],
                     shuffle=shuffle)
        table = read_openface_csv(d / "img1.csv")
        assert table.kind == "FaceLandmarkImg" and table.aus.shape == (2, 17)
        np.testing.assert_allclose(table.aus[0], a, atol=1e-6)
        labels = image_labels_from_openface(d)
        np.testing.assert_allclose(labels["img1"], b, atol=1e-6)          # the confident face


def test_feature_extraction_csv_drops_failed_frames(tmp_path):
    rows = [{"lead": [str(i), "0", f"{i / 30:.3f}", "0.9", "0" if i == 2 else "1"], "aus": np.full(17, i * 0.5)}
            for i in range(1, 5)]
    table = read_openface_csv(openface_csv(tmp_path / "video.csv", rows, kind="video"))
    assert table.kind == "FeatureExtraction"
    assert [m["frame"] for m in table.meta] == ["1", "3", "4"]
    np.testing.assert_allclose(table.aus[:, 0], [0.5, 1.5, 2.0])


@pytest.mark.parametrize("case,match", [
    ("missing", "lacks the AU intensity columns AU12_r"),
    ("nan", "line 2 has NaN"),
    ("text", "non-numeric"),
    ("empty", "is empty"),
    ("failed", "no successfully tracked faces"),
])
def test_bad_openface_files(tmp_path, case, match):
    p = tmp_path / "x.csv"
    if case == "missing":
        openface_csv(p, [{"lead": ["0", "0.9"], "aus": np.zeros(17)}], drop="AU12_r")
    elif case == "nan":
        openface_csv(p, [{"lead": ["0", "0.9"], "aus": [float("nan")] + [0] * 16}])
    elif case == "text":
        openface_csv(p, [{"lead": ["0", "0.9"], "aus": ["x"] + [0] * 16}])
    elif case == "empty":
        p.write_text("")
    else:
        openface_csv(p, [{"lead": ["1", "0", "0", "0.1", "0"], "aus": np.zeros(17)}], kind="video")
    with pytest.raises(UserError, match=match):
        read_openface_csv(p)


@pytest.mark.parametrize("protocol", [2, 4])
def test_ganimation_pickle_loads_plain_data(tmp_path, protocol):
    data = {"000001": np.arange(17, dtype=np.float64) / 4, "000002": list(np.ones(17)), 3: np.zeros((1, 17), np.float32)}
    p = tmp_path / "aus_openface.pkl"
    p.write_bytes(pickle.dumps(data, protocol=protocol))
    labels = read_ganimation_pickle(p)
    assert set(labels) == {"000001", "000002", "3"}
    np.testing.assert_allclose(labels["000001"], np.clip(np.arange(17) / 4, 0, 5))


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_ganimation_pickle_that_runs_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "aus_openface.pkl"
    p.write_bytes(pickle.dumps({"1": Exploit(marker)}))
    with pytest.raises(UserError, match="not a plain dict"):
        read_ganimation_pickle(p)
    assert not marker.exists()


@pytest.mark.parametrize("data,match", [
    ({"1": np.zeros(16)}, "not a vector of 17"),
    ({"1": np.full(17, np.nan)}, "NaN"),
    ([np.zeros(17)], "dict"),
    ({}, "non-empty dict"),
])
def test_bad_ganimation_pickles(tmp_path, data, match):
    p = tmp_path / "aus_openface.pkl"
    p.write_bytes(pickle.dumps(data))
    with pytest.raises(UserError, match=match):
        read_ganimation_pickle(p)
    p.write_bytes(b"not a pickle at all")
    with pytest.raises(UserError):
        read_ganimation_pickle(p)


def ganimation_layout(root, ids, labelled):
    from PIL import Image
    (root / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in ids:
        Image.fromarray(rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.jpg")
    (root / "aus_openface.pkl").write_bytes(pickle.dumps({i: rng.uniform(0, 5, 17) for i in labelled}))
    (root / "train_ids.csv").write_text("".join(f"{i}.jpg\n" for i in ids[:-1]))
    (root / "test_ids.csv").write_text(f"{ids[-1]}.jpg\n")
    return root


def test_ganimation_layout_trains_directly(tmp_path):
    root = ganimation_layout(tmp_path / "g", ["a1", "a2", "a3"], ["a1", "a2", "a3"])
    ds = FaceFolder(root, "train", size=64)
    assert len(ds) == 2 and read_id_list(root / "test_ids.csv") == ["a3"]
    x, aus, identity = ds[1]
    assert tuple(x.shape) == (3, 64, 64) and aus.shape == (17,) and identity == -1


def test_images_without_labels_are_reported(tmp_path):
    root = ganimation_layout(tmp_path / "g", ["a1", "a2", "a3"], ["a1"])
    with pytest.raises(UserError, match="1 images of the train split have no AU labels .first: a2"):
        FaceFolder(root, "train")
    with pytest.raises(UserError, match="neither aus.csv nor aus_openface.pkl"):
        FaceFolder(tmp_path)


def test_our_layout_rejects_nan_and_missing_columns(tmp_path):
    (tmp_path / "aus.csv").write_text("id," + ",".join(f"{a}_r" for a in AU_NAMES) + "\nx," + ",".join(["nan"] * 17) + "\n")
    (tmp_path / "train_ids.csv").write_text("x\n")
    with pytest.raises(UserError, match="NaN"):
        FaceFolder(tmp_path)
    (tmp_path / "aus.csv").write_text("id,AU01_r\nx,1\n")
    with pytest.raises(UserError, match="lacks the columns"):
        FaceFolder(tmp_path)
