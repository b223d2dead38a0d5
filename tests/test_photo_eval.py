"""Measuring edits on real photos (exprengine.evaluation.photo_eval) and gathering the photo set
(exprengine.evaluation.photo_sets): the proxy map and the targets on constructed numbers, one
evaluation of the astronaut with an engine that closes the eyes of AU45 rows, the batched edits
against row-by-row edits, safe archive reading, and the fetched set when it is there."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw

from exprengine.aus import AU_INDEX, AU_NAMES, PRESETS, as_intensity_array
from exprengine.engine import EditResult
from exprengine.errors import UserError
from exprengine.evaluation import photo_eval as pe
from exprengine.evaluation import photo_sets as ps

BLENDSHAPES = sorted({b for names in pe.PROXIES.values() for b in names} | {"_neutral", "cheekPuff"})


# --- the proxy map and the targets, on constructed numbers ----------------------------------------
def test_proxies_are_the_mean_of_their_blendshapes():
    scores = np.zeros(len(BLENDSHAPES), np.float32)
    scores[BLENDSHAPES.index("eyeBlinkLeft")], scores[BLENDSHAPES.index("eyeBlinkRight")] = 0.2, 0.6
    scores[BLENDSHAPES.index("jawOpen")] = 0.5
    scores[BLENDSHAPES.index("browInnerUp")] = 0.3
    v = pe.proxy_values(BLENDSHAPES, scores)
    assert v.shape == (17,)
    assert v[AU_INDEX["AU45"]] == pytest.approx(0.4)
    assert v[AU_INDEX["AU25"]] == v[AU_INDEX["AU26"]] == pytest.approx(0.5)
    assert v[AU_INDEX["AU01"]] == pytest.approx(0.3)
    assert np.count_nonzero(v) == 4
    batch = pe.proxy_values(BLENDSHAPES, np.stack([scores, scores * 0]))
    assert batch.shape == (2, 17) and not batch[1].any()
    with pytest.raises(KeyError):
        pe.proxy_values([n for n in BLENDSHAPES if n != "jawOpen"], scores[:-1])


def test_every_au_has_a_proxy_and_the_issue_mapping():
    assert set(pe.PROXIES) == set(AU_NAMES)
    assert pe.PROXIES["AU04"] == ("browDownLeft", "browDownRight")
    assert pe.PROXIES["AU45"] == ("eyeBlinkLeft", "eyeBlinkRight")
    assert pe.PROXIES["AU12"] == ("mouthSmileLeft", "mouthSmileRight")
    assert pe.PROXIES["AU17"] == ("mouthShrugLower",)


def test_unrelated_aus_leave_out_shared_proxies_and_coupled_pairs():
    assert "AU26" not in pe.unrelated_aus("AU25") and "AU25" not in pe.unrelated_aus("AU26")
    assert "AU02" not in pe.unrelated_aus("AU01") and "AU01" not in pe.unrelated_aus("AU02")
    assert {"AU06", "AU14"}.isdisjoint(pe.unrelated_aus("AU12"))
    assert {"AU05", "AU07"}.isdisjoint(pe.unrelated_aus("AU45"))
    assert pe.unrelated_aus("AU04") == tuple(a for a in AU_NAMES if a != "AU04")   # coupled with none
    assert "AU12" in pe.unrelated_aus("AU45") and "AU45" in pe.unrelated_aus("AU12")


def test_worst_other_picks_the_largest_unrelated_change():
    changes = np.zeros(17)
    changes[AU_INDEX["AU07"]] = 0.9            # coupled with AU45: not counted for it
    changes[AU_INDEX["AU12"]] = -0.3           # unrelated: counted by size
    changes[AU_INDEX["AU04"]] = 0.1
    assert pe.worst_other(changes, ("AU45",)) == (pytest.approx(0.3), "AU12")
    assert pe.worst_other(changes, ("AU12",)) == (pytest.approx(0.9), "AU07")
    # a preset: unrelated to every one of its AUs (happiness = 06 + 12: AU07 is coupled with 06)
    assert pe.worst_other(changes, ("AU06", "AU12")) == (pytest.approx(0.1), "AU04")
    changes[:] = np.nan
    value, which = pe.worst_other(changes, ("AU45",))
    assert np.isnan(value) and which is None


def _report(right_way: float, identity_max: float, outside: int = 0, intensity: float = 2.0) -> dict:
    aus = [{"au": au, "intensity": intensity, "n": 10, "right_way": right_way, "mean_change": 0.2,
            "identity_mean": identity_max / 2, "identity_max": identity_max} for au in AU_NAMES]
    presets = [{"preset": p, "intensity": 2.0, "n": 10, "identity_mean": 0.1, "identity_max": 0.2} for p in PRESETS]
    return {"aus": aus, "presets": presets, "outside_change_pixels": outside, "faces": 10}


def test_targets_met_and_missed():
    met = {t["name"]: t for t in pe.judge_targets(_report(0.9, 0.349))}
    assert set(met) == {f"{au}@2" for au in pe.TARGET_AUS} | {"identity", "outside"}
    assert all(t["met"] is True for t in met.values())
    missed = {t["name"]: t for t in pe.judge_targets(_report(0.89, 0.35, outside=3))}
    assert missed["AU45@2"]["met"] is False and missed["AU45@2"]["value"] == 0.89
    assert missed["identity"]["met"] is False and missed["identity"]["value"] == 0.35
    assert missed["outside"]["met"] is False and missed["outside"]["value"] == 3
    # a preset's identity counts too
    r = _report(1.0, 0.1)
    r["presets"][3]["identity_max"] = 0.5
    assert {t["name"]: t for t in pe.judge_targets(r)}["identity"]["met"] is False
    # intensity 2 not measured: the AU targets say so
    none = {t["name"]: t for t in pe.judge_targets(_report(1.0, 0.1, intensity=1.0))}
    assert none["AU01@2"]["met"] is None and none["AU01@2"]["value"] is None


def test_edit_rows():
    rows, vectors = pe.edit_rows((1.0, 2.0))
    assert len(rows) == vectors.shape[0] == 17 * 2 + len(PRESETS)
    assert rows[0].label == "AU01@1" and rows[33].label == "AU45@2" and rows[34].label == "natural@2"
    assert vectors[33, AU_INDEX["AU45"]] == 2 and np.count_nonzero(vectors[33]) == 1
    happy = [r.label for r in rows].index("happiness@2")
    assert vectors[happy, AU_INDEX["AU06"]] == vectors[happy, AU_INDEX["AU12"]] == 2
    assert not vectors[34].any()


def test_outside_pixels_counts_only_outside_the_regions():
    a = np.zeros((20, 30, 3), np.uint8)
    b = a.copy()
    b[5, 5, 1] = 1                        # inside the region
    assert pe.outside_pixels(a, b, [(2, 2, 8)]) == 0
    b[15, 25] = 9                         # outside it
    b[0, 29, 2] = 1
    assert pe.outside_pixels(a, b, [(2, 2, 8)]) == 2
    assert pe.outside_pixels(a, b, [(2, 2, 8), (-5, 20, 30)]) == 0     # regions may run over the edge


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        pe.evaluate_photos(object(), [])
    with pytest.raises(UserError):
        pe.evaluate_photos(object(), [tmp_path / "x.png"], intensities=(0.0,))
    with pytest.raises(UserError, match="does not exist"):
        pe.photo_paths(tmp_path / "missing")
    with pytest.raises(UserError, match="holds no"):
        pe.photo_paths(tmp_path)


# --- one evaluation of the astronaut ------------------------------------------------------------------
class LidPainter:
    """An engine that closes the eyes of rows with AU45 > 0 (skin-coloured lids with a lash line
    painted over each eye, at `eyes`: (x, y, half-width) in fractions of the crop), returns
    rows without any AU unchanged, and gives every other row to the wrapped (random) engine."""

    def __init__(self, engine, eyes):
        self.engine, self.eyes = engine, eyes

    @property
    def image_size(self):
        return self.engine.image_size

    def edit_detailed(self, images, aus, attention=True):
        res = self.engine.edit_detailed(images, aus, attention=True)
        faces = np.asarray(images)
        v = np.broadcast_to(as_intensity_array(aus), (len(faces), 17))
        out, att = res.images.copy(), res.attention.copy()
        s = self.image_size
        for i in range(len(faces)):
            if not v[i].any():
                out[i], att[i] = faces[i], 1.0
            elif v[i, AU_INDEX["AU45"]] > 0:
                img = Image.fromarray(faces[i])
                lids = Image.new("L", (s, s), 0)
                draw, mark = ImageDraw.Draw(img), ImageDraw.Draw(lids)
                for fx, fy, fw in self.eyes:
                    cx, cy, w = fx * s, fy * s, fw * s
                    h = 0.45 * w
                    skin = tuple(int(c) for c in faces[i][min(s - 1, int(cy + 2.2 * h)), int(cx)])
                    draw.ellipse([cx - w, cy - h, cx + w, cy + h], fill=skin)
                    draw.line([cx - w, cy + 0.3 * h, cx + w, cy + 0.3 * h], fill=(40, 30, 30), width=1)
                    mark.ellipse([cx - w - 2, cy - h - 2, cx + w + 2, cy + h + 2], fill=255)
                out[i] = np.asarray(img)
                att[i] = 1.0 - np.asarray(lids, np.float32) / 255
        return EditResult(out, att if attention else None, res.aus)


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    from skimage import data
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def small_generator():
    """convnext2 with random weights, narrow and shallow (fast), at the usual 128 px."""
    import dataclasses

    import torch

    from exprengine.models import build_generator, generator_config
    torch.manual_seed(0)
    return build_generator(dataclasses.replace(generator_config("convnext2"), dims=(8, 16, 32), depth=1)).eval()


@pytest.fixture(scope="module")
def random_engine():
    from exprengine.engine import Engine
    return Engine.from_generator(small_generator())


@pytest.fixture(scope="module")
def mediapipe():
    from exprengine.faces.landmarks import make_detector
    return make_detector("mediapipe")


@pytest.fixture(scope="module")
def lid_engine(astronaut, random_engine, mediapipe):
    from exprengine.faces.crop import FaceCrop
    from exprengine.faces.landmarks import EYE_CORNERS
    from exprengine.media import read_image
    rgb = read_image(astronaut)
    box = mediapipe.detect(rgb)[0]
    crop = FaceCrop.from_box(box, rgb.shape)
    top, left, side = crop.region
    points = mediapipe.landmarks(rgb, box)[0][:, :2]
    eyes = []
    for a, b in EYE_CORNERS:
        (x0, y0), (x1, y1) = (points[a] - (left, top)) / side, (points[b] - (left, top)) / side
        eyes.append(((x0 + x1) / 2, (y0 + y1) / 2, 0.65 * float(np.hypot(x1 - x0, y1 - y0))))
    return LidPainter(random_engine, eyes)


@pytest.fixture(scope="module")
def report(astronaut, lid_engine, mediapipe, tmp_path_factory):
    sheets = tmp_path_factory.mktemp("sheets")
    r = pe.evaluate_photos(lid_engine, [astronaut], detector=mediapipe, sheet_dir=sheets)
    r["_sheets"] = sheets
    return r


def test_report_structure(report):
    assert report["photos"] == 1 and report["faces"] == 1 and report["faces_unmeasured"] == 0
    assert report["photos_without_face"] == [] and report["detector"] == "mediapipe"
    assert [(r["au"], r["intensity"]) for r in report["aus"]] == [(a, x) for a in AU_NAMES for x in (1.0, 2.0)]
    assert [r["preset"] for r in report["presets"]] == list(PRESETS)
    for r in report["aus"]:
        assert r["n"] == 1 and r["missing"] == 0 and r["proxy"] == "+".join(pe.PROXIES[r["au"]])
        assert r["at_ceiling"] == (r["au"] == "AU12")                   # the astronaut smiles: mouthSmile 0.88
        assert r["right_way_with_room"] == (None if r["au"] == "AU12" else r["right_way"])
        assert 0 <= r["right_way"] <= 1 and r["identity_max"] >= r["identity_mean"] >= 0
    face = report["per_face"][0]
    assert face["photo"] == "astronaut.png" and len(face["box"]) == 4 and len(face["rows"]) == 42
    assert all(len(row["changes"]) == 17 for row in face["rows"].values())
    assert {t["name"] for t in report["targets"]} >= {"AU45@2", "identity", "outside"}
    json.dumps(report["targets"]), json.dumps(report["per_face"])            # plain JSON types
    text = pe.format_report(report)
    assert "AU45" in text and "targets:" in text and "happiness" in text
    above = f"already above {1 - report['threshold']:g})"
    assert f"; 1 face {above}" in text                                  # AU12's target: the astronaut smiles
    more = {**report, "targets": [{**t, "at_ceiling": 2} if "at_ceiling" in t else t for t in report["targets"]]}
    assert f"; 2 faces {above}" in pe.format_report(more)


def test_nothing_outside_the_faces_changes(report):
    assert report["outside_change_pixels"] == 0
    assert {t["name"]: t for t in report["targets"]}["outside"]["met"] is True


def test_unedited_face_has_identity_zero(report):
    natural = report["per_face"][0]["rows"]["natural@2"]
    assert natural["identity"] == 0.0 and not any(natural["changes"])
    assert {r["preset"]: r for r in report["presets"]}["natural"]["identity_max"] == 0.0


def test_identity_tells_another_face(astronaut, mediapipe):
    from exprengine.media import bundled_face
    from exprengine.faces.crop import FaceCrop
    from exprengine.media import read_image
    ids = pe.IdentityModel()
    rgb = read_image(astronaut)
    img = pe.measure_crop(FaceCrop.from_box(mediapipe.detect(rgb)[0], rgb.shape)).extract(rgb, pe.MEASURE_SIZE)
    other = np.asarray(Image.fromarray(bundled_face()).resize((160, 160)))
    other = np.pad(other, ((48, 48), (48, 48), (0, 0)), mode="edge")
    box = pe._face_box()
    a = ids.descriptor(img, box)
    assert ids.distance(a, ids.descriptor(img.copy(), box)) == 0.0
    assert ids.distance(a, ids.descriptor(other, box)) > pe.IDENTITY_TARGET


def test_closed_eyes_move_eyeblink(report):
    rows = {(r["au"], r["intensity"]): r for r in report["aus"]}
    for x in (1.0, 2.0):
        assert rows["AU45", x]["mean_change"] >= pe.MOVE_THRESHOLD and rows["AU45", x]["right_way"] == 1.0
    assert {t["name"]: t for t in report["targets"]}["AU45@2"]["met"] is True
    assert report["targets_met"] is False                     # the random engine moves nothing else on purpose
    sheets = sorted(report["_sheets"].iterdir())
    assert [p.name for p in sheets] == ["astronaut-face0.png"]
    with Image.open(sheets[0]) as im:
        assert im.width >= 4 * pe.MEASURE_SIZE and im.height > 12 * pe.MEASURE_SIZE


def test_batched_edits_equal_row_by_row(random_engine, mediapipe):
    """Each stacked copy is what editing the photo itself with that row gives, also for a face
    whose measurement square runs over the frame's edge."""
    from skimage import data

    from exprengine.faces.editor import FaceEditor
    rgb = np.ascontiguousarray(data.astronaut()[70:, 165:])          # the face near the top-left corner
    editor = FaceEditor(random_engine, detector=mediapipe)
    crop = editor.crops_for(rgb, editor.find(rgb))[0]
    measure = pe.measure_crop(crop)
    assert measure.region[0] < 0 or measure.region[1] < 0
    _, vectors = pe.edit_rows((2.0,))
    vectors = vectors[[0, 8, 16]]
    window, (top, left), edited, leaked = pe.edit_face_rows(editor, rgb, crop, measure, vectors)
    assert leaked == 0 and len(edited) == 3
    for v, win in zip(vectors, edited):
        whole = editor.edit_crops(rgb, [crop], v)
        assert np.array_equal(win, pe._padded(whole, top, left, *win.shape[:2]))
        local = pe.FaceCrop(measure.cx - left, measure.cy - top, measure.side, measure.angle)
        assert np.array_equal(local.extract(win, 64), measure.extract(whole, 64))
    assert not np.array_equal(edited[0], edited[1])


