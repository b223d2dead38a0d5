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
