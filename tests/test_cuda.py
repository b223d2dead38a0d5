"""GPU tests: the fused kernels against their references, the CUDA pipeline, GPU engines.

Skipped, with the reason, where no NVIDIA GPU (or no NVRTC) is present; run on the lent GPU
by `bench/gpu.sh`. Every check uses fresh random inputs and poisoned outputs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from exprengine.aus import AU_SCALE, NUM_AUS, AUs
from exprengine.pixels import blend_to_uint8_nhwc
from exprengine.kernels.cuda import nvrtc_unavailable_reason
from exprengine.morph import au_trajectory
from exprengine.pixels import to_network_input

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (none visible)"),
    pytest.mark.skipif(nvrtc_unavailable_reason() is not None, reason=f"{nvrtc_unavailable_reason()}"),
]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# (batch, height, width): aligned, odd, tiny, and sizes whose H*W is not a multiple of 16
SHAPES = [(1, 128, 128), (3, 17, 23), (5, 7, 9), (2, 64, 48), (4, 1, 1), (33, 128, 128)]


@pytest.fixture(scope="module")
def kernels():
    from exprengine.kernels.cuda import FusedKernels
    return FusedKernels()


def test_loaded_kernels_use_no_local_memory(kernels):
    from cuda.bindings import driver
    for name, function in kernels.functions.items():
        err, local = driver.cuFuncGetAttribute(driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, function)
        err2, regs = driver.cuFuncGetAttribute(driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_NUM_REGS, function)
        assert err == err2 == driver.CUresult.CUDA_SUCCESS
        assert local == 0, f"{name} uses {local} bytes of local memory (spills or stack)"
        assert regs <= 128, f"{name} uses {regs} registers"


def poisoned(shape, dtype):
    t = torch.empty(shape, dtype=dtype, device="cuda")
    if dtype == torch.uint8:
        return t.random_(0, 256)
    return t.uniform_(-7, 7)


@pytest.mark.parametrize("precision", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("broadcast", [False, True])
def test_prologue_matches_reference(kernels, rng, precision, shape, broadcast):
    n, h, w = shape
    frames = rng.integers(0, 256, (1 if broadcast else n, h, w, 3), dtype=np.uint8)
    intensities = rng.uniform(0, 5, (n, NUM_AUS)).astype(np.float32)
    dtype = DTYPES[precision]
    x, aus = poisoned((n, 3, h, w), dtype), poisoned((n, NUM_AUS), dtype)
    kernels.frame_to_input(torch.from_numpy(frames).cuda(), torch.from_numpy(intensities).cuda(), x, aus)
    ref_x = torch.from_numpy(np.broadcast_to(to_network_input(frames), (n, 3, h, w)).copy()).to(dtype)
    ref_aus = torch.from_numpy(intensities * np.float32(1 / AU_SCALE)).to(dtype)
    assert torch.equal(x.cpu(), ref_x)
    torch.testing.assert_close(aus.cpu(), ref_aus, rtol=1e-6, atol=0)


@pytest.mark.parametrize("precision", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("broadcast", [False, True])
def test_epilogue_matches_reference(kernels, rng, precision, shape, broadcast):
    n, h, w = shape
    dtype = DTYPES[precision]
    frames = rng.integers(0, 256, (1 if broadcast else n, h, w, 3), dtype=np.uint8)
    color = torch.from_numpy(rng.uniform(-1, 1, (n, 3, h, w)).astype(np.float32)).to(dtype)
    attention = torch.from_numpy(rng.uniform(0, 1, (n, 1, h, w)).astype(np.float32)).to(dtype)
    out = poisoned((n, h, w, 3), torch.uint8)
    kernels.blend_to_uint8(color.cuda(), attention.cuda(), torch.from_numpy(frames).cuda(), out)
    image = np.broadcast_to(to_network_input(frames), (n, 3, h, w))
    ref = blend_to_uint8_nhwc(image, color.float().numpy(), attention.float().numpy())
    assert np.array_equal(out.cpu().numpy(), ref)


def test_unaligned_buffers_take_the_scalar_path(kernels, rng):
    n, h, w = 2, 32, 32                     # H*W % 16 == 0, but the output starts 1 byte in
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    color = torch.from_numpy(rng.uniform(-1, 1, (n, 3, h, w)).astype(np.float32)).cuda()
    attention = torch.from_numpy(rng.uniform(0, 1, (n, 1, h, w)).astype(np.float32)).cuda()
    buffer = poisoned((n * h * w * 3 + 1,), torch.uint8)
    out = buffer[1:].view(n, h, w, 3)
    kernels.blend_to_uint8(color, attention, torch.from_numpy(frames).cuda(), out)
    ref = blend_to_uint8_nhwc(to_network_input(frames), color.cpu().numpy(), attention.cpu().numpy())
    assert np.array_equal(out.cpu().numpy(), ref)


def test_kernels_run_on_the_given_stream_inside_a_cuda_graph(kernels, rng):
    n, s = 4, 128
    frames = torch.from_numpy(rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)).cuda()
    color = torch.empty(n, 3, s, s, device="cuda").uniform_(-1, 1)
    attention = torch.empty(n, 1, s, s, device="cuda").uniform_(0, 1)
    out = torch.zeros(n, s, s, 3, dtype=torch.uint8, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):                       # warm up off the default stream
        kernels.blend_to_uint8(color, attention, frames, out)
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        kernels.blend_to_uint8(color, attention, frames, out)
    out.zero_()
    color.uniform_(-1, 1)                                 # new data, same buffers
    graph.replay()
    torch.cuda.synchronize()
    ref = blend_to_uint8_nhwc(to_network_input(frames.cpu().numpy()), color.cpu().numpy(), attention.cpu().numpy())
    assert np.array_equal(out.cpu().numpy(), ref)


# --- the pipeline and GPU engines ---------------------------------------------------------------
@pytest.fixture(scope="module")
def generator():
    from helpers import perturbed_generator
    return perturbed_generator("convnext2")


@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_torch_cuda_engine_matches_eager_fp32(generator, rng, precision, tolerance):
    from exprengine.engine import Engine
    from exprengine.engines.backends.torch_backend import TorchBackend
    from exprengine.engines.build import relative_error
    from exprengine.export.inputs import random_network_inputs
    from exprengine.pixels import blend
    cpu = Engine.from_generator(generator)
    gpu = Engine(TorchBackend(generator, "cuda", precision, max_batch=8), cpu.manifest)
    image, aus = random_network_inputs(5, 128)
    with torch.inference_mode():
        c, a = generator(torch.from_numpy(image), torch.from_numpy(aus))
        ref = blend(torch.from_numpy(image), c, a).numpy()
    out, att = gpu.run_network(image, aus)
    assert relative_error(out, ref) < tolerance and relative_error(att, a.numpy()) < tolerance
    # pixel space: the fused path against the CPU reference path, within rounding of the precision
    faces = rng.integers(0, 256, (5, 128, 128, 3), dtype=np.uint8)
    intensities = rng.uniform(0, 2, (5, NUM_AUS)).astype(np.float32)
    got, got_att = gpu.run_frames(faces, intensities)
    want, want_att = cpu.run_frames(faces, intensities)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= (1 if precision == "fp32" else 4), diff.max()
    assert np.abs(got_att - want_att).max() < tolerance * 10


def test_pipeline_graph_replay_equals_uncaptured_and_morph_is_one_call(generator, rng, face):
    from exprengine.engine import Engine
    from exprengine.engines.backends.torch_backend import TorchBackend
    backend = TorchBackend(generator, "cuda", "fp16", max_batch=32)
    engine = Engine(backend, Engine.from_generator(generator).manifest)
    frames = engine.morph(face, "natural", "happiness@2", frames=32)
    assert engine.backend_calls == 1 and backend.pipeline.graph_replays == 1
    again = engine.morph(face, "natural", "happiness@2", frames=32)
    assert np.array_equal(frames, again) and backend.pipeline.graph_replays == 2
    backend.pipeline.graphs_enabled = False
    uncaptured = engine.morph(face, "natural", "happiness@2", frames=32)
    # cuDNN/cuBLAS may pick other FP16 algorithms outside a capture: equal within rounding
    diff = np.abs(frames.astype(int) - uncaptured.astype(int))
    assert diff.max() <= 2 and (diff == 0).mean() > 0.99
    trajectory = au_trajectory(np.zeros(NUM_AUS, np.float32), AUs.parse("happiness@2").values, 32)
    per_frame = np.concatenate([engine.edit(face, row) for row in trajectory])
    assert np.abs(per_frame.astype(int) - frames.astype(int)).max() <= 1
