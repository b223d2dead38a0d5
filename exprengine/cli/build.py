"""`exprengine build`, `info`, `presets`, `models`: engines and the reference tables."""
from __future__ import annotations

import json

import click

from exprengine.cli.options import SEED, cli
from exprengine.console import RegistryChoice, say


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


# --- reference -----------------------------------------------------------------------------
@cli.command()
def presets():
    """List the 17 AUs (with what the rig does with each on photos), the presets and the conflicting AU pairs."""
    from exprengine.models.rig import describe_aus
    click.echo(describe_aus())


@cli.command()
def models():
    """List the generator architectures and engine backends."""
    from exprengine.engines.backends import describe_registry
    click.echo(describe_registry())
