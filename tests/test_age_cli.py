"""`exprengine age` and aging through the faces pipeline: the reference's alignment (FFHQ-style
square from landmarks), whole photos aged in one engine call and pasted back (metadata kept,
pixels outside the faces unchanged), age then expression, traversals written as animations,
video frames aged, and every bad input refused in one line with nothing written.

The age engine is a lats-small ONNX Runtime engine with random weights (built once here): its
faces do not look aged, so the tests check shapes, places, counts and calls, not looks."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from PIL import ExifTags, Image
from test_cli import assert_one_line_error, run_cli
from test_faces import astronaut

from exprengine.errors import UserError

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


@pytest.fixture(scope="module")
def age_engine_dir(tmp_path_factory):
    from exprengine.engines.build import build_engine
    from exprengine.models import create_model
    out = tmp_path_factory.mktemp("age") / "lats-small"
    build_engine(create_model("lats-small", seed=0), out, "onnxruntime", weights_source="test random seed=0",
                 max_batch=16, opt_batch=4)
    return out


@pytest.fixture(scope="module")
def age_engine(age_engine_dir):
    from exprengine.engine import Engine
    return Engine.load(age_engine_dir)


@pytest.fixture
def astro_jpg(tmp_path):
    """The astronaut photo as a camera JPEG with EXIF."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneCo"
    exif[ExifTags.Base.DateTime] = "2024:05:01 10:20:30"
    p = tmp_path / "astronaut.jpg"
    Image.fromarray(astronaut()).save(p, quality=95, exif=exif.tobytes())
    return p


def two_faces() -> np.ndarray:
    """Two astronauts side by side on one photo (uint8 [512,1024,3])."""
    a = astronaut()
    return np.concatenate([a, a[:, ::-1]], axis=1)


# --- alignment -----------------------------------------------------------------------------------
def dlib_points(angle_deg: float, centre=(300.0, 200.0), eye=40.0, mouth=45.0) -> np.ndarray:
    """68 dlib-style points (pixel indices) of a symmetric face turned by angle_deg: only the eyes
    (36-47), mouth corners (48, 54), jaw and brows matter to the alignment and the mask."""
    p = np.zeros((68, 2))
    p[0:17, 0] = np.linspace(-50, 50, 17)
    p[0:17, 1] = 30 + 40 * np.cos(np.linspace(-math.pi / 2, math.pi / 2, 17))
    p[17:27] = np.stack([np.r_[np.linspace(-40, -10, 5), np.linspace(10, 40, 5)], np.full(10, -15.0)], 1)
    p[36:42] = (-eye / 2, 0.0)
    p[42:48] = (eye / 2, 0.0)
    p[48], p[54] = (-20.0, mouth), (20.0, mouth)
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return p @ rot.T + centre - 0.5                       # dlib's points are pixel centres


@pytest.mark.parametrize("angle", [0.0, 20.0, -35.0])
def test_the_ffhq_square_from_landmarks(angle):
    from exprengine.faces.align import FaceAnchors, aligned_crop, ffhq_quad, quad_side
    anchors = FaceAnchors.from_dlib68(dlib_points(angle))
    assert np.allclose(anchors.eye_left, np.array([300 - 20 * math.cos(math.radians(angle)),
                                                   200 - 20 * math.sin(math.radians(angle))]))
    quad = ffhq_quad(anchors)
    # FFHQ / LATS: side 2 * max(2.0 |eye_to_eye|, 2.2 |eye_to_mouth|) = 2 * max(80, 99); centre 0.1 e2m below the eyes
    assert quad_side(anchors) == pytest.approx(2 * max(2.0 * 40, 2.2 * 45))
    down = np.array([-math.sin(math.radians(angle)), math.cos(math.radians(angle))])
    assert np.allclose(quad.mean(0), (300, 200) + 0.1 * 45 * down)
    crop = aligned_crop(anchors)
    size = 256
    corners = crop.to_crop(quad, size)                    # the square's corners are the crop's corners
    assert np.allclose(corners, [[0, 0], [0, size], [size, size], [size, 0]], atol=1.5)
    eyes = crop.to_crop(np.stack([anchors.eye_left, anchors.eye_right]), size)
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-3           # level eyes, symmetric about the middle
    assert eyes[0, 0] + eyes[1, 0] == pytest.approx(size, abs=1.5)
    with pytest.raises(ValueError):
        FaceAnchors.from_dlib68(np.zeros((5, 2)))


