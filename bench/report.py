"""Turn a pytest-benchmark JSON into the bench README table and check the issue's targets.

    python bench/report.py bench/results/cpu-amd-epyc-2core.json [--markdown out.md] [--check]

Ratios are taken within one run (one JSON), never across runs: these machines are noisy.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict


def load(path: str) -> tuple[dict, list[dict]]:
    data = json.loads(open(path).read())
    return data, data["benchmarks"]


def tables(data: dict, benchmarks: list[dict]) -> tuple[str, list[str]]:
    by_kind = defaultdict(list)
    for b in benchmarks:
        by_kind[b["extra_info"].get("kind")].append(b)
    peak = None
    for b in by_kind["matmul"]:
        peak = b["extra_info"]["gflop"] / b["stats"]["median"]
    machine = data.get("machine_info", {})
    lines = [f"Machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
             f"{machine.get('cpu', {}).get('count', '?')} logical CPUs; date {data.get('datetime', '?')[:10]}; "
             f"FP32 matmul rate measured in the same run: {peak:.0f} GFLOP/s" if peak else "", ""]
    if by_kind["latency"]:
        lines += ["| model | batch | backend | median ms/call | ms/frame | speed-up vs eager | GFLOP/s | % of matmul rate |",
                  "|---|---|---|---|---|---|---|---|"]
    failures = []
    lat = defaultdict(dict)
    for b in by_kind["latency"]:
        e = b["extra_info"]
        lat[e["model"], e["batch"]][e["backend"]] = b
    for (model, batch), row in sorted(lat.items()):
        eager = row.get("eager")
        for backend in ("eager", "onnxruntime", "aoti"):
            if backend not in row:
                continue
            b = row[backend]
            med = b["stats"]["median"]
            gflops = b["extra_info"]["gflop_per_frame"] * batch / med
            speed = eager["stats"]["median"] / med if eager else float("nan")
            pct = f"{100 * gflops / peak:.0f} %" if peak else "-"
            lines.append(f"| {model} | {batch} | {backend} | {1e3 * med:.1f} | {1e3 * med / batch:.1f} | "
                         f"{speed:.2f}x | {gflops:.0f} | {pct} |")
            if batch == 16 and backend != "eager" and speed <= 1.0:
                failures.append(f"{model} {backend} at batch 16 is not faster than eager ({speed:.2f}x)")
    morphs = defaultdict(dict)
    for b in by_kind["morph"]:
        e = b["extra_info"]
        morphs[e["backend"], e["frames"]][e["mode"]] = b["stats"]["median"]
    if morphs:
        lines += ["", "| morph (convnext6) | frames | one call, ms | per-frame loop, ms | one call vs loop |",
                  "|---|---|---|---|---|"]
    for (backend, frames), m in sorted(morphs.items()):
        one, loop = m.get("one-call"), m.get("per-frame-loop")
        if one and loop:
            lines.append(f"| {backend} | {frames} | {1e3 * one:.1f} | {1e3 * loop:.1f} | {loop / one:.2f}x |")
            if one >= loop:
                failures.append(f"the one-call morph on {backend} is not faster than the per-frame loop "
                                f"({loop / one:.2f}x)")
    video = defaultdict(dict)
    for b in by_kind["video"]:
        e = b["extra_info"]
        video[e["device"], e["width"], e["height"], e["backend"]][e["stage"]] = b
    if video:
        lines += ["", "| video, one face | engine | generator ms/frame | end-to-end ms/frame | end-to-end frames/s | "
                      "end-to-end vs generator | one frame in, out (ms) | stage medians (ms) |",
                  "|---|---|---|---|---|---|---|---|"]
    for (device, w, h, backend), v in sorted(video.items()):
        rows, missed = video_rows(device, w, h, backend, v)
        lines += rows
        failures += missed
    for b in by_kind["render"]:
        rate = b["extra_info"]["batch"] / b["stats"]["median"]
        lines += ["", f"Synthetic face renderer: {rate:.0f} images/s in one process "
                      f"(batch {b['extra_info']['batch']}, 128x128)."]
    age_lines, age_failures = age_tables(by_kind, peak)
    if age_lines and lines and lines[-1] == "":
        age_lines = age_lines[1:]           # one blank line between the machine line and the first table
    return "\n".join(lines + age_lines), failures + age_failures


def age_tables(by_kind: dict, peak: float | None) -> tuple[list[str], list[str]]:
    """The age benchmarks (`bench/test_age_bench.py`): the traversal as one call against the
    per-frame loop and eager, the identity encoder once against per frame, and the GPU traversal
    against its floor (FLOPs / the matmul rate of its precision, measured in the same run)."""
    lines, failures = [], []
    traverse = defaultdict(dict)
    for b in by_kind["age-traverse"]:
        e = b["extra_info"]
        traverse[e["model"], e["frames"]][e["backend"], e["mode"]] = b
    if traverse:
        lines += ["", "| age traversal | frames | backend | one call, ms | ms/frame | per-frame loop, ms | "
                      "eager, ms | one call vs loop | one call vs eager | GFLOP/s (one call) | % of matmul rate |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (model, frames), row in sorted(traverse.items(), key=lambda kv: (kv[0][0] != "lats-small", kv[0])):
        eager = row.get(("eager", "eager"))
        eager_s = eager["stats"]["median"] if eager else None
        if eager:
            g = eager["extra_info"]["gflop_per_call"] / eager_s
            pct = f"{100 * g / peak:.0f} %" if peak else "-"
            lines.append(f"| {model} | {frames} | eager PyTorch | - | {1e3 * eager_s / frames:.1f} | - | "
                         f"{1e3 * eager_s:.1f} | - | 1.00x | {g:.0f} | {pct} |")
        for backend in sorted({k[0] for k in row} - {"eager"}):
            one, loop = row.get((backend, "one-call")), row.get((backend, "per-frame-loop"))
            if not one:
                continue
            t = one["stats"]["median"]
            lt = loop["stats"]["median"] if loop else None
            g = one["extra_info"]["gflop_per_call"] / t
            pct = f"{100 * g / peak:.0f} %" if peak else "-"
            lines.append(f"| {model} | {frames} | {backend} | {1e3 * t:.1f} | {1e3 * t / frames:.1f} | "
                         f"{f'{1e3 * lt:.1f}' if lt else '-'} | {f'{1e3 * eager_s:.1f}' if eager else '-'} | "
                         f"{f'{lt / t:.2f}x' if lt else '-'} | {f'{eager_s / t:.2f}x' if eager else '-'} | "
                         f"{g:.0f} | {pct} |")
            if lt and t >= lt:
                failures.append(f"the one-call {frames}-frame traversal ({model}) on {backend} is not faster than "
                                f"the per-frame loop ({lt / t:.2f}x)")
            if eager and t >= eager_s:
                failures.append(f"the one-call {frames}-frame traversal ({model}) on {backend} is not faster than "
                                f"eager PyTorch ({eager_s / t:.2f}x)")
    encoder = defaultdict(dict)
    for b in by_kind["age-encoder"]:
        e = b["extra_info"]
        encoder[e["model"], e["frames"], e["backend"]][e["mode"]] = b["stats"]["median"]
    if encoder:
        lines += ["", "| identity encoder | frames | backend | decode only (features cached), ms | "
                      "encoder once + decode, ms | encoder per frame + decode, ms | per frame vs once | "
                      "encoder's share of the one call |",
                  "|---|---|---|---|---|---|---|---|"]
    for (model, frames, backend), m in sorted(encoder.items()):
        cached, once, per = (m.get(k) for k in ("features-cached", "encoder-once", "encoder-per-frame"))
        if cached and once and per:
            lines.append(f"| {model} | {frames} | {backend} | {1e3 * cached:.1f} | {1e3 * once:.1f} | {1e3 * per:.1f} | "
                         f"{per / once:.2f}x | {100 * (once - cached) / once:.0f} % |")
    rates = {b["extra_info"]["precision"]: b["extra_info"]["gflop"] / b["stats"]["median"] / 1e3
             for b in by_kind["gpu-matmul"]}            # TFLOP/s
    if by_kind["gpu-age-traverse"]:
        lines += ["", "| GPU age traversal | frames | engine | one call, ms | floor, ms (FLOPs / matmul rate) | "
                      "x floor | target | result |", "|---|---|---|---|---|---|---|---|"]
    for b in sorted(by_kind["gpu-age-traverse"], key=lambda b: b["extra_info"]["precision"]):
        e = b["extra_info"]
        t = 1e3 * b["stats"]["median"]
        rate = rates.get(e["precision"])
        floor = e["gflop_per_call"] / rate if rate else None         # GFLOP / (TFLOP/s) = ms
        met = t <= e["target_ms"]
        lines.append(f"| {e['model']} on {e['device']} | {e['frames']} | {e['backend']} {e['precision']} | {t:.2f} | "
                     f"{f'{floor:.2f}' if floor else '-'} | {f'{t / floor:.1f}' if floor else '-'} | "
                     f"<= {e['target_ms']:.0f} ms | {'met' if met else 'missed'} |")
        if not met:
            failures.append(f"GPU traversal of {e['frames']} frames ({e['model']}, {e['precision']}): {t:.1f} ms, "
                            f"target {e['target_ms']:.0f} ms")
    return lines, failures


def video_rows(device: str, w: int, h: int, backend: str, v: dict) -> tuple[list[str], list[str]]:
    """One row per end-to-end encoder setting, against the generator's time of the same run."""
    rows, failures = [], []
    gen, single = v.get("generator"), v.get("single-frame")
    if not gen:
        return rows, failures
    g = gen["stats"]["median"]
    one = f"{1e3 * single['stats']['median']:.2f}" if single else "-"
    for stage, e2e in sorted((k, b) for k, b in v.items() if k.startswith("end-to-end")):
        encoder = stage.removeprefix("end-to-end").strip()
        per = e2e["stats"]["median"] / e2e["extra_info"]["frames"]
        st = e2e["extra_info"].get("pipeline", {})
        stages = ", ".join(f"{k[:-10]} {x:.1f}" for k, x in st.items() if k.endswith("_ms_median") and x is not None)
        rows.append(f"| {w}x{h} {device}, {encoder} | {backend} | {1e3 * g:.2f} | {1e3 * per:.2f} | {1 / per:.0f} | "
                    f"{per / g:.2f}x | {one} | {stages} |")
        if device == "cpu" and per > 1.5 * g:
            failures.append(f"video {w}x{h} ({encoder}): end-to-end {1e3 * per:.1f} ms/frame is more than 1.5x "
                            f"the generator's {1e3 * g:.1f} ms")
        if device == "cuda" and h >= 1080 and 1 / per < 120:
            failures.append(f"video {w}x{h} on the GPU ({encoder}): {1 / per:.0f} frames/s end to end, target 120")
    if device == "cuda" and h >= 1080 and single and single["stats"]["median"] > 0.010:
        failures.append(f"video {w}x{h} on the GPU: one frame in to out {1e3 * single['stats']['median']:.1f} ms, "
                        "target 10 ms")
    return rows, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target of the core issue is missed")
    args = ap.parse_args()
    data, benchmarks = load(args.json)
    table, failures = tables(data, benchmarks)
    print(table)
    if args.markdown:
        open(args.markdown, "w").write(table + "\n")
    for f in failures:
        print(f"TARGET MISSED: {f}", file=sys.stderr)
    return 1 if (failures and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
