"""The layers of the LATS family (`exprengine.models.lats`): equalised-learning-rate convs and
linears, pixel norm, the fixed blur as a depthwise conv, the batch-independent modulated conv
(with the reference's grouped form for tests), the decoder's styled block, the identity
encoder's residual block and the critic's downsampling block and minibatch statistic.

The reference facts each layer follows are listed in `exprengine.models.lats`'s docstring.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PIXEL_NORM_EPS = 1e-5       # PixelNorm's
DEMODULATION_EPS = 1e-5     # ModulatedConv2d's
LEAK = 0.2                  # every LeakyReLU's slope


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(mean over dim 1 of x^2 + 1e-5), for [N, C] or [N, C, H, W] (the reference's PixelNorm)."""
    return x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + PIXEL_NORM_EPS)


def _reflect(x: torch.Tensor, pad: int) -> torch.Tensor:
    return F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x


class EqualConv2d(nn.Module):
    """A conv with equalised learning rate: y = conv(reflect_pad(x), weight * sqrt(2 / fan_in)) + bias.

    weight [out, in, k, k] is stored unscaled (N(0, 1) at init), fan_in = in * k * k; `pad` pixels
    of reflection padding are added first (the reference pads with ReflectionPad2d layers)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, pad: int = 0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = math.sqrt(2.0 / (cin * kernel * kernel))
        self.stride, self.pad = stride, pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in, H, W] -> [N, out, H', W']."""
        return F.conv2d(_reflect(x, self.pad), self.weight * self.scale, self.bias, self.stride)


class EqualLinear(nn.Module):
    """A linear layer with equalised learning rate: y = x @ (weight * sqrt(2 / in)).T + bias."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = math.sqrt(2.0 / cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in] -> [N, out]."""
        return F.linear(x, self.weight * self.scale, self.bias)


class Blur(nn.Module):
    """The reference's blur as an ordinary depthwise conv: kernel [1,2,1] x [1,2,1] / 16, zero padding 1.

    The kernel is a non-persistent buffer (not in state dicts), so the layer exports to ONNX and is
    twice differentiable (R1), where the reference used a custom autograd Function."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("kernel", blur_kernel().expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, C, H, W]."""
        return F.conv2d(x, self.kernel, padding=1, groups=x.shape[1])


