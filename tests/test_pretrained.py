"""The shipped default model: present, small, documented, and its recorded evaluation reproduces."""
from __future__ import annotations

import pytest

from exprengine.aus import PRESETS
from exprengine.models.pretrained import default_model_card, default_weights_path, load_default_generator
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
