"""Backend registry: name -> Backend class, and the choices a caller (the CLI) offers from it.

    backend_names()                 every backend, in the registry's order (below)
    backend_names(device="cpu", compiled=True)    those that build CPU engines ahead of time
    get_backend("aoti").default_precision / .default_device / .precisions / .devices /
                       .device_bound / .builds_rig / .compiled     (`Backend`'s class attributes)
    precision_names()               every precision some backend builds ("fp32", "fp16")
    device_names()                  what an engine may be asked to run on ("auto", "cpu", "cuda")
    device_names(build=True)        what an engine may be built for ("cpu", "cuda")
    resolve_device("auto")          "cuda" when an NVIDIA GPU is visible, else "cpu"

The order is stable and meaningful: the portable backends first (ONNX Runtime, the default;
AOTInductor; eager PyTorch, the reference), then those that run on CUDA only (torch.compile,
TensorRT).
"""
from __future__ import annotations

from exprengine.engines.backends.aoti_backend import AOTInductorBackend
from exprengine.engines.backends.base import DEVICES, Backend, check_device, resolve_device
from exprengine.engines.backends.onnxruntime_backend import OnnxRuntimeBackend
from exprengine.engines.backends.tensorrt_backend import TensorRTBackend
from exprengine.engines.backends.torch_backend import TorchBackend
from exprengine.engines.backends.torch_compile_backend import TorchCompileBackend
from exprengine.errors import EngineError

BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (
    OnnxRuntimeBackend, AOTInductorBackend, TorchBackend, TorchCompileBackend, TensorRTBackend)}


def get_backend(name: str) -> type[Backend]:
    """The Backend class registered as `name`; EngineError (a UserError) naming the choices otherwise."""
    if name not in BACKENDS:
        raise EngineError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def backend_names(*, device: str | None = None, rig: bool | None = None,
                  compiled: bool | None = None) -> list[str]:
    """Registered backend names in the registry's order (see the module), optionally only those
    that build engines for `device` ("cpu" or "cuda"), that build the rig or not (`rig`), and
    that compile ahead of time or not (`compiled`; eager PyTorch is the one that does not).
    Availability on this machine is not considered (`Backend.unavailable_reason` says)."""
    return [name for name, b in BACKENDS.items()
            if (device is None or device in b.devices) and (rig is None or b.builds_rig == rig)
            and (compiled is None or b.compiled == compiled)]


def lats_backend_names(device: str | None = None) -> list[str]:
    """The backends that build LATS age engines (`Backend.builds_lats`), in the registry's order,
    optionally only those that build them for `device` ("cpu" or "cuda")."""
    return [name for name, b in BACKENDS.items() if b.builds_lats and (device is None or device in b.lats_devices)]


def precision_names() -> list[str]:
    """Every precision some registered backend builds, in `exprengine.models.precision.PRECISIONS`
    order ("fp32", "fp16"); each backend's own are its `precisions`."""
    from exprengine.models.precision import PRECISIONS
    built = {p for b in BACKENDS.values() for p in b.precisions}
    return [p for p in PRECISIONS if p in built]


def device_names(build: bool = False) -> list[str]:
    """The devices an engine may be asked to run on ("auto", "cpu", "cuda"; `resolve_device`
    resolves "auto"), or with `build` those some backend builds engines for ("cpu", "cuda")."""
    if build:
        return [d for d in DEVICES if any(d in b.devices for b in BACKENDS.values())]
    return list(DEVICES)


def describe_registry() -> str:
    """The text of `exprengine models`: every model of the registry (`models.list_models`,
    `models.describe`) and every backend with its description, and why it is unavailable here
    when it is (`Backend.unavailable_reason`)."""
    from exprengine.models import describe, list_models
    names = list(list_models())
    width = max(map(len, [*names, *BACKENDS]))      # one column for both tables, the longest name
    lines = ["Models:", *(f"  {name:<{width}}  {describe(name)}" for name in names), "", "Backends:"]
    for name, b in BACKENDS.items():
        reason = b.unavailable_reason()
        lines.append(f"  {name:<{width}}  {b.description}" + (f"\n  {'':<{width}}  unavailable here: {reason}" if reason else ""))
    return "\n".join(lines)


__all__ = ["describe_registry", "Backend", "BACKENDS", "DEVICES", "backend_names", "check_device", "device_names", "get_backend",
           "lats_backend_names", "precision_names", "resolve_device"]
