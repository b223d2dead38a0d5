"""Shared fixtures: perturbed generators (so every layer matters) and cached engine builds."""
from __future__ import annotations

import numpy as np
import pytest
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


@pytest.fixture(scope="session")
def engine_factory(tmp_path_factory):
    """build(model, backend) -> engine directory, built once per test session."""
    from exprengine.engines.build import build_engine
    cache: dict[tuple[str, str], object] = {}

    def build(model: str, backend: str, max_batch: int = 64):
        key = (model, backend, max_batch)
        if key not in cache:
            out = tmp_path_factory.mktemp("engines") / f"{model}-{backend}-{max_batch}"
            build_engine(perturbed_generator(model), out, backend, weights_source="test-perturbed seed=0",
                         max_batch=max_batch, opt_batch=min(16, max_batch))
            cache[key] = out
        return cache[key]

    return build


@pytest.fixture
def rng():
    return np.random.default_rng()


@pytest.fixture(scope="session")
def face():
    from exprengine.demo import bundled_face
    return bundled_face()