def test_mediapipe_mesh_maps_to_the_same_points(age_engine):
    """On a real face, the mesh's eyes and mouth corners land within 3 px of dlib's 68 points, and
    the two aligned squares agree."""
    from exprengine.faces.age import AgeEditor
    from exprengine.faces.landmarks import MediaPipeDetector
    photo = astronaut()
    found = []
    for editor in (AgeEditor(age_engine), AgeEditor(age_engine, MediaPipeDetector())):
        crops, anchors, sides, kept, _ = editor.locate(photo, editor.detector.detect(photo)[:1])
        assert kept == [0]
        found.append((crops[0], anchors[0], sides[0]))
    (dlib_crop, dlib, dlib_side), (mesh_crop, mesh, mesh_side) = found
    for name in ("eye_left", "eye_right", "mouth_left", "mouth_right"):
        assert np.hypot(*(getattr(dlib, name) - getattr(mesh, name))) < 3.0, name     # of a 43 px eye distance
    assert abs(dlib_side - mesh_side) < 3 and abs(dlib_crop.angle - mesh_crop.angle) < 0.01
    assert np.hypot(dlib_crop.cx - mesh_crop.cx, dlib_crop.cy - mesh_crop.cy) < 2.0
    assert mesh.outline.shape == (36, 2) and dlib.outline.shape == (27, 2)


def test_outside_the_photo_is_reflected_and_faded_to_the_median():
    from exprengine.faces.align import FaceAnchors, aligned_crop, extract_aligned
    columns = np.random.default_rng(0).integers(0, 256, 200).astype(np.uint8)
    image = np.repeat(np.broadcast_to(columns[None, :, None], (240, 200, 1)), 3, axis=2).copy()
    crop = aligned_crop(FaceAnchors.from_dlib68(dlib_points(0.0, centre=(20.0, 100.0))))
    top, left, extent = crop.region
    assert left < -60 and top >= 0 and top + extent <= 240  # the square runs far off the left edge only
    out = extract_aligned(image, crop, crop.side)[100, :, 0].astype(float)   # at full size: column j is left + j
    median = float(np.median(columns[:left + extent]))
    k = np.arange(1, -left + 1)                              # pixels outside the photo's left edge
    fade = np.clip(k / (0.3 * crop.side), 0, 1)
    expected = columns[k] + (median - columns[k]) * fade    # the reflection, fading to the median colour
    assert np.abs(out[-left - k] - expected).max() <= 1
    assert np.abs(out[:-left - 60] - median).max() <= 1 and len(out[:-left - 60]) > 0
    inside = crop.extract(image, crop.side)[100, :, 0]     # inside the photo: exactly `extract`
    assert np.array_equal(out[-left:], inside[-left:]) and not np.array_equal(out, inside)


# --- ages -----------------------------------------------------------------------------------------
def test_ages_in_years_and_classes():
    from exprengine.faces.age import parse_age, traversal_ages
    assert parse_age("60") == 60.0 and parse_age(42.5) == 42.5 and parse_age(0) == 0.0
    assert parse_age("30-39") == 34.5 and parse_age("class 0-2") == 1.0 and parse_age("50-69") == 59.5
    for bad in ("75", -1, "10-14", "abc", None, True, float("nan")):
        with pytest.raises(UserError):
            parse_age(bad)
    with pytest.raises(UserError, match="`start`"):
        traversal_ages(start=80)
    assert traversal_ages() is None                         # the engine's own 101 frames
    life = traversal_ages(frames=11)
    assert len(life) == 11 and life[0] == pytest.approx(1.0) and life[-1] == pytest.approx(59.5)
    assert np.all(np.diff(life) > 0)
    span = traversal_ages(5, 65)            # one frame per 0.05 class position: 5 years is position 1 + 0.5 / 3.5
    assert span[0] == pytest.approx(5.0) and span[-1] == pytest.approx(59.5)
    assert len(span) == round((5 - (1 + 0.5 / 3.5)) / 0.05) + 1 == 78
    assert np.all(np.diff(traversal_ages(60, 3, 4)) < 0)   # backwards in time too


