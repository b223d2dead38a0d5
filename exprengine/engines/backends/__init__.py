"""Backend registry: name -> Backend class."""
from __future__ import annotations

from exprengine.engines.backends.aoti_backend import AOTInductorBackend
from exprengine.engines.backends.base import Backend
from exprengine.engines.backends.onnxruntime_backend import OnnxRuntimeBackend
from exprengine.engines.backends.tensorrt_backend import TensorRTBackend
from exprengine.engines.backends.torch_backend import TorchBackend
from exprengine.engines.backends.torch_compile_backend import TorchCompileBackend
from exprengine.errors import EngineError

BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (
    OnnxRuntimeBackend, AOTInductorBackend, TorchBackend, TorchCompileBackend, TensorRTBackend)}


def get_backend(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise EngineError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return BACKENDS[name]


__all__ = ["Backend", "BACKENDS", "get_backend"]
