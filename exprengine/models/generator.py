"""The attention generator trunk shared by all families (GANimation, ConvNeXt variants).

    x      = concat(image, tile(aus))                       [N, 3+17, H, W]
    f      = up(up(blocks(down(down(stem(x))))))            [N, 64, H, W]
             (the stem's conv is evaluated without materialising the tiles: layers.au_field)
    C, A   = tanh(conv7(f)), sigmoid(conv7(f))              [N,3,H,W], [N,1,H,W]
    output = A * image + (1 - A) * C                        (exprengine.pixels.blend)

`forward` returns the heads (C, A); the blend is applied by `edit` (and by the engines'
epilogue) so that GPU engines can fuse it with the uint8 output pass.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from exprengine.aus import NUM_AUS
from exprengine.pixels import blend
from exprengine.models.layers import ConditionedStem, ConvNormReLU


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a generator (stored as JSON beside its weights)."""

    name: str
    block: str                      # "resnet" | "convnext" | "convnext-ln"
    expansion: int = 1              # ConvNeXt inverted-bottleneck expansion (2x/4x/6x)
    dims: tuple[int, ...] = (64, 128, 256)   # stem, after down 1, after down 2 (= block width)
    depth: int = 6                  # residual blocks at the bottleneck
    num_aus: int = NUM_AUS
    image_size: int = 128

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict (`dims` a list), as stored in weights files, checkpoints and
        engine manifests; `from_dict` reads it back.
        """
        d = asdict(self)
        d["dims"] = list(self.dims)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        """The config from `to_dict()`'s form, read from a file: every field checked for type and
        bounds (so a bad file cannot build a huge or invalid network). Raises UserError."""
        from exprengine.errors import UserError
        if not isinstance(d, dict):
            raise UserError(f"a model config must be a JSON object, not {type(d).__name__}")
        fields = {"name", "block", "expansion", "dims", "depth", "num_aus", "image_size"}
        if set(d) != fields:
            wrong = sorted(map(str, (set(d) - fields) or (fields - set(d))))[:3]
            raise UserError(f"a model config needs exactly the fields {', '.join(sorted(fields))} "
                            f"(wrong or missing: {', '.join(w[:40] for w in wrong)})")

        def whole(key, value, low, high):
            if type(value) is not int or not low <= value <= high:
                raise UserError(f"model config {key} must be a whole number in {low}..{high}, "
                                f"not {str(value)[:40]}")
            return value
        if not isinstance(d["name"], str) or not 1 <= len(d["name"]) <= 64:
            raise UserError("model config name must be a name of 1 to 64 characters")
        if d["block"] not in ("resnet", "convnext", "convnext-ln"):
            raise UserError(f"model config block (the residual block type) must be resnet, convnext or convnext-ln, "
                            f"not {str(d['block'])[:40]}")
        if not isinstance(d["dims"], (list, tuple)) or len(d["dims"]) != 3:
            raise UserError("model config dims must be a list of three widths")
        dims = tuple(whole("dims", w, 1, 4096) for w in d["dims"])
        size = whole("image_size", d["image_size"], 16, 1024)
        if size % 4:
            raise UserError(f"model config image_size must be a multiple of 4, not {size}")
        return cls(name=d["name"], block=d["block"], expansion=whole("expansion", d["expansion"], 1, 16), dims=dims,
                   depth=whole("depth", d["depth"], 0, 64), num_aus=whole("num_aus", d["num_aus"], NUM_AUS, NUM_AUS),
                   image_size=size)


class AttentionGenerator(nn.Module):
    """GANimation attention generator with a pluggable residual block."""

    def __init__(self, config: GeneratorConfig, block: Callable[[int], nn.Module]):
        super().__init__()
        self.config = config
        d0, d1, d2 = config.dims
        self.stem = ConditionedStem(3, config.num_aus, d0, 7)
        self.down1 = ConvNormReLU(d0, d1, 4, stride=2, padding=1)
        self.down2 = ConvNormReLU(d1, d2, 4, stride=2, padding=1)
        self.blocks = nn.Sequential(*[block(d2) for _ in range(config.depth)])
        self.up1 = ConvNormReLU(d2, d1, 4, stride=2, padding=1, transposed=True)
        self.up2 = ConvNormReLU(d1, d0, 4, stride=2, padding=1, transposed=True)
        self.color_head = nn.Conv2d(d0, 3, 7, padding=3, bias=False)
        self.attention_head = nn.Conv2d(d0, 1, 7, padding=3, bias=False)

    def forward(self, image: torch.Tensor, aus: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image [N,3,H,W] in [-1,1], aus [N,17] as intensity/5 -> (C [N,3,H,W], A [N,1,H,W])."""
        assert image.ndim == 4 and image.shape[1] == 3, f"image must be [N,3,H,W], got {tuple(image.shape)}"
        assert aus.ndim == 2 and aus.shape == (image.shape[0], self.config.num_aus), \
            f"aus must be [N,{self.config.num_aus}], got {tuple(aus.shape)}"
        f = self.stem(image, aus)
        f = self.up2(self.up1(self.blocks(self.down2(self.down1(f)))))
        return torch.tanh(self.color_head(f)), torch.sigmoid(self.attention_head(f))

    def edit(self, image: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
        """The edited image, A * image + (1 - A) * C, in [-1, 1]."""
        color, attention = self(image, aus)
        return blend(image, color, attention)
