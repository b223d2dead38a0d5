"""GANimation's PatchGAN critic with an AU regression head (used in training)."""
from __future__ import annotations

import torch
from torch import nn

from exprengine.aus import NUM_AUS


class Discriminator(nn.Module):
    """Six 4x4 stride-2 convs with LeakyReLU(0.01), no normalisation, then two heads:

        f        = trunk(image)                      [N, 2048, H/64, W/64]  (2x2 at 128x128)
        realness = conv3x3(f)                        [N, 1, H/64, W/64]     (WGAN critic map)
        aus      = conv_{H/64}(f)                    [N, 17]                (AU regression)
    """

    def __init__(self, image_size: int = 128, dims: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048),
                 num_aus: int = NUM_AUS):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for d in dims:
            layers += [nn.Conv2d(cin, d, 4, stride=2, padding=1), nn.LeakyReLU(0.01, inplace=True)]
            cin = d
        self.trunk = nn.Sequential(*layers)
        k = image_size // 2 ** len(dims)
        assert k >= 1, f"image_size {image_size} too small for {len(dims)} stride-2 layers"
        self.realness_head = nn.Conv2d(cin, 1, 3, padding=1, bias=False)
        self.au_head = nn.Conv2d(cin, num_aus, k, bias=False)
        self.image_size = image_size

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert image.ndim == 4 and image.shape[1:] == (3, self.image_size, self.image_size), \
            f"image must be [N,3,{self.image_size},{self.image_size}], got {tuple(image.shape)}"
        f = self.trunk(image)
        return self.realness_head(f), self.au_head(f).flatten(1)
