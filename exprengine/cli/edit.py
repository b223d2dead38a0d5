"""`exprengine edit`, `video`, `morph`: photos, crops, videos and morphs."""
from __future__ import annotations

import click

from exprengine.aus import AUs
from exprengine.cli.options import (au_policy_options, aus_from_options, cli, detector_from, engine_or_default,
                                    face_options, media_engine_options, media_options, policy_from)
from exprengine.console import RegistryChoice, reported_warnings, say
from exprengine.errors import UserError
from exprengine.video import X264_PRESETS


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
        policy = policy_from(strict, max_intensity, above_max)
        target = aus_from_options(presets, aus)
        policy.check(target.values)
        if crop:
            from exprengine.faces.photo import edit_crop_file
            photo = read_photo(image)          # its colour profile and EXIF go to the edited crop
            engine = engine_or_default(engine_dir, device, policy, default="generator")
            for note in edit_crop_file(image, out_path, engine, target, att_path, photo=photo):
                say(f"note: {note}")
            click.echo(f"wrote {out_path} ({target})")
            return
        from exprengine.faces.editor import FaceEditor
        from exprengine.faces.photo import edit_photo_file
        photo = read_photo(image)
        engine = engine_or_default(engine_dir, device, policy)    # checked before any work, face or not
        editor = FaceEditor(engine, detector_from(detector, min_face), align=align, mask=mask)
        report = edit_photo_file(image, out_path, engine, target, editor, select, photo=photo)
    for note in report.notes:
        say(f"note: {note}")
    if not report.edited and require_face:
        say(f"exprengine: warning: {report.summary}")
        raise click.exceptions.Exit(1)
    click.echo(report.summary)


@cli.command(inputs=("video_path", "engine_dir", "timeline", "engine_age_dir"), outputs=("out",), together=True)
@click.argument("video_path", metavar="VIDEO")
@media_options
@click.option("--age", default=None, metavar="AGE",
              help="Age every face first: years 0..70 or an age class (30-39), with --engine-age. Alone, "
                   "without --preset/--au/--timeline, the faces are only aged.")
@click.option("--engine-age", "engine_age_dir", default=None, metavar="DIR",
              help="Age engine directory for --age (made by `exprengine build --model lats ...`) [default: the "
                   "installed age model, if any: none ships yet].")
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
def video(video_path, engine_dir, device, presets, aus, age, engine_age_dir, src, schedule, timeline, out, select,
          detector, min_face, align, mask, detect_every, detect_scale, reproducible, no_audio, encoder_preset, strict,
          max_intensity, above_max):
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
      exprengine video in.mp4 --age 60 --engine-age engines/age --out old.mp4
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
        policy = policy_from(strict, max_intensity, above_max)
        if timeline and (presets or aus or src):
            raise UserError("--timeline gives the expression itself: drop --preset/--au/--from")
        age_engine = None
        if age is not None:
            from exprengine.cli.age import load_age_engine
            from exprengine.faces.age import parse_age
            parse_age(age)
            age_engine = load_age_engine(engine_age_dir, device, "engine_age_dir")
            if engine_dir is not None and not (presets or aus or src or timeline):
                raise UserError("--engine edits expressions: give --preset/--au/--timeline with it, or drop it")
        elif engine_age_dir is not None:
            raise UserError("--engine-age is the engine of --age; give --age, or drop it")
        plan, engine = None, None
        if age is None or presets or aus or src or timeline:
            plan = expression_plan(None if timeline else aus_from_options(presets, aus), start=src or None,
                                   schedule=schedule, keyframes=timeline, policy=policy)
            engine = engine_or_default(engine_dir, device, policy)
        result = edit_video(video_path, out_path, engine, plan, make_detector(detector, min_face), select=select,
                            detect_every=detect_every, detect_scale=detect_scale, reproducible=reproducible,
                            audio=not no_audio, encoder_preset=encoder_preset, align=align, mask=mask,
                            age_engine=age_engine, age=age)
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
        policy = policy_from(strict, max_intensity, above_max)
        src_aus, dst_aus = AUs.parse(src), AUs.parse(dst)
        policy.check(src_aus.values)
        policy.check(dst_aus.values)
        face = read_image(image)
        engine = engine_or_default(engine_dir, device, policy, default="generator")
        calls = -(-frames // engine.max_batch)
        say(f"rendering {frames} frames in {calls} engine call{'s' if calls > 1 else ''} ...")
        rendered = engine.morph(face, src_aus, dst_aus, frames=frames, schedule=schedule,
                                progress=frames > engine.max_batch)
    write_morph(out_path, rendered, fps=fps, bounce=bounce, sheet=sheet_path)
    click.echo(f"wrote {out_path} ({frames} frames, {src_aus} -> {dst_aus}, {schedule})"
               + (f" and {sheet_path}" if sheet_path else ""))
