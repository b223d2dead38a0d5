"""The shipped default model: a trained generator in `exprengine/assets/`, with its model card.

    >>> from exprengine.models.pretrained import load_default_generator, default_model_card
    >>> g = load_default_generator()              # AttentionGenerator, eval mode, sha256-checked
    >>> card = default_model_card()               # training command, data, evaluation numbers

It is trained on the synthetic face world only (`exprengine/data/synthetic.py`): it edits the
renderer's faces, not photographs. The card's evaluation is re-measured by
tests/test_pretrained.py. Maintainers make the file from a finished `exprengine train` run:

    python -m exprengine.models.pretrained RUN_DIR --command "exprengine train ..."
"""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from exprengine.errors import UserError
from exprengine.models.generator import AttentionGenerator

DEFAULT_WEIGHTS = "default_model.safetensors"
EVAL_N = 200          # held-out synthetic edits behind the card's numbers
EVAL_SEED = 0         # the world the model was trained in (identities 900-999 are held out)
PRESET_FACES = 10     # held-out neutral faces behind the card's per-preset region numbers


def default_weights_path() -> Path:
    return Path(str(resources.files("exprengine") / "assets" / DEFAULT_WEIGHTS))


def has_default_model() -> bool:
    return default_weights_path().is_file()


def load_default_generator() -> AttentionGenerator:
    from exprengine.checkpoints import load_weights
    if not has_default_model():
        raise UserError(f"this install has no default model ({default_weights_path()} is missing); "
                        "reinstall exprengine or build from --checkpoint")
    return load_weights(default_weights_path())


def default_model_card() -> dict:
    """The metadata stored with the default weights (training command, data, evaluation)."""
    from safetensors.torch import safe_open
    with safe_open(str(default_weights_path()), framework="pt") as f:
        metadata = f.metadata() or {}
    return json.loads(metadata.get("model_card", "{}"))


def evaluate_default(generator: AttentionGenerator, n: int = EVAL_N) -> dict:
    """The card's evaluation: eager FP32 PyTorch on `n` held-out synthetic edits (seed EVAL_SEED),
    plus the per-preset region check on PRESET_FACES held-out neutral faces."""
    from exprengine.engine import Engine
    from exprengine.evaluation.synthetic_eval import evaluate_synthetic, preset_region_report
    engine = Engine.from_generator(generator, max_batch=64)
    report, _ = evaluate_synthetic(engine, n, EVAL_SEED)
    report.pop("engine", None)
    report["presets"] = preset_region_report(engine, faces=PRESET_FACES)
    return report


def package(run_dir: str | os.PathLike, out: str | os.PathLike, command: str, n: int = EVAL_N) -> dict:
    """Evaluate a finished run's generator and write it with its model card to `out`."""
    import torch

    from exprengine.checkpoints import load_weights, save_weights
    from exprengine.training.trainer import GENERATOR, Trainer
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
