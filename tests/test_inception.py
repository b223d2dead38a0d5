"""The FID Inception-v3 network: shapes, strict safe loading, and real-data FID plumbing."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from exprengine.errors import UserError
from exprengine.evaluation.inception import FIDInception, inception_outputs, load_fid_inception


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = FIDInception().eval()
    path = tmp_path_factory.mktemp("inception") / "pt_inception.pth"
    state = model.state_dict()
    state["AuxLogits.fc.weight"] = torch.zeros(1008, 768)           # the port's unused aux head: ignored
    torch.save(state, path)
    return model, path


def test_architecture_outputs_and_parameter_count(weights):
    model, _ = weights
    assert 23_000_000 < sum(p.numel() for p in model.parameters()) < 26_000_000
    feats, probs = inception_outputs(model, np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8))
    assert feats.shape == (2, 2048) and probs.shape == (2, 1008)
    assert np.allclose(probs.sum(1), 1) and (feats >= 0).all()          # ReLU features, softmax rows


def test_weights_load_strictly_and_safely(weights, tmp_path):
    model, path = weights
    loaded = load_fid_inception(path)
    x = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    assert np.array_equal(inception_outputs(loaded, x)[0], inception_outputs(model, x)[0])
    state = torch.load(path, weights_only=True)
    del state["Mixed_6e.branch_pool.conv.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(UserError, match="1 missing"):
        load_fid_inception(tmp_path / "partial.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))
    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(UserError, match="not a plain Inception state dict"):
        load_fid_inception(tmp_path / "evil.pth")
    with pytest.raises(UserError, match="cannot be downloaded"):
        load_fid_inception(tmp_path / "missing.pth")


def test_real_evaluation_end_to_end(weights, engine_factory, tmp_path):
    from test_labels import ganimation_layout

    from exprengine.engine import Engine
    from exprengine.evaluation.real_eval import evaluate_real
    _, path = weights
    root = ganimation_layout(tmp_path / "g", [f"p{i}" for i in range(6)], [f"p{i}" for i in range(6)])
    (root / "test_ids.csv").write_text("".join(f"p{i}.jpg\n" for i in range(4)))
    report = evaluate_real(Engine.load(engine_factory("convnext2", "onnxruntime")), root, str(path))
    assert report["n"] == 4 and np.isfinite(report["fid"]) and report["fid"] >= -1e-9
    # IS = exp(E KL(p(y|x) || p(y))) >= 1 exactly in real arithmetic; in floating point it may round
    # just below 1 when the edits are (near) identical.
    assert report["inception_score_edits"][0] >= 1.0 - 1e-9
