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
    """Concatenate [N,3,H,W] image with [N,17] AUs tiled over H x W -> [N,20,H,W].

    The plain definition of the generator's input; `ConditionedStem` computes its first
    convolution without materialising the tiles (tests compare the two).
    """
    n, _, h, w = image.shape
    return torch.cat([image, aus[:, :, None, None].expand(n, aus.shape[1], h, w)], dim=1)


def au_field(aus: torch.Tensor, weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """conv2d(tile(aus), weight, zero padding k//2) without the tiles: [N,C] -> [N,O,H,W].

    A tiled AU is constant over the image, so a kernel tap contributes wherever it lands
    inside the image: out[n,o,h,w] = sum_ij T[n,o,i,j] R[h,i] Q[w,j] with
    T = sum_c aus[n,c] W[o,c] and R[h,i] = [0 <= h+i-k//2 < H] (Q likewise), i.e.
    field = R @ T @ Q^T. For the 17 AU channels of the 7x7 stem at 128x128 that is about
    15 MFLOP instead of 1.75 GFLOP per frame (8-10 % of the whole generator).
    """
    n, c = aus.shape
    o, c_w, k, k2 = weight.shape
    assert c == c_w and k == k2, f"aus {tuple(aus.shape)} do not fit weight {tuple(weight.shape)}"
    taps = (aus @ weight.permute(1, 0, 2, 3).reshape(c, o * k * k)).reshape(n, o, k, k)

    def inside(size: int) -> torch.Tensor:
        pos = torch.arange(size, device=aus.device)[:, None] + torch.arange(k, device=aus.device)[None, :] - k // 2
        return ((pos >= 0) & (pos < size)).to(aus.dtype)          # [size, k]

    return inside(height) @ taps @ inside(width).T


class ConditionedStem(ConvNormReLU):
    """y = ReLU(IN(conv7(concat(image, tile(aus)))))

    computed as conv7_image(image) + au_field(aus) (same maths, summed in another order, so
    equal to FP32 rounding): the conv's weights, and so every checkpoint layout, are those of
    the 20-channel conv; only the evaluation is cheaper. `factorised = False` evaluates the
    plain definition (tests use it to show checkpoint layouts load bit-for-bit).
    """

    def __init__(self, image_channels: int, num_aus: int, cout: int, kernel: int = 7):
        super().__init__(image_channels + num_aus, cout, kernel, padding=kernel // 2)
        self.image_channels = image_channels
        self.factorised = True

    def forward(self, image: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.factorised:
            return super().forward(tile_aus(image, aus))
        w = self.conv.weight
        c = self.image_channels
        y = nn.functional.conv2d(image, w[:, :c], self.conv.bias, padding=self.conv.padding)
        y = y + au_field(aus, w[:, c:], image.shape[2], image.shape[3])
        return self.act(self.norm(y))
