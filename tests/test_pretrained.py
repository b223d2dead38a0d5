"""The shipped default model: present, small, documented, and its recorded evaluation reproduces."""
from __future__ import annotations

import pytest

from exprengine.aus import PRESETS
from exprengine.errors import UserError
from exprengine.models.pretrained import (default_model_card, default_weights_path, has_default_age_model,
                                          load_default_generator)
from exprengine.training.package import EVAL_N, evaluate_default


def test_default_model_ships_with_its_card():
    path = default_weights_path()
    assert path.is_file(), f"{path} is part of the package"
    assert path.stat().st_size <= 25 * 2 ** 20
    card = default_model_card()
    assert card["training_command"].startswith("exprengine train ")
    assert card["training_config"]["seed"] == 0 and "synthetic" in card["trained_on"]
    assert card["architecture"] == load_default_generator().config.to_dict()
    assert "photographs" in card["limitations"]


def test_default_model_reproduces_its_recorded_evaluation():
    recorded = default_model_card()["evaluation"]
    fresh = evaluate_default(load_default_generator(), EVAL_N)
    for key in ("psnr", "preserved_psnr"):
        assert fresh[key] == pytest.approx(recorded[key], abs=0.05), key
    for key in ("ssim", "on_target"):
        assert fresh[key] == pytest.approx(recorded[key], abs=2e-3), key
    for key in ("au_mae", "background_change"):
        assert fresh[key] == pytest.approx(recorded[key], abs=0.01), key
    for name, r in fresh["presets"].items():
        was = recorded["presets"][name]
        assert r["in_region"] == pytest.approx(was["in_region"], abs=2e-3), name
        assert r["region_change"] == pytest.approx(was["region_change"], rel=0.02), name
        assert r["psnr"] == pytest.approx(was["psnr"], abs=0.05), name
        assert r["true_change"] == pytest.approx(was["true_change"], rel=1e-3), name   # the renderer itself


def test_default_model_edits_better_than_not_editing():
    """What the card claims, checked on the recorded numbers (the test above ties them to the file)."""
    e = default_model_card()["evaluation"]
    assert e["psnr"] > e["no_edit"]["psnr"] + 1.0          # closer to the true edit than the input is
    assert e["au_mae"] < e["no_edit"]["au_mae"]             # the estimator sees the target expression
    assert e["on_target"] > 0.5                             # most of the change lands where it should
    assert set(e["presets"]) == {n for n, p in PRESETS.items() if p.aus}
    for name, r in e["presets"].items():                   # every preset, averaged over held-out faces:
        assert r["in_region"] > 0.5, (name, r)             # most of its change is in its own AU regions
        assert r["region_change"] > 0.5 * r["true_change"], (name, r)   # at least half the true change
        assert r["psnr"] > r["psnr_no_edit"], (name, r)    # and closer to the true face than the input


def test_build_without_model_or_checkpoint_builds_the_default_model(tmp_path, capsys):
    import json

    from exprengine.cli import main
    assert main(["build", "--backend", "torch", "--out", str(tmp_path / "e")]) == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "e" / "engine.json").read_text())
    assert default_weights_path().name in json.dumps(manifest)
    assert "random" not in capsys.readouterr().err


# --- the default age model ------------------------------------------------------------------------
NO_AGE_MODEL = pytest.mark.skipif(not has_default_age_model(), reason="no default age model ships yet (issue 16 part "
                                  "8: none trained on the CPU is fit to ship)")


@NO_AGE_MODEL
def test_default_age_model_ships_with_its_card():
    from exprengine.models import is_lats
    from exprengine.models.pretrained import DEFAULT_AGE_WEIGHTS, load_default_age_model
    path = default_weights_path(DEFAULT_AGE_WEIGHTS)
    assert path.is_file(), f"{path} is part of the package"
    assert path.stat().st_size <= 25 * 2 ** 20
    card = default_model_card(DEFAULT_AGE_WEIGHTS)
    model = load_default_age_model()
    assert is_lats(model) and card["architecture"] == model.config.to_dict()
    assert card["training_command"].startswith("exprengine train --model lats-small")
    assert "trained generator" in card["weights"] or "running generator" in card["weights"]
    assert card["training_config"]["data"] in ("synthetic-age", "synthetic-age:0", "synthetic-age:0:1000")
    assert "synthetic age world (seed 0), identities 0-899 of 1000" in card["trained_on"]
    assert "photographs" in card["limitations"] and "authors' released generators" in card["limitations"]