# --- photos ---------------------------------------------------------------------------------------
def test_ages_the_face_keeps_metadata_and_every_other_pixel(astro_jpg, age_engine_dir, tmp_path, capsys):
    from exprengine.engine import Engine
    from exprengine.faces.age import AgeEditor
    before = astro_jpg.read_bytes()
    out = tmp_path / "old.png"
    code, stdout, err = run_cli(["age", astro_jpg, "--to", "60", "--engine", age_engine_dir, "--out", out], capsys)
    assert code == 0, err
    assert stdout.startswith("found 1 face, aged 1 of them to 60 years (#0 ") and "upscaled from" in stdout
    assert len(stdout.strip().splitlines()) == 1
    assert astro_jpg.read_bytes() == before
    src = np.asarray(Image.open(astro_jpg))
    with Image.open(out) as img:
        result = np.asarray(img)
        assert img.getexif().get(ExifTags.Base.Make) == "PhoneCo"
    assert result.shape == src.shape
    changed = np.any(result != src, axis=2)
    assert changed.sum() > 1000
    # only inside the face's aligned square, and inside the face's outline grown by the feather
    editor = AgeEditor(Engine.load(age_engine_dir))
    crops, anchors, sides, _, _ = editor.locate(src, editor.detector.detect(src))
    top, left, extent = crops[0].region
    ys, xs = np.nonzero(changed)
    assert ys.min() >= top and ys.max() < top + extent and xs.min() >= left and xs.max() < left + extent
    outline = anchors[0].outline
    centre = outline.mean(0)
    reach = np.hypot(*(outline - centre).T).max() * 1.1
    assert np.hypot(xs - centre[0], ys - centre[1]).max() <= reach


def test_every_face_in_one_engine_call_and_pixels_between_unchanged(age_engine):
    from exprengine.faces.age import AgeEditor
    photo = two_faces()
    encoder, decoder = age_engine.encoder_calls, age_engine.decoder_calls
    result = AgeEditor(age_engine).age(photo, "30-39")
    assert (age_engine.encoder_calls - encoder, age_engine.decoder_calls - decoder) == (1, 1)
    assert len(result.found) == 2 and sorted(result.aged) == [0, 1] and result.age == 34.5
    assert result.upscaled == sorted(result.aged) and all(s < 256 for s in result.sides)
    changed = np.any(result.image != photo, axis=2)
    assert changed[:, :512].sum() > 1000 and changed[:, 512:].sum() > 1000
    assert not changed[:, 440:584].any()                   # the space between the two faces
    gray = photo[:, :, 0].copy()                            # grayscale photos stay grayscale
    assert AgeEditor(age_engine).age(gray, 60).image.shape == gray.shape


def test_age_then_expression_in_one_command(astro_jpg, age_engine_dir, age_engine, engine_factory, tmp_path, capsys):
    from exprengine.aus import AUs
    from exprengine.engine import Engine
    from exprengine.faces.age import AgeEditor
    from exprengine.faces.editor import FaceEditor
    expression_dir = engine_factory("convnext2", "onnxruntime")
    out, aged_only = tmp_path / "old_happy.png", tmp_path / "old.png"
    code, stdout, err = run_cli(["age", astro_jpg, "--to", "60", "--preset", "happiness@2", "--engine", age_engine_dir,
                                 "--expression-engine", expression_dir, "--out", out], capsys)
    assert code == 0, err
    assert ", then edited 1 to " in stdout and len(stdout.strip().splitlines()) == 1
    # the same as aging, then editing the aged photo's same faces with the expression engine
    src = np.asarray(Image.open(astro_jpg))
    aged = AgeEditor(age_engine).age(src, 60)
    faces = FaceEditor(Engine.load(expression_dir))
    crops, meshes, _ = faces.locate(aged.image, [aged.found[i] for i in aged.aged])
    expected = faces.edit_crops(aged.image, crops, AUs.parse("happiness@2"), meshes)
    assert np.array_equal(np.asarray(Image.open(out)), expected)
    code, _, err = run_cli(["age", astro_jpg, "--to", "60", "--engine", age_engine_dir, "--out", aged_only], capsys)
    assert code == 0 and not np.array_equal(np.asarray(Image.open(aged_only)), expected)


