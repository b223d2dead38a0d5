"""Model registry: every generator is built by name, with one uniform API.

    >>> from exprengine.models import create_generator, list_generators
    >>> g = create_generator("convnext6")          # AttentionGenerator, random init
    >>> color, attention = g(image, aus)           # heads; g.edit(image, aus) blends

Variants are thin named constructors over `GeneratorConfig` (like timm / ConvNeXt).

Beside the trainable expression generators there are two other model families: the
landmark-driven AU rig (`exprengine.models.rig.FaceRig`, name "rig", no learned weights), whose
forward also takes the face mesh, and the age generators of Lifespan Age Transformation
Synthesis (`exprengine.models.lats.LATSGenerator`, names "lats" and "lats-small", `is_lats`),
which take an image and a 300-value age code. `list_models()` names every model an engine can
be built from (the expression generators, the LATS generators, the rig; `list_generators()`
only the expression generators), `create_model(name)` builds any of them, and
`build_model(config_dict)` rebuilds one from the config stored in checkpoints and engine
manifests (a generator's `GeneratorConfig`, a `LATSConfig` or a `RigConfig`, told apart by
their `family`: "lats", "rig").

Weights: our own safetensors format for every model here is `exprengine.models.weights`
(save_weights / load_weights / model_sha256); GANimation's public checkpoint layouts are
converted beside that model, in `exprengine.models.ganimation` (import_checkpoint), and the
LATS authors' generator files beside theirs (`exprengine.models.lats.import_lats_checkpoint`).
The shipped default model is located and loaded by `exprengine.models.pretrained`. The models
layer imports only exprengine.errors, exprengine.files, exprengine.aus, exprengine.ages and the
pixel conventions (exprengine.pixels), besides torch and safetensors: nothing above it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from exprengine.errors import UserError
from exprengine.models.convnext import ConvNeXtBlock, ConvNeXtLNBlock
from exprengine.models.discriminator import Discriminator
from exprengine.models.generator import AttentionGenerator, GeneratorConfig
from exprengine.models.lats import LATS_CONFIGS, LATS_DESCRIPTIONS, LATSConfig, LATSGenerator

DEFAULT_MODEL = "convnext6"

_CONFIGS: dict[str, GeneratorConfig] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(config: GeneratorConfig, description: str) -> GeneratorConfig:
    """Add the generator `config` to the registry under `config.name` (replacing any of that name),
    with its one-line `description` (`describe`); returns `config`.
    """
    _CONFIGS[config.name] = config
    _DESCRIPTIONS[config.name] = description
    return config


register(GeneratorConfig("ganimation", "resnet"), "GANimation baseline: 6 ResNet blocks")
register(GeneratorConfig("convnext2", "convnext", expansion=2), "ConvNeXt blocks, 2x expansion")
register(GeneratorConfig("convnext4", "convnext", expansion=4), "ConvNeXt blocks, 4x expansion")
register(GeneratorConfig("convnext6", "convnext", expansion=6),
         "ConvNeXt blocks, 6x expansion (the thesis's best; the default)")
register(GeneratorConfig("convnext2-ln", "convnext-ln", expansion=2),
         "ConvNeXt blocks, 2x expansion, LayerNorm and GELU used more often")


def _block_factory(config: GeneratorConfig) -> Callable[[int], nn.Module]:
    if config.block == "resnet":
        # imported here: models.ganimation also converts public checkpoints, through this registry
        from exprengine.models.ganimation import ResidualBlock
        return ResidualBlock
    if config.block == "convnext":
        return partial(ConvNeXtBlock, expansion=config.expansion)
    if config.block == "convnext-ln":
        return partial(ConvNeXtLNBlock, expansion=config.expansion)
    raise UserError(f"unknown residual block type {config.block!r}")


def list_generators() -> list[str]:
    """The registered trainable generators' names, in registration order (the rig is not one:
    `list_models`).
    """
    return list(_CONFIGS)


def describe(name: str) -> str:
    """The one-line description of model `name` (a registered generator, a LATS model, or "rig").
    KeyError for another name (callers check it against `list_models` first).
    """
    if name == RIG:
        return RIG_DESCRIPTION
    return LATS_DESCRIPTIONS[name] if name in LATS_CONFIGS else _DESCRIPTIONS[name]


def generator_config(name: str) -> GeneratorConfig:
    """The registered GeneratorConfig called `name`; UserError naming the choices otherwise."""
    if name not in _CONFIGS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(_CONFIGS)}")
    return _CONFIGS[name]


def build_generator(config: GeneratorConfig) -> AttentionGenerator:
    """A fresh AttentionGenerator for `config` (weights as its layers initialise them: call
    `create_generator` for a seeded one). UserError for an unknown `config.block`.
    """
    return AttentionGenerator(config, _block_factory(config))


RIG = "rig"
RIG_DESCRIPTION = ("landmark-driven AU rig over MediaPipe's 478-point face mesh (no training; "
                   "edits real photos; docs/rig.md)")


def is_rig(model) -> bool:
    """True for a `FaceRig`, a `RigConfig`, or a config dict of the rig family."""
    from exprengine.models.rig import FaceRig, RigConfig
    if isinstance(model, dict):
        return model.get("family") == "rig"
    return isinstance(model, (FaceRig, RigConfig))


def is_lats(model) -> bool:
    """True for a `LATSGenerator`, a `LATSConfig`, or a config dict of the LATS family."""
    if isinstance(model, dict):
        return model.get("family") == "lats"
    return isinstance(model, (LATSGenerator, LATSConfig))


def list_models() -> list[str]:
    """Every model an engine can be built from: the expression generators, the LATS age
    generators ("lats", "lats-small"), then the rig."""
    return [*_CONFIGS, *LATS_CONFIGS, RIG]


def model_config_from_dict(d: dict):
    """A `GeneratorConfig`, `LATSConfig` or `RigConfig` from its `to_dict()` form (as stored in
    weights files and engine manifests), every field checked; UserError otherwise."""
    if not isinstance(d, dict):
        raise UserError(f"a model config must be a JSON object, not {type(d).__name__}")
    if is_lats(d):
        return LATSConfig.from_dict(d)
    if is_rig(d):
        from exprengine.models.rig import RigConfig
        return RigConfig.from_dict(d)
    return GeneratorConfig.from_dict(d)


def build_model(config) -> nn.Module:
    """The model of a config (a `GeneratorConfig`, a `LATSConfig`, a `RigConfig`, or one's dict),
    in eval mode: a generator with fresh (untrained) weights, or the rig (which has none).
    UserError if the config is invalid."""
    if isinstance(config, dict):
        config = model_config_from_dict(config)
    if is_lats(config):
        return LATSGenerator(config).eval()
    if is_rig(config):
        from exprengine.models.rig import FaceRig
        return FaceRig(config).eval()
    return build_generator(config).eval()


def create_model(name: str, seed: int | None = 0) -> nn.Module:
    """Any model by its registry name (`list_models()`): a generator (expression or LATS)
    randomly initialised from `seed` (None: torch's RNG; `create_generator`), or the rig with its
    default `RigConfig` (seed unused)."""
    if name == RIG:
        from exprengine.models.rig import FaceRig, RigConfig
        return FaceRig(RigConfig()).eval()
    if name in LATS_CONFIGS:
        if seed is None:
            return LATSGenerator(LATS_CONFIGS[name]).eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return LATSGenerator(LATS_CONFIGS[name]).eval()
    if name not in _CONFIGS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return create_generator(name, seed)


def create_generator(name: str, seed: int | None = 0) -> AttentionGenerator:
    """A registry generator in eval mode, randomly initialised from `seed` (None: torch's RNG)."""
    config = generator_config(name)
    if seed is None:
        return build_generator(config).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_generator(config)
    return model.eval()


__all__ = [
    "AttentionGenerator", "GeneratorConfig", "Discriminator", "DEFAULT_MODEL",
    "build_generator", "create_generator", "generator_config", "list_generators", "describe",
    "LATSConfig", "LATSGenerator", "is_lats",
    "RIG", "is_rig", "list_models", "model_config_from_dict", "build_model", "create_model",
]


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to export or build, with where its weights came from."""
    model: nn.Module                # eval mode
    source: str                     # a few words: a file name, "the shipped default model", ...
    random_init: bool = False       # True: random weights (exercises the toolchain, edits nothing meaningful)


def load_model(name: str | None = None, checkpoint: str | None = None, seed: int = 0) -> LoadedModel:
    """The model `exprengine build` and `export/export_model.py` compile, by what the user gave:

    - `name` "rig": the AU rig (no learned weights; a `checkpoint` is refused);
    - a `checkpoint` (our .safetensors or a GANimation .pth in either public layout,
      `ganimation.import_checkpoint`), holding architecture `name` (default DEFAULT_MODEL);
      for a LATS `name` ("lats", "lats-small") our .safetensors or the authors' generator file
      (`lats.import_lats_checkpoint`);
    - neither: the shipped default model (`pretrained.load_default_generator`);
    - only `name`: that architecture randomly initialised from `seed` (`random_init` True).

    Raises UserError (one sentence) for an unknown name or a missing or unreadable checkpoint.
    """
    if name == RIG:
        if checkpoint:
            raise UserError("the rig has no learned weights: load it without a checkpoint")
        return LoadedModel(create_model(RIG), "rig (no learned weights)")
    if checkpoint and name in LATS_CONFIGS:
        from exprengine.models.lats import import_lats_checkpoint
        return LoadedModel(import_lats_checkpoint(checkpoint, name), Path(checkpoint).name)
    if checkpoint:
        from exprengine.models.ganimation import import_checkpoint
        return LoadedModel(import_checkpoint(checkpoint, name or DEFAULT_MODEL), Path(checkpoint).name)
    if name is None:
        from exprengine.models.pretrained import default_model_card, default_weights_path, load_default_generator
        return LoadedModel(load_default_generator(),
                           f"{default_weights_path().name} ({default_model_card().get('name', 'default')})")
    return LoadedModel(create_model(name, seed), f"random-init seed={seed}", random_init=True)
