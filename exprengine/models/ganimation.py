"""GANimation's ResNet bottleneck block (the baseline generator, `ganimation`)."""
from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """y = x + IN(conv3(ReLU(IN(conv3(x)))))   (3x3 convs, zero padding, width kept)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=True)
        self.norm1 = nn.InstanceNorm2d(dim, affine=True)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=True)
        self.norm2 = nn.InstanceNorm2d(dim, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x)))))