def test_a_crop_is_aged_whole(age_engine_dir, tmp_path, capsys):
    face = tmp_path / "face.png"
    Image.fromarray(astronaut()[20:220, 120:320]).save(face)
    out = tmp_path / "old.png"
    code, stdout, err = run_cli(["age", face, "--crop", "--to", "3-6", "--engine", age_engine_dir, "--out", out], capsys)
    assert code == 0, err
    assert stdout.strip() == f"wrote {out} (4.5 years)"
    assert np.asarray(Image.open(out)).shape == (256, 256, 3)


# --- traversals -----------------------------------------------------------------------------------
def test_traversal_frames_in_one_call(astro_jpg, age_engine_dir, age_engine, tmp_path, capsys):
    gif, sheet, frames = tmp_path / "life.gif", tmp_path / "sheet.png", tmp_path / "frames"
    code, stdout, err = run_cli(["age", astro_jpg, "--traverse", "--from", "5", "--to", "65", "--frames", "5",
                                 "--engine", age_engine_dir, "--out", gif, "--sheet", sheet], capsys)
    assert code == 0, err
    assert stdout.strip() == f"wrote {gif} (5 frames, 5 to 59.5 years) and {sheet}"
    with Image.open(gif) as g:
        assert g.n_frames == 5 and g.size == (256, 256)
    assert sheet.is_file()
    # the reference's traversal by default: 101 frames, one encoder and one decoder call (max batch 16 splits it)
    from exprengine.faces.age import AgeEditor
    encoder, decoder = age_engine.encoder_calls, age_engine.decoder_calls
    rendered, info = AgeEditor(age_engine).traverse(np.asarray(Image.open(astro_jpg)))
    assert rendered.shape == (101, 256, 256, 3) and info.aged == [0]
    assert age_engine.encoder_calls - encoder == 1 and age_engine.decoder_calls - decoder == math.ceil(101 / 16)
    code, stdout, err = run_cli(["age", astro_jpg, "--traverse", "--frames", "3", "--engine", age_engine_dir,
                                 "--out", frames], capsys)
    assert code == 0, err
    assert sorted(p.suffix for p in frames.iterdir()) == [".png"] * 3


