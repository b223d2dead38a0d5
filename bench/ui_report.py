"""Turn bench/test_ui_bench.py's pytest-benchmark JSON into a markdown table and check the target.

    python bench/ui_report.py bench/results/cpu-amd-epyc-2core-ui.json [--markdown out.md] [--check]

--check exits non-zero when the page's median slider-release-to-preview latency for the 512x512
photo is not under the target (150 ms).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def report(data: dict) -> tuple[str, list[str]]:
    """(the markdown, the targets missed) of one benchmark JSON."""
    machine = data.get("machine_info", {})
    commit = data.get("commit_info", {})
    lines = [f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, {machine.get('cpu', {}).get('count', '?')} "
             f"logical CPUs; date {data.get('datetime', '?')[:16]}; commit {commit.get('id', '?')[:7]}"
             + (" (working tree changed)" if commit.get("dirty") else ""), ""]
    failures = []
    rows = sorted((b for b in data["benchmarks"] if b["extra_info"].get("kind") == "ui-request"),
                  key=lambda b: b["extra_info"]["side"])
    if rows:
        lines += ["`/api/preview` over loopback HTTP (request sent to the JPEG's last byte), one face:", "",
                  "| photo | preview | median ms | min ms | server's own ms (median) |", "|---|---|---|---|---|"]
        for b in rows:
            e = b["extra_info"]
            lines.append(f"| {e['side']}x{e['side']} | {e['preview_side']}x{e['preview_side']} | "
                         f"{1e3 * b['stats']['median']:.1f} | {1e3 * b['stats']['min']:.1f} | "
                         f"{np.median(e['server_ms']):.1f} |")
    rows = sorted((b for b in data["benchmarks"] if b["extra_info"].get("kind") == "ui-browser"),
                  key=lambda b: b["extra_info"]["side"])
    if rows:
        lines += ["", "In the browser (headless Chromium), slider release to the new preview shown, one face; "
                  "the page's own measurement (performance.now) and its parts (medians), and Playwright's "
                  "round trip beside it:", "",
                  "| photo | page median ms | page p90 ms | server | request | decode | paint | Playwright median ms |",
                  "|---|---|---|---|---|---|---|---|"]
        for b in rows:
            e = b["extra_info"]
            p = e["breakdown"]
            lines.append(f"| {e['side']}x{e['side']} | {e['page_median_ms']:.1f} | "
                         f"{np.percentile(e['page_ms'], 90):.1f} | {p['server']:.1f} | {p['request']:.1f} | "
                         f"{p['decode']:.1f} | {p['paint']:.1f} | {1e3 * b['stats']['median']:.1f} |")
            if e["side"] == 512 and e["page_median_ms"] >= e["target_ms"]:
                failures.append(f"slider release to preview {e['page_median_ms']:.0f} ms, not under {e['target_ms']:g}")
    return "\n".join(lines) + "\n", failures


def main(argv: list[str] | None = None) -> int:
    """Print (or write) the report; with --check, exit 1 when the target is missed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json")
    ap.add_argument("--markdown", help="also write the report here")
    ap.add_argument("--check", action="store_true", help="exit 1 when the 150 ms target is missed")
    args = ap.parse_args(argv)
    with open(args.json) as f:
        text, failures = report(json.load(f))
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    for failure in failures:
        print(f"target missed: {failure}", file=sys.stderr)
    return 1 if failures and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
