"""LATS age engines (issue 16 parts 3-4): every CPU backend builds lats-small into two graphs
and the class styles, verifies against eager PyTorch and matches it on fresh random inputs; the
traversal encodes once and decodes every frame in ceil(K / max_batch) decoder calls; ages are
continuous; bad ages, wrong kinds of engine and tampered engines are refused in one sentence.

The GPU paths (the torch backend's CUDA decoder pipeline and the fused `exprengine_to_u8_*`
kernel) run only where a GPU is visible; NVRTC compiling the kernel is tests/test_kernels.py.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from exprengine.ages import CLASS_CENTRES, class_position
from exprengine.cli import main
from exprengine.engine import Engine, inspect_engine
from exprengine.engines.backends import get_backend, lats_backend_names
from exprengine.engines.build import (LATS_TOLERANCE, build_engine, build_model_engine, random_lats_inputs,
                                      relative_error)
from exprengine.engines.manifest import CLASS_STYLES_ROLE, LATS_GRAPHS, MANIFEST_NAME
from exprengine.errors import EngineError, UserError
from exprengine.models import create_generator, create_model
from exprengine.models.lats import traversal_positions
from exprengine.models.weights import save_weights
from exprengine.pixels import to_network_input, to_uint8_nhwc

CPU_BACKENDS = ("onnxruntime", "torch", "aoti")
MAX_BATCH = 32                  # 101 frames -> 4 decoder calls
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no NVIDIA GPU visible: the CUDA paths need one")


def perturbed_small(seed: int = 0):
    """lats-small with random biases too (fresh biases are 0), eval mode: every layer matters."""
    model = create_model("lats-small", seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code, err, match=None):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("exprengine: error: ") and "internal error" not in err, err
    if match:
        assert match in lines[0], lines[0]


@pytest.fixture(scope="module")
def generator():
    return perturbed_small()


@pytest.fixture(scope="module")
def engines(generator, tmp_path_factory):
    """backend -> engine directory of `generator`. onnxruntime is built by the command line
    (`exprengine build --model lats-small --checkpoint ...`), the others by `build_engine`."""
    root = tmp_path_factory.mktemp("lats-engines")
    weights = root / "lats-small.safetensors"
    save_weights(generator, weights)
    out = {}
    code = main(["build", "--model", "lats-small", "--checkpoint", str(weights), "--backend", "onnxruntime",
                 "--max-batch", str(MAX_BATCH), "--out", str(root / "onnxruntime")])
    assert code == 0
    out["onnxruntime"] = root / "onnxruntime"
    for backend in CPU_BACKENDS[1:]:
        build_engine(generator, root / backend, backend, weights_source="test-perturbed seed=0", max_batch=MAX_BATCH,
                     opt_batch=8)
        out[backend] = root / backend
    return out


def eager_frames(generator, face: np.ndarray, positions) -> np.ndarray:
    """uint8 [K,S,S,3]: eager FP32 PyTorch's faces at class positions (the reference for pixels)."""
    from exprengine.preprocess import stack_faces
    x = torch.from_numpy(to_network_input(stack_faces(face, generator.config.image_size)))
    with torch.inference_mode():
        return to_uint8_nhwc(generator.decode(generator.encode(x), generator.style_at(list(positions))).numpy())


# --- building ---------------------------------------------------------------------------------
def test_every_cpu_backend_builds_lats():
    assert set(CPU_BACKENDS) <= set(lats_backend_names(device="cpu"))


def test_the_command_line_builds_and_info_shows_an_age_engine(engines, capsys):
    path = engines["onnxruntime"]
    data = json.loads((path / MANIFEST_NAME).read_text())
    assert data["model_config"]["family"] == "lats" and data["model"] == "lats-small"
    assert data["graphs"] == LATS_GRAPHS and data["inputs"] == ["image", "features", "style"]
    assert data["graph_outputs"] == "image" and data["max_batch"] == MAX_BATCH
    roles = {info["role"]: name for name, info in data["artifacts"].items()}
    assert roles == {"encoder-onnx": "encoder.onnx", "decoder-onnx": "decoder.onnx",
                     CLASS_STYLES_ROLE: "class_styles.safetensors"}
    styles = (path / "class_styles.safetensors").read_bytes()
    assert data["artifacts"]["class_styles.safetensors"]["sha256"] == hashlib.sha256(styles).hexdigest()
    code, out, err = run_cli(["info", path], capsys)
    assert code == 0, err
    assert "lats-small" in out and "encoder: image -> features; decoder: features, style -> output" in out
    assert "class styles" in out and "class_styles.safetensors" in out and "verified" in out


