"""The GPU benchmark: build, check and time every GPU backend in one run (one device call).

    python bench/gpu.py --out results/          # all models, all backends
    python bench/gpu.py --backends eager,torch --models convnext6 --out /tmp/r

For `ganimation` and `convnext6` at 128x128, on fresh random inputs:
  * correctness of each engine against eager FP32 (relative error of the float output and
    attention, FP16 under 1e-2), and of its uint8 output against the FP32 reference (max LSB);
  * single-frame latency, uint8 in -> uint8 out, host to host;
  * a 32-frame morph (one face, 32 AU vectors) as one engine call, against the eager FP32
    per-frame loop (how the reference GANimation code renders a morph) and eager batched;
  * throughput at the best batch;
  * the floor: FLOPs per frame (counted) over the FP16 matrix rate measured in the same run.
With `--models lats` (or lats-small; issue 16 part 9), the age engines instead: the 101-frame
traversal of one face at 256x256 as one call (`Engine.traverse`: one encoder call, one decoder call,
max_batch 128) on the torch backend's CUDA pipeline in FP16 and FP32, against eager PyTorch doing the
same (encode once, decode the batch, uint8 to the host) and against the floor (FLOPs / the matmul
rate of the precision, both measured here); target 25 ms on the H200.
Times are medians of wall-clock calls that end in a synchronisation, after warm-up.
Results go to OUT/gpu-results.json and OUT/gpu-results.md; a table is printed last.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from exprengine.aus import AUs, NUM_AUS  # noqa: E402
from exprengine.engine import Engine  # noqa: E402
from exprengine.engines.build import build_engine, relative_error  # noqa: E402
from exprengine.export.inputs import random_network_inputs
from exprengine.pixels import blend, to_uint8_nhwc  # noqa: E402
from exprengine.models.precision import PRECISIONS, torch_dtype  # noqa: E402
from exprengine.morph import au_trajectory  # noqa: E402
from exprengine.pixels import to_network_input  # noqa: E402

MORPH_FRAMES = 32
THROUGHPUT_BATCHES = (32, 64, 128, 256)
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def median_ms(fn, repeats: int = 30, warmup: int = 3, min_time: float = 0.0) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
        if len(times) > 2000:
            break
    return statistics.median(times)


# --- the machine's ceilings ------------------------------------------------------------------------
def matmul_tflops(dtype: torch.dtype, n: int = 8192) -> float:
    """TFLOP/s of an n^3 torch.matmul in `dtype` (FP32 runs without TF32: main turns it off)."""
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    ms = median_ms(lambda: a @ b, repeats=20)
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


def fp16_matmul_tflops(n: int = 8192) -> float:
    return matmul_tflops(torch.float16, n)


def copy_bandwidth_tbs(nbytes: int = 2 << 30) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_(0, 256)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), repeats=20)
    return 2 * nbytes / (ms * 1e-3) / 1e12


def gflop_per_frame(generator) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    x, a = random_network_inputs(1, 128)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        generator(torch.from_numpy(x), torch.from_numpy(a))
    return counter.get_total_flops() / 1e9


# --- plain PyTorch baselines (no fused kernels, no graphs) -----------------------------------------
class EagerBaseline:
    """The reference code's way: NumPy pre-processing, the module, blend, uint8 on the host;
    `precision` "fp32" or "fp16" (channels-last)."""

    def __init__(self, generator, precision: str):
        self.dtype = dtype = torch_dtype(precision)
        fmt = torch.channels_last if precision == "fp16" else torch.contiguous_format
        self.module = __import__("copy").deepcopy(generator).cuda().to(dtype=dtype, memory_format=fmt)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray, intensities: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(to_network_input(frames)).cuda().to(self.dtype)
        if x.shape[0] == 1 and intensities.shape[0] > 1:
            x = x.expand(intensities.shape[0], -1, -1, -1)
        a = torch.from_numpy(intensities / 5.0).cuda().to(self.dtype)
        c, att = self.module(x, a)
        out = blend(x.float(), c.float(), att.float())
        return to_uint8_nhwc(out.cpu().numpy())


# --- engines -------------------------------------------------------------------------------------
def make_engines(name: str, generator, backends: list[str], workdir: Path, max_batch: int, deadline: float):
    """Yield (label, engine-or-None, build seconds, note) for each requested GPU backend."""
    from exprengine.engines.backends.torch_backend import TorchBackend
    manifest = Engine.from_generator(generator, max_batch=max_batch).manifest
    if "torch" in backends:
        for precision in PRECISIONS:
            yield f"torch-{precision}+graph", Engine(TorchBackend(generator, "cuda", precision, max_batch),
                                                     manifest), 0.0, "eager modules in CudaPipeline"
    specs = []
    if "aoti" in backends:
        specs.append(("aoti", "fp16", "aoti-fp16+graph"))
    if "compile" in backends:
        specs.append(("torch-compile", "fp16", "compile-max-autotune-fp16"))
    if "tensorrt" in backends:
        specs.append(("tensorrt", "fp16", "tensorrt-fp16"))
    for backend, precision, label in specs:
        out = workdir / f"{name}-{backend}-{precision}"
        t = time.time()
        if t - T0 > deadline:
            yield label, None, 0.0, "skipped: time budget of this device call"
            continue
        try:
            # torch-compile compiles per batch size (minutes each): check_engine verifies it instead
            build_engine(generator, out, backend, weights_source="bench random-init", precision=precision,
                         device="cuda", max_batch=max_batch, opt_batch=MORPH_FRAMES,
                         verify=backend != "torch-compile")
            log(f"{name} {label}: built in {time.time() - t:.0f}s, loading")
            engine = Engine.load(out, device="cuda")
            yield label, engine, time.time() - t, ""
        except Exception as e:  # record and go on: one backend failing must not lose the others
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            log(f"{label} unavailable: {msg}")
            yield label, None, time.time() - t, msg


def check_engine(engine: Engine, generator, face: np.ndarray, reference: EagerBaseline) -> dict:
    """The engine against eager FP32 on a 32-row batch: relative errors of its network-space output
    and attention (`Engine.run_network`), and its uint8 frames' LSB difference from `reference`."""
    image, aus = random_network_inputs(MORPH_FRAMES, 128)      # the morph's batch: no extra compile
    with torch.inference_mode():
        x, a = torch.from_numpy(image), torch.from_numpy(aus)
        g = generator.cuda()
        c, att = g(x.cuda(), a.cuda())
        ref_out = blend(x.cuda(), c, att).cpu().numpy()
        ref_att = att.cpu().numpy()
        generator.cpu()
    out, got_att = engine.run_network(image, aus)
    rng = np.random.default_rng()
    intensities = rng.uniform(0, 3, (MORPH_FRAMES, NUM_AUS)).astype(np.float32)
    got = engine.run_frames(face[None], intensities, want_attention=False)[0]
    want = reference(face[None], intensities)
    return {"rel_error_output": relative_error(out, ref_out), "rel_error_attention": relative_error(got_att, ref_att),
            "uint8_max_lsb_vs_fp32": int(np.abs(got.astype(int) - want.astype(int)).max()),
            "uint8_mean_lsb_vs_fp32": float(np.abs(got.astype(int) - want.astype(int)).mean())}


