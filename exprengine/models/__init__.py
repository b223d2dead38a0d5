"""Model registry: every generator is built by name, with one uniform API.

    >>> from exprengine.models import create_generator, list_generators
    >>> g = create_generator("convnext6")          # AttentionGenerator, random init
    >>> color, attention = g(image, aus)           # heads; g.edit(image, aus) blends

Variants are thin named constructors over `GeneratorConfig` (like timm / ConvNeXt).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

from exprengine.errors import UserError
from exprengine.models.convnext import ConvNeXtBlock, ConvNeXtLNBlock
from exprengine.models.discriminator import Discriminator
from exprengine.models.ganimation import ResidualBlock
from exprengine.models.generator import AttentionGenerator, GeneratorConfig

DEFAULT_MODEL = "convnext6"

_CONFIGS: dict[str, GeneratorConfig] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(config: GeneratorConfig, description: str) -> GeneratorConfig:
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
        return ResidualBlock
    if config.block == "convnext":
        return partial(ConvNeXtBlock, expansion=config.expansion)
    if config.block == "convnext-ln":
        return partial(ConvNeXtLNBlock, expansion=config.expansion)
    raise UserError(f"unknown residual block type {config.block!r}")


def list_generators() -> list[str]:
    return list(_CONFIGS)


def describe(name: str) -> str:
    return _DESCRIPTIONS[name]


def generator_config(name: str) -> GeneratorConfig:
    if name not in _CONFIGS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(_CONFIGS)}")
    return _CONFIGS[name]


def build_generator(config: GeneratorConfig) -> AttentionGenerator:
    return AttentionGenerator(config, _block_factory(config))


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
]