@NO_AGE_MODEL
def test_default_age_model_reproduces_its_recorded_evaluation():
    from exprengine.models.pretrained import DEFAULT_AGE_WEIGHTS, load_default_age_model
    from exprengine.training.package import AGE_EVAL_N, AGE_TRAVERSALS, evaluate_default_age
    recorded = default_model_card(DEFAULT_AGE_WEIGHTS)["evaluation"]
    fresh = evaluate_default_age(load_default_age_model(), AGE_EVAL_N, AGE_TRAVERSALS)
    for name, r in fresh["per_class"].items():
        was = recorded["per_class"][name]
        assert r["psnr"] == pytest.approx(was["psnr"], abs=0.05), name
        assert r["no_edit_psnr"] == pytest.approx(was["no_edit_psnr"], abs=1e-3), name     # the renderer itself
        assert r["apparent_age"] == pytest.approx(was["apparent_age"], abs=0.2), name
    for key in ("spearman_mean", "spearman_min", "monotone_fraction"):
        assert fresh["traversal"][key] == pytest.approx(recorded["traversal"][key], abs=0.01), key


@NO_AGE_MODEL
def test_default_age_model_ages_better_than_not_editing():
    """What the age card claims, checked on the recorded numbers (the test above ties them to the file):
    closer to the true aged face than the input for every target class, and read as older frame
    after frame along a lifespan by the independent age estimator."""
    from exprengine.models.pretrained import DEFAULT_AGE_WEIGHTS
    e = default_model_card(DEFAULT_AGE_WEIGHTS)["evaluation"]
    assert len(e["per_class"]) == 6
    for name, r in e["per_class"].items():
        assert r["psnr"] > r["no_edit_psnr"] + 1.0, (name, r)
    t = e["traversal"]
    assert t["frames"] == 101 and t["spearman_mean"] > 0.9 and t["monotone_fraction"] > 0.8, t
    at = [t["apparent_age_at"][k] for k in ("1", "4.5", "8", "17", "34.5", "59.5")]
    assert all(b > a for a, b in zip(at, at[1:])), at          # older at every class centre along the way


def test_an_installed_age_model_is_packaged_with_its_card_and_runs_without_an_engine(tmp_path, capsys, monkeypatch):
    """The mechanism behind the default age model, on a 2-step run (its faces are not aged: this checks
    the plumbing, not the quality): `package --age` writes the weights with a card measured against
    the synthetic truth; installed as the default, `exprengine age` without --engine builds its ONNX
    Runtime engine once into the cache and ages a crop with it."""
    import numpy as np
    from PIL import Image

    import exprengine.models.pretrained as pretrained
    from exprengine.cli import main
    from exprengine.media import bundled_face
    from exprengine.models.pretrained import DEFAULT_AGE_WEIGHTS
    from exprengine.training.package import package_age
    from exprengine.training.lats_trainer import LATSTrainConfig, LATSTrainer, age_training_data
    run = tmp_path / "run"
    config = LATSTrainConfig(model="lats-small", objective="paired", steps=4, batch=2, image_size=32)
    trainer = LATSTrainer(config, age_training_data("synthetic-age", 32), run)
    trainer.train(until=2, progress=False)
    with pytest.raises(UserError, match="stopped at step 2 of 4"):          # only a finished run is packaged
        package_age(run, tmp_path / "early.safetensors", "")
    other = LATSTrainer(LATSTrainConfig(model="lats-small", objective="paired", steps=1, batch=2, image_size=32,
                                        data="synthetic-age:3", pool=4), age_training_data("synthetic-age:3", 32, 4),
                        tmp_path / "other")
    other.train(progress=False)
    with pytest.raises(UserError, match="identities 900-999"):             # its card's held-out faces were not
        package_age(tmp_path / "other", tmp_path / "other.safetensors", "")
    assert not (tmp_path / "other.safetensors").exists()
    trainer.train(progress=False)
    command = "exprengine train --model lats-small --image-size 32 --objective paired --batch 2 --steps 4"
    installed = tmp_path / "assets" / DEFAULT_AGE_WEIGHTS
    installed.parent.mkdir()
    card = package_age(run, installed, command, n=8, traversals=2)
    assert set(card["evaluation"]["per_class"]) == {"0-2", "3-6", "7-9", "15-19", "30-39", "50-69"}
    assert card["evaluation"]["traversal"]["frames"] == 101 and "trained generator at step 4" in card["weights"]
    assert "identities 0-899 of 1000" in card["trained_on"] and "rendered on the fly, 4 x 2 images" in card["trained_on"]
    monkeypatch.setattr(pretrained, "default_weights_path",
                        lambda name=pretrained.DEFAULT_WEIGHTS: tmp_path / "assets" / name)
    assert pretrained.has_default_age_model()
    assert pretrained.default_model_card(DEFAULT_AGE_WEIGHTS)["evaluation"] == card["evaluation"]
    face = tmp_path / "face.png"
    Image.fromarray(bundled_face("synthetic_face.png")).save(face)
    for i in range(2):
        out = tmp_path / f"old{i}.png"
        assert main(["age", str(face), "--to", "60", "--crop", "--out", str(out)]) == 0
        assert ("building the age engine" in capsys.readouterr().err) == (i == 0)   # built once, then reused
        assert np.asarray(Image.open(out)).shape == (32, 32, 3)
    blocker = tmp_path / "not-a-dir"                  # a cache that cannot be written: the model runs eagerly
    blocker.write_text("")
    monkeypatch.setenv("EXPRENGINE_CACHE", str(blocker))
    eager = tmp_path / "eager.png"
    assert main(["age", str(face), "--to", "60", "--crop", "--out", str(eager)]) == 0
    err = capsys.readouterr().err
    assert "warning: cannot cache the age engine" in err and "building" not in err
    assert np.abs(np.asarray(Image.open(eager), np.int16) - np.asarray(Image.open(out), np.int16)).max() <= 1


