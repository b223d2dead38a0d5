"""`exprengine train`'s one library call: the trainer of the model's family (`train_model`).

The expression generators train with `trainer.train_run` (GANimation's losses, `TrainConfig`),
the LATS age models ("lats", "lats-small") with `lats_trainer.train_age_run`
(`LATSTrainConfig`). A resumed run is continued by the trainer that wrote its checkpoint.
Settings left None take the family's default (`TrainConfig`'s, `LATSTrainConfig`'s).
"""
from __future__ import annotations

import dataclasses
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
                code_noise: float | None = None, mapping_lr: float | None = None, pool: int | None = None,
                loss_weights: dict[str, float] | None = None):
    """Train (or with `resume`, continue) the run in `out` with the trainer of `model`'s family
    and return that trainer (`.step`, `.config`, `.world`: rank 0 is `.world.main`).

    New run: `model` an expression generator (`trainer.TrainConfig`, `train_run`) or a LATS
    model (`lats_trainer.LATSTrainConfig`, `train_age_run`); `data`, `batch`, `lr` None take the
    family's defaults ("synthetic", 25, 1e-4; "synthetic-age", 12, 1e-3). `dims`, `depth`,
    `critic_width` shape expression generators only (UserError with a LATS model);
    `code_noise` (the age codes' noise sigma, the reference's 0.2; 0 is its --no_cond_noise) and
    `mapping_lr` (the mapping and affine layers' learning-rate factor, the reference's 0.01) are
    LATS settings only (UserError with an expression model), None taking the reference's;
    so is `pool` (draw from that many synthetic samples rendered once, `PooledAgeFaces`).
    `loss_weights` {name: weight >= 0}: the loss weights to change, by their config fields'
    names without `lambda_` (expression models: gp, au, cycle, attention, tv, paired; age
    models: rec, cycle, id, age, r1, paired); UserError for another name. `resume`: the
    trainer that wrote `out`'s checkpoint continues it with its own config; of these settings
    only `steps` (the new budget) is taken (UserError for `pool` or `loss_weights`). The rest
    as `train_run`."""
    if resume and (pool is not None or loss_weights):
        raise UserError(f"a resumed run keeps its own settings; `{'pool' if pool is not None else 'loss_weights'}` "
                        "applies to a new run (start one with `init` to change them)")
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
                                 mapping_lr=defaults.mapping_lr if mapping_lr is None else mapping_lr, pool=pool)
        _set_loss_weights(config, loss_weights, model)
        return train_age_run(out, config, device, resume=resume, progress=progress)
    from exprengine.training.trainer import TrainConfig, train_run
    given = [name for name, value in (("code_noise", code_noise), ("mapping_lr", mapping_lr), ("pool", pool))
             if value is not None]
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
    _set_loss_weights(config, loss_weights, model)
    return train_run(out, config, device, resume=resume, progress=progress)


def _set_loss_weights(config, weights: dict[str, float] | None, model: str) -> None:
    """Set `config.lambda_NAME = weight` for each of `weights`; UserError for a name the config
    has no `lambda_` field for, or a weight outside the bounds its config checks (`from_dict`:
    a finite number in 0..1e9)."""
    names = [f.name[len("lambda_"):] for f in dataclasses.fields(config) if f.name.startswith("lambda_")]
    for name, weight in (weights or {}).items():
        if name not in names:
            raise UserError(f"`loss_weights` names {str(name)[:40]!r}, not a loss of {model}'s training; "
                            f"choose from: {', '.join(names)}")
        try:
            type(config).from_dict({**config.to_dict(), f"lambda_{name}": weight})
        except UserError as e:
            raise UserError(f"`loss_weights` {name}: {e}") from None
        setattr(config, f"lambda_{name}", float(weight))


__all__ = ["FAMILIES", "model_family", "run_family", "train_model"]
