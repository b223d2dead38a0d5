"""Every backend x every model against eager PyTorch, and the manifest's refusals."""
import json
import shutil

import numpy as np
import pytest
import torch

from exprengine.engine import Engine
from exprengine.engines.backends import BACKENDS, backend_names, get_backend
from exprengine.engines.build import build_engine, relative_error
from exprengine.export.inputs import random_network_inputs
from exprengine.engines.manifest import MANIFEST_NAME, Manifest
from exprengine.errors import EngineError, UserError
from exprengine.pixels import blend
from exprengine.models import list_generators

from helpers import perturbed_generator


def cpu_backends(**filters):
    """The registry's backends (`backend_names(**filters)`, its order) as pytest parameters; each
    one that cannot build and run a CPU engine here skips, saying why (its runtime is missing,
    or it builds CUDA engines only)."""
    params = []
    for name in backend_names(**filters):
        backend = get_backend(name)
        reason = backend.unavailable_reason()
        if reason is None and "cpu" not in backend.devices:
            reason = f"the {name} backend builds CUDA engines only, and these tests build CPU engines"
        params.append(pytest.param(name, marks=pytest.mark.skipif(reason is not None, reason=reason or "")))
    return params


def eager_reference(model_name, image, aus):
    g = perturbed_generator(model_name)
    with torch.no_grad():
        x, a = torch.from_numpy(image), torch.from_numpy(aus)
        color, attention = g(x, a)
        return blend(x, color, attention).numpy(), attention.numpy()


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("model", list_generators())
def test_engine_matches_eager(engine_factory, model, backend):
    eng = Engine.load(engine_factory(model, backend), device="cpu")
    assert eng.manifest.verification["max_rel_error"] < 1e-4
    errors = []
    for batch in (1, 3, 7):                          # dynamic batch, fresh random inputs each time
        image, aus = random_network_inputs(batch, 128)
        out, att = eng.run_network(image, aus)
        ref_out, ref_att = eager_reference(model, image, aus)
        assert out.shape == (batch, 3, 128, 128) and att.shape == (batch, 1, 128, 128)
        errors.append(max(relative_error(out, ref_out), relative_error(att, ref_att)))
    print(f"{model}/{backend}: max relative error vs eager {max(errors):.2e}")
    assert max(errors) < 1e-4


def test_max_batch_splits_calls(engine_factory):
    eng = Engine.load(engine_factory("convnext2", "onnxruntime"), device="cpu")
    eng.manifest.max_batch = 4                   # pretend the engine takes at most 4
    image, aus = random_network_inputs(10, 128)
    out, _ = eng.run_network(image, aus)
    assert eng.backend_calls == 3 and out.shape[0] == 10


