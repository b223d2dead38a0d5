"""The GPU engine's host-side logic, on any machine: TensorRT plan keys and mismatch handling,
the FP16 graph with FP32 norms, build refusals, and clean skips without a GPU or TensorRT."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch
from helpers import perturbed_generator

from exprengine.engines.backends import get_backend
from exprengine.engines.backends import tensorrt_backend as trt_backend
from exprengine.engines.build import build_engine, check_build_request, relative_error
from exprengine.export.inputs import random_network_inputs
from exprengine.errors import EngineError

DEPS = dict(onnx_sha256="ab" * 32, gpu_name="NVIDIA H100 80GB HBM3", capability="9.0",
            tensorrt_version="tensorrt 10.13.0", precision="fp16", profile=(1, 16, 64), image_size=128)


def test_plan_key_depends_on_everything_the_plan_depends_on():
    base = trt_backend.plan_dependencies(**DEPS)
    key = trt_backend.plan_key(base)
    assert key == trt_backend.plan_key(trt_backend.plan_dependencies(**DEPS))         # stable
    changes = dict(onnx_sha256="cd" * 32, gpu_name="NVIDIA A100-SXM4-80GB", capability="8.0",
                   tensorrt_version="tensorrt 11.0.0", precision="fp32", profile=(1, 32, 64), image_size=256)
    for field, value in changes.items():
        other = trt_backend.plan_dependencies(**{**DEPS, field: value})
        assert trt_backend.plan_key(other) != key, field
        assert trt_backend.plan_mismatch(base, other), field


@pytest.mark.parametrize("field,value,words", [
    ("gpu_name", "NVIDIA L4", "GPU NVIDIA H100 80GB HBM3 (this machine: NVIDIA L4)"),
    ("capability", "8.9", "compute capability 9.0 (this machine: 8.9)"),
    ("tensorrt_version", "tensorrt 10.3.0", "TensorRT version tensorrt 10.13.0 (this machine: tensorrt 10.3.0)"),
])
def test_plan_mismatch_names_what_differs(field, value, words):
    built = trt_backend.plan_dependencies(**DEPS)
    assert trt_backend.plan_mismatch(built, built) is None
    assert trt_backend.plan_mismatch(built, trt_backend.plan_dependencies(**{**DEPS, field: value})) == words


def test_mismatched_plan_is_refused_with_one_sentence_when_rebuilds_are_off(tmp_path, monkeypatch):
    from exprengine.engines.manifest import Manifest
    monkeypatch.setenv("EXPRENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EXPRENGINE_TENSORRT_REBUILD", "0")
    manifest = Manifest(model="convnext2", model_config={}, weights_sha256="", weights_source="x",
                        backend="tensorrt", precision="fp16", device="cuda", graph_outputs="heads",
                        min_batch=1, max_batch=64, opt_batch=16, image_size=128)
    here = trt_backend.plan_dependencies(**{**DEPS, "capability": "8.9"})
    with pytest.raises(EngineError) as e:
        trt_backend.cached_or_rebuilt_plan(tmp_path, manifest, here, "compute capability 9.0 (this machine: 8.9)")
    assert "\n" not in str(e.value) and "rebuild it" in str(e.value)


def test_cached_plan_is_hash_checked_before_use(tmp_path, monkeypatch):
    import hashlib
    from exprengine.engines.manifest import Manifest
    monkeypatch.setenv("EXPRENGINE_CACHE", str(tmp_path))
    monkeypatch.setenv("EXPRENGINE_TENSORRT_REBUILD", "0")
    manifest = Manifest(model="convnext2", model_config={}, weights_sha256="", weights_source="x",
                        backend="tensorrt", precision="fp16", device="cuda", graph_outputs="heads",
                        min_batch=1, max_batch=64, opt_batch=16, image_size=128)
    here = trt_backend.plan_dependencies(**DEPS)
    plan = trt_backend.cache_dir("tensorrt") / f"{trt_backend.plan_key(here)}.plan"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"serialised plan")
    plan.with_suffix(".sha256").write_text(hashlib.sha256(b"serialised plan").hexdigest())
    assert trt_backend.cached_or_rebuilt_plan(tmp_path, manifest, here, "x") == b"serialised plan"
    plan.write_bytes(b"tampered plan!!")                     # a changed cache file is not deserialised
    with pytest.raises(EngineError, match="rebuild it"):
        trt_backend.cached_or_rebuilt_plan(tmp_path, manifest, here, "x")


@pytest.mark.skipif(trt_backend.import_tensorrt() is not None and torch.cuda.is_available(),
                    reason="TensorRT and a GPU are present: the backend is available")
def test_tensorrt_backend_says_why_in_one_sentence():
    reason = get_backend("tensorrt").unavailable_reason()
    assert reason and "\n" not in reason and reason.count(". ") == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("backend,precision,device,match", [
    ("torch", "fp16", "cpu", "fp16 engines run on CUDA"),
    ("aoti", "fp16", "cpu", "fp16 engines run on CUDA"),
    ("onnxruntime", "fp16", "cpu", "builds fp32 engines"),
    ("torch-compile", "fp16", "cuda", "no NVIDIA GPU"),
    ("torch", "fp32", "cuda", "needs an NVIDIA GPU"),
])
def test_gpu_builds_are_refused_before_any_work_without_a_gpu(tmp_path, backend, precision, device, match):
    with pytest.raises(EngineError, match=match):
        check_build_request(tmp_path / "e", backend, precision, device)
    assert not (tmp_path / "e").exists()


def test_fp16_graph_keeps_norms_in_fp32(tmp_path):
    from exprengine.export.onnx_graph import export_onnx, read_metadata
    path = export_onnx(perturbed_generator("convnext2-ln"), tmp_path / "m.onnx", outputs="heads",
                       max_batch=8, precision="fp16")
    model = onnx.load(str(path))
    fp16 = onnx.TensorProto.FLOAT16
    assert [v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)] == [fp16] * 4
    assert read_metadata(path)["exprengine.precision"] == "fp16"
    # every norm reads a Cast to FLOAT and feeds a Cast back to FLOAT16
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    norms = [n for n in model.graph.node if n.op_type in ("InstanceNormalization", "LayerNormalization")]
    assert len(norms) == 5 + 2 * 6                       # 5 InstanceNorms, 2 LayerNorms in each of 6 blocks
    for norm in norms:
        cast_in = producers[norm.input[0]]
        assert cast_in.op_type == "Cast" and cast_in.attribute[0].i == onnx.TensorProto.FLOAT, norm.name
        outs = consumers[norm.output[0]]
        assert outs and all(c.op_type == "Cast" and c.attribute[0].i == fp16 for c in outs), norm.name
    onnx.checker.check_model(model, full_check=True)


def test_fp16_with_fp32_norms_matches_fp32_within_1e2():
    from exprengine.models.precision import Fp32Norm, half_with_fp32_norms
    generator = perturbed_generator("convnext2")
    half = half_with_fp32_norms(generator)
    assert next(generator.parameters()).dtype == torch.float32          # the original is untouched
    norms = [m for m in half.modules() if isinstance(m, Fp32Norm)]
    assert norms and all(p.dtype == torch.float32 for m in norms for p in m.parameters())
    image, aus = random_network_inputs(1, 128)
    with torch.inference_mode():
        c32, a32 = generator(torch.from_numpy(image), torch.from_numpy(aus))
        c16, a16 = half(torch.from_numpy(image).half(), torch.from_numpy(aus).half())
    assert relative_error(c16.float().numpy(), c32.numpy()) < 1e-2
    assert relative_error(a16.float().numpy(), a32.numpy()) < 1e-2


def test_cpu_engines_use_the_portable_uint8_path(engine_factory, face):
    """run_frames on CPU backends: NumPy pre-processing, one call, NumPy uint8 pass; a single
    frame is broadcast to every AU row."""
    from exprengine.engine import Engine
    engine = Engine.load(engine_factory("convnext2", "onnxruntime"))
    rows = np.random.default_rng().uniform(0, 3, (4, 17)).astype(np.float32)
    frames = np.repeat(face[None], 4, axis=0)
    broadcast, att = engine.run_frames(face[None], rows)
    repeated, _ = engine.run_frames(frames, rows)
    assert np.array_equal(broadcast, repeated) and att.shape == (4, 128, 128)
    assert engine.backend_calls == 2


def test_build_torch_engine_keeps_the_callers_generator(tmp_path):
    generator = perturbed_generator("convnext2")
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    build_engine(generator, tmp_path / "e", "torch", weights_source="x", max_batch=4, opt_batch=2)
    after = generator.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].device.type == "cpu" for k in before)
