"""The synthetic face world: determinism, every AU moves its own region, data set on disk."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from exprengine.aus import AU_INDEX, AU_NAMES, NUM_AUS
from exprengine.data.synthetic import (AU_REGIONS, REGION_NAMES, SyntheticFaces, region_masks, render,
                                       resize_faces, sample_aus, sample_identities)

IDS = sample_identities(seed=7, count=8)


def test_render_is_deterministic_by_seed():
    aus = sample_aus(np.random.default_rng(0), 8)
    a = render(sample_identities(7, 8), aus)
    assert a.shape == (8, 128, 128, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render(sample_identities(7, 8), aus))
    assert not np.array_equal(a, render(sample_identities(8, 8), aus))
    assert sample_identities(7, 3, start=5) == sample_identities(7, 8)[5:]        # (seed, index) only


def test_identities_vary():
    faces = render(sample_identities(3, 12), np.zeros(NUM_AUS, np.float32)).astype(np.float32)
    for i in range(12):
        for j in range(i + 1, 12):
            assert np.abs(faces[i] - faces[j]).mean() > 5, (i, j)


def test_every_au_has_a_named_region():
    assert sorted(a for names in REGION_NAMES.values() for a in names) == sorted(AU_NAMES)
    assert set(AU_REGIONS) == set(AU_NAMES)


@pytest.mark.parametrize("au", AU_NAMES)
def test_each_au_moves_its_own_region_only(au):
    base = render(IDS, np.zeros(NUM_AUS, np.float32)).astype(np.int32)
    changes = []
    for intensity in (1.0, 4.0):
        v = np.zeros(NUM_AUS, np.float32)
        v[AU_INDEX[au]] = intensity
        diff = np.abs(render(IDS, v).astype(np.int32) - base).sum(-1)
        inside = region_masks(IDS, au)
        assert (diff * inside).sum() / diff.sum() > 0.98, f"{au} changes pixels outside its region"
        assert ((diff > 0).sum(axis=(1, 2)) >= 15).all(), f"{au} at {intensity} barely changes some faces"
        changes.append(diff.sum())
    assert changes[1] > changes[0] * 1.5, f"{au}: intensity 4 should change more than intensity 1"


def test_zero_aus_and_clipping():
    v = np.zeros(NUM_AUS, np.float32)
    assert np.array_equal(render(IDS[0], v), render(IDS[0], np.full(NUM_AUS, -1, np.float32)))
    assert np.array_equal(render(IDS[0], np.full(NUM_AUS, 5, np.float32)), render(IDS[0], np.full(NUM_AUS, 9, np.float32)))


def test_sampled_aus_avoid_conflicts_and_stay_in_range():
    from exprengine.aus import CONFLICTS
    aus = sample_aus(np.random.default_rng(1), 500)
    assert aus.min() >= 0 and aus.max() <= 3.0 and (aus > 0).any(axis=1).mean() > 0.5
    for c in CONFLICTS:
        assert not ((aus[:, AU_INDEX[c.a]] > 0) & (aus[:, AU_INDEX[c.b]] > 0)).any()


def test_dataset_items_and_ground_truth_targets():
    ds = SyntheticFaces(20, seed=3, identities=(10, 15))
    x, aus, identity = ds[7]
    assert tuple(x.shape) == (3, 128, 128) and -1 <= float(x.min()) and float(x.max()) <= 1
    assert aus.shape == (NUM_AUS,) and identity == 12
    image = ds.render_target(7, aus.numpy())                   # the same face and AUs: the same image
    assert np.array_equal(image, np.rint((x.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8))
    with pytest.raises(IndexError):
        ds[20]
    small = SyntheticFaces(4, seed=3, size=32)[0][0]
    assert tuple(small.shape) == (3, 32, 32)
    faces = render(IDS[:2], np.zeros(NUM_AUS, np.float32))
    assert np.array_equal(resize_faces(faces, 64)[0, 0, 0], np.rint(faces[0, :2, :2].reshape(4, 3).mean(0)).astype(np.uint8))


def test_synth_command_writes_a_complete_data_set(tmp_path):
    from exprengine.cli import cli
    out = tmp_path / "synth"
    result = CliRunner().invoke(cli, ["synth", "--n", "30", "--identities", "10", "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "imgs").glob("*.png"))) == 30
    rows = (out / "aus.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["id", "identity", "AU01_r"] and len(rows) == 31
    train = set((out / "train_ids.csv").read_text().split())
    test = set((out / "test_ids.csv").read_text().split())
    assert train and test and not train & test and len(train | test) == 30
    identity = {r.split(",")[0]: int(r.split(",")[1]) for r in rows[1:]}
    assert max(identity[i] for i in train) < min(identity[i] for i in test)      # held-out identities
    stats = json.loads((out / "synth.json").read_text())
    assert stats["n"] == 30 and stats["images_per_second"] > 0
    # the image on disk is the renderer's output for that row
    from PIL import Image
    ds = SyntheticFaces(30, 0, (0, 10))
    assert np.array_equal(np.asarray(Image.open(out / "imgs" / "000004.png")), render(ds.identity(4), ds.aus(4))[0])


@pytest.mark.parametrize("args,match", [
    (["--n", "0"], "--n"),
    (["--identities", "1"], "identities"),
    (["--test-fraction", "1.5"], "test-fraction"),
])
def test_synth_refuses_bad_arguments(tmp_path, args, match):
    from exprengine.cli import cli
    result = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "s"), *args])
    assert result.exit_code == 2 and match in result.output
    assert not (tmp_path / "s").exists()


def test_synth_refuses_to_replace_other_directories(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    from exprengine.data.datasets import write_synthetic
    from exprengine.errors import UserError
    with pytest.raises(UserError, match="not a synthetic data set"):
        write_synthetic(tmp_path / "mine", 4, identities=2, workers=1, progress=False)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"
