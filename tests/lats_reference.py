"""A re-creation of the LATS reference generator's layout, to prove that the authors' files load
into our `LATSGenerator` exactly (`exprengine.models.lats.import_lats_checkpoint`).

Written for these tests from the facts listed in `exprengine.models.lats`'s docstring (the
reference is github.com/royorel/Lifespan_Age_Transformation_Synthesis, `models/networks.py`;
no code copied): the same module names, parameter and buffer key names, shapes and conventions:
equalised learning rate as `weight_orig` scaled by sqrt(2 / fan_in) in the forward pass, the
modulated conv's own `weight` and its [1, out, 1, 1] `bias`, the grouped-conv modulated
convolution (groups = batch), the blur's saved `weight` / `weight_flip` buffers (applied here as a
plain depthwise conv, as the reference's custom autograd Function computes it in its forward),
reflection padding layers, PixelNorm, LeakyReLU(0.2) * sqrt(2) in the decoder. Widths are
parameters (`ngf`, `latent_dim`) so the small configuration can be tested quickly.
"""
from __future__ import annotations

from math import sqrt

import torch
import torch.nn.functional as F
from torch import nn


class PixelNorm(nn.Module):
    def forward(self, x):
        return x / torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-5)


class _ScaledConv(nn.Module):
    """What `equal_lr(nn.Conv2d)` leaves in a state dict: `weight_orig` and `bias`."""

    def __init__(self, cin, cout, k, stride=1):
        super().__init__()
        self.weight_orig = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.stride = stride

    def forward(self, x):
        fan_in = self.weight_orig.shape[1] * self.weight_orig[0][0].numel()
        return F.conv2d(x, self.weight_orig * sqrt(2 / fan_in), self.bias, self.stride)


class EqualConv2d(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride=1):
        super().__init__()
        self.conv = _ScaledConv(cin, cout, kernel_size, stride)

    def forward(self, x):
        return self.conv(x)


class _ScaledLinear(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.weight_orig = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        return F.linear(x, self.weight_orig * sqrt(2 / self.weight_orig.shape[1]), self.bias)


class EqualLinear(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.linear = _ScaledLinear(cin, cout)

    def forward(self, x):
        return self.linear(x)


class Blur(nn.Module):
    def __init__(self, channels):
        super().__init__()
        w = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float32).view(1, 1, 3, 3)
        w = w / w.sum()
        self.register_buffer("weight", w.repeat(channels, 1, 1, 1))
        self.register_buffer("weight_flip", torch.flip(w, [2, 3]).repeat(channels, 1, 1, 1))

    def forward(self, x):
        return F.conv2d(x, self.weight, padding=1, groups=x.shape[1])


class ModulatedConv2d(nn.Module):
    def __init__(self, fin, fout, latent_dim, upsample=False):
        super().__init__()
        self.fin, self.fout, self.upsample = fin, fout, upsample
        self.weight = nn.Parameter(torch.randn(fout, fin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(1, fout, 1, 1))
        self.mlp_class_std = nn.Sequential(EqualLinear(latent_dim, fin), PixelNorm())
        self.blur = Blur(fout)
        self.padding = nn.ReflectionPad2d(1)

    def forward(self, x, latent):
        weight = (self.weight * sqrt(2 / (self.fin * 9))).view(1, self.fout, self.fin, 3, 3)
        weight = (1 + self.mlp_class_std(latent).view(-1, 1, self.fin, 1, 1)) * weight
        d = torch.rsqrt((weight ** 2).sum(4).sum(3).sum(2) + 1e-5).view(-1, self.fout, 1, 1, 1)
        weight = (d * weight).view(-1, self.fin, 3, 3)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        b, _, h, w = x.shape
        out = F.conv2d(self.padding(x.reshape(1, -1, h, w)), weight, groups=b).view(b, self.fout, h, w) + self.bias
        return self.blur(out) if self.upsample else out


class StyledConvBlock(nn.Module):
    def __init__(self, fin, fout, latent_dim, upsample=False):
        super().__init__()
        self.conv0 = ModulatedConv2d(fin, fout, latent_dim, upsample)
        self.pxl_norm0, self.actvn0 = PixelNorm(), nn.LeakyReLU(0.2)
        self.conv1 = ModulatedConv2d(fout, fout, latent_dim)
        self.pxl_norm1, self.actvn1 = PixelNorm(), nn.LeakyReLU(0.2)

    def forward(self, x, latent):
        x = self.pxl_norm0(self.actvn0(self.conv0(x, latent)) * sqrt(2))
        return self.pxl_norm1(self.actvn1(self.conv1(x, latent)) * sqrt(2))


class ResnetBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), EqualConv2d(dim, dim, 3), PixelNorm(), nn.ReLU(),
                                        nn.ReflectionPad2d(1), EqualConv2d(dim, dim, 3), PixelNorm())

    def forward(self, x):
        return x + self.conv_block(x)


