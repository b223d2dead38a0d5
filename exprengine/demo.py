"""`exprengine demo`: the whole pipeline on bundled inputs, in one command.

Real photos go through the AU rig (`exprengine/models/rig.py`, its engine built once into the
cache): a real photo (scikit-image's astronaut) edited with every preset in one engine call
(presets_photo.png), measured with MediaPipe's blendshapes and dlib's identity descriptor
(photo_eval.md), and a whole photo and a video clip edited and pasted back. The synthetic
part builds an engine from the shipped generator (a ConvNeXt-6x trained on the synthetic face
world, `exprengine/models/pretrained.py`), edits a held-out synthetic face with every preset in
one engine call and measures where the edits land against the renderer's ground truth,
renders a morph in one engine call, and times eager PyTorch against the compiled engine in
the same run. `--model NAME` demonstrates a registry architecture with random weights instead.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from exprengine.aus import PRESETS, AUs
from exprengine.errors import UserError, plural

DEFAULT = "default"
RANDOM_INIT_NOTE = (
    "NOTE: --model {model} demonstrates the architecture with RANDOMLY INITIALISED weights "
    "(seed 0): the files show the pipeline working end to end (engine build, one-call batched "
    "edits and morph, timings); the edits are not real expressions.")
TRAINED_NOTE = (
    "NOTE: real photos are edited by the AU rig (presets_photo.png, faces_photo.png, video.mp4, "
    "photo_eval.md). The shipped generator is trained on exprengine's synthetic face world only: "
    "its edits of the synthetic face are measured against the renderer's ground truth (regions.md); "
    "on photos it shows nearly nothing, so it is not used for them.")


def moving_face_frames(n: int, height: int, width: int, side: int, top: int, x0: int, x1: float):
    """A real face moving: scikit-image's astronaut photo scaled to side x side on a grey
    height x width frame, its left edge going from x0 (first frame) to x1 (last), `top` fixed.
    Yields n uint8 RGB frames; the demo's video, the video benchmarks and tests use it."""
    from PIL import Image
    from skimage import data
    face = np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.BILINEAR))
    for i in range(n):
        frame = np.full((height, width, 3), 90, np.uint8)
        x = x0 + int(round((x1 - x0) * i / max(n - 1, 1)))
        frame[top:top + side, x:x + side] = face[:height - top, :width - x]
        yield frame


def _median_ms(fn: Callable[[], object], repeats: int, tick: Callable[[], object] = lambda: None) -> float:
    fn()  # warm-up (first-call allocations, lazy initialisation)
    tick()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        tick()
    return 1000.0 * float(np.median(times))


def timing_table(engines: dict[str, "object"], batches: list[int], repeats: int,
                 progress: bool | None = False) -> tuple[str, list[dict]]:
    """Median milliseconds per call of each engine at each batch, as markdown and as rows.

    progress: a tqdm bar of the calls on stderr (True), none (False), or only on a terminal (None).
    """
    from tqdm import tqdm

    from exprengine.export.inputs import random_network_inputs
    rows = []
    with tqdm(total=len(batches) * len(engines) * (repeats + 1), desc="timing", unit="call",
              disable=_tqdm_disable(progress)) as bar:
        for batch in batches:
            image, aus = random_network_inputs(batch, next(iter(engines.values())).image_size, seed=batch)
            row = {"batch": batch}
            for name, eng in engines.items():
                bar.set_postfix_str(f"{name}, batch {batch}")
                row[name] = _median_ms(lambda: eng.run_network(image, aus), repeats, tick=lambda: bar.update(1))
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


SHEET_SCALE = 2         # the demo's sheets and GIF show each 128x128 output enlarged this many times
PHOTO_PANEL = 512       # faces_photo.png: the side of each panel, pixels


def _tqdm_disable(progress: bool | None) -> bool | None:
    return False if progress else None if progress is None else True


def enlarge(frames: np.ndarray, factor: int, resample: str = "lanczos") -> np.ndarray:
    """[N,H,W,3] uint8 -> [N,H*factor,W*factor,3] uint8, each frame resized by Pillow
    ("lanczos" for viewing, "nearest" to show the pixels as they are)."""
    return resize_to(frames, frames.shape[1] * factor, frames.shape[2] * factor, resample)


def resize_to(frames: np.ndarray, height: int, width: int, resample: str = "lanczos") -> np.ndarray:
    """[N,H,W,3] uint8 -> [N,height,width,3] uint8 by Pillow's resize."""
    from PIL import Image
    method = {"lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST}[resample]
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), method)) for f in frames])


