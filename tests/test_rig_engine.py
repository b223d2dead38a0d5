"""The rig as an engine: built by `exprengine build --model rig`, checked against eager FaceRig
on fresh plausible inputs, its manifest and artifacts trusted only when they agree, and used
through the same Engine API, faces pipeline and CLI (edit, morph, video) as the generators,
with the face mesh flowing through the crops and the paste mask."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from test_cli import assert_one_line_error, run_cli

from exprengine.engine import Engine
from exprengine.engines.build import build_engine, relative_error, verify_against_eager
from exprengine.export.inputs import random_rig_inputs
from exprengine.engines.manifest import MANIFEST_NAME, Manifest
from exprengine.errors import EngineError, UserError
from exprengine.faces.crop import FaceCrop
from exprengine.faces.paste import OUTLINE_GROW, face_oval, face_outline, outline_mask
from exprengine.pixels import blend
from exprengine.models import create_model, list_models
from exprengine.models.rig import FaceRig, RigConfig

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
SIZE = RigConfig().image_size


def astronaut() -> np.ndarray:
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="module")
def mesher():
    from exprengine.faces.landmarks import MediaPipeDetector
    detector = MediaPipeDetector()
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def rig_engines(tmp_path_factory):
    """{backend: engine directory} of the rig, built once for the module. The ONNX engine is
    checked against eager PyTorch by the parity test below rather than at build time, so that a
    disagreement fails that test alone."""
    root = tmp_path_factory.mktemp("rig-engines")
    rig = create_model("rig")
    return {backend: (build_engine(rig, root / backend, backend, weights_source="rig (no learned weights)",
                                   max_batch=8, opt_batch=4, verify=backend == "torch"), root / backend)[1]
            for backend in ("onnxruntime", "torch")}


@pytest.fixture(scope="module")
def face_crop(mesher):
    """(uint8 [S,S,3] the rig's crop of the astronaut, float32 [478,2] her mesh in its pixels)."""
    image = astronaut()
    points = mesher.landmarks(image)[0]
    crop = FaceCrop.from_landmarks(points, image.shape)
    return crop.extract(image, SIZE), crop.to_crop(points, SIZE)


def eager(image, aus, landmarks):
    with torch.inference_mode():
        x = torch.from_numpy(image)
        color, attention = FaceRig(RigConfig())(x, torch.from_numpy(aus), torch.from_numpy(landmarks))
        return blend(x, color, attention).numpy(), attention.numpy()


# --- build and parity --------------------------------------------------------------------------
def assert_matches_eager(engine: Engine) -> None:
    """The engine against eager FaceRig: the build's own check, then one more fresh draw by hand."""
    assert engine.needs_landmarks and engine.image_size == SIZE
    check = verify_against_eager(engine.backend, FaceRig(RigConfig()), "fp32")
    assert check["max_rel_error"] <= 1e-4 and check["batch"] == 3
    image, aus, landmarks = random_rig_inputs(3, SIZE)
    assert aus.max() > 0.8 and aus.min() >= 0                  # intensities over the whole 0..5 scale
    out, att = engine.run_network(image, aus, landmarks=landmarks)
    want_out, want_att = eager(image, aus, landmarks)
    assert float(np.abs(want_att - 1).max()) > 0.5             # the rig did edit these inputs
    assert max(relative_error(out, want_out), relative_error(att, want_att)) <= 1e-4
    one, _ = engine.run_network(image[:1], aus[:1], landmarks=landmarks[:1])       # the batch axis is dynamic
    assert relative_error(one, want_out[:1]) <= 1e-4


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_rig_engines_match_eager_on_fresh_plausible_inputs(rig_engines, backend):
    engine = Engine.load(rig_engines[backend], device="cpu")
    assert_matches_eager(engine)
    if backend == "torch":
        assert engine.manifest.verification["max_rel_error"] == 0.0          # the eager rig itself


def test_aoti_builds_the_rig_on_the_cpu(tmp_path):
    build_engine(create_model("rig"), tmp_path / "aoti", "aoti", weights_source="rig (no learned weights)",
                 max_batch=4, opt_batch=2, verify=False)
    engine = Engine.load(tmp_path / "aoti", device="cpu")
    assert engine.manifest.inputs == ["image", "aus", "landmarks"]
    assert_matches_eager(engine)


def test_plausible_landmarks_are_a_real_mesh_moved_at_random():
    _, _, a = random_rig_inputs(4, SIZE)
    _, _, b = random_rig_inputs(4, SIZE)
    assert a.shape == (4, 478, 2) and a.dtype == np.float32 and not np.allclose(a, b)     # fresh
    iod = np.hypot(*(a[:, [362, 263]].mean(1) - a[:, [33, 133]].mean(1)).T)
    assert np.all((iod > SIZE / 6) & (iod < SIZE / 3))         # a face of the crop's size (CROP_SIDE 4 IOD)
    assert np.all((a > 0) & (a < SIZE))


def test_manifest_round_trip_and_inputs(rig_engines):
    for backend, path in rig_engines.items():
        m = Manifest.read(path)
        assert m.inputs == ["image", "aus", "landmarks"] and m.needs_landmarks and m.is_rig
        assert RigConfig.from_dict(m.model_config) == RigConfig()
        assert m.model == "rig" and m.image_size == SIZE and not m.random_init
        data = json.loads((path / MANIFEST_NAME).read_text())
        assert Manifest(**data) == m
    import onnx
    model = onnx.load(str(rig_engines["onnxruntime"] / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["image", "aus", "landmarks"]
    assert all(i.type.tensor_type.shape.dim[0].dim_param == "batch" for i in model.graph.input)
    assert [d.dim_value for d in model.graph.input[2].type.tensor_type.shape.dim[1:]] == [478, 2]
    assert "GridSample" in {n.op_type for n in model.graph.node}
    assert {p.key: p.value for p in model.metadata_props}["exprengine.inputs"] == "image,aus,landmarks"
    # a generator's manifest written before `inputs` existed reads as ["image", "aus"]
    assert Manifest(model="g", model_config={}, weights_sha256="0" * 64, weights_source="x", backend="torch",
                    precision="fp32", device="cpu", graph_outputs="blended", min_batch=1, max_batch=1, opt_batch=1,
                    image_size=128).inputs == ["image", "aus"]


def copy_engine(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def edit_manifest(path, change):
    data = json.loads((path / MANIFEST_NAME).read_text())
    change(data)
    (path / MANIFEST_NAME).write_text(json.dumps(data))


@pytest.mark.parametrize("case, match", [
    ("inputs without landmarks", "graph takes image, aus, but a rig takes"),
    ("generator with landmarks", "graph takes image, aus, landmarks, but a generator takes"),
    ("flow_grid changed", "another model config"),
    ("rig sha changed", "weights sha256"),
    ("unknown input", "inputs"),
    ("rig config extra field", "model_config"),
    ("artifact bytes changed", "corrupted|truncated"),
])
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_tampered_rig_engines_are_refused(rig_engines, tmp_path, backend, case, match):
    path = copy_engine(rig_engines[backend], tmp_path / "engine")
    changes = {
        "inputs without landmarks": lambda d: d.update(inputs=["image", "aus"]),
        "generator with landmarks": lambda d: d.update(model_config={
            "name": "rig", "block": "resnet", "expansion": 1, "dims": [64, 128, 256], "depth": 6, "num_aus": 17,
            "image_size": SIZE}),
        "flow_grid changed": lambda d: d["model_config"].update(flow_grid=d["model_config"]["flow_grid"] + 32),
        "rig sha changed": lambda d: d.update(weights_sha256="ab" * 32),
        "unknown input": lambda d: d.update(inputs=["image", "aus", "mesh"]),
        "rig config extra field": lambda d: d["model_config"].update(extra=1),
    }
    if case == "artifact bytes changed":
        artifact = next(p for p in path.iterdir() if p.name != MANIFEST_NAME)
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0xFF
        artifact.write_bytes(bytes(data))
    else:
        edit_manifest(path, changes[case])
    with pytest.raises(EngineError, match=match):
        Engine.load(path, device="cpu")


def test_a_torch_rig_engine_from_another_rig_version_is_refused(rig_engines, monkeypatch):
    import exprengine.models.rig as rig_module
    monkeypatch.setattr(rig_module, "rig_sha256", lambda config: "cd" * 32)
    with pytest.raises(EngineError, match="another version of the rig"):
        Engine.load(rig_engines["torch"], device="cpu")
    assert Engine.load(rig_engines["onnxruntime"], device="cpu").needs_landmarks   # a graph carries its rig


def test_rig_weights_file_holds_no_tensors_and_nothing_else_is_accepted(tmp_path):
    from safetensors.torch import save

    from exprengine.models.weights import load_weights, model_sha256, safetensors_metadata, save_weights
    rig = create_model("rig")
    save_weights(rig, tmp_path / "rig.safetensors")
    data = (tmp_path / "rig.safetensors").read_bytes()
    metadata = safetensors_metadata(data)
    assert json.loads(metadata["config"]) == RigConfig().to_dict() and metadata["weights_sha256"] == model_sha256(rig)
    assert isinstance(load_weights(tmp_path / "rig.safetensors"), FaceRig)
    (tmp_path / "stuffed.safetensors").write_bytes(save({"x": torch.zeros(2)}, metadata=metadata))
    with pytest.raises(UserError, match="holds 1 tensors"):
        load_weights(tmp_path / "stuffed.safetensors")


def test_backends_that_do_not_build_the_rig_say_so_in_one_line(tmp_path, capsys):
    from exprengine.engines.backends import BACKENDS
    from exprengine.engines.build import check_build_request
    for name in ("tensorrt", "torch-compile"):
        reason = BACKENDS[name].rig_refusal("cuda", "fp16")
        assert reason and "does not build the rig" in reason and "\n" not in reason
    for name in ("onnxruntime", "torch", "aoti"):
        assert BACKENDS[name].rig_refusal("cpu", "fp32") is None
        assert "CPU" in BACKENDS[name].rig_refusal("cuda", "fp32")
    with pytest.raises(EngineError, match="CPU in fp32"):
        check_build_request(tmp_path / "e", "onnxruntime", "fp32", "cuda", rig=True)
    for args, word in ((["--backend", "torch", "--device", "cuda"], "CPU"),
                       (["--checkpoint", "x.pth"], "no learned weights")):
        code, _, err = run_cli(["build", "--model", "rig", "--out", tmp_path / "e", *args], capsys)
        assert_one_line_error(code, err)
        assert word in err, err
    assert not (tmp_path / "e").exists()


def test_models_lists_the_rig_and_cli_builds_it(tmp_path, capsys):
    assert "rig" in list_models()
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0 and any(line.startswith("  rig ") for line in out.splitlines())
    code, out, err = run_cli(["build", "--model", "rig", "--backend", "torch", "--out", tmp_path / "rig"], capsys)
    assert code == 0, err
    assert "rig / torch / fp32" in out and "random" not in err
    assert Engine.load(tmp_path / "rig").needs_landmarks


# --- the runtime -------------------------------------------------------------------------------
def test_edit_without_landmarks_finds_them_on_the_crop_and_edits_the_face(rig_engines, face_crop):
    crop, marks = face_crop
    engine = Engine.load(rig_engines["onnxruntime"])
    found = engine.crop_landmarks(crop[None])[0]
    assert np.median(np.hypot(*(found - marks).T)) < 1.5          # MediaPipe on the crop: the same mesh
    out = engine.edit(crop, "surprise@1.5")[0]
    given = engine.edit(crop, "surprise@1.5", landmarks=marks)[0]
    changed = np.abs(out.astype(int) - crop).max(-1) > 8
    assert changed.sum() > 500
    ys, xs = np.nonzero(changed)
    mouth = marks[[13, 14]].mean(0)
    assert np.hypot(xs.mean() - mouth[0], ys.mean() - mouth[1]) < SIZE / 4     # the face moved, near its centre
    assert np.abs(given.astype(int) - out).mean() < 2.0                        # given or found: the same edit
    assert np.array_equal(engine.edit(crop, "natural")[0], crop)               # no AUs, no edit
    blank = np.full((SIZE, SIZE, 3), 128, np.uint8)
    with pytest.raises(UserError, match="no face mesh"):
        engine.edit(blank, "happiness")


def test_landmarks_follow_the_images_as_they_are_resized(rig_engines, face_crop):
    crop, marks = face_crop
    engine = Engine.load(rig_engines["torch"])
    big = np.asarray(Image.fromarray(crop).resize((2 * SIZE, 2 * SIZE), Image.Resampling.BICUBIC))
    from exprengine.preprocess import resize_face
    a = engine.edit(big, "happiness@1.5", landmarks=marks * 2)
    b = engine.edit(resize_face(big, SIZE), "happiness@1.5", landmarks=marks)
    assert np.array_equal(a, b)
    with pytest.raises(UserError, match="landmarks must be"):
        engine.edit(crop, "happiness", landmarks=marks[:100])
    with pytest.raises(UserError, match="one mesh per face"):
        engine.edit(np.stack([crop, crop]), "happiness", landmarks=np.stack([marks] * 3))


def test_morph_renders_every_frame_in_one_call(rig_engines, face_crop):
    crop, marks = face_crop
    engine = Engine.load(rig_engines["onnxruntime"])
    calls = engine.backend_calls
    frames = engine.morph(crop, "natural", "happiness@2", frames=4, landmarks=marks)
    assert frames.shape == (4, SIZE, SIZE, 3) and engine.backend_calls == calls + 1
    change = [np.abs(f.astype(int) - crop).mean() for f in frames]
    assert all(a < b for a, b in zip(change, change[1:])) and change[0] > 0
    from exprengine.aus import AUs
    rows = np.stack([np.zeros(17, np.float32), AUs.parse("surprise").values])
    detailed = engine.edit_detailed(crop, rows, landmarks=marks)         # one face, two AU rows
    assert detailed.images.shape == (2, SIZE, SIZE, 3) and detailed.attention.shape == (2, SIZE, SIZE)
    assert np.array_equal(detailed.images[0], crop)


def test_from_generator_takes_the_rig_in_memory(face_crop):
    crop, marks = face_crop
    engine = Engine.from_generator(FaceRig(RigConfig()))
    assert engine.needs_landmarks and engine.manifest.inputs == ["image", "aus", "landmarks"]
    out = engine.edit(crop, "AU45=2", landmarks=marks)[0]
    eyes = marks[[159, 386]].astype(int)
    assert all(np.abs(out[y - 3:y + 4, x - 3:x + 4].astype(int) - crop[y - 3:y + 4, x - 3:x + 4]).mean() > 5
               for x, y in eyes)                                        # the upper lids came down


# --- crops and the paste mask ------------------------------------------------------------------
def rotated_astronaut(degrees: float) -> np.ndarray:
    return np.asarray(Image.fromarray(astronaut()).rotate(degrees, Image.Resampling.BICUBIC))


@pytest.mark.parametrize("degrees, align", [(0, False), (0, True), (20, True), (-15, False)])
def test_crop_from_the_mesh_and_the_mesh_in_the_crop(mesher, degrees, align):
    from exprengine.models.rig import CROP_CENTRE, CROP_SIDE
    image = rotated_astronaut(degrees)
    points = mesher.landmarks(image)[0]
    crop = FaceCrop.from_landmarks(points, image.shape, align=align)
    p = points.astype(np.float64)
    right, left = p[[33, 133], :2].mean(0), p[[362, 263], :2].mean(0)
    iod = np.hypot(*(left - right))
    assert crop.side == round(CROP_SIDE * iod)
    if align:
        assert crop.angle == pytest.approx(-np.arctan2(*(left - right)[::-1]))
        down = np.array([-(left - right)[1], (left - right)[0]]) / iod
        assert np.hypot(*((right + left) / 2 + CROP_CENTRE * iod * down - (crop.cx, crop.cy))) < 1e-6
    inside = crop.to_crop(points, SIZE)
    assert np.abs(crop.to_image(inside, SIZE) - points[:, :2]).max() < 1e-3            # round trip
    if align:                                                                           # eyes level in the crop
        eyes = inside[[33, 133, 362, 263]]
        assert abs(eyes[:2, 1].mean() - eyes[2:, 1].mean()) < 0.05
    seen = mesher.landmarks(crop.extract(image, SIZE))[0, :, :2]                        # MediaPipe on the crop
    error = np.hypot(*(seen - inside).T)
    assert np.median(error) < 1.5 and np.percentile(error, 90) < 3.0, (np.median(error), np.percentile(error, 90))


def test_outline_mask_is_the_face_and_zero_outside_its_grown_outline(face_crop):
    crop, marks = face_crop
    outline = face_outline(marks)
    assert len(face_oval()) == 36 and outline.shape == (36, 2)
    mask = outline_mask(outline, SIZE)
    centre = outline.mean(0)
    grown = centre + (outline - centre) * (1 + OUTLINE_GROW)
    canvas = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(canvas).polygon([(x - 0.5, y - 0.5) for x, y in grown], fill=1)
    inside = np.asarray(canvas, bool)
    assert mask[~inside].max() == 0.0
    assert mask[int(marks[4, 1]), int(marks[4, 0])] == 1.0                  # the nose tip
    assert mask[2, 2] == 0.0 and 0.2 < mask.mean() < 0.7


# --- the faces pipeline and the CLI ------------------------------------------------------------
@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(astronaut()).save(path)
    return path


def expected_face(image: np.ndarray):
    """The crop and mesh the pipeline makes for the astronaut with the default (HOG) detector."""
    from exprengine.faces.detect import FaceDetector
    from exprengine.faces.landmarks import MediaPipeDetector
    boxes = FaceDetector().detect(image)
    mesher = MediaPipeDetector()
    try:
        mesh = mesher.meshes(image, boxes[:1])[0].points
    finally:
        mesher.close()
    return FaceCrop.from_landmarks(mesh, image.shape), mesh


def test_cli_edit_with_the_rig_changes_only_the_face(rig_engines, astronaut_png, tmp_path, capsys):
    out = tmp_path / "out.png"
    code, stdout, err = run_cli(["edit", astronaut_png, "--engine", rig_engines["onnxruntime"], "--preset",
                                 "surprise@1.5", "--out", out], capsys)
    assert code == 0, err
    assert "edited 1" in stdout
    before, after = astronaut(), np.asarray(Image.open(out))
    assert after.shape == before.shape
    changed = np.any(after != before, axis=-1)
    crop, mesh = expected_face(before)
    top, left, extent = crop.region
    square = np.zeros_like(changed)
    square[max(top, 0):top + extent, max(left, 0):left + extent] = True
    assert changed.sum() > 1000 and not changed[~square].any()            # outside the face: bit-identical
    outline = face_outline(mesh)                                           # ... and outside its grown outline
    centre = outline.mean(0)
    canvas = Image.new("L", before.shape[1::-1], 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in centre + (outline - centre) * (1 + OUTLINE_GROW) * 1.05 - 0.5],
                                   fill=1)
    assert not changed[~np.asarray(canvas, bool)].any()


def test_a_face_without_a_mesh_is_not_edited(rig_engines, tmp_path, capsys):
    from exprengine.faces.detect import Box
    from exprengine.faces.editor import FaceEditor

    class NoMesh:
        def meshes(self, image, boxes):
            return []

    class OneBox:
        def detect(self, image, scale=1.0):
            return [Box(10, 10, 90, 90, 1.0)]

    engine = Engine.load(rig_engines["torch"])
    photo = astronaut()
    result = FaceEditor(engine, OneBox(), mesher=NoMesh()).edit(photo, "happiness")
    assert result.unmeshed == [0] and result.edited == [] and np.array_equal(result.image, photo)


def test_cli_morph_and_crop_edit_with_the_rig(rig_engines, face_crop, tmp_path, capsys):
    crop, _ = face_crop
    Image.fromarray(crop).save(tmp_path / "face.png")
    code, stdout, err = run_cli(["morph", tmp_path / "face.png", "--engine", rig_engines["onnxruntime"], "--to",
                                 "happiness@1.5", "--frames", "3", "--out", tmp_path / "m.gif"], capsys)
    assert code == 0, err
    assert (tmp_path / "m.gif").is_file() and (tmp_path / "m_sheet.png").is_file()
    code, _, err = run_cli(["edit", tmp_path / "face.png", "--crop", "--engine", rig_engines["onnxruntime"],
                            "--preset", "sadness", "--out", tmp_path / "sad.png"], capsys)
    assert code == 0, err
    assert np.abs(np.asarray(Image.open(tmp_path / "sad.png")).astype(int) - crop).max() > 30
    Image.new("RGB", (SIZE, SIZE), (120, 130, 140)).save(tmp_path / "blank.png")
    code, _, err = run_cli(["edit", tmp_path / "blank.png", "--crop", "--engine", rig_engines["onnxruntime"],
                            "--preset", "sadness", "--out", tmp_path / "x.png"], capsys)
    assert_one_line_error(code, err)
    assert "no face mesh" in err and not (tmp_path / "x.png").exists()


def test_stream_passes_each_tracked_face_mesh_through_one_hook(rig_engines):
    from exprengine.demo import moving_face_frames
    from exprengine.faces.detect import FaceDetector
    from exprengine.video.stream import StreamEditor
    seen = []

    class Recording(StreamEditor):
        def smooth_landmarks(self, tracks, meshes, t):
            seen.append((list(map(id, tracks)), [m is not None for m in meshes], t))
            return super().smooth_landmarks(tracks, meshes, t)

    frames = list(moving_face_frames(3, 300, 400, side=280, top=10, x0=10, x1=40))
    engine = Engine.load(rig_engines["onnxruntime"])
    with Recording(engine, "happiness@1.5", FaceDetector(), detect_async=False, detect_scale=1.0) as editor:
        out = list(editor.process(frames))
    assert len(seen) == 3 and all(ok == [True] for _, ok, _ in seen)
    assert len({tuple(ids) for ids, _, _ in seen}) == 1                  # one track, the same object each frame
    assert [t for _, _, t in seen] == pytest.approx([0, 1 / 30, 2 / 30])
    for before, after in zip(frames, out):
        changed = np.any(before != after, axis=-1)
        assert changed.sum() > 300 and not changed[:, :10].any() and not changed[295:].any()


def test_cli_video_with_the_rig(rig_engines, tmp_path, capsys):
    from exprengine.demo import moving_face_frames
    from exprengine.video.io import VideoReader, VideoWriter, probe_video
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, 400, 300, "10/1") as w:
        for frame in moving_face_frames(4, 300, 400, side=280, top=10, x0=10, x1=40):
            w.write(frame)
    out = tmp_path / "out.mp4"
    code, stdout, err = run_cli(["video", clip, "--engine", rig_engines["onnxruntime"], "--preset", "surprise@1.5",
                                 "--out", out, "--detect-scale", "1", "--reproducible"], capsys)
    assert code == 0, err
    assert probe_video(out).frames == 4
    with VideoReader(clip) as a, VideoReader(out) as b:
        diffs = [np.abs(x.astype(int) - y).mean() for x, y in zip(a, b)]
    assert len(diffs) == 4 and min(diffs) > 0.2
