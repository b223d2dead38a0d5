"""Synthetic evaluation: its numbers on engines with known behaviour, and the shipped AU estimator."""
from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from exprengine.data.synthetic import render
from exprengine.evaluation.au_estimator import AUEstimator, evaluate_estimator, load_estimator
from exprengine.evaluation.synthetic_eval import evaluate_synthetic, synthetic_pairs

SHIPPED = resources.files("exprengine") / "assets" / "au_estimator.safetensors"


class Oracle:
    """Edits perfectly (returns the renderer's ground truth) or not at all."""

    image_size = 128

    def __init__(self, n, seed, perfect):
        self.ids, _, self.tgt = synthetic_pairs(n, seed)
        self.perfect = perfect

    def edit(self, inputs, tgt):
        assert np.array_equal(tgt, self.tgt)
        return render(self.ids, tgt) if self.perfect else inputs.copy()


def test_a_perfect_edit_scores_perfectly_and_no_edit_is_the_baseline():
    estimator = AUEstimator()                         # any estimator: the comparison is what is tested
    perfect, _ = evaluate_synthetic(Oracle(6, 3, True), 6, 3, estimator=estimator)
    assert perfect["psnr"] == float("inf") and perfect["ssim"] == pytest.approx(1.0)
    assert perfect["au_mae"] == pytest.approx(perfect["au_mae_ground_truth"])
    assert perfect["background_change"] == 0.0 and perfect["preserved_psnr"] == float("inf")
    assert perfect["on_target"] == pytest.approx(1.0, abs=1e-9)   # two float sums of the same terms
    none, sheet = evaluate_synthetic(Oracle(6, 3, False), 6, 3, estimator=estimator, sheet_rows=2)
    assert none["psnr"] == pytest.approx(none["no_edit"]["psnr"]) and none["au_mae"] == pytest.approx(none["no_edit"]["au_mae"])
    assert none["psnr"] < 40 and none["background_change"] == 0.0
    assert sheet.dtype == np.uint8 and sheet.shape[1] > 6 * 128


class WrongPlace(Oracle):
    """Changes only pixels the true edit leaves alone (brightens the unchanged corner)."""

    def edit(self, inputs, tgt):
        out = inputs.copy()
        out[:, :8, :8] = np.minimum(out[:, :8, :8].astype(int) + 40, 255).astype(np.uint8)
        return out


def test_on_target_tells_edits_in_the_wrong_place():
    estimator = AUEstimator()
    wrong, _ = evaluate_synthetic(WrongPlace(6, 3, False), 6, 3, estimator=estimator)
    assert wrong["on_target"] == 0.0 and wrong["background_change"] > 0


def test_evaluation_pairs_use_held_out_identities_only():
    ids, src, tgt = synthetic_pairs(20, seed=0)
    from exprengine.data.synthetic import sample_identities
    train = sample_identities(0, 900)
    assert all(i not in train for i in ids)
    assert not np.array_equal(src, tgt)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no AU estimator shipped in this checkout")
def test_shipped_au_estimator_reproduces_its_recorded_error():
    model = load_estimator()
    recorded = model.report
    fresh = evaluate_estimator(model)                     # re-renders its held-out identities
    assert fresh["mae"] == pytest.approx(recorded["mae"], abs=0.02)
    assert recorded["mae"] < 0.35, "the estimator should measure AUs to within about a third of an intensity step"


def test_eval_command_on_an_engine(tmp_path, capsys, engine_factory):
    from exprengine.cli import main
    if not SHIPPED.is_file():
        pytest.skip("no AU estimator shipped in this checkout")
    code = main(["eval", str(engine_factory("convnext2", "onnxruntime")), "--n", "4",
                 "--json", str(tmp_path / "r.json"), "--sheet", str(tmp_path / "s.png")])
    assert code == 0, capsys.readouterr().err
    import json
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"psnr", "ssim", "au_mae", "preserved_psnr", "background_change", "on_target", "no_edit"} <= set(report)
    assert (tmp_path / "s.png").is_file()
