"""Test helpers (imported as `helpers`; tests/ is on sys.path under pytest)."""
from __future__ import annotations

import torch

from exprengine.models import AttentionGenerator, create_generator


def perturbed_generator(name: str, seed: int = 0) -> AttentionGenerator:
    """A registry generator whose every parameter is random and non-trivial.

    Fresh ConvNeXt blocks start as the identity (layer scale 1e-6) and InstanceNorm affines
    as (1, 0); parity tests need every layer to change the output, so jitter them all.
    """
    model = create_generator(name, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("gamma"):
                p.copy_(0.5 + 0.1 * torch.randn(p.shape, generator=g))
            elif "norm" in pname and pname.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif pname.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def rig_face_region(image) -> tuple[slice, slice]:
    """(rows, columns) of the square the rig edits for the one face in `image` (uint8 HxWx3 or
    HxW): `FaceCrop.from_landmarks` of its MediaPipe mesh, as `exprengine edit` crops it by
    default. A default edit may change pixels only there."""
    import numpy as np

    from exprengine.faces.crop import FaceCrop
    from exprengine.faces.landmarks import MediaPipeDetector
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else np.ascontiguousarray(image[:, :, :3])
    meshes = MediaPipeDetector().meshes(rgb)
    assert len(meshes) == 1, f"expected one face, found {len(meshes)}"
    top, left, side = FaceCrop.from_landmarks(meshes[0].points, rgb.shape).region
    return slice(max(top, 0), top + side), slice(max(left, 0), left + side)