# --- the photo set ------------------------------------------------------------------------------------
def _jpeg(rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def face_jpeg():
    from skimage import data
    return _jpeg(data.astronaut())


def _tar(path, members):
    with tarfile.open(path, "w:gz") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:                            # a symbolic link
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))


def test_archives_are_read_safely(tmp_path, face_jpeg, monkeypatch, mediapipe):
    monkeypatch.setattr(ps, "MAX_MEMBER_BYTES", len(face_jpeg) + 10)
    archive = tmp_path / "pkg.tgz"
    _tar(archive, [("../demo/escape.jpg", face_jpeg), ("/demo/abs.jpg", face_jpeg), ("pkg/demo/link.jpg", None),
                   ("pkg/demo/face.jpg", face_jpeg), ("pkg/demo/big.jpg", face_jpeg + b"\0" * 100),
                   ("pkg/demo/screenshot-1.jpg", face_jpeg), ("pkg/other/face.jpg", face_jpeg),
                   ("pkg/demo/notes.txt", b"hi")])
    source = ps.Source("x", "npm", "pkg", "1.0", archive.name, "", ("pkg/demo/",), ("screenshot",))
    got = dict(ps.archive_members(archive, lambda n: ps._wanted(source, n)))
    assert set(got) == {"pkg/demo/face.jpg", "pkg/demo/big.jpg"}
    assert got["pkg/demo/face.jpg"] == face_jpeg and "over the member limit" in got["pkg/demo/big.jpg"]
    out = tmp_path / "set"
    out.mkdir()
    result = ps._gather_archive(source, archive, ps._Writer(out, mediapipe))
    assert [w.file for w in result.written] == ["x-face.jpg"] and result.written[0].faces == 1
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["pkg.tgz", "x-face.jpg"]
    assert (out / "x-face.jpg").read_bytes() == face_jpeg

    bomb = tmp_path / "pkg.whl"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("pkg/demo/zeros.jpg", b"\0" * (len(face_jpeg)))
        z.writestr("pkg/demo/face.jpg", face_jpeg)
        z.writestr("pkg/demo/../../up.jpg", face_jpeg)
    got = dict(ps.archive_members(bomb, lambda n: ps._wanted(source, n)))
    assert got["pkg/demo/face.jpg"] == face_jpeg and "refused" in got["pkg/demo/zeros.jpg"] and len(got) == 2
    monkeypatch.setattr(ps, "MAX_ARCHIVE_BYTES", 10)
    with pytest.raises(UserError, match="over the"):
        list(ps.archive_members(bomb, lambda n: True))