def test_the_bundled_synthetic_face_is_a_held_out_render():
    """`assets/synthetic_face.png` is identity 950 of the training world (held out: identities 900-999)
    at 8 years, as the renderer draws it today."""
    import numpy as np

    from exprengine.data.age_faces import SyntheticAgeFaces
    from exprengine.media import bundled_face
    want = SyntheticAgeFaces(1, 0, (950, 951), expressions=False).render_at(0, 8.0)
    assert np.array_equal(bundled_face("synthetic_face.png"), want)


def test_the_gpu_age_training_script_trains_and_packages_a_default_age_model(tmp_path, monkeypatch):
    """`bench/gpu_age_training.sh`, the one device call that would train the default age model on a
    lent GPU, dry-run on the CPU with tiny sizes: it probes, fits its steps to the budget, trains from
    stage 4's generator, and writes weights whose card and installed model agree."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import exprengine.models.pretrained as pretrained
    from exprengine.models import is_lats
    from exprengine.models.pretrained import DEFAULT_AGE_WEIGHTS
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "POOL": "32", "PROBE": "3", "BATCH": "2", "EVAL_N": "6", "TRAVERSALS": "2",
           "BUDGET_S": "120", "EVAL_S": "30", "OUT": str(out), "WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    bad = subprocess.run(["bash", "bench/gpu_age_training.sh"], cwd=root, env={**env, "PROBE": "0"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "PROBE must be a whole number above 0" in bad.stderr and not out.exists()
    done = subprocess.run(["bash", "bench/gpu_age_training.sh"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0 and "done in" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    budget = (out / "budget.txt").read_text()
    steps = int(budget.split("budget -> ")[1].split()[0])
    assert steps >= 3 and "pool of 32" in budget
    card = json.loads((out / "card.json").read_text())
    assert card["training_config"]["steps"] == steps and card["training_config"]["init"].endswith("age-stage4/generator.safetensors")
    assert f"--steps {steps}" in card["training_command"] and "running generator" in card["weights"]
    assert {p.name for p in out.iterdir()} == {"budget.txt", "card.json", "default_age_model.safetensors", "sheet.png",
                                               "losses.png", "samples.tar.gz", "train.log"}    # at most 8 come back
    (tmp_path / "assets").mkdir()
    (out / "default_age_model.safetensors").rename(tmp_path / "assets" / DEFAULT_AGE_WEIGHTS)
    monkeypatch.setattr(pretrained, "default_weights_path",
                        lambda name=pretrained.DEFAULT_WEIGHTS: tmp_path / "assets" / name)
    assert is_lats(pretrained.load_default_age_model())
    assert pretrained.default_model_card(DEFAULT_AGE_WEIGHTS)["evaluation"] == card["evaluation"]