def test_uint8_api_matches_eager_engine(engine_factory, face):
    compiled = Engine.load(engine_factory("convnext2", "onnxruntime"), device="cpu")
    eager = Engine.from_generator(perturbed_generator("convnext2"))
    a = compiled.edit(face, "happiness@1.5")
    b = eager.edit(face, "happiness@1.5")
    assert a.dtype == np.uint8 and a.shape == (1, 128, 128, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


# --- manifest and integrity -----------------------------------------------------------------
@pytest.fixture
def engine_copy(engine_factory, tmp_path):
    dst = tmp_path / "engine"
    shutil.copytree(engine_factory("convnext2", "onnxruntime"), dst)
    return dst


def test_manifest_records_what_the_engine_depends_on(engine_copy):
    m = Manifest.read(engine_copy)
    assert m.model == "convnext2" and m.backend == "onnxruntime" and m.precision == "fp32"
    assert (m.min_batch, m.max_batch) == (1, 64)
    assert {"torch", "onnx", "onnxruntime", "exprengine", "python"} <= set(m.versions)
    assert set(m.artifacts) == {"model.onnx"} and len(m.weights_sha256) == 64


def _edit_manifest(path, **changes):
    data = json.loads((path / MANIFEST_NAME).read_text())
    data.update(changes)
    (path / MANIFEST_NAME).write_text(json.dumps(data))


@pytest.mark.parametrize("damage,match", [
    ("flip_byte", "corrupted"),
    ("truncate", "truncated"),
    ("delete_artifact", "missing its artifact"),
    ("delete_manifest", "not an engine"),
    ("garbage_manifest", "corrupt"),
    ("future_version", "format version"),
    ("other_aus", "AU vocabulary"),
    ("escape_path", "outside itself"),
])
def test_damaged_engines_are_refused(engine_copy, damage, match):
    onnx_file = engine_copy / "model.onnx"
    if damage == "flip_byte":
        data = bytearray(onnx_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        onnx_file.write_bytes(bytes(data))
    elif damage == "truncate":
        onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
    elif damage == "delete_artifact":
        onnx_file.unlink()
    elif damage == "delete_manifest":
        (engine_copy / MANIFEST_NAME).unlink()
    elif damage == "garbage_manifest":
        (engine_copy / MANIFEST_NAME).write_bytes(b"\x00\x01{not json")
    elif damage == "future_version":
        _edit_manifest(engine_copy, format_version=99)
    elif damage == "other_aus":
        _edit_manifest(engine_copy, au_order=["AU01"] * 17)
    elif damage == "escape_path":
        _edit_manifest(engine_copy, artifacts={"../model.onnx": {"bytes": 1, "sha256": "0"}})
    with pytest.raises(EngineError, match=match):
        Engine.load(engine_copy)


def test_missing_and_non_engine_paths(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        Engine.load(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(EngineError, match="not a directory"):
        Engine.load(tmp_path / "file")


def test_aoti_engine_for_another_torch_is_refused(engine_factory, tmp_path):
    dst = tmp_path / "aoti"
    shutil.copytree(engine_factory("convnext2", "aoti"), dst)
    _edit_manifest(dst, versions={**Manifest.read(dst).versions, "torch": "1.0.0"})
    with pytest.raises(EngineError, match="rebuild"):
        Engine.load(dst)


def test_aoti_engine_for_a_wider_cpu_is_refused(engine_factory, tmp_path, monkeypatch):
    from exprengine.engines.backends import aoti_backend
    dst = tmp_path / "aoti"
    shutil.copytree(engine_factory("convnext2", "aoti"), dst)
    _edit_manifest(dst, versions={**Manifest.read(dst).versions, "cpu_capability": "AVX512"})
    monkeypatch.setattr(aoti_backend, "cpu_capability", lambda: "AVX2")
    with pytest.raises(EngineError, match="AVX512 CPU"):
        Engine.load(dst)
    monkeypatch.setattr(aoti_backend, "cpu_capability", lambda: "AVX512")
    Engine.load(dst)                                  # same or wider ISA loads
    with pytest.raises(EngineError, match="compiled for cpu, not cuda"):
        Engine.load(dst, device="cuda")


@pytest.mark.parametrize("backend", cpu_backends(compiled=True))
def test_compiled_morph_is_one_call(engine_factory, face, backend):
    eng = Engine.load(engine_factory("convnext2", backend), device="cpu")
    frames = eng.morph(face, "natural", "fear@1.2", frames=9, schedule="cosine")
    assert eng.backend_calls == 1 and frames.shape == (9, 128, 128, 3)
    eager = Engine.from_generator(perturbed_generator("convnext2")).morph(face, "natural", "fear@1.2", frames=9,
                                                                         schedule="cosine")
    assert np.abs(frames.astype(int) - eager.astype(int)).max() <= 1


def test_tensorrt_says_why_in_one_sentence(tmp_path):
    reason = get_backend("tensorrt").unavailable_reason()
    assert reason and "\n" not in reason and "tensorrt" in reason.lower()
    with pytest.raises(EngineError) as e:
        build_engine(perturbed_generator("convnext2"), tmp_path / "trt", "tensorrt", weights_source="x",
                     precision="fp16")
    assert str(e.value) == reason
    assert not (tmp_path / "trt").exists()


def test_build_refuses_to_clobber_other_directories(tmp_path):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "precious.txt").write_text("mine")
    with pytest.raises(EngineError, match="not an engine"):
        build_engine(perturbed_generator("convnext2"), tmp_path / "keep", "torch", weights_source="x")
    assert (tmp_path / "keep" / "precious.txt").read_text() == "mine"
    with pytest.raises(UserError):
        get_backend("tensorflow")
    assert set(BACKENDS) == {"onnxruntime", "aoti", "torch", "torch-compile", "tensorrt"}


@pytest.mark.parametrize("name", backend_names())
def test_backend_defaults_are_among_what_it_builds(name):
    backend = get_backend(name)
    assert backend.name == name
    assert backend.default_precision in backend.precisions and backend.default_device in backend.devices
    assert (backend.rig_refusal("cpu", "fp32") is None) == backend.builds_rig
    assert name in backend_names(device=backend.default_device, rig=backend.builds_rig, compiled=backend.compiled)
    # the build's documented defaults: fp16 for tensorrt, else fp32; cuda for the CUDA-only backends
    assert backend.default_precision == ("fp16" if name == "tensorrt" else "fp32")
    assert backend.default_device == ("cuda" if name in ("tensorrt", "torch-compile") else "cpu")


def test_resolve_device_is_the_one_auto():
    from exprengine.engines.backends import resolve_device
    here = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == here and resolve_device("auto", built_for="cuda") == here
    assert resolve_device("auto", built_for="cpu") == "cpu"
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda") == "cuda"
    with pytest.raises(UserError, match="`device` must be auto, cpu or cuda, not 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(UserError, match="`device` must be"):
        Engine.load("anywhere", device="gpu")