def time_engine(engine: Engine, face: np.ndarray, trajectory: np.ndarray, batches) -> dict:
    """Median milliseconds of pixel-space calls (`Engine.run_frames`): one frame, the 32-frame
    morph (as one call and through `Engine.morph`), and frames/s at each of `batches`."""
    if "compile" in engine.manifest.backend:
        batches = batches[:1]           # each batch size is another max-autotune compile
    r = {}
    one = trajectory[:1]
    r["single_frame_ms"] = median_ms(lambda: engine.run_frames(face[None], one, want_attention=False), repeats=200)
    r["morph32_ms"] = median_ms(lambda: engine.run_frames(face[None], trajectory, want_attention=False), repeats=50)
    r["morph32_api_ms"] = median_ms(lambda: engine.morph(face, "natural", "happiness@2", frames=MORPH_FRAMES),
                                    repeats=20)
    best = None
    rng = np.random.default_rng(0)
    for b in batches:
        if b > engine.max_batch:
            continue
        faces = rng.integers(0, 256, (b, 128, 128, 3), dtype=np.uint8)
        rows = rng.uniform(0, 3, (b, NUM_AUS)).astype(np.float32)
        ms = median_ms(lambda: engine.run_frames(faces, rows, want_attention=False), repeats=10)
        fps = b / (ms * 1e-3)
        r[f"throughput_b{b}_fps"] = fps
        if best is None or fps > best[1]:
            best = (b, fps)
    r["best_batch"], r["best_fps"] = best
    return r


# --- LATS age engines (issue 16 part 9) ------------------------------------------------------------
LATS_FRAMES = 101               # the reference's traversal (class step 0.05)
LATS_TARGET_MS = 25.0


