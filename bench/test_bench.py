"""Latency of eager PyTorch vs compiled engines, and batched morph vs a per-frame loop.

    pytest --benchmark-only --benchmark-json bench/results/<device>.json
    python bench/report.py bench/results/<device>.json        # table + targets

Groups compare like with like: one model at one batch size across backends.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from exprengine.aus import AUs
from exprengine.engines.backends import backend_names, get_backend
from exprengine.export.inputs import random_network_inputs
from exprengine.models import create_generator

BENCH_MODELS = ("ganimation", "convnext6")


def _available(name: str):
    """`name` as a pytest parameter that skips, saying why, where its backend is unavailable."""
    reason = get_backend(name).unavailable_reason()
    return pytest.param(name, marks=pytest.mark.skipif(reason is not None, reason=reason or ""))


#: The registry's backends that compile CPU engines (in its order), against eager PyTorch.
COMPILED_BACKENDS = tuple(_available(name) for name in backend_names(device="cpu", compiled=True))
MORPH_FRAMES = 16


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("backend", ("eager",) + COMPILED_BACKENDS)
@pytest.mark.parametrize("model", BENCH_MODELS)
def test_generator_latency(benchmark, bench_engines, model, backend, batch):
    engine = bench_engines(model, backend)
    image, aus = random_network_inputs(batch, engine.image_size, seed=batch)
    benchmark.group = f"{model} batch {batch}"
    benchmark.extra_info.update(model=model, backend=backend, batch=batch, kind="latency",
                                gflop_per_frame=gflop_per_frame(model))
    benchmark.pedantic(engine.run_network, args=(image, aus), rounds=5 if batch > 1 else 10, warmup_rounds=1)


@pytest.mark.parametrize("mode", ["one-call", "per-frame-loop"])
@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
def test_morph(benchmark, bench_engines, face_image, backend, mode):
    engine = bench_engines("convnext6", backend)
    src, dst = AUs.preset("natural"), AUs.preset("surprise", 1.5)
    benchmark.group = f"morph {MORPH_FRAMES} frames convnext6 {backend}"
    benchmark.extra_info.update(model="convnext6", backend=backend, frames=MORPH_FRAMES, kind="morph",
                                mode=mode)
    if mode == "one-call":
        fn = lambda: engine.morph(face_image, src, dst, frames=MORPH_FRAMES)  # noqa: E731
    else:
        from exprengine.morph import au_trajectory
        traj = au_trajectory(src.values, dst.values, MORPH_FRAMES)
        fn = lambda: [engine.edit(face_image, row) for row in traj]  # noqa: E731
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)


def test_cpu_matmul_rate(benchmark):
    """The machine's FP32 matrix rate, measured in the same run (the roofline for the table)."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    benchmark.group = "machine"
    benchmark.extra_info.update(kind="matmul", gflop=2 * n ** 3 / 1e9, threads=torch.get_num_threads())
    benchmark.pedantic(torch.mm, args=(a, b), rounds=10, warmup_rounds=2)


_FLOPS: dict[str, float] = {}


def gflop_per_frame(model: str) -> float:
    """FLOPs of one 128x128 frame (2 per multiply-add), counted by torch's FlopCounterMode."""
    if model not in _FLOPS:
        g = create_generator(model)
        image, aus = (torch.from_numpy(x) for x in random_network_inputs(1, 128, seed=0))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            g(image, aus)
        _FLOPS[model] = counter.get_total_flops() / 1e9
    return _FLOPS[model]


@pytest.fixture(scope="session")
def face_image():
    from exprengine.media import bundled_face
    return bundled_face()


@pytest.mark.parametrize("batch", [64])
def test_synthetic_render_rate(benchmark, batch):
    """Images per second of the synthetic face renderer (one process; `exprengine synth` runs one per core)."""
    import numpy as np

    from exprengine.data.synthetic import render, sample_aus, sample_identities
    ids = sample_identities(0, batch)
    aus = sample_aus(np.random.default_rng(0), batch)
    benchmark.group = "data"
    benchmark.extra_info.update(kind="render", batch=batch)
    benchmark.pedantic(render, args=(ids, aus), rounds=5, warmup_rounds=1)
