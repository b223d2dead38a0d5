"""Where the time of the video pipeline goes, stage by stage, on one clip (prints a table).

    python bench/video_profile.py --device cuda --frames 240       # 1920x1080
    python bench/video_profile.py --device cpu --frames 60         # 640x480

Times decode alone, encode alone (two x264 presets), the editing pipeline on frames already
in memory (no decode, no encode), and the whole file-to-file pipeline (`edit_video`, what the
`video` command calls: the check of the input's frames included), in one process.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--detect-scale", type=float, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ["EXPRENGINE_BENCH_DEVICE"] = args.device
    sys.path.append(str(Path(__file__).parent))
    import test_video_bench as vb
    from exprengine.engine import Engine
    from exprengine.engines.build import build_engine
    from exprengine.faces.detect import FaceDetector
    from exprengine.models.pretrained import load_default_generator
    from exprengine.video.edit import edit_video
    from exprengine.video.io import VideoReader, VideoWriter, probe_video
    from exprengine.video.stream import StreamEditor
    h, w = vb.SIZE if args.device == "cuda" else (480, 640)
    scale = args.detect_scale or (0.25 if h >= 1080 else 0.5)
    tmp = Path(tempfile.mkdtemp())
    clip = tmp / "clip.mp4"
    vb.moving_face_clip(clip, args.frames, (h, w))
    rows = {}
    t = time.perf_counter(); probe_video(clip); rows["probe (counts frames)"] = time.perf_counter() - t
    t = time.perf_counter()
    with VideoReader(clip) as r:
        frames = [f for f in r]
    rows["decode"] = time.perf_counter() - t
    for preset in ("veryfast", "ultrafast"):
        t = time.perf_counter()
        with VideoWriter(tmp / f"enc-{preset}.mp4", w, h, "30/1", preset=preset) as wr:
            for f in frames:
                wr.write(f)
        rows[f"encode x264 {preset} (with its check)"] = time.perf_counter() - t
    out = tmp / "engine"
    if args.device == "cuda":
        build_engine(load_default_generator(), out, "torch", weights_source="default", device="cuda", precision="fp16",
                     max_batch=8, opt_batch=1)
    else:
        build_engine(load_default_generator(), out, "onnxruntime", weights_source="default", max_batch=8, opt_batch=1)
    engine = Engine.load(out, device=args.device)
    detector = FaceDetector()
    t = time.perf_counter(); detector.detect(frames[0], scale); rows[f"one detection at scale {scale}"] = time.perf_counter() - t
    summaries = {}
    for name, async_ in (("edit pipeline, frames in memory", True), ("edit pipeline, inline detection", False)):
        with StreamEditor(engine, "happiness@1.5", detector, detect_every=10, detect_scale=scale, detect_async=async_) as ed:
            list(ed.process(frames[:10]))                      # warm up
        with StreamEditor(engine, "happiness@1.5", detector, detect_every=10, detect_scale=scale, detect_async=async_) as ed:
            t = time.perf_counter()
            for _ in ed.process(frames):
                pass
            rows[name] = time.perf_counter() - t
            summaries[name] = ed.stats.summary()
    t = time.perf_counter()
    with VideoReader(clip) as r:
        sum(1 for _ in r.iter_yuv())
    rows["decode to yuv420p"] = time.perf_counter() - t
    for pixels, preset in (("rgb24", "veryfast"), ("rgb24", "ultrafast"), ("yuv420p", "veryfast"),
                           ("yuv420p", "ultrafast")):
        t = time.perf_counter()
        result = edit_video(clip, tmp / "o.mp4", engine, "happiness@1.5", detector, detect_every=10,
                            detect_scale=scale, encoder_preset=preset, pixel_format=pixels, progress=False)
        rows[f"file to file, {pixels}, x264 {preset}"] = time.perf_counter() - t
        summaries[f"file to file, {pixels}, x264 {preset}"] = result.stats.summary()
    print(f"{w}x{h}, {args.frames} frames, {args.device}, {os.cpu_count()} CPUs")
    print("| step | s | ms/frame | frames/s |\n|---|---|---|---|")
    for k, v in rows.items():
        per = v if k.startswith("one detection") else v / args.frames
        print(f"| {k} | {v:.3f} | {1e3 * per:.2f} | {1 / per:.0f} |")
    for k, s in summaries.items():
        print(k, json.dumps(s))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summaries": summaries, "size": [w, h],
                                               "frames": args.frames, "device": args.device}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
