"""`exprengine build`: generator (or the rig) -> engine directory (manifest + artifacts), atomically.

Every build is checked against eager FP32 PyTorch on fresh random inputs (`verify_against_eager`).
The inputs come from `exprengine.export.inputs` (for the rig: plausible ones, `random_rig_inputs`).
A LATS age generator is built into two graphs and its class styles (`Backend.build_lats`) and
verified graph by graph (`verify_lats_against_eager`).
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from exprengine.engines.backends import get_backend
from exprengine.engines.manifest import LATS_GRAPHS, LATS_INPUTS, MANIFEST_NAME, Manifest, base_versions
from exprengine.errors import EngineError
from exprengine.export.inputs import random_network_inputs, random_rig_inputs
from exprengine.models import AttentionGenerator, is_lats, is_rig

DEFAULT_MAX_BATCH = 64
DEFAULT_OPT_BATCH = 16
VERIFY_BATCH = 3                 # odd and > 1: catches a batch fixed at export time
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
#: A LATS engine's tolerance (`relative_error` of each graph against eager FP32 PyTorch). FP32: the
#: float32 floor of the modulated-conv decoder is about 5e-5 (its two forms differ by that much,
#: tests/test_lats.py); ONNX Runtime's decoder measured 1.4e-5 to 4.0e-5 on lats-small with random
#: biases (3 weight seeds x 3 input seeds, batch 3) and 5e-6 on lats, AOTInductor's 1.1e-5, and the
#: encoders stay under 1e-6. 2e-4 leaves a margin of 5 over the worst measured and 4 over the
#: floor, while a wrong weight, style or layer (errors of 1e-2 and more) still fails by two orders
#: of magnitude. FP16 (CUDA): as the expression engines.
LATS_TOLERANCE = {"fp32": 2e-4, "fp16": 1e-2}


def relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    """max |value - reference| / max |reference| (the project's one definition)."""
    return float(np.max(np.abs(value - reference)) / max(float(np.max(np.abs(reference))), 1e-12))


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


def random_lats_inputs(generator, batch: int = VERIFY_BATCH, seed: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fresh random inputs of a LATS engine's graphs: (images float32 [N,3,S,S] uniform in [-1,1]
    for the encoder; features float32 [N,C,S/4,S/4] of the eager FP32 encoder of other such images,
    and styles float32 [N,D] on the segments between adjacent class styles, at class positions
    uniform in 0..5 (`LATSGenerator.style_at`), for the decoder)."""
    from exprengine.export.inputs import random_network_inputs
    rng = np.random.default_rng(seed)
    size = generator.config.image_size
    images, _ = random_network_inputs(batch, size, int(rng.integers(1 << 62)))
    others, _ = random_network_inputs(batch, size, int(rng.integers(1 << 62)))
    positions = rng.uniform(0, generator.config.num_classes - 1, batch)
    reference = generator.float()
    device = _device_of(reference)
    with torch.inference_mode():
        features = reference.encode(torch.from_numpy(others).to(device)).cpu().numpy()
        styles = reference.style_at(positions.tolist()).float().cpu().numpy()
    return images, features, styles


def verify_lats_against_eager(runner, generator, precision: str, batch: int = VERIFY_BATCH) -> dict:
    """Run a loaded LATS engine (`runner`, a `LATSRunner`) and eager FP32 PyTorch on fresh random
    inputs (`random_lats_inputs`): the encoder on random images, the decoder on features of random
    images and random styles between class styles, and the engine's stored class styles against
    `class_styles()`; EngineError when any graph's `relative_error` exceeds LATS_TOLERANCE[precision]
    (the class styles must agree to 1e-6: they are copied, not recomputed). Returns the manifest's
    `verification` record (the larger of the two graphs' errors)."""
    images, features, styles = random_lats_inputs(generator, batch)
    reference = generator.float()
    device = _device_of(reference)
    with torch.inference_mode():
        ref_features = reference.encode(torch.from_numpy(images).to(device)).cpu().numpy()
        ref_output = reference.decode(torch.from_numpy(features).to(device), torch.from_numpy(styles).to(device)
                                      ).cpu().numpy()
        ref_styles = reference.class_styles().float().cpu().numpy()
    errors = {"encoder": relative_error(runner.run_encoder(np.ascontiguousarray(images)), ref_features),
              "decoder": relative_error(runner.run_decoder(features, styles), ref_output)}
    style_error = relative_error(runner.class_styles, ref_styles)
    tolerance = LATS_TOLERANCE[precision]
    for graph, err in errors.items():
        if not np.isfinite(err) or err > tolerance:
            raise EngineError(f"the built engine's {graph} disagrees with eager PyTorch: max relative error "
                              f"{err:.2e} > {tolerance:.0e} ({precision})")
    if not np.isfinite(style_error) or style_error > 1e-6:
        raise EngineError(f"the built engine's class styles disagree with eager PyTorch's (relative error {style_error:.2e})")
    return {"max_rel_error": max(errors.values()), "batch": batch, "tolerance": tolerance,
            "reference": (f"eager PyTorch fp32, per graph: encoder {errors['encoder']:.2e} on random images, "
                          f"decoder {errors['decoder']:.2e} on features of random images and styles between "
                          f"random adjacent class styles")}


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
                        rig: bool = False, lats: bool = False):
    """Everything about a build that can be refused before any work; returns the backend class.
    `rig`: the model is the rig (`Backend.rig_refusal` says which backends and devices build it);
    `lats`: a LATS age generator (`Backend.lats_refusal`).
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
    if lats:
        refusal = backend_cls.lats_refusal(device, precision)
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
    (manifest `inputs`), and backends that cannot build it refuse it before any work. It may be a
    LATS age generator (`LATSGenerator`): its engine holds two graphs (manifest `graphs`) and the
    class styles, verified by `verify_lats_against_eager`.
    """
    from exprengine.models.weights import model_sha256
    from exprengine.export.graph import graph_inputs
    from exprengine.files import atomic_directory

    lats = is_lats(generator)
    backend_cls = check_build_request(out, backend, precision, device, max_batch, opt_batch, rig=is_rig(generator),
                                      lats=lats)
    out = Path(out)
    cfg = generator.config
    manifest = Manifest(
        model=cfg.name, model_config=cfg.to_dict(), weights_sha256=model_sha256(generator),
        inputs=list(LATS_INPUTS if lats else graph_inputs(generator)),
        graphs={k: {io: list(v) for io, v in g.items()} for k, g in LATS_GRAPHS.items()} if lats else {},
        weights_source=weights_source, backend=backend, precision=precision, device=device,
        graph_outputs="image" if lats else "blended", min_batch=1, max_batch=max_batch, opt_batch=opt_batch,
        image_size=cfg.image_size, versions={**base_versions(), **backend_cls.versions()})
    stages = ["exporting" if backend == "onnxruntime" else "compiling", "verifying", "writing"]
    with atomic_directory(out) as tmp, tqdm(total=len(stages), disable=not progress, unit="step",
                                            bar_format="{desc} {n}/{total} [{elapsed}]") as bar:
        tmp = Path(tmp)
        bar.set_description(f"{cfg.name} -> {backend}: {stages[0]}")
        roles = {file: role for role, file in backend_cls.role_files(manifest).items()}
        build = backend_cls.build_lats if lats else backend_cls.build
        for name in build(generator.eval(), tmp, manifest):
            manifest.record_artifact(tmp, name, roles.get(name))
        bar.update()
        if verify:
            bar.set_description(f"{cfg.name} -> {backend}: {stages[1]}")
            if lats:
                manifest.verification = verify_lats_against_eager(backend_cls.load_lats(tmp, manifest, device),
                                                                  generator, precision)
            else:
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
    from exprengine.models.lats import LATS_CONFIGS
    backend_cls = get_backend(backend)
    precision = precision or backend_cls.default_precision
    device = device or backend_cls.default_device
    check_build_request(out, backend, precision, device, max_batch, opt_batch, rig=model == RIG,
                        lats=model in LATS_CONFIGS)
    loaded = load_model(model, checkpoint, seed)
    if loaded.random_init and note is not None:
        note(f"no `checkpoint`: building a randomly initialised {model} (seed {seed}); "
             "it exercises the toolchain but edits nothing meaningfully")
    return build_engine(loaded.model, out, backend, weights_source=loaded.source, precision=precision,
                        device=device, max_batch=max_batch, opt_batch=opt_batch, verify=verify, progress=progress)
