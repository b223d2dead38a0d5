"""`exprengine ui`: the local web page for editing photos and camera stills."""
from __future__ import annotations

import click

from exprengine.cli.options import cli, engine_or_default
from exprengine.console import RegistryChoice, say
from exprengine.errors import UserError


@cli.command(inputs=("engine_dir", "engine_age_dir"))
@click.option("--engine", "engine_dir", default=None, metavar="DIR",
              help="Expression engine directory made by `exprengine build` [default: the AU rig, built once "
                   "into the cache].")
@click.option("--engine-age", "engine_age_dir", default=None, metavar="DIR",
              help="Age engine directory (made by `exprengine build --model lats ...`) for the age slider and "
                   "the lifespan [default: the shipped age model when this install has one; else no age controls].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (127.0.0.1: this computer only; the page has no login, so any other "
                   "address lets the network use it).")
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--device", type=RegistryChoice("exprengine.engines.backends:device_names"), default="auto",
              show_default=True, help="Where to run the engines.")
@click.option("--detector", type=RegistryChoice("exprengine.faces.landmarks:DETECTORS"), default="hog",
              show_default=True, help="Face detector, as `exprengine edit --detector`.")
@click.option("--min-face", type=click.IntRange(8, 100000), default=40, show_default=True,
              help="Smallest face found, in pixels.")
def ui(engine_dir, engine_age_dir, host, port, device, detector, min_face):
    """Start a local web page to edit the faces of a photo (or a camera still) and keep it open.

    Load a photo, pick a face or all of them, move the 17 AU sliders or choose a preset and its
    intensity, and the preview follows (one engine call for every chosen face); the conflict
    warnings of `exprengine edit` are shown beside the sliders. Render a morph to a preset as an
    animation (GIF or MP4), age the faces and render the lifespan when an age engine is loaded,
    and download the edited photo at full resolution: the same bytes `exprengine edit` writes
    with the same settings (the page shows that command). Stop with Ctrl-C.

    \b
    Examples:
      exprengine ui                                      # then open http://127.0.0.1:7860/
      exprengine ui --engine engines/rig --port 8080
      exprengine ui --engine-age engines/age             # with the age slider and the lifespan
    """
    from exprengine.models.pretrained import has_default_age_model
    from exprengine.ui.server import LOCAL_HOSTS, create_app, serve
    from exprengine.ui.state import NO_AGE_NOTE, Workbench
    engine = engine_or_default(engine_dir, device, None)
    if engine.is_age:
        raise UserError("--engine ages faces; give an expression engine (the rig's or a generator's), "
                        "and the age engine as --engine-age")
    age_engine, age_note = None, ""
    try:
        from exprengine.cli.age import load_age_engine
        age_engine = load_age_engine(engine_age_dir, device, "engine_age_dir")
        if engine_age_dir is None:
            age_note = ("The shipped age model ages the synthetic faces it was trained on, not photographs; "
                        "for real faces start the page with --engine-age DIR (an engine of the LATS authors' "
                        "generators).")
    except UserError as e:
        if engine_age_dir is not None:
            raise
        # no shipped age model (or a damaged one): the page starts without age controls and says why
        age_note = NO_AGE_NOTE if not has_default_age_model() else f"{e}."
    bench = Workbench(engine, age_engine, detector, min_face, engine_dir, engine_age_dir, age_note)
    if age_engine is None:
        say(f"note: {age_note[0].lower()}{age_note[1:]}")

    def ready(url):
        if host.strip("[]").lower() not in LOCAL_HOSTS:      # said before the serving line, which callers wait for
            say(f"warning: the page has no login and --host {host} makes it reachable from the network: "
                "anyone who can reach this port can use it")
        click.echo(f"serving the editing page at {url} (Ctrl-C to stop)")
    serve(create_app(bench, host), host, port, ready=ready)
