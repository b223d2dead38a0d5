"""`exprengine build`: generator (or the rig) -> engine directory (manifest + artifacts), atomically.

Every build is checked against eager FP32 PyTorch on fresh random inputs (`verify_against_eager`).
For the rig those inputs are plausible (`random_rig_inputs`): a real MediaPipe mesh under a
random similarity transform plus noise, AU intensities drawn from the whole 0..5 scale, and a
random band-limited image (a warp's pointwise error is |image gradient| x |flow error|, so
1-pixel white noise would measure the float32 rounding of the flow, not the engine).
"""
from __future__ import annotations

import functools
import itertools
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from exprengine.engines.backends import get_backend
from exprengine.engines.manifest import MANIFEST_NAME, Manifest, base_versions
from exprengine.errors import EngineError
from exprengine.models import AttentionGenerator, is_rig

DEFAULT_MAX_BATCH = 64
DEFAULT_OPT_BATCH = 16
VERIFY_BATCH = 3                 # odd and > 1: catches a batch fixed at export time
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


def relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    """max |value - reference| / max |reference| (the project's one definition)."""
    return float(np.max(np.abs(value - reference)) / max(float(np.max(np.abs(reference))), 1e-12))


def random_network_inputs(batch: int, size: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fresh random inputs in the network's ranges: image in [-1, 1], aus (intensity/5) in [0, 0.4]."""
    rng = np.random.default_rng(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
    image = rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    aus = rng.uniform(0, 0.4, (batch, 17)).astype(np.float32)
    return image, aus


#: The random similarity transforms of `random_rig_inputs`: roll (radians), scale, shift (fraction
#: of the crop) and per-point noise (fraction of the crop; 0.8 px at 256, about MediaPipe's own
#: frame-to-frame jitter on a still face).
RIG_ROLL, RIG_SCALE, RIG_SHIFT, RIG_NOISE = 0.35, (0.85, 1.15), 0.04, 0.003
#: Side of the random coarse grid that `random_smooth_images` upsamples (bicubic) to the crop.
SMOOTH_GRID = 16


@functools.lru_cache(maxsize=4)
def reference_mesh(size: int) -> np.ndarray:
    """float32 [478,2]: MediaPipe's mesh of the bundled face photo (`exprengine/assets/face.png`),
    in the pixels of the rig's crop of it (`FaceCrop.from_landmarks`) at `size`: what the faces
    pipeline gives the rig for that photo. UserError if MediaPipe is missing or finds no face."""
    from exprengine.demo import bundled_face
    from exprengine.errors import UserError
    from exprengine.faces.crop import FaceCrop
    from exprengine.faces.landmarks import MediaPipeDetector
    face = bundled_face()
    detector = MediaPipeDetector()
    try:
        points = detector.landmarks(face)
    finally:
        detector.close()
    if len(points) == 0:
        raise UserError("MediaPipe finds no face mesh in the bundled face photo")
    crop = FaceCrop.from_landmarks(points[0], face.shape)
    return crop.to_crop(points[0], size).astype(np.float32)


def random_smooth_images(rng: np.random.Generator, batch: int, size: int) -> np.ndarray:
    """float32 [batch,3,size,size] in [-1,1]: uniform noise on a SMOOTH_GRID grid, upsampled bicubically."""
    coarse = torch.from_numpy(rng.uniform(-1, 1, (batch, 3, SMOOTH_GRID, SMOOTH_GRID)).astype(np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return fine.clamp(-1, 1).numpy()


def random_rig_inputs(batch: int, size: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fresh random, plausible inputs of the rig: (image float32 [N,3,S,S] in [-1,1], band-limited;
    aus float32 [N,17] = intensity / 5 with intensities uniform in 0..5; landmarks float32
    [N,478,2] in crop pixels: `reference_mesh` turned by up to RIG_ROLL about the crop's centre,
    scaled by RIG_SCALE, shifted by up to RIG_SHIFT of the crop, plus Gaussian noise RIG_NOISE)."""
    rng = np.random.default_rng(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
    mesh = reference_mesh(size).astype(np.float64)
    centre = np.array([size / 2, size / 2])
    marks = []
    for _ in range(batch):
        a, s = rng.uniform(-RIG_ROLL, RIG_ROLL), rng.uniform(*RIG_SCALE)
        turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        shift = rng.uniform(-RIG_SHIFT, RIG_SHIFT, 2) * size
        marks.append((mesh - centre) @ turn.T * s + centre + shift + rng.normal(0, RIG_NOISE * size, mesh.shape))
    aus = rng.uniform(0, 1, (batch, 17)).astype(np.float32)
    return random_smooth_images(rng, batch, size), aus, np.stack(marks).astype(np.float32)


def _device_of(model: torch.nn.Module) -> torch.device:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def verify_against_eager(backend, generator, precision: str, batch: int = VERIFY_BATCH) -> dict:
    """Run engine and eager FP32 PyTorch on fresh random inputs (for the rig: `random_rig_inputs`);
    raise EngineError if they disagree by more than TOLERANCE[precision] (`relative_error`).
    `backend`: a loaded Backend (`run_network`); returns the manifest's `verification` record."""
    from exprengine.pixels import blend
    rig = is_rig(generator)
    if rig:
        image, aus, landmarks = random_rig_inputs(batch, generator.config.image_size)
        out, att = backend.run_network(image, aus, landmarks)
    else:
        image, aus = random_network_inputs(batch, generator.config.image_size)
        out, att = backend.run_network(image, aus)
    device = _device_of(generator)
    with torch.inference_mode():
        x, a = torch.from_numpy(image).to(device), torch.from_numpy(aus).to(device)
        extra = (torch.from_numpy(landmarks).to(device),) if rig else ()
        color, attention = generator.float()(x, a, *extra)
        ref_out, ref_att = blend(x, color, attention).cpu().numpy(), attention.cpu().numpy()
    err = max(relative_error(out, ref_out), relative_error(att, ref_att))
    if not np.isfinite(err) or err > TOLERANCE[precision]:
        raise EngineError(f"the built engine disagrees with eager PyTorch: max relative error {err:.2e} "
                          f"> {TOLERANCE[precision]:.0e} ({precision})")
    reference = "eager PyTorch fp32" + (" (random smooth images, MediaPipe meshes moved at random, AUs 0..5)"
                                        if rig else "")
    return {"max_rel_error": err, "batch": batch, "tolerance": TOLERANCE[precision], "reference": reference}


def check_engine_destination(out: str | Path) -> Path:
    """An engine may replace an existing engine directory, never other files or folders."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise EngineError(f"{out} exists and is not a directory; choose another `out`")
        if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
            raise EngineError(f"{out} is a non-empty directory that is not an engine; refusing to replace it")
    from exprengine.files import check_writable_place
    check_writable_place(out, directory=True)     # missing parents are created when it is written
    return out


def check_build_request(out: str | Path, backend: str, precision: str = "fp32", device: str = "cpu",
                        max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = DEFAULT_OPT_BATCH,
                        rig: bool = False):
    """Everything about a build that can be refused before any work; returns the backend class.
    `rig`: the model is the rig (`Backend.rig_refusal` says which backends and devices build it).
    EngineError (one sentence) for an unknown or unavailable backend, a precision or device it
    does not build, CUDA without a GPU, opt_batch outside 1..max_batch, or a destination that
    is not an engine."""
    backend_cls = get_backend(backend)
    reason = backend_cls.unavailable_reason()
    if reason:
        raise EngineError(reason)
    if rig:
        refusal = backend_cls.rig_refusal(device, precision)
        if refusal:
            raise EngineError(refusal)
    if precision not in backend_cls.precisions:
        raise EngineError(f"backend {backend} builds {', '.join(backend_cls.precisions)} engines, not {precision}")
    if device not in backend_cls.devices:
        raise EngineError(f"backend {backend} builds {' or '.join(backend_cls.devices)} engines; "
                          f"use `device` {backend_cls.default_device!r}")
    if precision == "fp16" and device != "cuda":
        raise EngineError("fp16 engines run on CUDA; use `device` 'cuda' (or `precision` 'fp32' on the CPU)")
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("`device` 'cuda' needs an NVIDIA GPU with CUDA, and none is visible here")
    if not 1 <= opt_batch <= max_batch:
        raise EngineError(f"need 1 <= `opt_batch` ({opt_batch}) <= `max_batch` ({max_batch})")
    check_engine_destination(out)
    return backend_cls


def build_engine(generator: AttentionGenerator, out: str | Path, backend: str = "onnxruntime", *,
                 weights_source: str, precision: str = "fp32", device: str = "cpu",
                 max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = DEFAULT_OPT_BATCH,
                 verify: bool = True, progress: bool = False) -> Manifest:
    """Build `generator` into an engine directory at `out` (replacing an older engine there).

    The directory appears complete or not at all: it is assembled beside `out` and renamed.
    `generator` may be the rig (`FaceRig`): its engine's graph takes the landmarks too
    (manifest `inputs`), and backends that cannot build it refuse it before any work.
    """
    from exprengine.models.weights import model_sha256
    from exprengine.export.graph import graph_inputs
    from exprengine.files import atomic_directory

    backend_cls = check_build_request(out, backend, precision, device, max_batch, opt_batch, rig=is_rig(generator))
    out = Path(out)
    cfg = generator.config
    manifest = Manifest(
        model=cfg.name, model_config=cfg.to_dict(), weights_sha256=model_sha256(generator),
        inputs=list(graph_inputs(generator)),
        weights_source=weights_source, backend=backend, precision=precision, device=device,
        graph_outputs="blended", min_batch=1, max_batch=max_batch, opt_batch=opt_batch,
        image_size=cfg.image_size, versions={**base_versions(), **backend_cls.versions()})
    stages = ["exporting" if backend == "onnxruntime" else "compiling", "verifying", "writing"]
    with atomic_directory(out) as tmp, tqdm(total=len(stages), disable=not progress, unit="step",
                                            bar_format="{desc} {n}/{total} [{elapsed}]") as bar:
        tmp = Path(tmp)
        bar.set_description(f"{cfg.name} -> {backend}: {stages[0]}")
        roles = {file: role for role, file in backend_cls.artifacts.items()}
        for name in backend_cls.build(generator.eval(), tmp, manifest):
            manifest.record_artifact(tmp, name, roles.get(name))
        bar.update()
        if verify:
            bar.set_description(f"{cfg.name} -> {backend}: {stages[1]}")
            manifest.verification = verify_against_eager(backend_cls.load(tmp, manifest, device), generator,
                                                         precision)
        bar.update()
        bar.set_description(f"{cfg.name} -> {backend}: {stages[2]}")
        manifest.write(tmp)
        bar.update()
    return manifest


def build_model_engine(out: str | Path, backend: str = "onnxruntime", *, model: str | None = None,
                       checkpoint: str | None = None, seed: int = 0, precision: str | None = None,
                       device: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                       opt_batch: int = DEFAULT_OPT_BATCH, verify: bool = True, progress: bool = False,
                       note=None) -> Manifest:
    """`exprengine build` in one call: the model the user named (`models.load_model`: the rig,
    a checkpoint, the shipped default, or random weights from `seed`) compiled into the engine
    directory `out` by `build_engine`. `precision` and `device` default to the backend's own
    (`Backend.default_precision`, `.default_device`). The whole request is checked before any
    work (`check_build_request`); `note(sentence)` hears about random weights before the build.
    Returns the written manifest. EngineError / UserError (one sentence) for a refused request.
    """
    from exprengine.models import RIG, load_model
    backend_cls = get_backend(backend)
    precision = precision or backend_cls.default_precision
    device = device or backend_cls.default_device
    check_build_request(out, backend, precision, device, max_batch, opt_batch, rig=model == RIG)
    loaded = load_model(model, checkpoint, seed)
    if loaded.random_init and note is not None:
        note(f"no `checkpoint`: building a randomly initialised {model} (seed {seed}); "
             "it exercises the toolchain but edits nothing meaningfully")
    return build_engine(loaded.model, out, backend, weights_source=loaded.source, precision=precision,
                        device=device, max_batch=max_batch, opt_batch=opt_batch, verify=verify, progress=progress)