def test_the_build_command_builds_random_lats_small(tmp_path, capsys):
    """`exprengine build --model lats-small --out DIR` (random weights: a note says so), then loads."""
    code, out, err = run_cli(["build", "--model", "lats-small", "--backend", "torch", "--out", tmp_path / "age"], capsys)
    assert code == 0, err
    assert "randomly initialised lats-small" in err and "built" in out
    engine = Engine.load(tmp_path / "age")
    assert engine.is_age and engine.kind == "age" and engine.manifest.random_init


def test_onnx_graphs_have_a_dynamic_batch_axis(engines):
    import onnx
    for graph in ("encoder", "decoder"):
        model = onnx.load(str(engines["onnxruntime"] / f"{graph}.onnx"))
        assert [i.name for i in model.graph.input] == LATS_GRAPHS[graph]["inputs"]
        for value in list(model.graph.input) + list(model.graph.output):
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
        props = {p.key: p.value for p in model.metadata_props}
        assert props["exprengine.graph"] == graph and props["exprengine.outputs"] == "image"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_every_cpu_backend_verifies_and_matches_eager_on_fresh_inputs(engines, generator, backend):
    manifest = inspect_engine(engines[backend])
    v = manifest.verification
    assert v["max_rel_error"] <= v["tolerance"] == LATS_TOLERANCE["fp32"] and "encoder" in v["reference"]
    engine = Engine.load(engines[backend], device="cpu")
    runner = engine.backend
    for batch, seed in ((1, 11), (5, 12)):       # other batches than the build's 3, other inputs
        images, features, styles = random_lats_inputs(generator, batch, seed)
        with torch.inference_mode():
            ref_features = generator.encode(torch.from_numpy(images)).numpy()
            ref_output = generator.decode(torch.from_numpy(features), torch.from_numpy(styles)).numpy()
        assert relative_error(runner.run_encoder(images), ref_features) <= LATS_TOLERANCE["fp32"]
        assert relative_error(runner.run_decoder(features, styles), ref_output) <= LATS_TOLERANCE["fp32"]
    with torch.inference_mode():
        np.testing.assert_array_equal(engine.class_styles, generator.class_styles().numpy())


def test_eager_reference_engine_equals_the_built_torch_engine(engines, generator, face):
    """`Engine.from_generator` (no files) and the built torch engine give the same pixels."""
    ages = [3.0, 27.5, 66.0]
    built = Engine.load(engines["torch"]).age(face, ages)
    np.testing.assert_array_equal(Engine.from_generator(generator).age(face, ages), built)


# --- the traversal ----------------------------------------------------------------------------
def counting(runner, calls: dict):
    """Record every call into the runner's graphs: calls["encoder"] and ["decoder"] hold the
    batch sizes (and the decoder's features rows) of each call."""
    encode, decode = runner.run_encoder, runner._run_decoder

    def run_encoder(image):
        calls["encoder"].append(image.shape[0])
        return encode(image)

    def run_decoder(features, style):
        calls["decoder"].append((features.shape[0], style.shape[0]))
        return decode(features, style)
    runner.run_encoder, runner._run_decoder = run_encoder, run_decoder


def test_traverse_encodes_once_and_decodes_101_frames_in_ceil_101_over_max_batch_calls(engines, generator, face):
    engine = Engine.load(engines["onnxruntime"])
    calls = {"encoder": [], "decoder": []}
    counting(engine.backend, calls)
    frames = engine.traverse(face)
    assert frames.shape == (101, 256, 256, 3) and frames.dtype == np.uint8
    assert calls["encoder"] == [1] and engine.encoder_calls == 1
    assert engine.decoder_calls == math.ceil(101 / MAX_BATCH) == len(calls["decoder"]) == 4
    assert [s for _, s in calls["decoder"]] == [32, 32, 32, 5]
    ages = Engine.traversal_ages()
    assert len(ages) == 101 and ages[0] == CLASS_CENTRES[0] and ages[-1] == CLASS_CENTRES[-1]
    # frame k is Engine.age at the frame's age, and eager PyTorch's pixels
    picks = [0, 37, 60, 100]
    aged = engine.age(face, ages[picks])
    assert np.abs(aged.astype(int) - frames[picks]).max() <= 1
    assert (aged == frames[picks]).mean() > 0.999
    reference = eager_frames(generator, face, traversal_positions()[picks].tolist())
    assert np.abs(reference.astype(int) - frames[picks]).max() <= 1
    # the faces change along the lifespan: the first and last frames differ clearly
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 1


def test_features_are_shared_not_copied_where_the_backend_allows(engines, face):
    engine = Engine.load(engines["torch"])
    calls = {"encoder": [], "decoder": []}
    counting(engine.backend, calls)
    frames = engine.traverse(face, np.linspace(5, 65, 40))
    assert frames.shape[0] == 40 and calls["encoder"] == [1]
    assert calls["decoder"] == [(1, 32), (1, 8)]      # one row of features for every style


