"""The Inception-v3 network of FID and Inception Score, for weights the user supplies.

FID and IS are defined on one specific network: the TensorFlow Inception-v3 of 2015-12-05
as ported to PyTorch for FID (`pt_inception-2015-12-05-6726825d.pth`, a plain state dict).
It cannot be downloaded on the project's machines; pass its path (`exprengine eval --real
DATASET --inception PATH`). It is read with `torch.load(weights_only=True)` and loaded
strictly: a file with other tensors is refused.

The architecture is Inception-v3 (Szegedy et al. 2016) with the FID port's differences:
1008 classes, no auxiliary head, average pools in the A, C and first E blocks that ignore
padding (TensorFlow's), and a max pool in the last E block. Input: RGB in [0, 1], resized
bilinearly to 299x299 and scaled to [-1, 1]. Outputs: the 2048-d pool features (FID) and the
1008-way softmax (IS).

These numbers were never computed here with the real weights (they are not available on
these machines): the architecture is checked for shapes and for loading a state dict of
exactly the expected names and sizes.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from exprengine.errors import UserError


class ConvBN(nn.Module):
    """y = ReLU(BN(conv(x))), conv without bias, BN eps 1e-3 (TensorFlow's)."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """Inception-v3's 35x35 block (torchvision's InceptionA; pytorch-fid's FIDInceptionA):
    concat(1x1 -> 64, 1x1 -> 48 -> 5x5 -> 64, 1x1 -> 64 -> 3x3 -> 96 -> 3x3 -> 96,
    TF avg pool 3x3 (padding not counted) -> 1x1 -> `pool_features`): [N,cin,H,W] ->
    [N,224+pool_features,H,W]. Every conv is a ConvBN."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = ConvBN(cin, 48, 1), ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_tf_avg_pool(x))], 1)


class BlockB(nn.Module):
    """Inception-v3's grid reduction 35 -> 17 (torchvision's InceptionB): concat(3x3 stride 2
    -> 384, 1x1 -> 64 -> 3x3 -> 96 -> 3x3 stride 2 -> 96, max pool 3x3 stride 2):
    [N,cin,H,W] -> [N,480+cin,(H-3)//2+1,(W-3)//2+1]."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = ConvBN(cin, 64, 1), ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """Inception-v3's 17x17 block with factorised 7x7 convs (torchvision's InceptionC;
    pytorch-fid's FIDInceptionC): concat(1x1 -> 192, 1x1 -> c7 -> 1x7 -> c7 -> 7x1 -> 192,
    1x1 -> c7 -> (7x1, 1x7, 7x1 -> c7) -> 1x7 -> 192, TF avg pool -> 1x1 -> 192):
    [N,cin,H,W] -> [N,768,H,W]."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))], 1)


class BlockD(nn.Module):
    """Inception-v3's grid reduction 17 -> 8 (torchvision's InceptionD): concat(1x1 -> 192 ->
    3x3 stride 2 -> 320, 1x1 -> 192 -> 1x7 -> 7x1 -> 3x3 stride 2 -> 192, max pool 3x3
    stride 2): [N,cin,H,W] -> [N,512+cin,(H-3)//2+1,(W-3)//2+1]."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = ConvBN(cin, 192, 1), ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """Inception-v3's 8x8 block (torchvision's InceptionE; pytorch-fid's FIDInceptionE_1 with
    `max_pool` False, FIDInceptionE_2 with True): concat(1x1 -> 320, 1x1 -> 384 -> (1x3, 3x1)
    -> 2 x 384, 1x1 -> 448 -> 3x3 -> 384 -> (1x3, 3x1) -> 2 x 384, pool 3x3 stride 1 -> 1x1
    -> 192), the pool TF's average (padding not counted) or, with `max_pool`, a max pool as the
    FID port's last block has: [N,cin,H,W] -> [N,2048,H,W]."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(pool)], 1)


class FIDInception(nn.Module):
    """Inception-v3 as the FID port defines it: images -> (pool features [N,2048], logits [N,1008])."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: float [N,3,H,W] in [0, 1]."""
        assert images.ndim == 4 and images.shape[1] == 3, f"expected [N,3,H,W], got {tuple(images.shape)}"
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        features = x.mean(dim=(2, 3))
        return features, self.fc(features)


def load_fid_inception(path: str | os.PathLike) -> FIDInception:
    """The FID Inception network with the weights at `path` (a state dict; no code is unpickled)."""
    model = FIDInception()
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"Inception weights {path} do not exist (they cannot be downloaded here: give "
                        "the path of pt_inception-2015-12-05-6726825d.pth)") from None
    except Exception as e:  # weights_only refuses anything but tensors and containers
        raise UserError(f"{path} is not a plain Inception state dict ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise UserError(f"{path} does not hold a state dict (a map of names to tensors)")
    state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state) - {k for k in expected if k.endswith("num_batches_tracked")})
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise UserError(f"{path} is not the FID Inception-v3 state dict ({len(missing)} missing, {len(unexpected)} "
                        f"unexpected, {len(wrong)} of another shape; first: {first})")
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        if v.layout != torch.strided or v.is_meta or not v.is_floating_point() or not torch.isfinite(v.float()).all():
            raise UserError(f"{path} is not usable Inception weights: {k} is not a finite floating-point tensor")
    model.load_state_dict(state, strict=False)
    return model.eval()


@torch.no_grad()
def inception_outputs(model: FIDInception, faces: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N,H,W,3] -> (pool features [N,2048], class probabilities [N,1008]) as float64."""
    feats, probs = [], []
    for s in range(0, len(faces), batch):
        x = torch.from_numpy(np.ascontiguousarray(faces[s:s + batch])).permute(0, 3, 1, 2).float() / 255
        f, logits = model(x)
        feats.append(f.double().numpy())
        probs.append(torch.softmax(logits.double(), dim=1).numpy())
    return np.concatenate(feats), np.concatenate(probs)
