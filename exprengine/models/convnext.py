"""ConvNeXt bottleneck blocks: the thesis's generators (`convnext2/4/6`, `convnext2-ln`).

The thesis replaces GANimation's six ResNet blocks by ConvNeXt blocks and compares the
expansion of the inverted bottleneck (2x, 4x, 6x; 6x is its best) and a 2x block that uses
LayerNorm and GELU more often. Its figures of the block are not in our copy of the text, so
the `-ln` layout below is our reading of "LN and GELU used more often", stated exactly.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvNeXtBlock(nn.Module):
    """y = x + gamma * pw2(GELU(pw1(LN(dwconv7(x)))))            (ConvNeXt, expansion e)

    dwconv7: depthwise 7x7 conv; LN: LayerNorm over channels; pw1: C -> e*C; pw2: e*C -> C;
    gamma: per-channel layer scale. The pointwise convs run channels-last as Linear layers, so
    LayerNorm exports as a single ONNX LayerNormalization node.
    """

    def __init__(self, dim: int, expansion: int = 4, layer_scale_init: float = 1e-6):
        super().__init__()
        hidden = expansion * dim
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """NHWC in, NHWC out: everything after the depthwise conv."""
        return self.pwconv2(nn.functional.gelu(self.pwconv1(self.norm(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        return x + (self.gamma * self.branch(y)).permute(0, 3, 1, 2)


class ConvNeXtLNBlock(ConvNeXtBlock):
    """y = x + gamma * pw2(GELU(LN2(pw1(GELU(LN1(dwconv7(x)))))))    (2 LN, 2 GELU)

    The thesis's "LayerNorm and GELU used more often": a second LayerNorm (over the expanded
    e*C channels) and a second GELU, each before a pointwise conv.
    """

    def __init__(self, dim: int, expansion: int = 2, layer_scale_init: float = 1e-6):
        super().__init__(dim, expansion, layer_scale_init)
        self.norm2 = nn.LayerNorm(expansion * dim, eps=1e-6)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        gelu = nn.functional.gelu
        return self.pwconv2(gelu(self.norm2(self.pwconv1(gelu(self.norm(x))))))