class IdentityEncoder(nn.Module):
    def __init__(self, ngf, n_blocks=4):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), EqualConv2d(3, ngf, 7), PixelNorm(), nn.ReLU()]
        for i in range(2):
            layers += [nn.ReflectionPad2d(1), EqualConv2d(ngf << i, ngf << (i + 1), 3, stride=2), PixelNorm(), nn.ReLU()]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        self.encoder = nn.Sequential(*layers)

    def forward(self, x):
        return self.encoder(x)


class AgeEncoder(nn.Module):
    def __init__(self, ngf, style_dim=300):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), EqualConv2d(3, ngf, 7), nn.LeakyReLU(0.2)]
        for i in range(4):
            layers += [nn.ReflectionPad2d(1), EqualConv2d(ngf << i, ngf << (i + 1), 3, stride=2), nn.LeakyReLU(0.2)]
        layers += [EqualConv2d(ngf << 4, style_dim, 1)]
        self.encoder = nn.Sequential(*layers)

    def forward(self, x):
        return self.encoder(x).mean(dim=3).mean(dim=2)


class MLP(nn.Module):
    def __init__(self, input_dim, out_dim, fc_dim, n_fc=8):
        super().__init__()
        layers = [PixelNorm(), EqualLinear(input_dim, fc_dim), nn.LeakyReLU(0.2), PixelNorm()]
        for _ in range(n_fc - 2):
            layers += [EqualLinear(fc_dim, fc_dim), nn.LeakyReLU(0.2), PixelNorm()]
        layers += [EqualLinear(fc_dim, out_dim), PixelNorm()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class StyledDecoder(nn.Module):
    def __init__(self, ngf, latent_dim, style_dim=300):
        super().__init__()
        width = ngf * 4
        for k in range(4):
            setattr(self, f"StyledConvBlock_{k}", StyledConvBlock(width, width, latent_dim))
        self.StyledConvBlock_up0 = StyledConvBlock(width, width // 2, latent_dim, upsample=True)
        self.StyledConvBlock_up1 = StyledConvBlock(width // 2, width // 4, latent_dim, upsample=True)
        self.conv_img = nn.Sequential(EqualConv2d(width // 4, 3, 1), nn.Tanh())
        self.mlp = MLP(style_dim, latent_dim, latent_dim)

    def forward(self, features, code):
        latent = self.mlp(code)
        x = features
        for name in ("StyledConvBlock_0", "StyledConvBlock_1", "StyledConvBlock_2", "StyledConvBlock_3",
                     "StyledConvBlock_up0", "StyledConvBlock_up1"):
            x = getattr(self, name)(x, latent)
        return self.conv_img(x)


class ReferenceGenerator(nn.Module):
    """`networks.Generator` with modulated convs: `id_encoder`, `age_encoder`, `decoder`.
    ngf 64 / latent_dim 256 is the authors' size; ngf 16 / latent_dim 64 is `lats-small`."""

    def __init__(self, ngf=64, latent_dim=256):
        super().__init__()
        self.id_encoder = IdentityEncoder(ngf)
        self.age_encoder = AgeEncoder(ngf)
        self.decoder = StyledDecoder(ngf, latent_dim)

    def infer(self, image, code):
        return self.decoder(self.id_encoder(image), code)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random (weights N(0, 1) as the reference initialises them, biases
    0.1 * N(0, 1) so that each bias matters); buffers (the blur kernels) kept. Eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if name.endswith("bias") else 1.0))
    return model.eval()
