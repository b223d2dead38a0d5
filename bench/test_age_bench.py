"""Age traversal (LATS, issue 16 part 9): one engine call against a per-frame loop and against
eager PyTorch; the identity encoder once against once per frame; a GPU section.

    pytest bench/test_age_bench.py --benchmark-only --benchmark-json bench/results/<device>-age.json
    python bench/report.py bench/results/<device>-age.json --markdown bench/results/<device>-age.md

Groups compare like with like (one model, one number of frames, one face); ratios are only taken
within one run. Random-init weights (speed does not depend on them), built and verified against
eager PyTorch as `exprengine build` does, with max_batch 128 so that 101 frames are one decoder
call. The face is the bundled photo, resized to 256x256 by every path alike.

- `test_traverse`: the reference's traversal of one face, 11 frames (class step 0.5) and 101 frames
  (step 0.05), as ONE call (`Engine.traverse`: one encoder call, one decoder call), as a per-frame
  loop (`Engine.age` of one frame at a time, which encodes the face again each frame) on each
  compiled CPU backend, and in eager PyTorch (the LATSGenerator itself: encode once, decode the
  batch, under torch.no_grad, uint8 in and out as the engine).
- `test_identity_encoder`: 11 frames decoded from features computed once and cached
  (`decode_ages`), encoded once and decoded (`traverse`), and with the face encoded once per frame
  in the same batched call (`Engine.age` of 11 copies of the face): the encoder's share and what
  encoding once saves at equal batching.
- `test_age_cpu_matmul_rate`: the machine's FP32 matmul rate, measured in the same run.
- GPU (skipped without one): the 101-frame traversal of the reference-size `lats` at 256x256 in
  one call on the torch backend's CUDA pipeline (FP16 and FP32), target 25 ms, and the FP16 / FP32
  matmul rates for its floor (FLOPs / rate). `bench/gpu.py --models lats` measures the same with
  eager GPU baselines in the one-call GPU script.

extra_info carries the FLOPs (torch.utils.flop_counter, 2 per multiply-add) of the encoder per face
and of the decoder per frame, and of the whole timed call, so the report shows GFLOP/s.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from exprengine.engine import Engine
from exprengine.engines.backends import get_backend, lats_backend_names
from exprengine.engines.build import build_engine
from exprengine.models import create_model
from exprengine.models.lats import traversal_positions
from exprengine.pixels import to_network_input, to_uint8_nhwc
from exprengine.preprocess import stack_faces

MAX_BATCH = 128                 # 101 frames in one decoder call
STEPS = {11: 0.5, 101: 0.05}    # frames -> the reference's class step
GPU_TARGET_MS = 25.0
#: The reference-size model runs 11 frames on these backends only: its one call must take under
#: about 10 s on the 2-core CPU. ONNX Runtime: 5-9 s measured; eager PyTorch took 23 s and
#: AOTInductor ran lats-small 4-5x slower than ONNX Runtime (4.0 against 0.85 s for 11 frames).
LATS_FULL_BACKENDS = ("onnxruntime",)


def _available(name: str):
    """`name` as a pytest parameter that skips, saying why, where its backend is unavailable."""
    reason = get_backend(name).unavailable_reason()
    return pytest.param(name, marks=pytest.mark.skipif(reason is not None, reason=reason or ""))


#: The backends that build LATS engines for the CPU and are compiled (the torch backend on the CPU
#: is eager PyTorch, measured as "eager" itself).
COMPILED = tuple(n for n in lats_backend_names(device="cpu") if get_backend(n).compiled)
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="no NVIDIA GPU visible: the GPU section runs on a lent GPU machine "
                                      "(or `bench/gpu.py --models lats`)")


def _cases():
    """(model, frames, backend, mode, rounds, warmup): lats-small at 11 then 101 frames (the 11-frame
    calls warm every engine first), the reference-size lats at 11 frames on LATS_FULL_BACKENDS."""
    cases = []
    for model, frames, backends in (("lats-small", 11, COMPILED), ("lats-small", 101, COMPILED),
                                    ("lats", 11, LATS_FULL_BACKENDS)):
        big = frames > 11 or model == "lats"
        for backend in backends:
            cases.append((model, frames, backend, "one-call", 2 if big else 3, 1))
            cases.append((model, frames, backend, "per-frame-loop", 1 if big else 3, 0 if big else 1))
        cases.append((model, frames, "eager", "eager", 1 if big else 3, 0 if big else 1))
    return [pytest.param(*c, id=f"{c[0]}-{c[1]}-{c[2]}-{c[3]}",
                         marks=_available(c[2]).marks if c[2] != "eager" else ()) for c in cases]


_FLOPS: dict[str, tuple[float, float]] = {}


def lats_gflop(model: str) -> tuple[float, float]:
    """(encoder GFLOP per face, decoder GFLOP per frame) of `model` at 256x256, counted by torch's
    FlopCounterMode on the eager generator (2 per multiply-add; convolutions and matmuls)."""
    if model not in _FLOPS:
        g = create_model(model, seed=0).eval()
        s = g.config.image_size
        with torch.no_grad():
            x = torch.zeros(1, 3, s, s)
            with FlopCounterMode(display=False) as counter:
                features = g.encode(x)
            encoder = counter.get_total_flops() / 1e9
            style = g.style_at([2.5])
            with FlopCounterMode(display=False) as counter:
                g.decode(features, style)
            decoder = counter.get_total_flops() / 1e9
        _FLOPS[model] = (encoder, decoder)
    return _FLOPS[model]


@pytest.fixture(scope="session")
def face_image():
    from exprengine.media import bundled_face
    return bundled_face()


@pytest.fixture(scope="session")
def age_engines(tmp_path_factory):
    """(model, backend) -> Engine built from `create_model(model, seed=0)` (verified against eager
    at build, as `exprengine build` does); "eager" -> the LATSGenerator itself."""
    cache: dict[tuple[str, str], object] = {}

    def get(model: str, backend: str):
        if (model, backend) not in cache:
            generator = create_model(model, seed=0).eval()
            if backend == "eager":
                cache[model, backend] = generator
            else:
                out = tmp_path_factory.mktemp("age-bench") / f"{model}-{backend}"
                build_engine(generator, out, backend, weights_source="random-init seed=0", max_batch=MAX_BATCH,
                             opt_batch=16)
                cache[model, backend] = Engine.load(out, device="cpu")
        return cache[model, backend]

    return get


def eager_traversal(generator, face: np.ndarray, step: float):
    """The eager reference of one traversal: face -> uint8 [K,S,S,3], encoded once, decoded as one batch."""
    positions = traversal_positions(step).tolist()

    def run():
        x = torch.from_numpy(to_network_input(stack_faces(face, generator.config.image_size)))
        with torch.no_grad():
            return to_uint8_nhwc(generator.decode(generator.encode(x), generator.style_at(positions)).numpy())
    return run


def _calls(engine) -> tuple[int, int]:
    return (engine.encoder_calls, engine.decoder_calls) if isinstance(engine, Engine) else (0, 0)


@pytest.mark.parametrize("model,frames,backend,mode,rounds,warmup", _cases())
def test_traverse(benchmark, age_engines, face_image, model, frames, backend, mode, rounds, warmup):
    engine = age_engines(model, backend)
    step = STEPS[frames]
    encoder, decoder = lats_gflop(model)
    if mode == "eager":
        fn, encodes = eager_traversal(engine, face_image, step), 1
    elif mode == "one-call":
        fn, encodes = (lambda: engine.traverse(face_image, step=step)), 1
    else:
        ages = Engine.traversal_ages(step)
        fn, encodes = (lambda: [engine.age(face_image, float(a)) for a in ages]), frames
    benchmark.group = f"age traverse {frames} frames {model}"
    benchmark.extra_info.update(kind="age-traverse", model=model, frames=frames, backend=backend, mode=mode,
                                gflop_encoder=encoder, gflop_decoder_per_frame=decoder,
                                gflop_per_call=encodes * encoder + frames * decoder)
    before = _calls(engine)
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup)
    after = _calls(engine)
    benchmark.extra_info.update(encoder_calls_per_call=(after[0] - before[0]) / (rounds + warmup),
                                decoder_calls_per_call=(after[1] - before[1]) / (rounds + warmup))


@pytest.mark.parametrize("mode", ["features-cached", "encoder-once", "encoder-per-frame"])
@pytest.mark.parametrize("backend", tuple(_available(n) for n in COMPILED))
def test_identity_encoder(benchmark, age_engines, face_image, backend, mode):
    """11 frames: decoded from cached features, encoded once + decoded, encoded per frame + decoded
    (all one batched call each, so only the encoder's work differs)."""
    frames, model = 11, "lats-small"
    engine = age_engines(model, backend)
    ages = Engine.traversal_ages(STEPS[frames])
    encoder, decoder = lats_gflop(model)
    if mode == "features-cached":
        features = engine.age_features(face_image)
        fn, encodes = (lambda: engine.decode_ages(features, ages)), 0
    elif mode == "encoder-once":
        fn, encodes = (lambda: engine.traverse(face_image, ages)), 1
    else:
        faces = np.repeat(stack_faces(face_image, engine.image_size), frames, axis=0)
        fn, encodes = (lambda: engine.age(faces, ages)), frames
    benchmark.group = f"age identity encoder {frames} frames {model} {backend}"
    benchmark.extra_info.update(kind="age-encoder", model=model, frames=frames, backend=backend, mode=mode,
                                gflop_encoder=encoder, gflop_decoder_per_frame=decoder,
                                gflop_per_call=encodes * encoder + frames * decoder)
    benchmark.pedantic(fn, rounds=3, warmup_rounds=1)


def test_age_cpu_matmul_rate(benchmark):
    """The machine's FP32 matrix rate, measured in the same run (the roofline for the table)."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    benchmark.group = "machine"
    benchmark.extra_info.update(kind="matmul", gflop=2 * n ** 3 / 1e9, threads=torch.get_num_threads())
    benchmark.pedantic(torch.mm, args=(a, b), rounds=10, warmup_rounds=2)


# --- GPU (a lent machine; skipped here) -------------------------------------------------------------
@needs_gpu
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_gpu_traverse_101(benchmark, tmp_path_factory, face_image, precision):
    """The reference-size lats, 101 frames at 256x256 as one call (one encoder call, one decoder call:
    max_batch 128) on the torch backend's CUDA pipeline; each call ends with the frames on the host."""
    model, frames = "lats", 101
    out = tmp_path_factory.mktemp("age-gpu") / f"{model}-cuda-{precision}"
    build_engine(create_model(model, seed=0).eval(), out, "torch", weights_source="random-init seed=0",
                 precision=precision, device="cuda", max_batch=MAX_BATCH, opt_batch=frames)
    engine = Engine.load(out, device="cuda")
    assert engine.traverse(face_image).shape == (frames, 256, 256, 3)
    encoder, decoder = lats_gflop(model)
    benchmark.group = f"GPU age traverse {frames} frames {model}"
    benchmark.extra_info.update(kind="gpu-age-traverse", model=model, frames=frames, backend="torch-cuda",
                                precision=precision, gflop_per_call=encoder + frames * decoder,
                                target_ms=GPU_TARGET_MS, device=torch.cuda.get_device_name())
    benchmark.pedantic(engine.traverse, args=(face_image,), rounds=30, warmup_rounds=3)


@needs_gpu
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_gpu_matmul_rate(benchmark, precision):
    """The GPU's matrix rate (8192^3 torch.matmul, TF32 off for FP32): the traversal's floor."""
    n = 8192
    dtype = torch.float16 if precision == "fp16" else torch.float32
    a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False

    def run():
        a @ b
        torch.cuda.synchronize()
    benchmark.group = "GPU machine"
    benchmark.extra_info.update(kind="gpu-matmul", precision=precision, gflop=2 * n ** 3 / 1e9)
    try:
        benchmark.pedantic(run, rounds=20, warmup_rounds=3)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
