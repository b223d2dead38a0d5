"""Packaging the shipped default models: evaluate a finished run's generator and write it, with
its model card, to `exprengine/assets/default_model.safetensors` (the expression generator) or
`exprengine/assets/default_age_model.safetensors` (the age model, `--age`), read back by
`exprengine.models.pretrained`.

    python -m exprengine.training.package RUN_DIR --command "exprengine train ..."
    python -m exprengine.training.package RUN_DIR --age --command "exprengine train --model lats-small ..."

The cards' evaluations (`evaluate_default`, `evaluate_default_age`) are re-measured against the
shipped files by tests/test_pretrained.py.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from exprengine.models.generator import AttentionGenerator
from exprengine.models.pretrained import DEFAULT_AGE_WEIGHTS, default_weights_path
from exprengine.models.weights import load_weights, save_weights
from exprengine.training.trainer import GENERATOR, Trainer

EVAL_N = 200          # held-out synthetic edits behind the card's numbers
EVAL_SEED = 0         # the world the model was trained in (identities 900-999 are held out)
PRESET_FACES = 10     # held-out neutral faces behind the card's per-preset region numbers
AGE_EVAL_N = 60       # held-out synthetic age samples behind the age card's PSNR per class
AGE_TRAVERSALS = 8    # held-out lifespans behind the age card's apparent-age numbers


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


def evaluate_default_age(generator, n: int = AGE_EVAL_N, traversals: int = AGE_TRAVERSALS) -> dict:
    """The age card's evaluation of the LATS `generator`, run as eager FP32 PyTorch (an `Engine`
    from it): `evaluation.age_eval.evaluate_age_engine` on `n` held-out samples and `traversals`
    held-out lifespans of the world of seed EVAL_SEED (PSNR in dB per target class against the
    renderer's true aged face, beside not editing; apparent age in years by the independent age
    estimator; Spearman rank correlation along each traversal)."""
    from exprengine.engine import Engine
    from exprengine.evaluation.age_eval import evaluate_age_engine
    return evaluate_age_engine(Engine.from_generator(generator, max_batch=64), n, EVAL_SEED, traversals)


def package_age(run_dir: str | os.PathLike, out: str | os.PathLike, command: str, n: int = AGE_EVAL_N,
                running: bool = False, traversals: int = AGE_TRAVERSALS) -> dict:
    """`package` for an age model: evaluate the trained generator of the finished LATS run in
    `run_dir` (or, with `running`, its running average: `LATSTrainer.checkpoint_generator`)
    with `evaluate_default_age` (`n` samples, `traversals` lifespans) and write it with its
    model card (the returned dict) to `out`, atomically. UserError for a missing or damaged run,
    an unfinished one, a run of an expression model or on another data set than the evaluation's
    world (synthetic-age, seed EVAL_SEED, 1000 identities), or an output that cannot be written."""
    import torch

    from exprengine.errors import UserError
    from exprengine.models import is_lats
    from exprengine.training.lats_trainer import SYNTHETIC_AGE, LATSTrainer, synthetic_age_world
    run_dir = Path(run_dir)
    config = LATSTrainer.checkpoint_config(run_dir)
    step = int(LATSTrainer.read_checkpoint(run_dir, tensors=False)[0]["step"])
    if step != config.steps:
        raise UserError(f"{run_dir} stopped at step {step} of {config.steps}; finish it (resume) or resume it "
                        f"with `steps` {step} before packaging")
    if synthetic_age_world(config.data) != (EVAL_SEED, 1000):
        raise UserError(f"{run_dir} trained on {config.data}; the default age model trains on the synthetic age "
                        f"world of seed {EVAL_SEED} with 1000 identities ({SYNTHETIC_AGE}), whose held-out "
                        "identities 900-999 its card is measured on")
    generator = LATSTrainer.checkpoint_generator(run_dir, running)
    if not is_lats(generator):
        raise UserError(f"{run_dir} is not an age model's run ({config.model})")
    drawn = (f"a pool of {config.pool} samples rendered once, {config.steps} x {config.batch} draws from it"
             if config.pool else f"rendered on the fly, {config.steps} x {config.batch} images")
    card = {
        "name": f"synthetic-age-{config.model}",
        "architecture": generator.config.to_dict(),
        "parameters": sum(p.numel() for p in generator.parameters()),
        "trained_on": f"exprengine's synthetic age world (seed {EVAL_SEED}), identities 0-899 of 1000, each face "
                      f"at its base age and the true face at a target class's centre age ({drawn})",
        "training_command": command,
        "training_config": config.to_dict(),
        "weights": (f"the running generator (moving average, decay {config.ema_decay})" if running else
                    f"the trained generator at step {config.steps} (not its running average, which after "
                    f"{config.steps} steps at decay {config.ema_decay} still holds "
                    f"{100 * config.ema_decay ** config.steps:.1f} % of the initial weights)"),
        "torch": torch.__version__,
        "evaluation": evaluate_default_age(generator, n, traversals),
        "limitations": "Trained only on synthetic cartoon faces: it ages the renderer's faces (proportions, lines "
                       "and folds, sag, grey and thinning hair), not photographs; on a real face its output is "
                       "not an aged photo. Real faces need the LATS authors' released generators "
                       "(exprengine build --model lats --checkpoint latest_net_g_running.pth) or training on real "
                       "faces in the FFHQ-Aging class-folder layout.",
    }
    save_weights(generator, out, extra={"model_card": card})
    return card


if __name__ == "__main__":
    import click

    @click.command()
    @click.argument("run_dir")
    @click.option("--command", required=True, help="The exprengine train command that made the run.")
    @click.option("--out", default=None, help="Where to write (default: the package's assets).")
    @click.option("--n", type=int, default=None, help=f"Evaluation samples [default: {EVAL_N}; --age {AGE_EVAL_N}].")
    @click.option("--age", is_flag=True, help="The run is an age model's (LATS): write the default age model.")
    @click.option("--running", is_flag=True, help="With --age: the running-average generator, not the trained one.")
    def _main(run_dir, command, out, n, age, running):
        if age:
            card = package_age(run_dir, out or default_weights_path(DEFAULT_AGE_WEIGHTS), command, n or AGE_EVAL_N,
                               running)
        else:
            card = package(run_dir, out or default_weights_path(), command, n or EVAL_N)
        click.echo(json.dumps(card["evaluation"], indent=2))

    _main()
