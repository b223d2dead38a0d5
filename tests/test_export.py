import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from exprengine.aus import AU_NAMES
from exprengine.export.graph import export_program
from exprengine.export.onnx_graph import OPSET, export_onnx, read_metadata

from helpers import perturbed_generator


@pytest.fixture(scope="module")
def cx2_onnx(tmp_path_factory):
    g = perturbed_generator("convnext2-ln")
    path = export_onnx(g, tmp_path_factory.mktemp("onnx") / "cx2ln.onnx", outputs="blended")
    return g, path


def test_onnx_is_checked_dynamic_and_annotated(cx2_onnx):
    g, path = cx2_onnx
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == OPSET >= 17
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [i.name for i in model.graph.input] == ["image", "aus"]
    assert [o.name for o in model.graph.output] == ["output", "attention"]
    ops = {n.op_type for n in model.graph.node}
    assert "LayerNormalization" in ops          # one node, not a decomposition (opset >= 17)
    meta = read_metadata(path)
    assert meta["exprengine.model"] == "convnext2-ln"
    assert meta["exprengine.au_order"].split(",") == list(AU_NAMES)
    assert meta["exprengine.au_scale"] == "5"
    assert meta["exprengine.image_size"] == "128"
    assert "127.5" in meta["exprengine.input_normalisation"]
    assert meta["exprengine.outputs"] == "blended"
    from exprengine.models.weights import weights_sha256
    assert meta["exprengine.weights_sha256"] == weights_sha256(g)


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_onnx_batch_is_dynamic(cx2_onnx, batch, rng):
    """The known trap: an example of batch 1 would fix the batch; ours runs any batch."""
    g, path = cx2_onnx
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = rng.uniform(-1, 1, (batch, 3, 128, 128)).astype(np.float32)
    aus = rng.uniform(0, 0.4, (batch, 17)).astype(np.float32)
    out, att = sess.run(None, {"image": image, "aus": aus})
    with torch.no_grad():
        ref = g.edit(torch.from_numpy(image), torch.from_numpy(aus)).numpy()
    assert out.shape == (batch, 3, 128, 128) and att.shape == (batch, 1, 128, 128)
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-4


def test_heads_graph_ends_at_c_and_a(tmp_path, rng):
    g = perturbed_generator("ganimation")
    path = export_onnx(g, tmp_path / "heads.onnx", outputs="heads")
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == ["color", "attention"]
    assert read_metadata(path)["exprengine.outputs"] == "heads"
    image = rng.uniform(-1, 1, (3, 3, 128, 128)).astype(np.float32)
    aus = rng.uniform(0, 0.4, (3, 17)).astype(np.float32)
    color, att = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"image": image, "aus": aus})
    with torch.no_grad():
        ref_c, ref_a = g(torch.from_numpy(image), torch.from_numpy(aus))
    assert np.abs(color - ref_c.numpy()).max() < 1e-4 and np.abs(att - ref_a.numpy()).max() < 1e-4


def test_exported_program_batch_is_symbolic():
    program = export_program(perturbed_generator("convnext2"), max_batch=32)
    image_meta = [n for n in program.graph.nodes if n.op == "placeholder" and n.name == "image"][0].meta["val"]
    assert not isinstance(image_meta.shape[0], int)


def test_export_installs_inside_the_package_namespace(tmp_path):
    """export/ is importable as exprengine.export, and nothing generic lands top-level."""
    import subprocess
    import sys
    probe = ("import importlib.util, exprengine.export; "
             "print(exprengine.export.__name__, importlib.util.find_spec('export') is None)")
    r = subprocess.run([sys.executable, "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["exprengine.export", "True"]
