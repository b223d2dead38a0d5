"""Shared fixtures: perturbed generators (so every layer matters) and cached engine builds."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
from helpers import perturbed_generator


def pytest_configure(config):
    """Commands without --engine build the default rig engine once into the cache
    (exprengine.default_engines): give the test session its own cache, shared by every test and
    the commands they start, so that tests neither read nor fill the user's."""
    if "EXPRENGINE_CACHE" not in os.environ:
        os.environ["EXPRENGINE_CACHE"] = tempfile.mkdtemp(prefix="exprengine-test-cache-")


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
    from exprengine.media import bundled_face
    return bundled_face()


@pytest.fixture(scope="session")
def real_photos():
    """Paths of the real face photo set (exprengine.evaluation.photo_sets) at $EXPRENGINE_PHOTOS
    or ~/.cache/exprengine/photos; skips when it has not been gathered."""
    from exprengine.evaluation.photo_sets import default_photo_dir, list_photos
    directory = default_photo_dir()
    if not directory.is_dir():
        pytest.skip(f"no real photo set at {directory}: run python -m exprengine.evaluation.photo_sets {directory}")
    paths = list_photos(directory)
    if not paths:
        pytest.skip(f"the real photo set at {directory} is empty: run python -m exprengine.evaluation.photo_sets "
                    f"{directory}")
    return paths