def test_stills_animated_huge_and_duplicates_are_skipped(tmp_path, face_jpeg, monkeypatch, mediapipe):
    from skimage import data
    frames = [Image.fromarray(data.astronaut()), Image.fromarray(data.astronaut()[::-1].copy())]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    assert ps._decode_still(buf.getvalue())[2] == "animated"
    assert ps._decode_still(b"not an image")[2].startswith("unreadable")
    monkeypatch.setattr(ps, "MAX_PHOTO_PIXELS", 1000)
    assert ps._decode_still(face_jpeg)[2].startswith("huge")
    monkeypatch.undo()
    writer = ps._Writer(tmp_path, mediapipe)
    result = ps.SourceResult(ps.SOURCES[0])
    rgb = ps._decode_still(face_jpeg)[0]
    writer.keep(result, "a.jpg", rgb, face_jpeg, "p/a.jpg", "0")
    again = _jpeg(rgb)                                 # re-encoded: not the same bytes, nearly the same pixels
    writer.keep(result, "b.jpg", ps._decode_still(again)[0], again, "p/b.jpg", "0")
    writer.keep(result, "c.png", np.zeros((64, 64, 3), np.uint8), b"", "p/c.png", "0")
    assert [w.file for w in result.written] == ["a.jpg"]
    assert "near duplicate" in result.skipped[0] and "no face" in result.skipped[1]


