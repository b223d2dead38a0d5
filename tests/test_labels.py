"""Real-data labels: OpenFace CSVs of both kinds, GANimation's pickle (safely), data set layouts."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from exprengine.aus import AU_NAMES
from exprengine.data.datasets import FaceFolder
from exprengine.data.labels import (OPENFACE_MIN_CONFIDENCE, image_labels_from_openface, read_ganimation_pickle,
                                    read_id_list, read_image_labels, read_openface_csv)
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
        openface_csv(d / "img1.csv", [{"lead": ["0", "0.8"], "aus": a}, {"lead": ["1", "0.98"], "aus": b}],
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


# --- files as people have them ------------------------------------------------------------------
def python2_pickle(data: dict[str, np.ndarray]) -> bytes:
    """The bytes Python 2.7's cPickle.dump(data, f, 2) writes for {str: 1-D float64 array} with
    NumPy 1.x, built opcode by opcode (Python 3 cannot write Python 2 `str`): ids and the array
    data are py2 `str` (SHORT_BINSTRING, raw bytes), each array is
    _reconstruct(ndarray, (0,), 'b') + BUILD (1, shape, dtype('f8'), False, data), the dtype is
    dtype('f8', 0, 1) + BUILD (3, '<', None, None, None, -1, -1, 0), and repeated globals,
    strings and the (shared) dtype are memo references, as cPickle memoizes them."""
    import struct
    out, memo = bytearray(b"\x80\x02"), {}

    def put(key):
        memo[key] = len(memo)
        out.extend(b"q" + bytes([memo[key]]))

    def fetched(key):
        if key in memo:
            out.extend(b"h" + bytes([memo[key]]))
            return True
        return False

    def py2_str(b, shared=True):
        if shared and fetched(("str", b)):
            return
        out.extend((b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b)
        put(("str", b) if shared else ("data", len(memo)))

    def global_(module, name):
        if not fetched(("global", module, name)):
            out.extend(b"c" + module + b"\n" + name + b"\n")
            put(("global", module, name))

    def int_(n):
        out.extend(b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n))

    def dtype_f8():
        if fetched(("dtype",)):
            return
        global_(b"numpy", b"dtype")
        py2_str(b"f8"), int_(0), int_(1)
        out.extend(b"\x87")                                 # TUPLE3
        put(("args", "dtype"))
        out.extend(b"R")                                    # REDUCE
        put(("dtype",))
        out.extend(b"(")                                    # MARK
        int_(3), py2_str(b"<"), out.extend(b"NNN"), int_(-1), int_(-1), int_(0)
        out.extend(b"t")                                    # TUPLE
        put(("state", "dtype"))
        out.extend(b"b")                                    # BUILD

    out.extend(b"}")                                        # EMPTY_DICT
    put(("dict",))
    out.extend(b"(")
    for key, array in data.items():
        py2_str(key.encode("ascii"), shared=False)
        global_(b"numpy.core.multiarray", b"_reconstruct")
        global_(b"numpy", b"ndarray")
        int_(0), out.extend(b"\x85")                        # (0,)
        put(("shape0", key))
        py2_str(b"b")
        out.extend(b"\x87")
        put(("args", key))
        out.extend(b"R")
        put(("array", key))
        out.extend(b"(")
        int_(1), int_(array.shape[0]), out.extend(b"\x85")
        put(("shape", key))
        dtype_f8()
        out.extend(b"\x89")                                 # NEWFALSE: not Fortran-ordered
        py2_str(np.ascontiguousarray(array, "<f8").tobytes(), shared=False)
        out.extend(b"t")
        put(("state", key))
        out.extend(b"b")
    out.extend(b"u.")                                       # SETITEMS, STOP
    return bytes(out)


def test_python2_ganimation_pickle_loads(tmp_path):
    """GANimation's aus_openface.pkl is Python 2 protocol 2: {celeba id: OpenFace's 17 `_r` values
    (content[2:19] of its np.loadtxt of a FaceLandmarkImg CSV), float64}."""
    import pickletools
    rng = np.random.default_rng(7)
    data = {f"{n:06d}": np.round(rng.gamma(0.5, 0.9, 17), 2) for n in (1, 2, 3, 181, 202599)}
    data["000002"][9] = 5.37                                # OpenFace can exceed 5: clipped
    raw = python2_pickle(data)
    pickletools.dis(raw, out=open(tmp_path / "dis.txt", "w"))          # a well-formed protocol-2 stream
    assert raw[:2] == b"\x80\x02" and b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"_codecs" not in raw
    with pytest.raises(UnicodeDecodeError):                 # what Python 3 does with it by default
        pickle.loads(raw)
    p = tmp_path / "aus_openface.pkl"
    p.write_bytes(raw)
    labels = read_ganimation_pickle(p)
    assert sorted(labels) == sorted(data)
    for key, value in data.items():
        np.testing.assert_allclose(labels[key], np.clip(value, 0, 5).astype(np.float32))
        assert labels[key].dtype == np.float32


def test_python2_pickle_that_runs_code_is_still_refused(tmp_path):
    marker = tmp_path / "pwned"
    raw = b"\x80\x02}q\x00U\x01aq\x01cposix\nsystem\nq\x02U" + bytes([len(f"touch {marker}")]) + \
        f"touch {marker}".encode() + b"q\x03\x85q\x04Rq\x05s."
    (tmp_path / "x.pkl").write_bytes(raw)
    with pytest.raises(UserError, match="not a plain dict.*posix.system"):
        read_ganimation_pickle(tmp_path / "x.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("raw", [b"\x80\x02h\x05.", b"\x80\x02(" * 5 + b".", b"\x80\x02}q\x00U\x01a" + b"(" * 3,
                                 b"\x80\x02}U\x01a\x8a\xff" + b"\x01" * 255 + b"s."])
def test_damaged_pickles_are_one_sentence(tmp_path, raw):
    (tmp_path / "x.pkl").write_bytes(raw)
    with pytest.raises(UserError):
        read_ganimation_pickle(tmp_path / "x.pkl")


def test_huge_numbers_in_pickle_are_user_errors(tmp_path):
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps({"a": [10 ** 400] * 17}))
    with pytest.raises(UserError, match="not a vector of 17"):
        read_ganimation_pickle(p)
    p.write_bytes(pickle.dumps({10 ** 5000: np.zeros(17)}))
    with pytest.raises(UserError, match="more than 60 digits"):
        read_ganimation_pickle(p)


def test_openface_confidence_threshold(tmp_path):
    """FaceLandmarkImg rows have no success flag: a fit at confidence 0.05 is not a label."""
    assert OPENFACE_MIN_CONFIDENCE == 0.725
    d = tmp_path / "of"
    d.mkdir()
    openface_csv(d / "good.csv", [{"lead": ["0", "0.93"], "aus": np.full(17, 1.0)}])
    openface_csv(d / "bad.csv", [{"lead": ["0", "0.05"], "aus": np.full(17, 3.0)}])
    openface_csv(d / "two.csv", [{"lead": ["0", "0.05"], "aus": np.full(17, 3.0)},
                                 {"lead": ["1", "0.80"], "aus": np.full(17, 0.5)}])
    labels = image_labels_from_openface(d)
    assert sorted(labels) == ["good", "two"]
    np.testing.assert_allclose(labels["two"], 0.5)          # the trusted face, not the confident-looking junk
    with pytest.raises(UserError, match="no successfully tracked faces .0 rows marked failed, 1 with confidence"):
        read_openface_csv(d / "bad.csv")
    found = read_image_labels(d, {tmp_path / "imgs": ["bad.png", "good.png", "two.png"]})
    assert found.dropped == {"bad": "low_confidence"} and found.low_confidence == 1 and not found.note


def fdir_csv(path, confidences, successes=None, faces=None):
    """FeatureExtraction -fdir output (OpenFace 2.2 header, no spaces): frame counts images from 1,
    timestamp is 0 for an image folder."""
    successes = successes or [1] * len(confidences)
    header = ["frame", "face_id", "timestamp", "confidence", "success", "gaze_angle_x", "pose_Rx", "x_0", "y_0"] + R + C
    lines = [",".join(header)]
    for n, (conf, ok) in enumerate(zip(confidences, successes), start=1):
        for face in (faces or [0]):
            lines.append(",".join([str(n), str(face), "0.000", f"{conf:.2f}", str(ok), "0.1", "0.2", "300.5", "200.1"]
                                  + [f"{n * 0.25 + face:.2f}"] * 17 + ["1"] * len(C)))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_feature_extraction_fdir_csv_maps_frames_to_sorted_images(tmp_path):
    out = tmp_path / "of"
    out.mkdir()
    names = ["b.png", "a.png", "c10.png", "c9.png"]                 # OpenFace sorts: a, b, c10, c9
    fdir_csv(out / "imgs.csv", [0.98, 0.97, 0.05, 0.99], successes=[1, 1, 0, 1])
    found = read_image_labels(out, {tmp_path / "imgs": names, tmp_path / "photos": ["x.jpg"]})
    assert sorted(found.labels) == ["a", "b", "c9"] and found.dropped == {"c10": "failed"}
    np.testing.assert_allclose(found.labels["a"], 0.25)
    np.testing.assert_allclose(found.labels["b"], 0.5)
    np.testing.assert_allclose(found.labels["c9"], 1.0)
    assert "FeatureExtraction" in found.layout and not found.note
    # the CSV file itself works too, and OpenFace's details file names the folder
    (out / "imgs_of_details.txt").write_text(f"Input:{tmp_path / 'imgs'}\nInput full path:{tmp_path / 'imgs'}\n")
    assert sorted(read_image_labels(out / "imgs.csv", {tmp_path / "imgs": names}).labels) == ["a", "b", "c9"]


def test_feature_extraction_fdir_csv_that_does_not_match_says_why(tmp_path):
    out = tmp_path / "of"
    out.mkdir()
    fdir_csv(out / "imgs.csv", [0.9, 0.9, 0.9])
    found = read_image_labels(out, {tmp_path / "imgs": ["a.png", "b.png"]})
    assert found.labels == {} and "has 3 frames but" in found.note and "holds 2 images" in found.note
    (out / "imgs_of_details.txt").write_text("Input:/somewhere/else\n")
    found = read_image_labels(out, {tmp_path / "imgs": ["a.png", "b.png", "c.png"]})
    assert found.labels == {} and "/somewhere/else" in found.note


def test_several_faces_per_frame_take_the_most_confident(tmp_path):
    fdir_csv(tmp_path / "imgs.csv", [0.9, 0.9], faces=[0, 1])
    found = read_image_labels(tmp_path / "imgs.csv", {tmp_path / "imgs": ["a.png", "b.png"]})
    assert sorted(found.labels) == ["a", "b"]


@pytest.mark.parametrize("case", ["huge_field", "not_utf8", "huge_frame", "bad_confidence"])
def test_malformed_openface_csvs_are_user_errors(tmp_path, case):
    p = tmp_path / "imgs.csv"
    fdir_csv(p, [0.9])
    text = p.read_text()
    if case == "huge_field":
        p.write_text(text.replace("0.000", '"' + "1" * 140_000 + '"', 1))
    elif case == "not_utf8":
        p.write_bytes(text.encode().replace(b"0.000", b"\xff\xfe", 1))
    elif case == "huge_frame":
        p.write_text(text.replace("\n1,0,", "\n" + "9" * 400 + ",0,", 1))
    else:
        p.write_text(text.replace(",0.90,", ",high,", 1))
    with pytest.raises(UserError) as e:
        read_image_labels(p, {tmp_path / "imgs": ["a.png"]})
        read_openface_csv(p)
    assert "\n" not in str(e.value)


def test_id_list_that_is_not_text(tmp_path):
    (tmp_path / "train_ids.csv").write_bytes(b"\xff\xfe\x00a")
    with pytest.raises(UserError, match="not UTF-8"):
        read_id_list(tmp_path / "train_ids.csv")
