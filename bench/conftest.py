"""Benchmark fixtures. Benchmarks run only with `pytest --benchmark-only` (they are skipped
in the plain `pytest` test run, which must stay fast)."""
from __future__ import annotations

import pytest

from exprengine.engine import Engine
from exprengine.engines.build import build_engine
from exprengine.models import create_generator

def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `pytest --benchmark-only`")
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bench_engines(tmp_path_factory):
    """(model, backend) -> Engine; 'eager' is PyTorch on the same weights."""
    cache: dict[tuple[str, str], Engine] = {}

    def get(model: str, backend: str) -> Engine:
        if (model, backend) not in cache:
            generator = create_generator(model, seed=0)
            if backend == "eager":
                cache[model, backend] = Engine.from_generator(generator)
            else:
                out = tmp_path_factory.mktemp("bench") / f"{model}-{backend}"
                build_engine(generator, out, backend, weights_source="random-init seed=0")
                cache[model, backend] = Engine.load(out, device="cpu")
        return cache[model, backend]

    return get