def test_continuous_ages(engines, generator, face):
    engine = Engine.load(engines["torch"])
    styles = engine.class_styles
    t = (42 - CLASS_CENTRES[4]) / (CLASS_CENTRES[5] - CLASS_CENTRES[4])
    np.testing.assert_allclose(engine.styles_at(42)[0], (1 - t) * styles[4] + t * styles[5], rtol=0, atol=4e-6)
    np.testing.assert_array_equal(engine.styles_at([CLASS_CENTRES[2]]), styles[2:3])      # a class's centre
    assert np.array_equal(engine.styles_at(0.0), styles[:1]) and np.array_equal(engine.styles_at(70), styles[5:])
    old, centre = engine.age(face, [42, CLASS_CENTRES[4]])
    assert np.abs(old.astype(int) - centre).mean() > 0.1                               # 42 is not 34.5
    assert np.abs(eager_frames(generator, face, [class_position(42)])[0].astype(int) - old).max() <= 1
    # "from 5 to 65": a traversal at given ages is age() at each of them
    ages = np.linspace(5, 65, 7)
    frames = engine.traverse(face, ages)
    assert frames.shape == (7, 256, 256, 3)
    assert np.abs(engine.age(face, ages).astype(int) - frames).max() <= 1
    # one age for all faces, one per face; the two halves give the same pixels
    faces = [face, face[::2, ::2]]
    both = engine.age(faces, 60)
    assert both.shape == (2, 256, 256, 3)
    np.testing.assert_array_equal(engine.age(faces, [60, 60]), both)
    np.testing.assert_array_equal(engine.decode_ages(engine.age_features(faces), 60), both)


@pytest.mark.parametrize("ages", [71, -0.5, float("nan"), float("inf"), True, "60", [], [30, 90], None])
def test_bad_ages_are_refused_in_one_sentence(engines, face, ages):
    engine = Engine.load(engines["torch"])
    with pytest.raises(UserError) as e:
        engine.age(face, ages)
    message = str(e.value)
    assert "\n" not in message and "`ages`" in message and "--" not in message
    assert engine.backend_calls == 0


def test_wrong_counts_and_shapes_are_refused(engines, face):
    engine = Engine.load(engines["torch"])
    with pytest.raises(UserError, match="2 faces but 3 ages"):
        engine.age([face, face], [10, 20, 30])
    with pytest.raises(UserError, match="traverse takes one face"):
        engine.traverse(np.stack([face[:200, :200]] * 2))
    with pytest.raises(UserError, match="`features` must be float32"):
        engine.decode_ages(np.zeros((1, 3, 64, 64), np.float32), 30)
    with pytest.raises(UserError, match="`step`"):
        engine.traverse(face, step=0.3)
    assert engine.backend_calls == 0


def test_expression_and_age_engines_refuse_each_others_calls(engines, face):
    age_engine = Engine.load(engines["torch"])
    for call in (lambda: age_engine.edit(face, "happiness@2"), lambda: age_engine.morph(face, "neutral", "surprise"),
                 lambda: age_engine.run_frames(np.zeros((1, 256, 256, 3), np.uint8), np.zeros((1, 17), np.float32))):
        with pytest.raises(EngineError, match="age engine") as e:
            call()
        assert "\n" not in str(e.value) and "Engine.age" in str(e.value)
    expression = Engine.from_generator(create_generator("convnext2"))
    assert expression.kind == "expression" and not expression.is_age
    for call in (lambda: expression.age(face, 60), lambda: expression.traverse(face),
                 lambda: expression.age_features(face), lambda: expression.styles_at(30)):
        with pytest.raises(EngineError, match="needs an age engine") as e:
            call()
        assert "\n" not in str(e.value) and "convnext2" in str(e.value)


def test_backends_that_do_not_build_lats_refuse_in_one_sentence(tmp_path):
    for backend, device, words in (("tensorrt", "cuda", "does not build LATS"),
                                   ("torch-compile", "cuda", "does not build LATS"),
                                   ("aoti", "cuda", "for cpu only")):
        refusal = get_backend(backend).lats_refusal(device, "fp32")
        assert refusal and words in refusal and "\n" not in refusal
    with pytest.raises(EngineError, match="for cpu only; for CUDA use `backend` 'torch'"):
        build_model_engine(tmp_path / "x", "aoti", model="lats-small", device="cuda")
    assert not (tmp_path / "x").exists()


