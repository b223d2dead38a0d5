"""`exprengine demo`: the whole pipeline on the bundled face, in one command.

Builds an engine from the default model, edits the bundled face with every preset (one
engine call), renders a morph (one engine call), and times eager PyTorch against the
compiled engine in the same run.
"""
from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from exprengine.aus import PRESETS, AUs
from exprengine.errors import UserError

RANDOM_INIT_NOTE = (
    "NOTE: no trained default model ships with this version, so the demo uses a RANDOMLY "
    "INITIALISED {model} generator (seed 0). The files show the pipeline working end to end "
    "(engine build, one-call batched edits and morph, timings); the edits are not real expressions.")


def bundled_face() -> np.ndarray:
    from exprengine.media import read_image
    with resources.as_file(resources.files("exprengine") / "assets" / "face.png") as p:
        return read_image(p)


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (first-call allocations, lazy initialisation)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times))


def timing_table(engines: dict[str, "object"], batches: list[int], repeats: int) -> tuple[str, list[dict]]:
    """Median milliseconds per call of each engine at each batch, as markdown and as rows."""
    from exprengine.engines.build import random_network_inputs
    rows = []
    for batch in batches:
        image, aus = random_network_inputs(batch, next(iter(engines.values())).image_size, seed=batch)
        row = {"batch": batch}
        for name, eng in engines.items():
            row[name] = _median_ms(lambda: eng.run(image, aus), repeats)
        rows.append(row)
    names = list(engines)
    base = names[0]
    lines = ["| batch | " + " | ".join(f"{n} ms/call" for n in names) + " | " +
             " | ".join(f"{n} speed-up" for n in names[1:]) + " |",
             "|---" * (1 + 2 * len(names) - 1) + "|"]
    for r in rows:
        lines.append(f"| {r['batch']} | " + " | ".join(f"{r[n]:.1f}" for n in names) + " | " +
                     " | ".join(f"{r[base] / r[n]:.2f}x" for n in names[1:]) + " |")
    return "\n".join(lines), rows


def run_demo(out: Path, model: str = "convnext6", backend: str = "onnxruntime", frames: int = 16,
             repeats: int = 5, echo: Callable[[str], None] = print) -> dict:
    import platform

    from exprengine.engine import Engine
    from exprengine.engines.build import build_engine
    from exprengine.media import atomic_directory, contact_sheet, write_animation, write_image
    from exprengine.models import create_generator

    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "demo.json").is_file())):
        raise UserError(f"{out} exists and is not an earlier demo's folder; choose another --out")
    note = RANDOM_INIT_NOTE.format(model=model)
    echo(note)
    face = bundled_face()
    generator = create_generator(model, seed=0)
    with atomic_directory(out) as tmp:
        tmp = Path(tmp)
        echo(f"[1/4] building the {backend} engine of {model} ...")
        manifest = build_engine(generator, tmp / "engine", backend, weights_source="random-init seed=0",
                                progress=True)
        engine = Engine.load(tmp / "engine", device="cpu")
        echo(f"      verified against eager PyTorch: max relative error "
             f"{manifest.verification['max_rel_error']:.2e}")

        echo(f"[2/4] editing the bundled face with all {len(PRESETS)} presets in one engine call ...")
        calls = engine.backend_calls
        targets = np.stack([AUs.preset(name, 1.5).values for name in PRESETS])
        edits = engine.edit(face, targets)
        assert engine.backend_calls == calls + 1
        (tmp / "edits").mkdir()
        write_image(tmp / "edits" / "input.png", face)
        for name, img in zip(PRESETS, edits):
            write_image(tmp / "edits" / f"{name}.png", img)
        write_image(tmp / "presets.png", contact_sheet(np.concatenate([face[None], edits]), columns=9,
                                                         labels=["input"] + [f"{n}@1.5" for n in PRESETS]))

        echo(f"[3/4] morphing natural -> happiness@1.5 over {frames} frames in one engine call ...")
        calls = engine.backend_calls
        morph = engine.morph(face, "natural", "happiness@1.5", frames=frames, schedule="ease-in-out")
        assert engine.backend_calls == calls + 1
        write_animation(tmp / "morph.gif", np.concatenate([morph, morph[-2:0:-1]]), fps=12)
        write_image(tmp / "morph_sheet.png", contact_sheet(morph, labels=[f"{i + 1}" for i in range(frames)]))

        echo(f"[4/4] timing eager PyTorch against the {backend} engine (median of {repeats}) ...")
        eager = Engine.from_generator(generator)
        table, rows = timing_table({"eager PyTorch": eager, backend: engine}, [1, frames], repeats)
        header = (f"Timing measured by `exprengine demo` on {platform.machine()} "
                  f"({platform.processor() or 'cpu'}), {model}, fp32, median ms per engine call.\n\n")
        (tmp / "timing.md").write_text(header + table + "\n")
        (tmp / "README.txt").write_text(note + "\n\nFiles: engine/ (the built engine), presets.png and "
                                        "edits/ (every preset at 1.5), morph.gif and morph_sheet.png "
                                        "(natural -> happiness@1.5), timing.md, demo.json.\n")
        summary = {"model": model, "backend": backend, "random_init": True, "note": note,
                   "verification": manifest.verification, "timing_ms": rows, "frames": frames}
        (tmp / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    echo(table)
    echo(f"wrote {out}/ (presets.png, edits/, morph.gif, morph_sheet.png, timing.md, engine/)")
    echo(note)
    return summary