def run_demo(out: Path, model: str = DEFAULT, backend: str = "onnxruntime", frames: int = 16,
             repeats: int = 5, echo: Callable[[str], None] = print, progress: bool | None = None) -> dict:
    """Run the demo into the folder `out` (replaced if it is an earlier demo's; any other
    existing non-empty folder is a UserError). progress: tqdm bars on stderr for the long
    steps (True), none (False), or only when stderr is a terminal (None). Returns demo.json's
    contents."""
    import platform

    from exprengine.engine import Engine
    from exprengine.engines.build import build_engine
    from exprengine.evaluation.synthetic_eval import DEMO_INTENSITY, demo_face, preset_region_report
    from exprengine.files import atomic_directory
    from exprengine.media import contact_sheet, write_animation, write_image
    from exprengine.models import create_generator
    from exprengine.models.pretrained import default_model_card, default_weights_path, load_default_generator

    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "demo.json").is_file())):
        raise UserError(f"{out} exists and is not an earlier demo's folder; choose another `out`")
    trained = model == DEFAULT
    if trained:
        generator = load_default_generator()
        card = default_model_card()
        source = f"{default_weights_path().name} ({card.get('name', 'default')})"
        note = TRAINED_NOTE
    else:
        generator = create_generator(model, seed=0)
        source = "random-init seed=0"
        note = RANDOM_INIT_NOTE.format(model=model)
    echo(note)
    _, face = demo_face()
    names = list(PRESETS)
    targets = np.stack([AUs.preset(name, DEMO_INTENSITY).values for name in names])
    labels = [f"{n}@{DEMO_INTENSITY:g}" for n in names]
    with atomic_directory(out) as tmp:
        tmp = Path(tmp)
        echo(f"[1/6] building the {backend} engine of {generator.config.name} ({source}) ...")
        manifest = build_engine(generator, tmp / "engine", backend, weights_source=source, progress=True)
        engine = Engine.load(tmp / "engine", device="cpu")
        echo(f"      verified against eager PyTorch: max relative error "
             f"{manifest.verification['max_rel_error']:.2e}")

        echo(f"[2/6] editing a held-out synthetic face with all {len(PRESETS)} presets in one engine call ...")
        calls = engine.backend_calls
        edits = engine.edit(face, targets)
        assert engine.backend_calls == calls + 1
        from exprengine.data.synthetic import render
        identity, _ = demo_face()
        truth = render(identity, targets)
        (tmp / "edits").mkdir()
        write_image(tmp / "edits" / "input.png", face)
        for name, img in zip(names, edits):
            write_image(tmp / "edits" / f"{name}.png", img)
        write_image(tmp / "presets.png", contact_sheet(
            enlarge(np.concatenate([face[None], edits, face[None], truth]), SHEET_SCALE), columns=len(names) + 1,
            labels=["input"] + labels + ["renderer:"] + [f"true {n}" for n in names]))
        regions = preset_region_report(engine)
        table = region_table(regions)
        (tmp / "regions.md").write_text(
            f"Where each preset's edit lands on the demo's synthetic face (held-out identity, neutral -> "
            f"preset@{DEMO_INTENSITY:g}), measured by `exprengine demo`:\n\n" + table + "\n")
        echo(table)

        echo(f"[3/6] the AU rig on a real photo: all {len(PRESETS)} presets in one engine call, measured ...")
        rig = rig_engine(progress)
        photo_report = _rig_photo_demo(rig, names, targets, labels, tmp, echo)

        target = f"surprise@{DEMO_INTENSITY:g}"        # the preset this model reproduces most visibly
        echo(f"[4/6] morphing the synthetic face natural -> {target} over {frames} frames in one engine call "
             f"(morph.gif plays them forward, then back) ...")
        calls = engine.backend_calls
        morph = engine.morph(face, "natural", target, frames=frames, schedule="ease-in-out")
        assert engine.backend_calls == calls + 1
        shown = enlarge(morph, SHEET_SCALE)
        write_animation(tmp / "morph.gif", np.concatenate([shown, shown[-2:0:-1]]), fps=12)
        write_image(tmp / "morph_sheet.png", contact_sheet(shown, labels=[f"{i + 1}" for i in range(frames)]))

        echo("[5/6] whole photo and video through the rig: finding faces, editing them, pasting them back ...")
        faces = _faces_demo(rig, tmp, echo, progress)

        echo(f"[6/6] timing eager PyTorch against the {backend} engine (median of {repeats}) ...")
        eager = Engine.from_generator(generator)
        timing, rows = timing_table({"eager PyTorch": eager, backend: engine}, [1, frames], repeats, progress)
        header = (f"Timing measured by `exprengine demo` on {platform.machine()} "
                  f"({platform.processor() or 'cpu'}), {generator.config.name} {list(generator.config.dims)}, "
                  f"fp32, median ms per engine call.\n\n")
        (tmp / "timing.md").write_text(header + timing + "\n")
        (tmp / "README.txt").write_text(
            note + "\n\nFiles: engine/ (the built engine), presets.png and edits/ (the synthetic face, "
            f"every preset at {DEMO_INTENSITY:g}, above the renderer's true faces), regions.md (where the "
            "edits land), presets_photo.png and edits_photo/ (a real photo, every preset through the rig), "
            "photo_eval.md, photo_eval.json and photo_eval/ (the rig's edits measured), morph.gif and "
            f"morph_sheet.png (natural -> {target}), faces_photo.png (a whole photo: faces found, "
            "edited and pasted back; the face enlarged, and the change amplified 8x), video.mp4 (a clip "
            "of a moving face, natural -> surprise), timing.md, demo.json. edits/ holds the model's 128x128 "
            f"outputs as they are; the synthetic sheets and the GIF show them enlarged {SHEET_SCALE}x.\n")
        summary = {"model": generator.config.name, "weights": source, "random_init": not trained, "note": note,
                   "verification": manifest.verification, "regions": regions, "timing_ms": rows,
                   "frames": frames, "faces": faces, "photo_eval": photo_report}
        (tmp / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    echo(timing)
    echo(f"wrote {out}/ (presets_photo.png, edits_photo/, photo_eval.md, photo_eval.json, photo_eval/, faces_photo.png, "
         "video.mp4, presets.png, edits/, regions.md, morph.gif, morph_sheet.png, timing.md, demo.json, README.txt, "
         "engine/)")
    echo(note)
    return summary


def rig_engine(progress: bool | None = None):
    """The rig's ONNX Runtime engine (`default_engines.default_rig_engine`, built once into the
    cache), or the rig eager in memory when the cache cannot be written."""
    from exprengine.default_engines import default_rig
    return default_rig(progress=progress is not False)


def _rig_photo_demo(rig, names: list[str], targets: np.ndarray, labels: list[str], out: Path,
                    echo: Callable[[str], None]) -> dict:
    """presets_photo.png and edits_photo/ (the astronaut's face region, every preset, one engine
    call), and photo_eval.md/.json and photo_eval/ (`evaluate_photos` on that photo)."""
    from PIL import Image
    from skimage import data

    from exprengine.evaluation.photo_eval import evaluate_photos, format_report
    from exprengine.faces.editor import FaceEditor
    from exprengine.media import contact_sheet, write_image
    photo = data.astronaut()
    calls = rig.backend_calls
    variants, found = FaceEditor(rig).edit_variants(photo, targets)
    assert rig.backend_calls == calls + 1
    top, left, side = found.crops[0].region if found.crops else (0, 0, min(photo.shape[:2]))
    region = [v[max(top, 0):top + side, max(left, 0):left + side] for v in [photo, *variants]]
    (out / "edits_photo").mkdir()
    for name, tile in zip(names, region[1:]):
        write_image(out / "edits_photo" / f"{name}.png", tile)
    tiles = np.stack([np.asarray(Image.fromarray(t).resize((256, 256), Image.Resampling.LANCZOS)) for t in region])
    write_image(out / "presets_photo.png", contact_sheet(tiles, columns=5, labels=["photo"] + labels))
    path = out / "astronaut.png"
    write_image(path, photo)
    try:
        report = evaluate_photos(rig, [path], sheet_dir=out / "photo_eval")
    finally:
        path.unlink()
    (out / "photo_eval.md").write_text(
        "The rig's edits of a real photo (scikit-image's astronaut), measured by `exprengine demo` with "
        "MediaPipe's blendshapes and dlib's face descriptor (`exprengine eval --photos` does this on a "
        "whole photo set; see the README):\n\n```\n" + format_report(report) + "\n```\n")
    (out / "photo_eval.json").write_text(json.dumps({k: v for k, v in report.items() if k != "per_face"},
                                                    indent=2) + "\n")
    met = sum(t["met"] is True for t in report["targets"])
    echo(f"      presets_photo.png: {len(names)} presets in one engine call; photo_eval.md: {met} of "
         f"{len(report['targets'])} targets met on this one face, {report['outside_change_pixels']} pixels "
         "changed outside it")
    return {k: report[k] for k in ("faces", "targets", "outside_change_pixels")}


def _faces_demo(engine, out: Path, echo: Callable[[str], None], progress: bool | None = None) -> dict:
    """The faces pipeline on real pixels: scikit-image's astronaut photo (one face, and the
    mission patch the detector must ignore), and a 2-second clip of her face sliding across a
    640x480 frame (encoded to H.264 first, then edited from that file by `edit_video`, as the
    `video` command edits one), morphing natural -> surprise."""
    from skimage import data
    from tqdm import tqdm

    from exprengine.faces.editor import FaceEditor
    from exprengine.media import contact_sheet, write_image
    from exprengine.video.edit import edit_video
    from exprengine.video.io import VideoWriter
    from exprengine.video.timeline import expression_plan
    photo = data.astronaut()
    result = FaceEditor(engine).edit(photo, "surprise@2")
    top, left, side = result.crops[0].region if result.crops else (0, 0, min(photo.shape[:2]))
    moved = np.any(result.image != photo, axis=2)
    inside = np.zeros_like(moved)
    for c in result.crops:
        t, l, e = c.region
        inside[max(t, 0):t + e, max(l, 0):l + e] = True
    changed, outside = int(moved.sum()), int((moved & ~inside).sum())
    write_image(out / "faces_photo.png", contact_sheet(
        photo_panels(photo, result.image, (top, left, side)), columns=3,
        labels=["photo", "surprise@2, pasted back", "|change| x8", "face", "face, surprise@2", "face |change| x8"]))
    echo(f"      astronaut photo: {plural(len(result.found), 'face')} found, {changed} pixels changed, "
         f"{outside} of them outside the faces' squares")
    n = 60
    source = out / "video_source.mp4"          # the clip to edit, encoded as a camera's would be
    with VideoWriter(source, 640, 480, "30/1") as writer:
        for frame in moving_face_frames(n, 480, 640, side=440, top=20, x0=20, x1=180):
            writer.write(frame)
    plan = expression_plan("surprise@2", start="natural", schedule="ease-in-out", policy=engine.policy)
    try:
        with tqdm(total=n, desc="video", unit="frame", disable=_tqdm_disable(progress)) as bar:
            video = edit_video(source, out / "video.mp4", engine, plan, detect_scale=0.5,
                               progress=lambda done, total: bar.update(done - bar.n))
    finally:
        source.unlink()
    stats = video.stats.summary()
    echo(f"      video.mp4: {stats['frames']} frames, {stats['fps']} frames/s through the pipeline, "
         f"{stats['detections']} detector runs")
    return {"photo_faces": len(result.found), "photo_pixels_changed": changed, "photo_pixels_changed_outside": outside,
            "video": stats}


def photo_panels(photo: np.ndarray, edited: np.ndarray, face: tuple[int, int, int], side: int = PHOTO_PANEL,
                 gain: int = 8) -> np.ndarray:
    """Six [side, side, 3] uint8 panels for faces_photo.png: the whole photo, the edited photo
    and their difference times `gain` (each resized to side x side), then the same three for a
    square around the face (`face` = its crop's top, left, side; the square is twice that,
    kept inside the photo), enlarged so a faint edit can be judged. Differences are shown
    with nearest-neighbour resizing, so each changed pixel stays visible as it is."""
    h, w = photo.shape[:2]
    top, left, size = face
    box = max(1, min(2 * size, h, w))
    y = int(np.clip(top + size // 2 - box // 2, 0, h - box))
    x = int(np.clip(left + size // 2 - box // 2, 0, w - box))
    change = np.clip(np.abs(edited.astype(np.int16) - photo.astype(np.int16)) * gain, 0, 255).astype(np.uint8)
    whole = resize_to(np.stack([photo, edited]), side, side)
    crop = resize_to(np.stack([photo, edited])[:, y:y + box, x:x + box], side, side)
    return np.concatenate([whole, resize_to(change[None], side, side, "nearest"),
                           crop, resize_to(change[None, y:y + box, x:x + box], side, side, "nearest")])


def region_table(regions: dict[str, dict]) -> str:
    """`evaluation.synthetic_eval.preset_region_report`'s result ({preset: {in_region, region_change,
    true_change, psnr, psnr_no_edit}}) as a Markdown table: the share of the change inside the
    preset's AU regions (percent), the mean change there and the renderer's true change (uint8
    levels), and PSNR against the rendered truth with and without the edit (dB).
    """
    lines = ["| preset | share of the change inside its AU regions | mean change there (levels) | "
             "renderer's true change there (levels) | PSNR vs truth | no-edit PSNR vs truth |",
             "|---|---|---|---|---|---|"]
    for name, r in regions.items():
        lines.append(f"| {name} | {100 * r['in_region']:.0f} % | {r['region_change']:.1f} | {r['true_change']:.1f} | "
                     f"{r['psnr']:.2f} dB | {r['psnr_no_edit']:.2f} dB |")
    return "\n".join(lines)
