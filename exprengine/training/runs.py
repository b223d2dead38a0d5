"""`exprengine train`'s one library call: the trainer of the model's family (`train_model`).

The expression generators train with `trainer.train_run` (GANimation's losses, `TrainConfig`),
the LATS age models ("lats", "lats-small") with `lats_trainer.train_age_run`
(`LATSTrainConfig`). A resumed run is continued by the trainer that wrote its checkpoint.
Settings left None take the family's default (`TrainConfig`'s, `LATSTrainConfig`'s).
"""
from __future__ import annotations

import os
from pathlib import Path

from exprengine.errors import UserError

#: The two families of trainable models.
FAMILIES = ("expression", "lats")


def model_family(model: str) -> str:
    """"lats" for a registered LATS model ("lats", "lats-small"), else "expression"."""
    from exprengine.models.lats import LATS_CONFIGS
    return "lats" if model in LATS_CONFIGS else "expression"


def run_family(out: str | os.PathLike) -> str:
    """The family of the run in `out`, read from its checkpoint's format. UserError when there is
    no checkpoint or it is neither trainer's."""
    from exprengine.training import lats_trainer, trainer
    path = Path(out) / trainer.CHECKPOINT
    if not path.is_file():
        raise UserError(f"nothing to resume: {path} does not exist")
    try:
        lats_trainer.LATSTrainer.read_checkpoint(out, tensors=False)
        return "lats"
    except UserError:
        trainer.Trainer.read_checkpoint(out, tensors=False)       # raises for a foreign file
        return "expression"


def train_model(out: str | os.PathLike, *, model: str = "convnext6", data: str | None = None, objective: str = "gan",
                steps: int = 100_000, batch: int | None = None, lr: float | None = None, seed: int = 0,
                checkpoint_every: int = 1000, sample_every: int = 1000, image_size: int | None = None,
                dims=None, depth: int | None = None, critic_width: int | None = None, init: str | None = None,
                device: str = "auto", resume: bool = False, progress: bool = True,
                code_noise: float | None = None, mapping_lr: float | None = None):
    """Train (or with `resume`, continue) the run in `out` with the trainer of `model`'s family
    and return that trainer (`.step`, `.config`, `.world`: rank 0 is `.world.main`).

    New run: `model` an expression generator (`trainer.TrainConfig`, `train_run`) or a LATS
    model (`lats_trainer.LATSTrainConfig`, `train_age_run`); `data`, `batch`, `lr` None take the
    family's defaults ("synthetic", 25, 1e-4; "synthetic-age", 12, 1e-3). `dims`, `depth`,
    `critic_width` shape expression generators only (UserError with a LATS model);
    `code_noise` (the age codes' noise sigma, the reference's 0.2; 0 is its --no_cond_noise) and
    `mapping_lr` (the mapping and affine layers' learning-rate factor, the reference's 0.01) are
    LATS settings only (UserError with an expression model), None taking the reference's.
    `resume`: the trainer that wrote `out`'s checkpoint continues it with its own config; of
    these settings only `steps` (the new budget) is taken. The rest as `train_run`."""
    family = run_family(out) if resume else model_family(model)
    if family == "lats":
        from exprengine.training.lats_trainer import LATSTrainConfig, train_age_run
        if not resume:
            given = [name for name, value in (("dims", dims), ("depth", depth), ("critic_width", critic_width))
                     if value is not None]
            if given:
                raise UserError(f"`{given[0]}` shapes the expression generators; the LATS model {model} has its "
                                "own widths (lats or lats-small)")
        defaults = LATSTrainConfig()
        config = LATSTrainConfig(model=model if not resume else defaults.model, objective=objective,
                                 data=data or defaults.data, steps=steps, batch=batch or defaults.batch,
                                 lr=lr or defaults.lr, seed=seed, checkpoint_every=checkpoint_every,
                                 sample_every=sample_every, image_size=image_size, init=init,
                                 code_noise=defaults.code_noise if code_noise is None else code_noise,
                                 mapping_lr=defaults.mapping_lr if mapping_lr is None else mapping_lr)
        return train_age_run(out, config, device, resume=resume, progress=progress)
    from exprengine.training.trainer import TrainConfig, train_run
    given = [name for name, value in (("code_noise", code_noise), ("mapping_lr", mapping_lr)) if value is not None]
    if given and not resume:
        raise UserError(f"`{given[0]}` is a setting of the age models' training (lats, lats-small); "
                        f"{model} edits expressions")
    if not resume and data is not None and (data == "synthetic-age" or data.startswith("synthetic-age:")):
        raise UserError(f"`data` {data} is the age world, for the LATS models (lats, lats-small); "
                        f"{model} edits expressions: train it on synthetic[:SEED[:IDENTITIES]] or a data set")
    defaults = TrainConfig()
    config = TrainConfig(model=model, data=data or defaults.data, objective=objective, steps=steps,
                         batch=batch or defaults.batch, lr=lr or defaults.lr, seed=seed,
                         checkpoint_every=checkpoint_every, sample_every=sample_every, image_size=image_size,
                         dims=dims, depth=depth, critic_width=critic_width or defaults.critic_width, init=init)
    return train_run(out, config, device, resume=resume, progress=progress)


__all__ = ["FAMILIES", "model_family", "run_family", "train_model"]
