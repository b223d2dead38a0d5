"""Building blocks shared by every generator family.

All generators are the GANimation attention generator (SPEC section 3); families differ
only in the residual block used at the bottleneck. The trunk is

    stem (7x7 conv) -> 2 x down (4x4 stride 2) -> N residual blocks -> 2 x up (4x4 transposed)

followed by two 7x7 heads: colour C = tanh(.) and attention A = sigmoid(.).
"""
from __future__ import annotations

import torch
from torch import nn


class ConvNormReLU(nn.Module):
    """y = ReLU(IN(conv(x))). InstanceNorm is affine; the conv has a bias.

    That is the superset of both public GANimation layouts (bias-free conv + affine IN in the
    original code, conv with bias + non-affine IN in the re-implementation): either loads
    exactly, with the missing half set to the identity (bias 0, or IN weight 1 / bias 0).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 transposed: bool = False):
        super().__init__()
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv(cin, cout, kernel, stride, padding, bias=True)
        self.norm = nn.InstanceNorm2d(cout, affine=True, track_running_stats=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


def tile_aus(image: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
    """Concatenate [N,3,H,W] image with [N,17] AUs tiled over H x W -> [N,20,H,W]."""
    n, _, h, w = image.shape
    return torch.cat([image, aus[:, :, None, None].expand(n, aus.shape[1], h, w)], dim=1)