def test_offline_set_is_the_astronaut(tmp_path, capsys, monkeypatch):
    out = tmp_path / "photos"
    (out).mkdir()
    (out / "old-photo.png").write_bytes(b"x")               # a photo of an earlier run that this one does not write
    assert ps.main([str(out), "--offline"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"wrote 1 photo with 1 face to {out}") and "unavailable" in captured.out
    assert "--offline" in captured.err and ": 1 photo kept" in captured.err
    assert [p.name for p in ps.list_photos(out)] == ["skimage-astronaut.png"]
    lines = (out / ps.SOURCES_FILE).read_text().splitlines()
    header = lines.index("file\tpackage\tversion\tpath\tsha256\tsource_sha256\tfaces")
    (row,) = [line.split("\t") for line in lines[header + 1:]]
    assert sum(line.endswith(" - 1 photo") for line in lines[:header]) == 1       # scikit-image's archive line
    assert row[:4] == ["skimage-astronaut.png", "scikit-image", row[2], "skimage/data/astronaut.png"]
    assert row[4] == hashlib.sha256((out / row[0]).read_bytes()).hexdigest() and row[6] == "1"
    monkeypatch.setenv("EXPRENGINE_PHOTOS", str(out))
    assert ps.default_photo_dir() == out
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert ps.main([str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("photo_sets: error: cannot write")


def test_fetched_photo_set_is_listed_and_has_faces(real_photos, mediapipe):
    from exprengine.media import read_image
    directory = real_photos[0].parent
    lines = (directory / ps.SOURCES_FILE).read_text().splitlines()
    rows = {r[0]: r for r in [line.split("\t") for line in lines if not line.startswith("#")][1:]}
    assert sorted(rows) == sorted(p.name for p in real_photos)
    prefixes = {name.split("-")[0] for name in rows}
    assert prefixes <= {s.prefix.split("-")[0] for s in ps.SOURCES}
    for path in real_photos:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == rows[path.name][4]
        assert len(mediapipe.detect(read_image(path))) == int(rows[path.name][6]) >= 1


# --- the command ------------------------------------------------------------------------------------
def test_eval_photos_command(tmp_path, astronaut, capsys):
    from exprengine.cli import main
    from exprengine.engines.build import build_engine
    engine = tmp_path / "engine"
    build_engine(small_generator(), engine, "torch", weights_source="random", verify=False)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "astronaut.png").write_bytes(astronaut.read_bytes())
    code = main(["eval", str(engine), "--photos", str(photos), "--json", str(tmp_path / "r.json"),
                 "--photo-sheets", str(tmp_path / "sheets")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "AU45" in out and "targets:" in out and "psnr" not in out          # no synthetic evaluation
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["engine"] == str(engine) and report["faces"] == 1 and report["outside_change_pixels"] == 0
    assert [p.name for p in (tmp_path / "sheets").iterdir()] == ["astronaut-face0.png"]
    for args, words in ([["--photos", str(tmp_path / "none")], "does not exist"],
                        [["--photos", str(photos), "--sheet", str(tmp_path / "s.png")], "--photos skips"],
                        [["--photo-sheets", str(tmp_path / "x")], "needs --photos"],
                        [["--photos", str(photos), "--photo-sheets", str(tmp_path / "sheets")], "not empty"]):
        assert main(["eval", str(engine), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