def lats_traversal(name: str, face: np.ndarray, workdir: Path, fp16_tflops: float) -> dict:
    """The 101-frame traversal of `face` by `name` ("lats", "lats-small"; random-init weights, seed 0)
    at 256x256: eager PyTorch FP32 / FP16 (encode once, decode the batch, uint8 on the host) and the
    torch backend's CUDA engine FP32 / FP16 (`Engine.traverse`, one encoder and one decoder call),
    each engine checked against eager FP32 (max LSB) and timed; the floor of a call is its FLOPs
    (counted) over the matmul rate of its precision, measured here. Milliseconds throughout."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    from exprengine.models import create_model
    from exprengine.models.lats import traversal_positions
    from exprengine.preprocess import stack_faces
    generator = create_model(name, seed=0).eval()
    x = torch.from_numpy(to_network_input(stack_faces(face, generator.config.image_size)))
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            features = generator.encode(x)
        encoder = counter.get_total_flops() / 1e9
        styles = generator.style_at(traversal_positions(0.05).tolist())       # [101, D], as the engine's
        with FlopCounterMode(display=False) as counter:
            generator.decode(features, styles[:1])
        decoder = counter.get_total_flops() / 1e9
    r = {"frames": LATS_FRAMES, "target_ms": LATS_TARGET_MS, "gflop_encoder": encoder,
         "gflop_decoder_per_frame": decoder, "gflop_per_call": encoder + LATS_FRAMES * decoder,
         "fp32_matmul_tflops": matmul_tflops(torch.float32), "engines": {}}
    rates = {"fp16": fp16_tflops, "fp32": r["fp32_matmul_tflops"]}

    def eager_call(module, dtype):
        @torch.inference_mode()
        def run():
            out = module.decode(module.encode(x.cuda().to(dtype)), styles.cuda().to(dtype))
            return to_uint8_nhwc(out.float().cpu().numpy())
        return run

    reference = None
    for precision in ("fp32", "fp16"):
        dtype = torch_dtype(precision)
        eager = eager_call(copy.deepcopy(generator).cuda().to(dtype), dtype)
        frames = eager()
        reference = frames if reference is None else reference
        r[f"eager_{precision}_ms"] = median_ms(eager, repeats=10)
        eager = None
        label = f"torch-{precision}+graph"
        e = r["engines"][label] = {"floor_ms": r["gflop_per_call"] / rates[precision]}  # GFLOP / (TFLOP/s) = ms
        try:
            out = workdir / f"{name}-torch-{precision}"
            build_engine(generator, out, "torch", weights_source="bench random-init seed=0", precision=precision,
                         device="cuda", max_batch=128, opt_batch=LATS_FRAMES)
            engine = Engine.load(out, device="cuda")
            frames = engine.traverse(face)
            e["calls_per_traverse"] = [engine.encoder_calls, engine.decoder_calls]     # [1, 1]
            e["max_lsb_vs_eager_fp32"] = int(np.abs(frames.astype(int) - reference).max())
            e["ms"] = median_ms(lambda: engine.traverse(face), repeats=30)
            e["x_floor"] = e["ms"] / e["floor_ms"]
            e["target_met"] = e["ms"] <= LATS_TARGET_MS
            engine = None
        except Exception as ex:            # record and go on, as for the expression engines
            e["error"] = f"{type(ex).__name__}: {str(ex)[:300]}"
            traceback.print_exc()
        log(name, label, e)
        torch.cuda.empty_cache()
    return r


def lats_markdown(name: str, r: dict) -> list[str]:
    lines = [f"**{name}**, the 101-frame traversal at 256x256: {r['gflop_per_call']:.0f} GFLOP per call "
             f"(encoder {r['gflop_encoder']:.1f}, decoder {r['gflop_decoder_per_frame']:.1f} per frame); eager "
             f"one call FP32 {r['eager_fp32_ms']:.2f} ms, FP16 {r['eager_fp16_ms']:.2f} ms; FP32 matmul (no TF32) "
             f"{r['fp32_matmul_tflops']:.0f} TFLOP/s.", "",
             "| engine | one call ms | vs eager FP32 | vs eager FP16 | floor ms | x floor | max LSB vs eager FP32 "
             "| target <= 25 ms | note |", "|---|---|---|---|---|---|---|---|---|"]
    for label, e in r["engines"].items():
        if "ms" not in e:
            lines.append(f"| {label} | - | - | - | {e['floor_ms']:.2f} | - | - | - | {e.get('error', '')} |")
            continue
        lines.append(f"| {label} | {e['ms']:.2f} | {r['eager_fp32_ms'] / e['ms']:.1f}x | "
                     f"{r['eager_fp16_ms'] / e['ms']:.1f}x | {e['floor_ms']:.2f} | {e['x_floor']:.1f} | "
                     f"{e['max_lsb_vs_eager_fp32']} | {'met' if e['target_met'] else 'missed'} | "
                     f"calls {e['calls_per_traverse']} |")
    return lines + [""]


def profile_morph(engine: Engine, face: np.ndarray, trajectory: np.ndarray, top: int = 12) -> list[dict]:
    """The CUDA kernels of one 32-frame morph, by total device time (CUDA graphs are profiled uncaptured)."""
    from torch.profiler import ProfilerActivity, profile
    pipeline = getattr(engine.backend, "pipeline", None)
    graphs = pipeline.graphs_enabled if pipeline is not None else False
    if pipeline is not None:
        pipeline.graphs_enabled = False
    engine.run_frames(face[None], trajectory, want_attention=False)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        engine.run_frames(face[None], trajectory, want_attention=False)
        torch.cuda.synchronize()
    if pipeline is not None:
        pipeline.graphs_enabled = graphs
    rows = []
    events = [e for e in prof.key_averages() if getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0)) > 0]
    total = sum(getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0)) for e in events)
    events.sort(key=lambda e: -getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0)))
    for e in events[:top]:
        t = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0))
        rows.append({"kernel": e.key[:90], "calls": e.count, "us": round(t, 1), "share": round(t / total, 3)})
    print("profile:", json.dumps(rows, indent=0)[:3000])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--models", default="ganimation,convnext6")
    ap.add_argument("--backends", default="eager,torch,aoti,compile,tensorrt")
    ap.add_argument("--deadline", type=float, default=560.0, help="seconds; later cases are skipped")
    ap.add_argument("--tag", default="gpu")
    ap.add_argument("--profile", action="store_true", help="profile one morph per engine (top CUDA kernels)")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    backends = args.backends.split(",")
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False        # the FP32 reference is FP32, not TF32
    torch.backends.cuda.matmul.allow_tf32 = False
    props = torch.cuda.get_device_properties(0)
    results = {"device": torch.cuda.get_device_name(), "capability": "%d.%d" % torch.cuda.get_device_capability(),
               "sms": props.multi_processor_count, "torch": torch.__version__, "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d"), "cuda": torch.version.cuda, "models": {}}
    try:
        from exprengine.kernels.cuda import nvrtc_version
        results["nvrtc"] = nvrtc_version()
    except Exception as e:
        results["nvrtc"] = f"unavailable: {e}"
    save = lambda: (out_dir / f"{args.tag}-results.json").write_text(json.dumps(results, indent=2))  # noqa: E731
    log("device", results["device"], "torch", results["torch"])
    results["fp16_matmul_tflops"] = fp16_matmul_tflops()
    results["copy_tbs"] = copy_bandwidth_tbs()
    log(f"FP16 matmul {results['fp16_matmul_tflops']:.0f} TFLOP/s, copy {results['copy_tbs']:.2f} TB/s")
    save()
    from exprengine.media import bundled_face
    face = bundled_face()
    traj = au_trajectory(np.zeros(NUM_AUS, np.float32), AUs.parse("happiness@2").values, MORPH_FRAMES)
    workdir = Path(tempfile.mkdtemp(prefix="exprengine-gpu-"))
    for name in args.models.split(","):
        from exprengine.models.lats import LATS_CONFIGS
        if name in LATS_CONFIGS:
            results.setdefault("lats", {})[name] = lats_traversal(name, face, workdir, results["fp16_matmul_tflops"])
            save()
            continue
        from helpers import perturbed_generator
        generator = perturbed_generator(name)
        m = results["models"][name] = {"gflop_per_frame": gflop_per_frame(generator), "engines": {}}
        floor_ms = lambda frames: frames * m["gflop_per_frame"] / results["fp16_matmul_tflops"]  # noqa: E731 (GFLOP/TFLOP/s = ms)
        m["floor_ms_single"], m["floor_ms_morph32"] = floor_ms(1), floor_ms(MORPH_FRAMES)
        ref32 = EagerBaseline(generator, "fp32")
        # eager baselines, measured in this run
        loop = lambda: [ref32(face[None], traj[i:i + 1]) for i in range(MORPH_FRAMES)]  # noqa: E731
        m["eager_fp32_loop_morph32_ms"] = median_ms(loop, repeats=5)
        m["eager_fp32_batched_morph32_ms"] = median_ms(lambda: ref32(face[None], traj), repeats=10)
        m["eager_fp32_single_ms"] = median_ms(lambda: ref32(face[None], traj[:1]), repeats=50)
        ref16 = EagerBaseline(generator, "fp16")
        m["eager_fp16_batched_morph32_ms"] = median_ms(lambda: ref16(face[None], traj), repeats=10)
        m["eager_fp16_single_ms"] = median_ms(lambda: ref16(face[None], traj[:1]), repeats=50)
        log(name, {k: round(v, 3) for k, v in m.items() if isinstance(v, float)})
        save()
        for label, engine, build_s, note in make_engines(name, generator, backends, workdir, 256, args.deadline):
            e = m["engines"][label] = {"build_s": build_s, "note": note}
            if engine is None:
                save()
                continue
            if time.time() - T0 > args.deadline:
                e["note"] = "skipped: time budget of this device call"
                continue
            try:
                log(f"{name} {label}: checking")
                e.update(check_engine(engine, generator, face, ref32))
                log(f"{name} {label}: timing")
                e.update(time_engine(engine, face, traj, THROUGHPUT_BATCHES))
                pipeline = getattr(engine.backend, "pipeline", None)
                if pipeline is not None and pipeline.graph_failure:
                    e["note"] += f" (CUDA graph capture failed: {pipeline.graph_failure[:200]})"
                if args.profile:
                    e["profile_morph32_top_kernels"] = profile_morph(engine, face, traj)
            except Exception as ex:
                e["error"] = f"{type(ex).__name__}: {str(ex)[:300]}"
                traceback.print_exc()
            log(name, label, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in e.items()})
            save()
            del engine
            torch.cuda.empty_cache()
    save()
    table = markdown(results)
    (out_dir / f"{args.tag}-results.md").write_text(table)
    print(table)
    return 0


def markdown(r: dict) -> str:
    lines = [f"Device: {r['device']} (compute capability {r['capability']}, {r['sms']} SMs), torch {r['torch']}, "
             f"CUDA {r['cuda']}, NVRTC {r.get('nvrtc')}, {r['date']}. Measured in this run: FP16 matmul "
             f"{r['fp16_matmul_tflops']:.0f} TFLOP/s, device copy {r['copy_tbs']:.2f} TB/s.", ""]
    for name, m in r["models"].items():
        m["floor_ms_single"] = m["gflop_per_frame"] / r["fp16_matmul_tflops"]          # GFLOP / (TFLOP/s) = ms
        m["floor_ms_morph32"] = MORPH_FRAMES * m["floor_ms_single"]
        lines += [f"**{name}**: {m['gflop_per_frame']:.2f} GFLOP/frame; compute floor {m['floor_ms_single'] * 1e3:.0f} us/frame, "
                  f"{m['floor_ms_morph32']:.3f} ms per 32-frame morph. Eager FP32: per-frame loop morph "
                  f"{m['eager_fp32_loop_morph32_ms']:.2f} ms, batched morph {m['eager_fp32_batched_morph32_ms']:.2f} ms, "
                  f"single frame {m['eager_fp32_single_ms']:.3f} ms. Eager FP16 batched morph "
                  f"{m['eager_fp16_batched_morph32_ms']:.2f} ms, single {m['eager_fp16_single_ms']:.3f} ms.", "",
                  "| engine | rel. err vs FP32 | max LSB | single frame ms | morph 32 ms | vs FP32 loop | vs FP32 batched "
                  "| x floor | best batch | frames/s | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, e in m["engines"].items():
            if "morph32_ms" not in e:
                lines.append(f"| {label} | - | - | - | - | - | - | - | - | - | {e.get('error') or e.get('note')} |")
                continue
            err = max(e["rel_error_output"], e["rel_error_attention"])
            lines.append(f"| {label} | {err:.1e} | {e['uint8_max_lsb_vs_fp32']} | {e['single_frame_ms']:.3f} | "
                         f"{e['morph32_ms']:.3f} | {m['eager_fp32_loop_morph32_ms'] / e['morph32_ms']:.1f}x | "
                         f"{m['eager_fp32_batched_morph32_ms'] / e['morph32_ms']:.1f}x | "
                         f"{e['morph32_ms'] / m['floor_ms_morph32']:.1f} | {e['best_batch']} | {e['best_fps']:.0f} | "
                         f"{e.get('note', '')} |")
        lines.append("")
    for name, m in r.get("lats", {}).items():
        lines += lats_markdown(name, m)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
