"""`exprengine`: build engines and edit facial expressions from the command line.

Every user-fixable problem (a bad path, AU spec, preset, value or engine) is one line on
stderr and exit status 2; nothing partial is written and inputs are never modified.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from exprengine import __version__
from exprengine.aus import (AU_DESCRIPTIONS, AU_NAMES, CONFLICTS, DEFAULT_CAP, PRESETS, AUPolicy, AUs)
from exprengine.console import Group, RegistryChoice, reported_warnings, run, say
from exprengine.errors import UserError
from exprengine.video import X264_PRESETS


# Bounds of the numeric options shared by several commands: values outside them are refused
# by click before any work, as one line (an unbounded batch or seed used to reach NumPy/torch
# as an overflow or a MemoryError).
SEED = click.IntRange(0, 2**32 - 1)                 # NumPy's and torch's seed range
STEPS = click.IntRange(1, 1_000_000_000)
BATCH = click.IntRange(1, 4096)                     # images per training step
LEARNING_RATE = click.FloatRange(0, 1, min_open=True)
#: Training sizes: powers of two (the critic halves the image down to 2x2, training/trainer.py).
IMAGE_SIZE = click.Choice([16, 32, 64, 128, 256, 512])


def _policy(strict: bool, max_intensity: float, above_max: str) -> AUPolicy:
    return AUPolicy(max_intensity=max_intensity, above_max=above_max, strict=strict)


def au_policy_options(f):
    """--strict, --max-intensity, --above-max: shared by edit and morph."""
    f = click.option("--above-max", type=RegistryChoice("exprengine.aus:ABOVE_MAX"), default="warn",
                     show_default=True, help="What to do with an intensity above --max-intensity.")(f)
    f = click.option("--max-intensity", type=click.FloatRange(0, 5, min_open=True), default=DEFAULT_CAP,
                     show_default=True,
                     help="Intensity cap (OpenFace scale 0..5; the thesis finds images break above ~2).")(f)
    f = click.option("--strict", is_flag=True,
                     help="Refuse conflicting AUs (e.g. AU23 with AU25) and intensities above the cap.")(f)
    return f


def engine_options(f):
    f = click.option("--device", type=RegistryChoice("exprengine.engines.backends:device_names"), default="auto",
                     show_default=True, help="Where to run the engine.")(f)
    f = click.option("--engine", "engine_dir", required=True, metavar="DIR",
                     help="Engine directory made by `exprengine build`.")(f)
    return f


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog="Examples:\n"
                    "  exprengine demo\n"
                    "  exprengine build --model convnext6 --backend onnxruntime --out engines/cx6\n"
                    "  exprengine edit photo.jpg --preset happiness@1.5 --out happy.jpg\n"
                    "  exprengine morph face.png --engine engines/cx6 --to surprise --frames 24 --out surprise.gif")
@click.version_option(__version__, prog_name="exprengine")
def cli():
    """Fast facial-expression editing with Action-Unit-conditioned generators.

    AU intensities are on OpenFace's 0..5 scale; see `exprengine presets` for the 17 AUs
    and the expression presets.
    """


# --- build / info ------------------------------------------------------------------------
@cli.command(inputs=("checkpoint",), outputs=("out",), together=True)
@click.option("--model", default=None, metavar="NAME",
              help="Generator architecture, or rig (the landmark-driven AU rig; no checkpoint), see "
                   "`exprengine models`. With neither --model nor --checkpoint: the shipped default model "
                   "(trained on synthetic faces).")
@click.option("--checkpoint", type=str, default=None, metavar="PATH",
              help="Weights: our .safetensors, or a GANimation .pth in either public layout. "
                   "--model without it: random weights (for testing the toolchain only).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random initialisation.")
@click.option("--backend", default="onnxruntime", show_default=True, type=RegistryChoice("exprengine.engines.backends:backend_names"),
              help="Engine backend (`exprengine models` lists them).")
@click.option("--out", required=True, metavar="DIR", help="Engine directory to write (an old engine there is replaced).")
@click.option("--precision", type=RegistryChoice("exprengine.engines.backends:precision_names"), default=None,
              help="Numeric precision [default: the backend's: fp16 for tensorrt, else fp32].")
@click.option("--device", type=RegistryChoice("exprengine.engines.backends:device_names", build=True), default=None,
              help="Device the engine is built for [default: the backend's: cuda for tensorrt and torch-compile, "
                   "else cpu].")
@click.option("--max-batch", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Largest batch one engine call takes; bigger requests are split.")
@click.option("--opt-batch", type=click.IntRange(1, 4096), default=16, show_default=True,
              help="Batch the engine is tuned for (a typical morph).")
@click.option("--no-verify", is_flag=True, help="Skip the check against eager PyTorch after building.")
def build(model, checkpoint, seed, backend, out, precision, device, max_batch, opt_batch, no_verify):
    """Compile a generator into an engine directory.

    \b
    Examples:
      exprengine build --out engines/default                # the shipped default model
      exprengine build --model convnext6 --backend onnxruntime --out engines/cx6
      exprengine build --model ganimation --checkpoint 30_net_gen.pth --backend aoti --out engines/g
      exprengine build --model convnext6 --checkpoint cx6.safetensors --backend torch --out engines/ref
      exprengine build --model convnext6 --backend tensorrt --precision fp16 --out engines/cx6-trt
      exprengine build --model convnext6 --backend aoti --device cuda --precision fp16 --out engines/cx6-gpu
      exprengine build --model rig --out engines/rig          # the AU rig: edits real photos, no training
    """
    from exprengine.engines.build import build_model_engine
    manifest = build_model_engine(out, backend, model=model, checkpoint=checkpoint, seed=seed, precision=precision,
                                  device=device, max_batch=max_batch, opt_batch=opt_batch, verify=not no_verify,
                                  progress=True, note=lambda sentence: say(f"note: {sentence}"))
    click.echo(f"built {out}: {manifest.model} / {manifest.backend} / {manifest.precision}, "
               f"batch 1..{manifest.max_batch}" + (
                   f", max relative error vs eager PyTorch {manifest.verification['max_rel_error']:.2e}"
                   if manifest.verification else ""))


@cli.command(inputs=("engine_dir",))
@click.argument("engine_dir", metavar="ENGINE")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def info(engine_dir, as_json):
    """Show what an engine is, verifying its files.

    \b
    Example:
      exprengine info engines/cx6
    """
    from dataclasses import asdict

    from exprengine.engine import inspect_engine
    m = inspect_engine(engine_dir)          # the artifacts' own metadata must agree with the manifest
    if as_json:
        click.echo(json.dumps(asdict(m), indent=2))
        return
    rows = m.describe(engine_dir)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")


# --- edit / morph ------------------------------------------------------------------------
def _aus_from_options(presets, aus) -> AUs:
    if not presets and not aus:
        raise UserError("say which expression: --preset NAME[@INTENSITY] and/or --au AUxx=VALUE")
    return AUs.parse(*presets, *aus)


def face_options(f):
    """Detection and paste-back options shared by edit and video."""
    f = click.option("--mask", type=RegistryChoice("exprengine.faces.paste:MASKS"), default="attention", show_default=True,
                     help="Paste-back mask: the face's shape, or the shape times where the model changed it.")(f)
    f = click.option("--align", is_flag=True, help="Turn each face level (eyes from dlib's 5-point landmarks, or from the "
                                             "mesh with --detector mediapipe).")(f)
    f = click.option("--min-face", type=click.IntRange(8, 100000), default=40, show_default=True,
                     help="Smallest face edited, in pixels.")(f)
    f = click.option("--detector", type=RegistryChoice("exprengine.faces.landmarks:DETECTORS"), default="hog", show_default=True,
                     help="face_recognition's HOG detector, its CNN detector (slower, finds more), or MediaPipe's "
                          "Face Landmarker (fast; faces must fill a good part of the image).")(f)
    f = click.option("--face", "select", default="all", show_default=True, metavar="all|largest|N",
                     help="Which faces to edit: all, the largest, or number N (0 = most confident).")(f)
    return f


def media_engine_options(f):
    """--engine (optional: the rig, or the shipped generator for crops and morphs) and --device:
    shared by edit, video and morph."""
    f = click.option("--device", type=RegistryChoice("exprengine.engines.backends:device_names"), default="auto", show_default=True,
                     help="Where to run the engine.")(f)
    f = click.option("--engine", "engine_dir", default=None, metavar="DIR",
                     help="Engine directory made by `exprengine build` [default: photos and video: the AU rig "
                          "(built once into the cache); --crop and morph: the shipped generator].")(f)
    return f


def media_options(f):
    """--engine (optional: the shipped model), --device, --preset, --au: shared by edit and video."""
    f = click.option("--au", "aus", multiple=True, metavar="AUxx=V",
                     help="Set one AU (AU12=1.8 or 12=1.8); applied after presets. Repeatable.")(f)
    f = click.option("--preset", "presets", multiple=True, metavar="NAME[@X]",
                     help="Expression preset, optionally with intensity (happiness@1.5). Repeatable.")(f)
    return media_engine_options(f)


def _engine_or_default(engine_dir: str | None, device: str, policy: AUPolicy, default: str = "rig"):
    from exprengine.default_engines import engine_or_default
    return engine_or_default(engine_dir, device, policy, default, progress=True, warn=lambda s: say(f"warning: {s}"))


def _detector(detector: str, min_face: int):
    from exprengine.faces.landmarks import make_detector
    return make_detector(detector, min_size=min_face)


@cli.command(inputs=("image", "engine_dir"), outputs=("out", "attention_out"), together=True)
@click.argument("image", metavar="IMAGE")
@media_options
@click.option("--out", required=True, metavar="PATH", help="Output image (.png, .jpg, .webp, .bmp).")
@face_options
@click.option("--require-face", is_flag=True, help="Exit with status 1 (after a warning) when no face is found.")
@click.option("--crop", is_flag=True, help="IMAGE is already a face crop: edit all of it, no detection.")
@click.option("--attention", "attention_out", default=None, metavar="PATH",
              help="With --crop: also write the attention map (white = pixel kept from the input).")
@au_policy_options
def edit(image, engine_dir, device, presets, aus, out, select, detector, min_face, align, mask, require_face,
         crop, attention_out, strict, max_intensity, above_max):
    """Edit the expression of every face in a photo (or of a face crop, with --crop).

    Faces are found (dlib's HOG detector by default), edited in one engine call and pasted
    back: pixels outside the faces keep their values (write PNG to keep them bit for bit; JPEG
    re-encodes). A photo with no face is written unchanged. Without --engine the AU rig edits
    the photo (each face's MediaPipe mesh moved as FACS describes each AU; `exprengine presets`
    says which AUs move on real photos); --crop without --engine uses the shipped generator,
    which knows only synthetic faces.

    \b
    Examples:
      exprengine edit photo.jpg --preset happiness@2 --out happy.jpg
      exprengine edit group.png --preset surprise@1.5 --face largest --out out.png
      exprengine edit photo.jpg --au AU12=1.8 --au AU45=2 --align --require-face --out smile.png
      exprengine edit photo.jpg --engine engines/rig --detector mediapipe --preset sadness@2 --out sad.png
      exprengine edit face.png --crop --engine engines/cx6 --preset sadness --attention att.png --out sad.png
    """
    from exprengine.media import check_output_path, read_photo
    out_path = check_output_path(out, "image")
    if attention_out and not crop:
        raise UserError("--attention is for --crop edits (a whole photo has one attention map per face)")
    att_path = check_output_path(attention_out, "image") if attention_out else None
    with reported_warnings():
        policy = _policy(strict, max_intensity, above_max)
        target = _aus_from_options(presets, aus)
        policy.check(target.values)
        if crop:
            from exprengine.faces.photo import edit_crop_file
            photo = read_photo(image)          # its colour profile and EXIF go to the edited crop
            engine = _engine_or_default(engine_dir, device, policy, default="generator")
            for note in edit_crop_file(image, out_path, engine, target, att_path, photo=photo):
                say(f"note: {note}")
            click.echo(f"wrote {out_path} ({target})")
            return
        from exprengine.faces.editor import FaceEditor
        from exprengine.faces.photo import edit_photo_file
        photo = read_photo(image)
        engine = _engine_or_default(engine_dir, device, policy)    # checked before any work, face or not
        editor = FaceEditor(engine, _detector(detector, min_face), align=align, mask=mask)
        report = edit_photo_file(image, out_path, engine, target, editor, select, photo=photo)
    for note in report.notes:
        say(f"note: {note}")
    if not report.edited and require_face:
        say(f"exprengine: warning: {report.summary}")
        raise click.exceptions.Exit(1)
    click.echo(report.summary)


@cli.command(inputs=("video_path", "engine_dir", "timeline"), outputs=("out",), together=True)
@click.argument("video_path", metavar="VIDEO")
@media_options
@click.option("--from", "src", default=None, metavar="SPEC",
              help="Morph across the clip: from this expression on the first frame to --preset/--au on the last.")
@click.option("--schedule", type=RegistryChoice("exprengine.morph:SCHEDULES"),
              default="linear", show_default=True, help="Schedule of --from's morph.")
@click.option("--timeline", default=None, metavar="FILE",
              help="AU keyframes over time (.json or .csv; see the README), instead of --preset/--au.")
@click.option("--out", required=True, metavar="PATH", help="Output video (.mp4, .mov or .mkv).")
@face_options
@click.option("--detect-every", type=click.IntRange(1, 10000), default=10, show_default=True,
              help="Run the detector every N frames (and on every frame while a face is lost).")
@click.option("--detect-scale", type=click.FloatRange(0.05, 1.0), default=0.5, show_default=True,
              help="Detect on the frame scaled by this factor (faster; faces must stay ~40 px there).")
@click.option("--reproducible", is_flag=True,
              help="Detect inline on the frames due instead of in the background (slower; same output every run).")
@click.option("--no-audio", is_flag=True, help="Do not carry the input's audio over.")
@click.option("--encoder-preset", default="veryfast", show_default=True,
              type=click.Choice(X264_PRESETS),
              help="x264 speed preset; ultrafast for real-time 1080p.")
@au_policy_options
def video(video_path, engine_dir, device, presets, aus, src, schedule, timeline, out, select, detector, min_face,
          align, mask, detect_every, detect_scale, reproducible, no_audio, encoder_preset, strict, max_intensity,
          above_max):
    """Edit every face of every frame of a video; frame count, times, size, colours and audio are kept.

    The expression is held (--preset/--au), morphed across the clip (--from), or follows AU
    keyframes (--timeline). Faces are detected on a downscaled frame every few frames in the
    background, tracked with One-Euro smoothing, edited in one engine call per frame and
    pasted back. Pixels outside the faces keep their values (8-bit video, limited or full range;
    10-bit and HDR video are refused), every frame keeps its time and every audio track is kept
    in sync. The output file appears only when complete (Ctrl-C or SIGTERM leaves none).

    \b
    Examples:
      exprengine video in.mp4 --preset happiness@2 --out out.mp4       # the AU rig (the default)
      exprengine video in.mp4 --from natural --preset surprise@1.5 --schedule ease-in-out --out out.mp4
      exprengine video in.mp4 --timeline keys.json --engine engines/rig --out out.mp4
      exprengine video in.mp4 --preset happiness --engine engines/my-gan --device cuda --out out.mp4
    """
    from exprengine.faces.landmarks import make_detector
    from exprengine.files import check_writable_place
    from exprengine.video.edit import edit_video
    from exprengine.video.io import check_video_output
    from exprengine.video.timeline import expression_plan
    # Every argument is checked before any decoding: the output place (that it is no input is the
    # command's own check), the expression, the engine (loading verifies it), then the video.
    out_path = check_video_output(out)
    check_writable_place(out_path)
    with reported_warnings():
        policy = _policy(strict, max_intensity, above_max)
        if timeline and (presets or aus or src):
            raise UserError("--timeline gives the expression itself: drop --preset/--au/--from")
        plan = expression_plan(None if timeline else _aus_from_options(presets, aus), start=src or None,
                               schedule=schedule, keyframes=timeline, policy=policy)
        engine = _engine_or_default(engine_dir, device, policy)
        result = edit_video(video_path, out_path, engine, plan, make_detector(detector, min_face), select=select,
                            detect_every=detect_every, detect_scale=detect_scale, reproducible=reproducible,
                            audio=not no_audio, encoder_preset=encoder_preset, align=align, mask=mask)
    click.echo(result.summary())


@cli.command(inputs=("image", "engine_dir"), outputs=("out", "sheet"), together=True)
@click.argument("image", metavar="IMAGE")
@media_engine_options
@click.option("--from", "src", default="natural", show_default=True, metavar="SPEC",
              help="Start expression: preset[@x] and/or AUxx=v, comma-separated.")
@click.option("--to", "dst", required=True, metavar="SPEC",
              help="Target expression: preset[@x] and/or AUxx=v, comma-separated (surprise, happiness@1.5,AU25=0.5).")
@click.option("--frames", type=click.IntRange(1, 10000), default=24, show_default=True, help="Number of frames.")
@click.option("--schedule", type=RegistryChoice("exprengine.morph:SCHEDULES"),
              default="linear", show_default=True, help="Interpolation schedule of the AU trajectory.")
@click.option("--fps", type=click.FloatRange(0.1, 240), default=12.0, show_default=True, help="Frame rate.")
@click.option("--bounce", is_flag=True, help="Play forward then backward (GIF/MP4 only).")
@click.option("--out", required=True, metavar="PATH", help="Output: .gif, .mp4, or a directory for PNG frames.")
@click.option("--sheet", default=None, metavar="PATH",
              help="Contact sheet PNG of the frames [default: next to --out, *_sheet.png]; 'none' to skip.")
@au_policy_options
def morph(image, engine_dir, device, src, dst, frames, schedule, fps, bounce, out, sheet, strict,
          max_intensity, above_max):
    """Morph a face crop from one expression to another, all frames in one engine call.

    \b
    Examples:
      exprengine morph face.png --engine engines/cx6 --to surprise --frames 24 --out surprise.gif
      exprengine morph face.png --engine engines/cx6 --from sadness --to happiness@1.5 \\
          --schedule ease-in-out --out smile.mp4
      exprengine morph face.png --engine engines/cx6 --to AU12=1.5,AU25=0.8 --out frames/
    """
    from exprengine.files import check_outputs_apart
    from exprengine.media import check_output_path, read_image
    from exprengine.morph import default_sheet_path, write_morph
    out_path = check_output_path(out, "animation")
    sheet_path = None if sheet is not None and sheet.lower() == "none" else \
        check_output_path(default_sheet_path(out_path) if sheet is None else sheet, "image")
    if sheet_path is not None:                  # the default sheet name is derived: check it too
        check_outputs_apart({"--out": out_path, "--sheet": sheet_path}, {"IMAGE": image, "--engine": engine_dir})
    with reported_warnings():
        policy = _policy(strict, max_intensity, above_max)
        src_aus, dst_aus = AUs.parse(src), AUs.parse(dst)
        policy.check(src_aus.values)
        policy.check(dst_aus.values)
        face = read_image(image)
        engine = _engine_or_default(engine_dir, device, policy, default="generator")
        calls = -(-frames // engine.max_batch)
        say(f"rendering {frames} frames in {calls} engine call{'s' if calls > 1 else ''} ...")
        rendered = engine.morph(face, src_aus, dst_aus, frames=frames, schedule=schedule,
                                progress=frames > engine.max_batch)
    write_morph(out_path, rendered, fps=fps, bounce=bounce, sheet=sheet_path)
    click.echo(f"wrote {out_path} ({frames} frames, {src_aus} -> {dst_aus}, {schedule})"
               + (f" and {sheet_path}" if sheet_path else ""))


# --- reference -----------------------------------------------------------------------------
@cli.command()
def presets():
    """List the 17 AUs, the expression presets and the conflicting AU pairs."""
    from exprengine.models.rig import ON_PHOTOS
    click.echo("Action Units (OpenFace order; intensities 0..5, network input = intensity / 5), and what the rig "
               "(the default for photos and video) does with each on real photos at intensity 2:")
    width = max(len(AU_DESCRIPTIONS[n]) for n in AU_NAMES)
    shown = {"moves": "moves plainly", "seen": "moves visibly; MediaPipe reads it on under half the faces",
             "slight": "moves slightly", "creases": "moves a little, creases painted"}
    for name in AU_NAMES:
        click.echo(f"  {name}  {AU_DESCRIPTIONS[name]:<{width}}  {shown[ON_PHOTOS[name]]}")
    click.echo(f"\nPresets (each AU at the preset's intensity, default 1.0; cap {DEFAULT_CAP:g}):")
    for p in PRESETS.values():
        click.echo(f"  {p.name:<10} {' + '.join(p.aus) or '(no AUs)'}" + (f"   [{p.note}]" if p.note else ""))
    click.echo("\nConflicting pairs (warned about; refused with --strict):")
    for c in CONFLICTS:
        click.echo(f"  {c.a} + {c.b}: {c.why}")


@cli.command()
def models():
    """List the generator architectures and engine backends."""
    from exprengine.engines.backends import BACKENDS
    from exprengine.models import describe, list_models
    names = list(list_models())
    width = max(map(len, [*names, *BACKENDS]))      # one column for both tables, the longest name
    click.echo("Models:")
    for name in names:
        click.echo(f"  {name:<{width}}  {describe(name)}")
    click.echo("\nBackends:")
    for name, b in BACKENDS.items():
        reason = b.unavailable_reason()
        click.echo(f"  {name:<{width}}  {b.description}" +
                   (f"\n  {'':<{width}}  unavailable here: {reason}" if reason else ""))


@cli.command(inputs=("data", "init"), outputs=("out",))
@click.option("--model", default="convnext6", show_default=True, metavar="NAME", help="Generator architecture.")
@click.option("--data", default="synthetic", show_default=True, metavar="SPEC",
              help="synthetic[:SEED[:IDENTITIES]] (rendered on the fly) or a data set directory.")
@click.option("--out", required=True, metavar="DIR", help="Run directory (checkpoints, samples, curves).")
@click.option("--objective", type=RegistryChoice("exprengine.training.trainer:OBJECTIVES"), default="gan", show_default=True,
              help="gan: GANimation's losses (any data); paired: L1 to the renderer's true edit (synthetic only).")
@click.option("--steps", type=STEPS, default=100_000, show_default=True,
              help="Critic steps (gan) or generator steps (paired).")
@click.option("--batch", type=BATCH, default=25, show_default=True)
@click.option("--lr", type=LEARNING_RATE, default=1e-4, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Initial weights and every step's draws.")
@click.option("--checkpoint-every", type=STEPS, default=1000, show_default=True)
@click.option("--sample-every", type=STEPS, default=1000, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where its checkpoint stopped.")
@click.option("--device", type=RegistryChoice("exprengine.engines.backends:device_names"), default="auto", show_default=True)
@click.option("--image-size", type=IMAGE_SIZE, default=None, help="Override the model's image size.")
@click.option("--dims", default=None, metavar="A,B,C", help="Override the model's widths (small experiments).")
@click.option("--depth", type=click.IntRange(1, 64), default=None, help="Override the number of residual blocks.")
@click.option("--critic-width", type=click.IntRange(1, 1024), default=64, show_default=True)
@click.option("--init", default=None, metavar="WEIGHTS",
              help="Start the generator from these weights (fine-tune): our .safetensors or a GANimation .pth.")
def train(model, data, out, objective, steps, batch, lr, seed, checkpoint_every, sample_every, resume, device,
          image_size, dims, depth, critic_width, init):
    """Train a generator with GANimation's losses (WGAN-GP, AU regression, cycle, attention).

    \b
    Examples:
      exprengine train --model convnext6 --data synthetic --out runs/cx6 --steps 20000
      exprengine train --model ganimation --data data/celeba --out runs/g --device cuda
      exprengine train --objective paired --dims 24,48,96 --batch 8 --out runs/small   # synthetic ground truth
      exprengine train --out runs/cx6 --resume --steps 40000        # continue, with a longer budget
      exprengine train --model ganimation --init 30_net_gen.pth --data data/mine --out runs/finetune
      exprengine build --model convnext6 --checkpoint runs/cx6/generator.safetensors --out engines/cx6
    """
    from exprengine.training.trainer import GENERATOR, TrainConfig, train_run
    config = TrainConfig(model=model, data=data, objective=objective, steps=steps, batch=batch, lr=lr, seed=seed,
                         checkpoint_every=checkpoint_every, sample_every=sample_every, image_size=image_size,
                         dims=dims, depth=depth, critic_width=critic_width, init=init)   # resuming: --steps only
    trainer = train_run(out, config, device, resume=resume)
    click.echo(f"trained {out} to step {trainer.step}: {Path(out) / GENERATOR}")


@cli.command(name="eval", inputs=("engine_dir", "real_dir", "inception", "photos"),
             outputs=("json_out", "sheet", "photo_sheets"), together=True)
@click.argument("engine_dir", metavar="ENGINE")
@click.option("--device", type=RegistryChoice("exprengine.engines.backends:device_names"), default="auto", show_default=True)
@click.option("--n", "count", type=click.IntRange(2, 100_000), default=200, show_default=True,
              help="Edits to evaluate (held-out synthetic identities).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Synthetic world seed (as trained on).")
@click.option("--json", "json_out", default=None, metavar="PATH", help="Write the report as JSON.")
@click.option("--sheet", default=None, metavar="PATH", help="PNG of examples: input | edit | ground truth.")
@click.option("--real", "real_dir", default=None, metavar="DATASET",
              help="Also FID/IS on the test split of a real data set (needs --inception).")
@click.option("--inception", default=None, metavar="PATH",
              help="FID Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth; not downloadable here).")
@click.option("--photos", default=None, metavar="DIR",
              help="Evaluate on the real face photos in DIR instead of synthetic faces: every AU and preset on "
                   "every face, measured by MediaPipe blendshapes, dlib identity distance and pixels changed "
                   "outside the faces.")
@click.option("--photo-sheets", default=None, metavar="DIR",
              help="With --photos: one labelled contact sheet PNG per face, into DIR (new or empty).")
def evaluate(engine_dir, device, count, seed, json_out, sheet, real_dir, inception, photos, photo_sheets):
    """Evaluate an engine: synthetic faces against exact ground truth (PSNR, SSIM, AU error),
    and optionally FID / Inception Score on real photos.

    AU error is measured by an AU estimator trained separately on the renderer (not the GAN
    critic). FID and IS need the standard FID Inception weights, which cannot be downloaded
    on these machines: give their path.

    \b
    Examples:
      exprengine eval engines/cx6 --n 500 --json eval.json --sheet eval.png
      exprengine eval engines/cx6 --real data/celeba --inception pt_inception-2015-12-05-6726825d.pth
      exprengine eval engines/cx6 --photos ~/.cache/exprengine/photos --photo-sheets sheets/ --json photos.json

    --photos runs only the photo evaluation (the synthetic one is skipped: run eval without
    --photos for it). `python -m exprengine.evaluation.photo_sets DIR` gathers a photo set.
    """
    if photo_sheets and not photos:
        raise UserError("--photo-sheets needs --photos DIR")
    if photos and (real_dir or sheet):
        raise UserError("--real and --sheet belong to the synthetic evaluation, which --photos skips; "
                        "run them without --photos")
    engine = _engine_or_default(engine_dir, device, AUPolicy(max_intensity=5.0))
    if photos:
        from exprengine.evaluation.photo_eval import format_report, run_photo_evaluation
        click.echo(format_report(run_photo_evaluation(engine, photos, photo_sheets=photo_sheets, json_path=json_out)))
        return
    from exprengine.evaluation.synthetic_eval import format_synthetic_report, run_synthetic_evaluation
    report = run_synthetic_evaluation(engine, count, seed, real_dir=real_dir, inception=inception, sheet_path=sheet,
                                      json_path=json_out)
    click.echo(format_synthetic_report(report))


@cli.command(name="train-au-estimator", outputs=("out",), together=True)
@click.option("--out", required=True, metavar="PATH", help="Weights file to write (.safetensors).")
@click.option("--examples", type=click.IntRange(100, 10_000_000), default=10000, show_default=True)
@click.option("--steps", type=STEPS, default=2000, show_default=True)
def train_au_estimator_command(out, examples, steps):
    """Train the independent AU estimator that `exprengine eval` measures edits with.

    \b
    Example (the shipped estimator):
      exprengine train-au-estimator --examples 10000 --steps 2000 --out exprengine/assets/au_estimator.safetensors
    """
    from exprengine.evaluation.au_estimator import save_estimator, train_au_estimator
    model, report = train_au_estimator(examples=examples, steps=steps)
    save_estimator(model, out, report)
    click.echo(f"wrote {out}: mean absolute AU error {report['mae']:.3f} on held-out identities")


@cli.command(inputs=("photos", "openface"), outputs=("out",))
@click.argument("photos", metavar="PHOTOS_DIR")
@click.option("--out", required=True, metavar="DATASET", help="Data set directory (created, or resumed).")
@click.option("--detector", type=RegistryChoice("exprengine.faces.landmarks:DETECTORS"), default="hog", show_default=True,
              help="face_recognition's detector model (cnn: more accurate, much slower on a CPU), or MediaPipe's.")
@click.option("--openface", default=None, metavar="CSV_DIR",
              help="OpenFace -aus output for the crops or photos: FaceLandmarkImg's folder of <stem>.csv, "
                   "or FeatureExtraction -fdir's one CSV (row n = n-th image in sorted order).")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True)
def prepare(photos, out, detector, openface, test_fraction):
    """Crop the faces of a folder of photos into a training data set (resumable).

    \b
    Examples:
      exprengine prepare celeba/img_align_celeba --out data/celeba
      OpenFace/build/bin/FaceLandmarkImg -fdir data/celeba/imgs -aus -out_dir data/celeba-openface
      exprengine prepare celeba/img_align_celeba --out data/celeba --openface data/celeba-openface
    """
    from exprengine.data.prepare import format_prepare_report, prepare_photos
    click.echo(format_prepare_report(prepare_photos(photos, out, detector, openface, test_fraction), out))


@cli.command(inputs=("data", "inception"), outputs=("out",))
@click.option("--out", required=True, metavar="DIR", help="Directory for the runs and the table.")
@click.option("--models", default="ganimation,convnext2,convnext4,convnext6,convnext2-ln", show_default=True,
              help="Comma-separated registry models.")
@click.option("--objective", type=RegistryChoice("exprengine.training.trainer:OBJECTIVES"), default="gan", show_default=True,
              help="gan: the thesis's GANimation losses; paired: L1 to the renderer's true edit.")
@click.option("--data", default="synthetic", show_default=True, metavar="SPEC",
              help="synthetic[:SEED[:IDENTITIES]] rendered on the fly, or a synthetic set from `exprengine synth` "
                   "(gan objective; faster where rendering would starve a GPU).")
@click.option("--steps", type=STEPS, default=20000, show_default=True,
              help="Critic steps (gan) or generator steps (paired) per model.")
@click.option("--batch", type=BATCH, default=25, show_default=True)
@click.option("--lr", type=LEARNING_RATE, default=1e-4, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--eval-n", type=click.IntRange(2, 100_000), default=200, show_default=True)
@click.option("--device", type=RegistryChoice("exprengine.engines.backends:device_names"), default="auto", show_default=True)
@click.option("--image-size", type=IMAGE_SIZE, default=None, help="Smaller budgets: train at this size.")
@click.option("--dims", default=None, metavar="A,B,C", help="Smaller budgets: override the widths.")
@click.option("--critic-width", type=click.IntRange(1, 1024), default=64, show_default=True)
@click.option("--inception", default=None, metavar="PATH",
              help="FID Inception-v3 weights: adds FID between edits and ground truth (not downloadable here).")
def compare(out, models, objective, data, steps, batch, lr, seed, eval_n, device, image_size, dims, critic_width, inception):
    """Train every generator family under the same budget and tabulate their evaluation.

    \b
    Examples:
      exprengine compare --out runs/compare --steps 20000 --device cuda
      exprengine compare --out runs/compare-cpu --steps 600 --batch 8 --image-size 64 --dims 16,32,64 --critic-width 16
      exprengine compare --out runs/compare-paired --objective paired --steps 600 --batch 8 --lr 3e-4 --image-size 64 --dims 16,32,64
      exprengine synth --n 30000 --out data/synth && exprengine compare --out runs/compare --data data/synth --device cuda
    """
    from exprengine.training.compare import compare as run_compare, markdown
    from exprengine.training.trainer import TrainConfig
    config = TrainConfig(objective=objective, data=data, steps=steps, batch=batch, lr=lr, seed=seed, image_size=image_size, dims=dims,
                         critic_width=critic_width, checkpoint_every=max(1, steps // 10), sample_every=max(1, steps // 4))
    click.echo(markdown(run_compare(out, config, models, eval_n, device, inception_path=inception)))


@cli.command(outputs=("out",), together=True)
@click.option("--n", "count", type=click.IntRange(1, 10_000_000), default=10000, show_default=True,
              help="Number of faces to render.")
@click.option("--out", required=True, metavar="DIR", help="Data set directory to write (atomically).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="World seed: identities and expressions.")
@click.option("--identities", type=click.IntRange(2, 10_000_000), default=1000, show_default=True,
              help="Distinct identities (samples cycle through them).")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Fraction of identities held out for testing.")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Processes [default: CPU count, max 8].")
def synth(count, out, seed, identities, test_fraction, workers):
    """Render a synthetic face data set with exact AU labels (for training and evaluation).

    \b
    Examples:
      exprengine synth --n 10000 --out data/synth
      exprengine synth --n 200000 --identities 5000 --seed 1 --out data/synth-large
    """
    from exprengine.data.datasets import write_synthetic
    stats = write_synthetic(out, count, seed, identities, test_fraction, workers)
    click.echo(f"wrote {out}: {stats['n']} faces of {identities} identities "
               f"({stats['images_per_second']:.0f} images/s with {stats['workers']} workers)")


@cli.command(outputs=("out",))
@click.option("--out", default="exprengine-demo", show_default=True, metavar="DIR",
              help="Output folder (replaced if it is an earlier demo's).")
@click.option("--model", default="default", show_default=True, metavar="NAME",
              help="'default' (the shipped trained model) or a registry architecture (random weights).")
@click.option("--backend", type=RegistryChoice("exprengine.engines.backends:backend_names", device="cpu", compiled=True), default="onnxruntime",
              show_default=True,
              help="Compiled backend to build and time against eager PyTorch.")
@click.option("--frames", type=click.IntRange(2, 64), default=16, show_default=True, help="Morph length.")
@click.option("--repeats", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Timing repetitions (the median is reported).")
def demo(out, model, backend, frames, repeats):
    """Build an engine from the shipped default model and edit bundled faces with every preset.

    \b
    Writes to DIR: engine/; presets.png and edits/ (a held-out synthetic face, every preset,
    above the renderer's true faces); regions.md (where the edits land, measured); the
    bundled photo's edits (presets_photo.png, edits_photo/); morph.gif and morph_sheet.png;
    timing.md (eager PyTorch vs the engine, measured now); README.txt; demo.json.

    \b
    Examples:
      exprengine demo
      exprengine demo --out /tmp/demo --backend aoti
      exprengine demo --model ganimation        # the architecture with random weights
    """
    from exprengine.demo import run_demo
    run_demo(Path(out), model=model, backend=backend, frames=frames, repeats=repeats, echo=click.echo)


def main(argv: list[str] | None = None) -> int:
    """Console entry point (`exprengine`): runs `cli` through `console.run` (user errors: one
    line, exit status 2; Ctrl-C and SIGTERM: clean-up, no partial output)."""
    return run(cli, argv)


if __name__ == "__main__":
    sys.exit(main())