# --- tampering ----------------------------------------------------------------------------------
def _relist(engine: Path, name: str) -> None:
    data = json.loads((engine / MANIFEST_NAME).read_text())
    blob = (engine / name).read_bytes()
    data["artifacts"][name].update(bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    (engine / MANIFEST_NAME).write_text(json.dumps(data))


def _edit_manifest(change):
    def tamper(engine: Path, _):
        data = json.loads((engine / MANIFEST_NAME).read_text())
        change(data)
        (engine / MANIFEST_NAME).write_text(json.dumps(data))
    return tamper


def _other_styles(engine: Path, engines):
    shutil.copyfile(engines["torch-other"] / "class_styles.safetensors", engine / "class_styles.safetensors")
    _relist(engine, "class_styles.safetensors")


def _swap_graphs(engine: Path, _):
    shutil.copyfile(engine / "encoder.onnx", engine / "decoder.onnx")
    _relist(engine, "decoder.onnx")


def _flip_styles_byte(engine: Path, _):
    blob = bytearray((engine / "class_styles.safetensors").read_bytes())
    blob[-1] ^= 1
    (engine / "class_styles.safetensors").write_bytes(bytes(blob))


TAMPERING = {
    "class styles altered": (_flip_styles_byte, "corrupted"),
    "another model's class styles relisted": (_other_styles, "weights sha256"),
    "encoder relisted as the decoder": (_swap_graphs, "graph inputs 'image'"),
    "class styles unlisted": (_edit_manifest(lambda d: d["artifacts"].pop("class_styles.safetensors")),
                              "lists no class-styles artifact"),
    "graphs changed": (_edit_manifest(lambda d: d["graphs"]["decoder"].update(inputs=["features"])), "graphs"),
    "graphs removed": (_edit_manifest(lambda d: d.pop("graphs")), "graphs"),
    "a backend that does not build LATS": (_edit_manifest(lambda d: d.update(backend="tensorrt", device="cuda")),
                                           "LATS model"),
    "outputs blended": (_edit_manifest(lambda d: d.update(graph_outputs="blended")), "graphs"),
    "inputs of a generator": (_edit_manifest(lambda d: d.update(inputs=["image", "aus"])), "age engine's graphs take"),
    "inconsistent config": (_edit_manifest(lambda d: d["model_config"].update(decoder_dims=[32, 16, 8])),
                            "invalid LATS config"),
}


@pytest.fixture(scope="module")
def other_engines(engines, tmp_path_factory):
    out = dict(engines)
    out["torch-other"] = tmp_path_factory.mktemp("lats-other") / "torch"
    build_engine(perturbed_small(seed=5), out["torch-other"], "torch", weights_source="other", verify=False)
    return out


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_age_engines_are_refused_in_one_line(other_engines, tmp_path, capsys, case):
    tamper, words = TAMPERING[case]
    engine = tmp_path / "engine"
    shutil.copytree(other_engines["onnxruntime"], engine)
    tamper(engine, other_engines)
    with pytest.raises(EngineError, match=None) as e:
        Engine.load(engine)
    assert words in str(e.value) and "\n" not in str(e.value)
    code, out, err = run_cli(["info", engine], capsys)
    one_line_error(code, err, words)
    assert out == ""


# --- CUDA (GPU only) ------------------------------------------------------------------------------
@needs_gpu
def test_fused_output_kernel_is_bit_exact_against_to_uint8_nhwc():
    from exprengine.kernels.cuda import fused_kernels
    kernels = fused_kernels(torch.cuda.current_device())
    rng = np.random.default_rng(3)
    for n, h, w in ((3, 256, 256), (2, 7, 9)):          # the vector path and the scalar one
        x = rng.uniform(-1.2, 1.2, (n, 3, h, w)).astype(np.float32)
        x.reshape(-1)[:6] = [-1.0, 1.0, 0.0, -1.0 + 0.5 / 127.5, 1 / 255, np.float32(0.5) / 127.5]
        for dtype in (torch.float32, torch.float16):
            image = torch.from_numpy(x).to("cuda", dtype)
            out = torch.empty(n, h, w, 3, dtype=torch.uint8, device="cuda")
            kernels.to_uint8(image.contiguous(), out)
            torch.cuda.synchronize()
            np.testing.assert_array_equal(out.cpu().numpy(), to_uint8_nhwc(image.float().cpu().numpy()))


@needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torch_cuda_age_engine_verifies_and_matches_the_cpu_engine(engines, generator, face, tmp_path, precision):
    path = tmp_path / f"cuda-{precision}"
    manifest = build_engine(generator, path, "torch", weights_source="test", precision=precision, device="cuda",
                            max_batch=MAX_BATCH, opt_batch=8)
    assert manifest.verification["max_rel_error"] <= LATS_TOLERANCE[precision]
    engine = Engine.load(path, device="cuda")
    frames = engine.traverse(face)
    assert frames.shape == (101, 256, 256, 3) and engine.encoder_calls == 1 and engine.decoder_calls == 4
    cpu = Engine.load(engines["torch"]).traverse(face)
    limit = 1 if precision == "fp32" else 8
    assert np.abs(frames.astype(int) - cpu).max() <= limit
    again = engine.traverse(face)                      # replayed CUDA graphs give the same pixels
    np.testing.assert_array_equal(again, frames)
