"""`exprengine age`: age or rejuvenate the faces of a photo, or render one face across the lifespan."""
from __future__ import annotations

import click

from exprengine.cli.options import cli, detector_from, engine_or_default, policy_from
from exprengine.console import RegistryChoice, reported_warnings, say
from exprengine.errors import UserError

#: Said when no age engine is given and this install has no age model (with the option that takes one).
NO_AGE_MODEL = ("no age model is installed: build an age engine from a LATS generator "
                "(exprengine build --model lats --checkpoint latest_net_g_running.pth --out engines/age, "
                "the authors' released weights or your own training) and pass it with {option}")


def load_age_engine(engine_dir: str | None, device: str, param: str = "engine_dir"):
    """The age engine at `engine_dir` (verified), or the shipped age model when none is given
    (`default_engines.default_age`: built once into the cache for the CPU); UserError when
    neither exists, or for an expression engine (naming the command's parameter `param`, said
    as its option)."""
    from exprengine.faces.age import require_age_engine
    from exprengine.models.pretrained import has_default_age_model
    if engine_dir is None and not has_default_age_model():
        raise UserError(NO_AGE_MODEL.format(option=f"`{param}`"))
    engine = engine_or_default(engine_dir, device, None, default="age")
    require_age_engine(engine, param)
    return engine


@cli.command(inputs=("image", "engine_dir", "expression_engine_dir"), outputs=("out", "sheet"), together=True)
@click.argument("image", metavar="IMAGE")
@click.option("--to", "end", default=None, metavar="AGE",
              help="Target age: years 0..70 (60) or an age class (30-39); with --traverse, the last frame's age.")
@click.option("--traverse", is_flag=True, help="Render one face across ages (GIF, MP4 or frames) instead of a photo.")
@click.option("--from", "start", default=None, metavar="AGE",
              help="With --traverse: the first frame's age [default: the lifespan's start].")
@click.option("--frames", type=click.IntRange(1, 10000), default=None,
              help="With --traverse: number of frames [default: 101 over the lifespan, as the reference; "
                   "one per 0.05 class step between --from and --to].")
@click.option("--fps", type=click.FloatRange(0.1, 240), default=12.0, show_default=True,
              help="With --traverse: frame rate.")
@click.option("--sheet", default=None, metavar="PATH", help="With --traverse: also a contact sheet PNG of the frames.")
@click.option("--engine", "engine_dir", default=None, metavar="DIR",
              help="Age engine directory made by `exprengine build --model lats ...` [default: the installed "
                   "age model, if any: none ships yet; one trained on the synthetic faces would age only those].")
@click.option("--device", type=RegistryChoice("exprengine.engines.backends:device_names"), default="auto",
              show_default=True, help="Where to run the engines.")
@click.option("--out", required=True, metavar="PATH",
              help="Output: an image; with --traverse a .gif, .mp4 or a directory for PNG frames.")
@click.option("--crop", is_flag=True, help="IMAGE is already an aligned face crop: age all of it, no detection.")
@click.option("--face", "select", default=None, metavar="all|largest|N",
              help="Which faces: all, the largest, or number N (0 = most confident) [default: all; "
                   "--traverse: largest].")
@click.option("--detector", type=RegistryChoice("exprengine.faces.landmarks:DETECTORS"), default="hog",
              show_default=True, help="Face detector (hog and cnn: dlib's 68 landmarks; mediapipe: its mesh).")
@click.option("--min-face", type=click.IntRange(8, 100000), default=40, show_default=True,
              help="Smallest face detected, in pixels.")
@click.option("--preset", "presets", multiple=True, metavar="NAME[@X]",
              help="Then edit the aged faces to this expression (repeatable, as `exprengine edit`).")
@click.option("--au", "aus", multiple=True, metavar="AUxx=V", help="Then set this AU on the aged faces. Repeatable.")
@click.option("--expression-engine", "expression_engine_dir", default=None, metavar="DIR",
              help="Expression engine for --preset/--au [default: the AU rig, built once into the cache].")
