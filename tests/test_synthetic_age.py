"""The synthetic world with age: default renders unchanged, continuity in age, the cues of growth
and aging measured on the pixels, the age classes, bad ages refused, age data sets and folders."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from exprengine.ages import (AGE_CLASSES, CLASS_CENTRES, NUM_AGE_CLASSES, age_of_position, check_age, class_label,
                             class_of_age, class_position)
from exprengine.aus import AU_INDEX, NUM_AUS
from exprengine.data.aging import AGE_CURVES, NEUTRAL, REFERENCE_AGE, age_curve, age_params
from exprengine.data.synthetic import (_face_coordinates, _params, backgrounds, render, sample_aus,
                                       sample_identities)
from exprengine.errors import UserError

ZERO = np.zeros(NUM_AUS, np.float32)

#: sha256 of render(sample_identities(seed, 6), AUs) taken with the renderer before ages existed
#: (commit 715ced4; the hashes are the same with NumPy's AVX-512 paths switched off), with
#: sample_aus(default_rng(seed), 6) and with zeros.
BEFORE_AGES = {
    0: ("5ffd3ac13b8f4a441e4a63770edaccc4f52890a22eb630e5017b7682c0fc5b1f",
        "3c3ad4d8d5e68253dd27ac7f5b8fa546e8521709dd65d59b9d10197b1645748b"),
    7: ("cc6737f06552bbd176e10112aa01debb5add21f0c3ee0c7940dc69b5c81e0055",
        "d1622da9525b7df0a67c841939f0ebe269dd9955d6c2fd6c659535157eee0276"),
    123: ("03b4e8a030943ecdd9e22008c22320c930a43e0191252126c79f3be3cfdadcb0",
          "8aa716bbf8d110b31e09101b93c67622b0bda569ed76bfecde696dfd113bd4ea"),
}


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("seed", sorted(BEFORE_AGES))
def test_renders_without_an_age_are_the_renders_from_before_ages(seed):
    ids = sample_identities(seed, 6)
    expressive, neutral = BEFORE_AGES[seed]
    assert _sha(render(ids, sample_aus(np.random.default_rng(seed), 6))) == expressive
    assert _sha(render(ids, ZERO)) == neutral


def test_the_reference_age_is_the_default_render_bit_for_bit():
    ids = sample_identities(123, 6)
    aus = sample_aus(np.random.default_rng(123), 6)
    default = render(ids, aus)
    assert np.array_equal(render(ids, aus, age=REFERENCE_AGE), default)
    assert np.array_equal(render(ids, aus, age=[REFERENCE_AGE] * 6), default)
    assert np.array_equal(render(ids, aus, age=21.0), default)         # growth done, aging not begun
    assert not np.array_equal(render(ids, aus, age=40.0), default)
    params = age_params(np.array([REFERENCE_AGE]))
    assert set(params) == set(NEUTRAL)
    assert all(float(np.ravel(params[k])[0]) == NEUTRAL[k] for k in NEUTRAL)


def test_one_identity_at_several_ages_is_each_age_rendered_alone():
    identity = sample_identities(2, 1)[0]
    many = render(identity, ZERO, age=[3.0, 44.0])
    assert many.shape == (2, 128, 128, 3)
    assert np.array_equal(many[1], render(identity, ZERO, age=44.0)[0])
    assert np.array_equal(many[0], render([identity], ZERO[None], age=np.array([3.0]))[0])


def test_age_changes_the_face_continuously_and_never_the_background():
    # a jump (a line popping in, a feature switching) changes many pixels a lot between two ages
    # 0.01 years apart; smooth change moves every pixel by a few levels at most. The one exception
    # is the renderer's two hard (not anti-aliased) edges, the jaw outline's change of form at
    # v = 0.3 and the neck's end: as growth moves them, a pixel on them flips at once.
    grid = np.arange(0.0, 70.0, 1.0) + 0.37
    for identity in sample_identities(4, 2):
        ages = np.concatenate([grid, grid + 0.01])
        faces = render(identity, ZERO, age=ages).astype(np.int32)
        step = np.abs(faces[len(grid):] - faces[:len(grid)]).max(-1)
        mean = step.mean(axis=(1, 2))
        jumps = (step > 12).sum(axis=(1, 2))
        assert mean.max() < 0.5, f"age {grid[mean.argmax()]:.2f}: {mean.max():.3f} levels on average in 0.01 years"
        assert jumps.max() <= 2, f"age {grid[jumps.argmax()]:.2f}: {jumps.max()} pixels jumped in 0.01 years"
        bg = backgrounds([identity])[0]
        untouched = (render(identity, ZERO, age=[0.5, 30.0, 69.0]) == bg).all(-1)
        corners = np.zeros((128, 128), bool)
        corners[:6, :6] = corners[:6, -6:] = True
        assert untouched[:, corners].all()                              # the frame's corners stay background
    for name in AGE_CURVES:                                             # the curves are C0 and stay in range
        a = np.linspace(0, 70, 7001)
        c = age_curve(name, a)
        assert np.abs(np.diff(c)).max() < 0.01 and c.min() >= 0 and c.max() <= 1, name


def _centroid(weights: np.ndarray) -> tuple[float, float]:
    w = weights.astype(np.float64)
    ys, xs = np.mgrid[0:w.shape[0], 0:w.shape[1]]
    return float((w * ys).sum() / w.sum()), float((w * xs).sum() / w.sum())


def _proportions(identity, ages) -> list[float]:
    """Head width at the eyes over the eye-to-mouth height, per age, measured on the pixels: the
    eyes are where a blink (AU45) changes pixels, the mouth where parting the lips (AU25) does."""
    n = len(ages)
    aus = np.zeros((3 * n, NUM_AUS), np.float32)
    aus[n:2 * n, AU_INDEX["AU45"]] = 5
    aus[2 * n:, AU_INDEX["AU25"]] = 5
    faces = render([identity] * 3 * n, aus, age=list(ages) * 3).astype(np.int32)
    bg = backgrounds([identity])[0].astype(np.int32)
    ratios = []
    for i in range(n):
        eye_y, _ = _centroid(np.abs(faces[n + i] - faces[i]).sum(-1))
        mouth_y, _ = _centroid(np.abs(faces[2 * n + i] - faces[i]).sum(-1))
        e = int(round(eye_y))
        head_width = (faces[i][e - 4:e + 5] != bg[e - 4:e + 5]).any(-1).sum(1).mean()
        ratios.append(head_width / (mouth_y - eye_y))
    return ratios


def test_the_head_grows_less_than_the_face_from_1_to_20_years():
    for identity in sample_identities(11, 3):
        ratios = _proportions(identity, [1, 4, 8, 12, 16, 20])
        assert all(a > b for a, b in zip(ratios, ratios[1:])), ratios
        assert ratios[0] > 1.2 * ratios[-1], ratios


def _line_energy(identity, ages) -> list[float]:
    """Mean |Laplacian| of the luminance where nasolabial folds, marionette lines and crow's feet
    form (face-space boxes, in the identity's pose)."""
    faces = render(identity, ZERO, age=ages).astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    u, v = _face_coordinates(_params([identity]))
    u, v = np.abs(u[0]), v[0]
    corner = identity.eye_spacing + identity.eye_size
    region = (((u > 0.1) & (u < 0.5) & (v > 0.05) & (v < 0.95))
              | ((u > corner) & (u < corner + 0.2) & (np.abs(v + 0.24) < 0.12)))[1:-1, 1:-1]
    lap = np.abs(4 * faces[:, 1:-1, 1:-1] - faces[:, :-2, 1:-1] - faces[:, 2:, 1:-1]
                 - faces[:, 1:-1, :-2] - faces[:, 1:-1, 2:])
    return [float(x[region].mean()) for x in lap]


def test_lines_and_folds_deepen_past_30():
    for identity in sample_identities(11, 3):
        energy = _line_energy(identity, [30, 40, 50, 60, 70])
        assert all(a < b for a, b in zip(energy, energy[1:])), energy
        assert energy[-1] > 1.5 * energy[0], energy


def test_hair_greys_with_age():
    identity = next(d for d in sample_identities(0, 50) if max(d.hair_r, d.hair_g, d.hair_b) < 0.15)   # black hair
    faces = render(identity, ZERO, age=[25, 40, 55, 70]).astype(np.float32)
    u, v = _face_coordinates(_params([identity]))
    crown = ((np.abs(u) < 0.3) & (v > -1.45) & (v < -1.3))[0]           # hair above the forehead
    brightness = [float(f[crown].mean()) for f in faces]
    assert all(a < b for a, b in zip(brightness, brightness[1:])), brightness


def test_class_positions_between_class_centres():
    assert AGE_CLASSES == ((0, 2), (3, 6), (7, 9), (15, 19), (30, 39), (50, 69)) and NUM_AGE_CLASSES == 6
    assert [class_label(i) for i in range(6)] == ["0-2", "3-6", "7-9", "15-19", "30-39", "50-69"]
    for i, centre in enumerate(CLASS_CENTRES):
        assert class_position(centre) == i and age_of_position(i) == centre
    for age in np.linspace(1.0, 59.5, 200):
        assert math.isclose(age_of_position(class_position(float(age))), age, abs_tol=1e-9)
    for p in np.linspace(0, 5, 101):
        assert math.isclose(class_position(age_of_position(float(p))), p, abs_tol=1e-9)
    assert class_position(0.0) == 0.0 and class_position(70.0) == 5.0 and class_position(25.75) == 3.5
    positions = [class_position(a) for a in np.linspace(0, 70, 141)]
    assert all(a <= b for a, b in zip(positions, positions[1:]))
    assert class_of_age(2.5) == 0 and class_of_age(3.0) == 1 and class_of_age(12.0) is None and class_of_age(69.9) == 5


@pytest.mark.parametrize("bad", [-0.5, 70.01, float("nan"), float("inf"), True, "30", None])
def test_bad_ages_are_refused(bad):
    with pytest.raises(UserError, match=r"`age` must be between 0 and 70 years, got"):
        check_age(bad)
    if bad is not None:
        with pytest.raises(UserError, match="`age`"):
            render(sample_identities(0, 1), ZERO, age=bad)


def test_bad_age_lists_and_positions_are_refused():
    ids = sample_identities(0, 3)
    with pytest.raises(UserError, match=r"`age` must be one age or one per face \(3\)"):
        render(ids, ZERO, age=[10.0, 20.0])
    with pytest.raises(UserError, match="`age` must be between"):
        render(ids, ZERO, age=[10.0, 20.0, 80.0])
    for bad in (-0.1, 5.1, float("nan")):
        with pytest.raises(UserError, match="`p` must be a class position between 0 and 5"):
            age_of_position(bad)
    with pytest.raises(UserError, match="`index`"):
        class_label(6)


def test_base_ages_fall_in_the_classes_evenly():
    ages = np.array([d.base_age for d in sample_identities(3, 600)])
    classes = [class_of_age(a) for a in ages]
    assert None not in classes
    counts = np.bincount(classes, minlength=6)
    assert counts.min() > 70, counts                                   # 100 expected per class
    assert ages.min() < 1 and ages.max() > 65 and ages.max() < 70


def test_age_pairs_have_their_ground_truth():
    from exprengine.data.age_faces import SyntheticAgeFaces
    ds = SyntheticAgeFaces(12, seed=5, identities=(20, 26), size=64)
    for i in (0, 7):
        item = ds[i]
        assert tuple(item["source"].shape) == (3, 64, 64) and tuple(item["target"].shape) == (3, 64, 64)
        assert item["identity"] == 20 + i % 6
        assert item["source_class"] == class_of_age(item["source_age"]) != item["target_class"]
        assert item["target_age"] == CLASS_CENTRES[item["target_class"]]
        truth = ds.render_at(i, item["target_age"])
        assert np.array_equal(np.rint((item["target"].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8), truth)
    assert len({ds.target_class(i) for i in range(12)}) > 2
    with pytest.raises(IndexError):
        ds[12]
    with pytest.raises(UserError, match="`size`"):
        SyntheticAgeFaces(4, size=256)


def test_class_folders_round_trip(tmp_path):
    from PIL import Image

    from exprengine.data.age_faces import AgeFolder, SyntheticAgeFaces, write_age_folders
    out = tmp_path / "ages"
    info = write_age_folders(out, 40, seed=3, test_fraction=0.25)
    assert info["test_identities"] == [30, 40]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(
        f"{phase}{label}" for phase in ("train", "test") for label in ("0-2", "3-6", "7-9", "15-19", "30-39", "50-69"))
    rows = [r.split(",") for r in (out / "ages.csv").read_text().splitlines()[1:]]
    assert len(rows) == 40
    ds = SyntheticAgeFaces(40, 3, (0, 40))
    train = AgeFolder(out, "train", size=128, parsings=False)
    assert len(train) == 30 and sum(train.class_counts) == 30
    by_name = {p.name: (p, c) for p, c in zip(train.paths, train.classes)}
    for name, identity, age, label, phase in rows:
        j = int(identity)
        assert phase == ("train" if j < 30 else "test") and float(age) == pytest.approx(ds.source_age(j), abs=1e-6)
        if phase == "train":
            path, c = by_name[name]
            assert class_label(c) == label == path.parent.name[len("train"):]
            image = np.asarray(Image.open(path))
            assert np.array_equal(image, render(ds.identity(j), ds.aus(j), age=ds.source_age(j))[0])
    # the reference's masking: background grey, the face untouched
    masked = AgeFolder(out, "train", size=128)
    path = masked.paths[0]
    j = int(path.stem)
    face = np.asarray(Image.open(path))
    bg = (face == backgrounds([ds.identity(j)])[0]).all(-1)
    image = masked.image(0)
    assert (image[bg] == 128).all() and np.array_equal(image[~bg], face[~bg])
    x, c = masked[0]
    assert tuple(x.shape) == (3, 128, 128) and c == masked.classes[0]
    assert AgeFolder(out, "train", size=64).image(3).shape == (64, 64, 3)
    # images without a parsing do not count (the reference's rule) unless parsings are off
    (path.parent / "parsings" / path.name).unlink()
    assert len(AgeFolder(out, "train", size=128)) == 29 and len(AgeFolder(out, "train", parsings=False)) == 30


def test_class_folders_refusals(tmp_path):
    from exprengine.data.age_faces import AgeFolder, write_age_folders
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not an age-class folder"):
        write_age_folders(tmp_path / "mine", 4)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"
    with pytest.raises(UserError, match="`identities`"):
        write_age_folders(tmp_path / "x", 1)
    with pytest.raises(UserError, match="no train0-2 folder"):
        AgeFolder(tmp_path / "mine")
    with pytest.raises(UserError, match="`phase`"):
        AgeFolder(tmp_path / "mine", "val")
    for label in ("0-2", "3-6", "7-9", "15-19", "30-39", "50-69"):
        (tmp_path / "mine" / f"train{label}").mkdir()
    with pytest.raises(UserError, match="holds no image with a parsing"):
        AgeFolder(tmp_path / "mine")


def test_the_contact_sheet_shows_four_identities_at_six_ages():
    from exprengine.data.age_faces import SHEET_AGES, age_sheet
    sheet = age_sheet()
    assert SHEET_AGES == (1.0, 5.0, 8.0, 17.0, 35.0, 60.0)
    assert sheet.dtype == np.uint8 and sheet.shape[1] > 6 * 256 and sheet.shape[0] > 4 * 256
