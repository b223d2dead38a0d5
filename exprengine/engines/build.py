"""`exprengine build`: generator -> engine directory (manifest + artifacts), atomically."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from exprengine.engines.backends import get_backend
from exprengine.engines.manifest import MANIFEST_NAME, Manifest, base_versions
from exprengine.errors import EngineError
from exprengine.models import AttentionGenerator

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


def verify_against_eager(backend, generator, precision: str, batch: int = VERIFY_BATCH) -> dict:
    """Run engine and eager FP32 PyTorch on fresh random inputs; raise if they disagree."""
    from exprengine.kernels.blend import blend
    image, aus = random_network_inputs(batch, generator.config.image_size)
    out, att = backend.run(image, aus)
    device = next(generator.parameters()).device
    with torch.inference_mode():
        x, a = torch.from_numpy(image).to(device), torch.from_numpy(aus).to(device)
        color, attention = generator.float()(x, a)
        ref_out, ref_att = blend(x, color, attention).cpu().numpy(), attention.cpu().numpy()
    err = max(relative_error(out, ref_out), relative_error(att, ref_att))
    if not np.isfinite(err) or err > TOLERANCE[precision]:
        raise EngineError(f"the built engine disagrees with eager PyTorch: max relative error {err:.2e} "
                          f"> {TOLERANCE[precision]:.0e} ({precision})")
    return {"max_rel_error": err, "batch": batch, "tolerance": TOLERANCE[precision],
            "reference": "eager PyTorch fp32"}


def check_engine_destination(out: str | Path) -> Path:
    """An engine may replace an existing engine directory, never other files or folders."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise EngineError(f"{out} exists and is not a directory; choose another --out")
        if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
            raise EngineError(f"{out} is a non-empty directory that is not an engine; refusing to replace it")
    from exprengine.media import check_writable_place
    check_writable_place(out, directory=True)     # missing parents are created when it is written
    return out


def check_build_request(out: str | Path, backend: str, precision: str = "fp32", device: str = "cpu",
                        max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = DEFAULT_OPT_BATCH):
    """Everything about a build that can be refused before any work; returns the backend class."""
    backend_cls = get_backend(backend)
    reason = backend_cls.unavailable_reason()
    if reason:
        raise EngineError(reason)
    if precision not in backend_cls.precisions:
        raise EngineError(f"backend {backend} builds {', '.join(backend_cls.precisions)} engines, not {precision}")
    if device not in backend_cls.devices:
        raise EngineError(f"backend {backend} builds {' or '.join(backend_cls.devices)} engines; "
                          f"use --device {backend_cls.devices[0]}")
    if precision == "fp16" and device != "cuda":
        raise EngineError("fp16 engines run on CUDA; use --device cuda (or fp32 on the CPU)")
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("--device cuda needs an NVIDIA GPU with CUDA, and none is visible here")
    if not 1 <= opt_batch <= max_batch:
        raise EngineError(f"need 1 <= opt batch ({opt_batch}) <= max batch ({max_batch})")
    check_engine_destination(out)
    return backend_cls


def build_engine(generator: AttentionGenerator, out: str | Path, backend: str = "onnxruntime", *,
                 weights_source: str, precision: str = "fp32", device: str = "cpu",
                 max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = DEFAULT_OPT_BATCH,
                 verify: bool = True, progress: bool = False) -> Manifest:
    """Build `generator` into an engine directory at `out` (replacing an older engine there).

    The directory appears complete or not at all: it is assembled beside `out` and renamed.
    """
    from exprengine.checkpoints import weights_sha256
    from exprengine.media import atomic_directory

    backend_cls = check_build_request(out, backend, precision, device, max_batch, opt_batch)
    out = Path(out)
    cfg = generator.config
    manifest = Manifest(
        model=cfg.name, model_config=cfg.to_dict(), weights_sha256=weights_sha256(generator),
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
