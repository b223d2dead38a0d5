"""Re-creations of the two public GANimation architectures, with their exact key names and
conventions, to prove that checkpoints in either layout load into our generator exactly.

Written for these tests from the published layouts (SPEC section 3), not copied code. The
layouts are those of Pumarola's original code (github.com/albertpumarola/GANimation, `main`,
`img_reg`, `attetion_reg`; discriminator `main`, `conv1`, `conv2`) and of the re-implementation
github.com/donydchen/ganimation_replicate (`model`, `color_top`, `au_top`; discriminator
`model`, `dis_top`, `aus_top`), converted by `exprengine.models.ganimation`.
"""
from __future__ import annotations

import torch
from torch import nn


def _tile(image, aus):
    n, _, h, w = image.shape
    return torch.cat([image, aus[:, :, None, None].expand(n, aus.shape[1], h, w)], 1)


class _OriginalResBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False), nn.InstanceNorm2d(dim, affine=True), nn.ReLU(True),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False), nn.InstanceNorm2d(dim, affine=True))

    def forward(self, x):
        return x + self.main(x)


class OriginalGenerator(nn.Module):
    """Pumarola et al.: bias-free convs, affine IN, `main`, `img_reg`, `attetion_reg`."""

    def __init__(self, c_dim=17, dim=64):
        super().__init__()
        layers = [nn.Conv2d(3 + c_dim, dim, 7, 1, 3, bias=False), nn.InstanceNorm2d(dim, affine=True), nn.ReLU(True)]
        for _ in range(2):
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=False), nn.InstanceNorm2d(dim * 2, affine=True),
                       nn.ReLU(True)]
            dim *= 2
        layers += [_OriginalResBlock(dim) for _ in range(6)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1, bias=False),
                       nn.InstanceNorm2d(dim // 2, affine=True), nn.ReLU(True)]
            dim //= 2
        self.main = nn.Sequential(*layers)
        self.img_reg = nn.Sequential(nn.Conv2d(dim, 3, 7, 1, 3, bias=False), nn.Tanh())
        self.attetion_reg = nn.Sequential(nn.Conv2d(dim, 1, 7, 1, 3, bias=False), nn.Sigmoid())

    def forward(self, image, aus):
        f = self.main(_tile(image, aus))
        return self.img_reg(f), self.attetion_reg(f)


class _ReplicateResBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.Conv2d(dim, dim, 3, padding=1, bias=True), nn.InstanceNorm2d(dim))

    def forward(self, x):
        return x + self.conv_block(x)


class ReplicateGenerator(nn.Module):
    """The re-implementation: convs with bias, non-affine IN, `model`, `color_top`, `au_top`."""

    def __init__(self, aus_nc=17, ngf=64):
        super().__init__()
        layers = [nn.Conv2d(3 + aus_nc, ngf, 7, 1, 3, bias=True), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for i in range(2):
            m = 2 ** i
            layers += [nn.Conv2d(ngf * m, ngf * m * 2, 4, 2, 1, bias=True), nn.InstanceNorm2d(ngf * m * 2),
                       nn.ReLU(True)]
        layers += [_ReplicateResBlock(ngf * 4) for _ in range(6)]
        for i in range(2):
            m = 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 4, 2, 1, bias=True),
                       nn.InstanceNorm2d(ngf * m // 2), nn.ReLU(True)]
        self.model = nn.Sequential(*layers)
        self.color_top = nn.Sequential(nn.Conv2d(ngf, 3, 7, 1, 3, bias=False), nn.Tanh())
        self.au_top = nn.Sequential(nn.Conv2d(ngf, 1, 7, 1, 3, bias=False), nn.Sigmoid())

    def forward(self, image, aus):
        f = self.model(_tile(image, aus))
        return self.color_top(f), self.au_top(f)


def _discriminator_trunk(dims=(64, 128, 256, 512, 1024, 2048)):
    layers, cin = [], 3
    for d in dims:
        layers += [nn.Conv2d(cin, d, 4, 2, 1), nn.LeakyReLU(0.01, True)]
        cin = d
    return nn.Sequential(*layers), cin


class OriginalDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main, c = _discriminator_trunk()
        self.conv1 = nn.Conv2d(c, 1, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(c, 17, 2, bias=False)

    def forward(self, x):
        h = self.main(x)
        return self.conv1(h), self.conv2(h).flatten(1)


class ReplicateDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model, c = _discriminator_trunk()
        self.dis_top = nn.Conv2d(c, 1, 3, 1, 1, bias=False)
        self.aus_top = nn.Conv2d(c, 17, 2, bias=False)

    def forward(self, x):
        h = self.model(x)
        return self.dis_top(h), self.aus_top(h).flatten(1)


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter random and non-trivial (IN affines away from 1/0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
    return module.eval()
