"""The `exprengine` group and what its commands share: option groups, numeric bounds, and the
few steps every media command takes (the expression from --preset/--au, the engine or the
default one, the face detector)."""
from __future__ import annotations

import click

from exprengine import __version__
from exprengine.aus import DEFAULT_CAP, AUPolicy, AUs
from exprengine.console import Group, RegistryChoice, say
from exprengine.errors import UserError

# Bounds of the numeric options shared by several commands: values outside them are refused
# by click before any work, as one line (an unbounded batch or seed used to reach NumPy/torch
# as an overflow or a MemoryError).
SEED = click.IntRange(0, 2**32 - 1)                 # NumPy's and torch's seed range
STEPS = click.IntRange(1, 1_000_000_000)
BATCH = click.IntRange(1, 4096)                     # images per training step
LEARNING_RATE = click.FloatRange(0, 1, min_open=True)
class LossWeight(click.ParamType):
    """NAME=W, a loss and its weight (a number 0..1e9) -> (NAME, W); which names a model's
    training has is checked by `training.runs.train_model`."""

    name = "NAME=W"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        name, sep, weight = str(value).partition("=")
        try:
            number = float(weight)
        except ValueError:
            number = float("nan")
        if not sep or not name.strip() or not (0 <= number <= 1e9):
            self.fail(f"{value!r} is not NAME=W with a weight W in 0..1e9 (e.g. cycle=0)", param, ctx)
        return name.strip(), number


LOSS_WEIGHT = LossWeight()
#: Training sizes: powers of two (the critic halves the image down to 2x2, training/trainer.py).
IMAGE_SIZE = click.Choice([16, 32, 64, 128, 256, 512])


def policy_from(strict: bool, max_intensity: float, above_max: str) -> AUPolicy:
    """The `AUPolicy` of --strict, --max-intensity (OpenFace 0..5) and --above-max."""
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
    """--engine (required: a directory made by `exprengine build`) and --device (auto, cpu, cuda)."""
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


def aus_from_options(presets, aus) -> AUs:
    """The expression of --preset NAME[@X] (repeatable) then --au AUxx=V (repeatable); UserError when neither is given."""
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


def engine_or_default(engine_dir: str | None, device: str, policy: AUPolicy, default: str = "rig"):
    """`default_engines.engine_or_default` with a progress bar, its warnings said as `warning:` lines."""
    from exprengine.default_engines import engine_or_default
    return engine_or_default(engine_dir, device, policy, default, progress=True, warn=lambda s: say(f"warning: {s}"))


def detector_from(detector: str, min_face: int):
    """The face detector of --detector (hog, cnn, mediapipe) finding faces of at least --min-face pixels."""
    from exprengine.faces.landmarks import make_detector
    return make_detector(detector, min_size=min_face)