def age(image, end, traverse, start, frames, fps, sheet, engine_dir, device, out, crop, select, detector, min_face,
        presets, aus, expression_engine_dir):
    """Age or rejuvenate every face of a photo, or render one face across the lifespan (--traverse).

    Faces are found, aligned as the age model was trained (landmarks, the FFHQ-style square,
    256x256), aged in one engine call and pasted back: pixels outside the faces keep their values.
    Ages are years from 0 to 70 or one of the six age classes (0-2, 3-6, 7-9, 15-19, 30-39,
    50-69). With --preset/--au the aged faces are then given that expression (age first, then
    expression). A traversal renders every frame in one engine call and writes a GIF, an MP4 or
    PNG frames of the aligned face. Give an age engine built from the LATS authors' released
    generators (or your own training); no age model ships yet (an installed default one is used
    without --engine).

    \b
    Examples:
      exprengine age photo.jpg --to 60 --engine engines/age --out old.jpg
      exprengine age photo.jpg --to 3-6 --engine engines/age --face largest --out child.png
      exprengine age photo.jpg --to 60 --preset happiness --engine engines/age --out old_happy.png
      exprengine age photo.jpg --traverse --engine engines/age --out life.mp4 --sheet life.png
      exprengine age face.png --traverse --from 5 --to 65 --frames 24 --crop --engine engines/age --out life.gif
    """
    from exprengine.faces.age import parse_age, traversal_ages
    from exprengine.media import check_output_path, read_photo
    if not traverse and (start is not None or frames is not None or sheet is not None):
        raise UserError("--from, --frames and --sheet are for --traverse")
    if not traverse and end is None:
        raise UserError("say which age: --to YEARS (0 to 70) or --to CLASS (such as 30-39), or --traverse")
    if traverse and (presets or aus):
        raise UserError("--preset/--au apply to photos, not to --traverse")
    if expression_engine_dir is not None and not (presets or aus):
        raise UserError("--expression-engine edits the expression of --preset/--au; give one, or drop it")
    if crop and (presets or aus):
        raise UserError("--preset/--au edit the faces of a photo; drop --crop")
    if select is None:
        select = "largest" if traverse else "all"
    ages = traversal_ages(start, end, frames) if traverse else None     # every age checked before any work
    years = None if traverse else parse_age(end, "end")
    out_path = check_output_path(out, "animation" if traverse else "image")
    sheet_path = check_output_path(sheet, "image") if sheet else None
    with reported_warnings():
        target = None
        if presets or aus:
            from exprengine.aus import AUs
            target = AUs.parse(*presets, *aus)
        engine = load_age_engine(engine_dir, device)
        if traverse:
            from exprengine.morph import write_morph
            if crop:
                from exprengine.media import read_image
                rendered = engine.traverse(read_image(image), ages)
            else:
                from exprengine.faces.age import AgeEditor
                rendered, _ = AgeEditor(engine, detector_from(detector, min_face)).traverse(
                    read_photo(image).pixels, ages, select)
            write_morph(out_path, rendered, fps=fps, sheet=sheet_path)
            if ages is None:
                ages = engine.traversal_ages()
            span = f"{ages[0]:g} to {ages[-1]:g} years"
            click.echo(f"wrote {out_path} ({len(rendered)} frames, {span})"
                       + (f" and {sheet_path}" if sheet_path else ""))
            return
        photo = read_photo(image)
        if crop:
            from exprengine.faces.photo import age_crop_file
            for note in age_crop_file(image, out_path, engine, years, photo=photo):
                say(f"note: {note}")
            click.echo(f"wrote {out_path} ({years:g} years)")
            return
        from exprengine.faces.age import AgeEditor
        from exprengine.faces.photo import age_photo_file
        expression_engine = None
        if target is not None:
            from exprengine.aus import DEFAULT_CAP
            policy = policy_from(False, DEFAULT_CAP, "warn")
            expression_engine = engine_or_default(expression_engine_dir, device, policy)
            if expression_engine.is_age:
                raise UserError("--expression-engine ages faces; give an expression engine (the rig's or a "
                                "generator's), or drop it for the rig")
        report = age_photo_file(image, out_path, engine, years, AgeEditor(engine, detector_from(detector, min_face)),
                                select, expression=target, expression_engine=expression_engine, photo=photo)
    for note in report.notes:
        say(f"note: {note}")
    click.echo(report.summary)