# --- video ----------------------------------------------------------------------------------------
def test_video_frames_are_aged_and_the_rest_kept(age_engine, age_engine_dir, tmp_path, capsys):
    from exprengine.demo import moving_face_frames
    from exprengine.video.io import VideoWriter, probe_video
    from exprengine.video.stream import StreamEditor
    frames = list(moving_face_frames(3, 300, 400, side=280, top=10, x0=10, x1=30))
    calls = age_engine.decoder_calls
    with StreamEditor(None, None, detect_async=False, detect_scale=1.0, age_engine=age_engine, age=60) as editor:
        out = [editor.edit_frame(f.copy()) for f in frames]
    assert age_engine.decoder_calls - calls == 3           # one call per frame
    for f, o in zip(frames, out):
        changed = np.any(f != o, axis=2)
        ys, xs = np.nonzero(changed)
        assert changed.sum() > 500 and ys.max() < 200 and xs.min() > 30 and xs.max() < 300
    assert "age_ms_median" in editor.stats.summary()
    assert (editor.stats.aged, editor.stats.upscaled, editor.stats.too_small) == (3, 3, 0)
    clip, video = tmp_path / "clip.mp4", tmp_path / "old.mp4"
    with VideoWriter(clip, 400, 300, "10/1") as w:
        for f in frames:
            w.write(f)
    code, stdout, err = run_cli(["video", clip, "--age", "60", "--engine-age", age_engine_dir, "--detect-scale", "1",
                                 "--reproducible", "--out", video], capsys)
    assert code == 0, err
    assert stdout.startswith(f"wrote {video}: 3 frames at 10 fps, 400x300")
    assert stdout.strip().endswith("; 3 faces aged over all frames (3 upscaled to the age engine's size, "
                                   "0 too small to age)")
    assert probe_video(video).frames == 3


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, says", [
    (["--to", "75"], "--to must be between 0 and 70 years"),
    (["--to", "10-14"], "is not an age class"),
    (["--to", "old"], "--to must be years"),
    (["--traverse", "--from", "-3"], "--from must be between 0 and 70 years"),
    (["--from", "5", "--to", "60"], "--from, --frames and --sheet are for --traverse"),
    ([], "say which age"),
])
def test_bad_ages_are_refused_before_any_work(astro_jpg, age_engine_dir, tmp_path, capsys, args, says):
    out = tmp_path / "out.png"
    code, _, err = run_cli(["age", astro_jpg, *args, "--engine", age_engine_dir, "--out", out], capsys)
    assert_one_line_error(code, err)
    assert says in err and not out.exists()


def test_no_age_model_wrong_engines_and_small_faces_are_refused(astro_jpg, age_engine_dir, engine_factory,
                                                                tmp_path, capsys, monkeypatch):
    import exprengine.models.pretrained as pretrained
    monkeypatch.setattr(pretrained, "has_default_age_model", lambda: False)     # an install without one
    out = tmp_path / "out.png"
    code, _, err = run_cli(["age", astro_jpg, "--to", "60", "--out", out], capsys)
    assert_one_line_error(code, err)
    assert "no age model is installed" in err and "--engine" in err and not out.exists()
    expression_dir = engine_factory("convnext2", "onnxruntime")
    code, _, err = run_cli(["age", astro_jpg, "--to", "60", "--engine", expression_dir, "--out", out], capsys)
    assert_one_line_error(code, err)
    assert "--engine (convnext2) edits expressions, not ages" in err and not out.exists()
    code, _, err = run_cli(["age", astro_jpg, "--to", "60", "--preset", "happiness", "--engine", age_engine_dir,
                            "--expression-engine", age_engine_dir, "--out", out], capsys)
    assert_one_line_error(code, err)
    assert "--expression-engine ages faces" in err and not out.exists()
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read")
    code, _, err = run_cli(["video", clip, "--age", "60", "--out", tmp_path / "v.mp4"], capsys)
    assert_one_line_error(code, err)
    assert "--engine-age" in err and not (tmp_path / "v.mp4").exists()
    code, _, err = run_cli(["video", clip, "--age", "60", "--engine-age", expression_dir, "--out", tmp_path / "v.mp4"],
                           capsys)
    assert_one_line_error(code, err)
    assert "--engine-age (convnext2) edits expressions" in err
    import exprengine.faces.age as age_module
    monkeypatch.setattr(age_module, "MIN_QUAD_SIDE", 200)   # the astronaut's square is 174 px
    code, _, err = run_cli(["age", astro_jpg, "--to", "60", "--engine", age_engine_dir, "--out", out], capsys)
    assert_one_line_error(code, err)
    assert "face #0 (90x90 at (175,76)) is too small to age: its aligned square is 174 px, under 200 px" in err
    assert "--face" in err and not out.exists()


def test_a_generator_file_of_another_layout_is_refused(tmp_path, capsys):
    import torch

    from helpers import perturbed_generator
    bad = tmp_path / "30_net_gen.pth"
    torch.save(perturbed_generator("ganimation").state_dict(), bad)
    out = tmp_path / "engines" / "age"
    code, _, err = run_cli(["build", "--model", "lats-small", "--checkpoint", bad, "--out", out], capsys)
    assert_one_line_error(code, err)
    assert "is not a LATS generator checkpoint" in err and not out.exists()
