"""Packaging the shipped default model: evaluate a finished run's generator and write it, with
its model card, to `exprengine/assets/default_model.safetensors` (read back by
`exprengine.models.pretrained`).

    python -m exprengine.training.package RUN_DIR --command "exprengine train ..."

The card's evaluation (`evaluate_default`) is re-measured against the shipped file by
tests/test_pretrained.py.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from exprengine.models.generator import AttentionGenerator
from exprengine.models.pretrained import default_weights_path
from exprengine.models.weights import load_weights, save_weights
from exprengine.training.trainer import GENERATOR, Trainer

EVAL_N = 200          # held-out synthetic edits behind the card's numbers
EVAL_SEED = 0         # the world the model was trained in (identities 900-999 are held out)
PRESET_FACES = 10     # held-out neutral faces behind the card's per-preset region numbers


def evaluate_default(generator: AttentionGenerator, n: int = EVAL_N) -> dict:
    """The card's evaluation of `generator`, run as eager FP32 PyTorch (an `Engine` from it, batches
    of at most 64): `evaluation.synthetic_eval.evaluate_synthetic` on `n` held-out synthetic edits
    of identities 900-999 of the world of seed EVAL_SEED (psnr and preserved_psnr in dB against
    the renderer's true edit, ssim, au_mae in AU intensity units, background_change in 8-bit
    levels, on_target as a fraction, and psnr / ssim / au_mae of not editing under `no_edit`),
    plus under `presets` the per-preset region check (`preset_region_report`) on PRESET_FACES
    held-out neutral faces."""
    from exprengine.engine import Engine
    from exprengine.evaluation.synthetic_eval import evaluate_synthetic, preset_region_report
    engine = Engine.from_generator(generator, max_batch=64)
    report, _ = evaluate_synthetic(engine, n, EVAL_SEED)
    report.pop("engine", None)
    report["presets"] = preset_region_report(engine, faces=PRESET_FACES)
    return report


def package(run_dir: str | os.PathLike, out: str | os.PathLike, command: str, n: int = EVAL_N) -> dict:
    """Evaluate the generator of the finished training run in `run_dir` (its
    `generator.safetensors` and checkpoint's config) with `evaluate_default` on `n` edits, and
    write it with its model card (the returned dict: name, architecture, parameter count, data,
    `command` as the training command, training config, torch version, evaluation, protocol,
    limitations) to `out` in our weights format, atomically (`models.weights.save_weights`).
    Raises UserError for a missing or damaged run, or an output that cannot be written."""
    import torch

    run_dir = Path(run_dir)
    config = Trainer.checkpoint_config(run_dir)
    generator = load_weights(run_dir / GENERATOR)
    card = {
        "name": f"synthetic-{config.model}",
        "architecture": generator.config.to_dict(),
        "parameters": sum(p.numel() for p in generator.parameters()),
        "trained_on": f"exprengine's synthetic face world, seed {config.seed}, identities 0-899 of 1000 "
                      f"(rendered on the fly, {config.steps} x {config.batch} images)",
        "training_command": command,
        "training_config": config.to_dict(),
        "torch": torch.__version__,
        "evaluation": evaluate_default(generator, n),
        "evaluation_protocol": f"exprengine eval: {n} edits of held-out identities 900-999 (seed {EVAL_SEED}), "
                               "eager FP32 PyTorch",
        "limitations": "Trained only on synthetic cartoon faces: on photographs its edits are weak or wrong. "
                       "Train on real faces (exprengine prepare + OpenFace labels + exprengine train) or "
                       "import a GANimation checkpoint for photos.",
    }
    save_weights(generator, out, extra={"model_card": card})
    return card


if __name__ == "__main__":
    import click

    @click.command()
    @click.argument("run_dir")
    @click.option("--command", required=True, help="The exprengine train command that made the run.")
    @click.option("--out", default=None, help="Where to write (default: the package's assets).")
    @click.option("--n", type=int, default=EVAL_N, show_default=True)
    def _main(run_dir, command, out, n):
        card = package(run_dir, out or default_weights_path(), command, n)
        click.echo(json.dumps(card["evaluation"], indent=2))

    _main()