def blur_kernel() -> torch.Tensor:
    """The reference's 3x3 blur kernel, [[1,2,1],[2,4,2],[1,2,1]] / 16, as [1, 1, 3, 3] float32."""
    k = torch.tensor([1.0, 2.0, 1.0])
    k = torch.outer(k, k)
    return (k / k.sum()).view(1, 1, 3, 3)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution as LATS uses it (module docstring), batch-independent.

        s = 1 + pixel_norm(affine(style))                                  [N, in]
        y = conv(reflect_pad(up(x * s)), w) * d + bias,  w = weight * sqrt(2 / (in k k))
        d[n, o] = rsqrt(sum_i s[n, i]^2 * sum_k w[o, i, k]^2 + 1e-5)       (k > 1 only)
        y = blur(y)  when upsampling (nearest x2 before the conv)

    Every sample uses the one shared weight, so the batch is an ordinary batch (any size, any
    backend). `grouped=True` computes the reference's form instead (per-sample weights s * w,
    demodulated, one grouped conv over the batch): the same maths, kept for tests."""

    def __init__(self, cin: int, cout: int, style_dim: int, kernel: int = 3, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.affine = EqualLinear(style_dim, cin)
        self.scale = math.sqrt(2.0 / (cin * kernel * kernel))
        self.demodulate = kernel > 1
        self.pad = kernel // 2          # reflection padding that keeps the size
        self.upsample = upsample
        self.blur = Blur(cout) if upsample else None

    def modulation(self, style: torch.Tensor) -> torch.Tensor:
        """s = 1 + pixel_norm(affine(style)): [N, style_dim] -> [N, in]."""
        return 1.0 + pixel_norm(self.affine(style))

    def forward(self, x: torch.Tensor, style: torch.Tensor, grouped: bool = False) -> torch.Tensor:
        """x [N or 1, in, H, W], style [N, style_dim] -> [N, out, H', W'] (H' = 2H when upsampling).
        A batch of one `x` is shared by every style (a traversal's features)."""
        s = self.modulation(style)
        w, pad = self.weight * self.scale, self.pad
        if grouped:
            y = self._grouped(x, s, w, pad)
        else:
            x = x * s[:, :, None, None]
            if self.upsample:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            y = F.conv2d(_reflect(x, pad), w)
            if self.demodulate:
                d = torch.rsqrt((s * s) @ w.pow(2).sum(dim=(2, 3)).t() + DEMODULATION_EPS)
                y = y * d[:, :, None, None]
            y = y + self.bias[None, :, None, None]
        return self.blur(y) if self.upsample else y

    def _grouped(self, x: torch.Tensor, s: torch.Tensor, w: torch.Tensor, pad: int) -> torch.Tensor:
        n, cout, cin, k = s.shape[0], w.shape[0], w.shape[1], w.shape[2]
        ws = w[None] * s[:, None, :, None, None]                                  # [N, out, in, k, k]
        if self.demodulate:
            ws = ws * torch.rsqrt(ws.pow(2).sum(dim=(2, 3, 4)) + DEMODULATION_EPS)[:, :, None, None, None]
        x = x.expand(n, *x.shape[1:])
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        h, wd = x.shape[-2:]
        y = F.conv2d(_reflect(x.reshape(1, n * cin, h, wd), pad), ws.reshape(n * cout, cin, k, k), groups=n)
        return y.reshape(n, cout, h, wd) + self.bias[None, :, None, None]


class StyledBlock(nn.Module):
    """Two modulated 3x3 convs, each followed by LeakyReLU(0.2) * sqrt(2) and pixel_norm; the
    first upsamples x2 when `upsample` (the reference's `StyledConvBlock` with modulated convs)."""

    def __init__(self, cin: int, cout: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv0 = ModulatedConv2d(cin, cout, style_dim, upsample=upsample)
        self.conv1 = ModulatedConv2d(cout, cout, style_dim)

    def forward(self, x: torch.Tensor, style: torch.Tensor, grouped: bool = False) -> torch.Tensor:
        """x [N or 1, in, H, W], style [N, style_dim] -> [N, out, H', W']."""
        gain = math.sqrt(2.0)
        x = pixel_norm(F.leaky_relu(self.conv0(x, style, grouped), LEAK) * gain)
        return pixel_norm(F.leaky_relu(self.conv1(x, style, grouped), LEAK) * gain)


class IdentityBlock(nn.Module):
    """y = x + pixel_norm(conv2(ReLU(pixel_norm(conv1(x))))), 3x3 equalised convs, reflect padding."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = EqualConv2d(dim, dim, 3, pad=1)
        self.conv2 = EqualConv2d(dim, dim, 3, pad=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, dim, H, W] -> [N, dim, H, W]."""
        return x + pixel_norm(self.conv2(torch.relu(pixel_norm(self.conv1(x)))))


class DownBlock(nn.Module):
    """The critic's block: LeakyReLU(conv3(x)), then LeakyReLU(avgpool2(conv3(blur(.)))), halving
    the size; equalised convs, reflect padding, no normalisation."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = EqualConv2d(cin, cout, 3, pad=1)
        self.blur = Blur(cout)
        self.conv1 = EqualConv2d(cout, cout, 3, pad=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in, H, W] -> [N, out, H/2, W/2]."""
        x = F.leaky_relu(self.conv0(x), LEAK)
        return F.leaky_relu(F.avg_pool2d(self.conv1(self.blur(x)), 2), LEAK)


def minibatch_stddev(x: torch.Tensor) -> torch.Tensor:
    """x [N, C, H, W] with one more channel: the mean over C, H, W of sqrt(variance over the batch
    (biased) + 1e-8), the same for every sample and pixel -> [N, C+1, H, W]."""
    std = torch.sqrt(x.var(dim=0, unbiased=False) + 1e-8).mean()
    return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], dim=1)
