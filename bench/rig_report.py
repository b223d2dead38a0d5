"""Markdown tables from bench/test_rig_bench.py's pytest-benchmark JSON files.

    python bench/rig_report.py bench/results/cpu-amd-epyc-2core-rig.json \
        OPENBLAS_NUM_THREADS=1:bench/results/cpu-amd-epyc-2core-rig-openblas1.json \
        --markdown bench/results/cpu-amd-epyc-2core-rig.md

Each argument is a JSON file, optionally labelled `LABEL:path` (the label says how that run
differed, e.g. an environment variable); one table per kind of benchmark, a row per run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FACE_TARGET_MS, VIDEO_TARGET_FPS = 15.0, 15.0


def load(arg: str) -> tuple[str, dict]:
    label, _, path = arg.rpartition(":") if ":" in arg and not Path(arg).exists() else ("", "", arg)
    return label or "as run", json.loads(Path(path).read_text())


def markdown(runs: list[tuple[str, dict]]) -> str:
    first = runs[0][1]
    cpu = first["machine_info"].get("cpu", {})
    lines = [f"# The AU rig: speed on {cpu.get('brand_raw', 'this CPU')}, {cpu.get('count', '?')} logical CPUs", "",
             "From `pytest --benchmark-only bench/test_rig_bench.py --benchmark-json ...` (one file per run; "
             "`python bench/rig_report.py` made this). Medians are upper bounds when the machine is shared; "
             "minimums are the least disturbed rounds.", "",
             "| run | date | commit |", "|---|---|---|"]
    for label, d in runs:
        c = d.get("commit_info", {})
        lines.append(f"| {label} | {d['datetime'][:16]} | {c.get('id', '')[:7]}{' (working tree changed)' if c.get('dirty') else ''} |")
    lines += ["", f"One 256x256 face, uint8 crop in and out with attention (target: ONNX Runtime within "
              f"{FACE_TARGET_MS:g} ms):", "", "| run | backend | median ms | min ms |", "|---|---|---|---|"]
    for label, d in runs:
        for b in d["benchmarks"]:
            e = b["extra_info"]
            if e.get("kind") == "rig-face":
                lines.append(f"| {label} | {e['backend']} | {1000 * b['stats']['median']:.1f} | "
                             f"{1000 * b['stats']['min']:.1f} |")
    lines += ["", f"640x480 real clip end to end (target: {VIDEO_TARGET_FPS:g} frames/s); the stage medians are wall "
              "times of stages that run at once in threads, so they overlap:", "",
              "| run | pipeline | frames | s per clip (median / min) | frames/s (median) | stage medians ms: detect / "
              "crop with mesh / edit / paste | latency median ms |", "|---|---|---|---|---|---|---|"]
    for label, d in runs:
        for b in d["benchmarks"]:
            e = b["extra_info"]
            if e.get("kind") != "rig-video":
                continue
            p = e.get("pipeline")
            stages = (f"{p['detect_ms_median']:.0f} / {p['crop_ms_median']:.0f} / {p['edit_ms_median']:.0f} / "
                      f"{p['paste_ms_median']:.0f}") if p else "-"
            lines.append(f"| {label} | {e['stage']} | {e['frames']} | {b['stats']['median']:.1f} / "
                         f"{b['stats']['min']:.1f} | {e['frames'] / b['stats']['median']:.1f} | {stages} | "
                         f"{p['latency_ms_median']:.0f} |" if p else
                         f"| {label} | {e['stage']} | {e['frames']} | {b['stats']['median']:.1f} / "
                         f"{b['stats']['min']:.1f} | {e['frames'] / b['stats']['median']:.1f} | - | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="JSON files, each optionally LABEL:path")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    text = markdown([load(a) for a in args.runs])
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
