"""`onnxruntime`: the ONNX graph (blend included) run by ONNX Runtime.

CPU everywhere; the CUDA execution provider is used when onnxruntime-gpu provides it and
the engine is loaded with device "cuda" or "auto".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from exprengine.engines.backends.base import Backend
from exprengine.engines.manifest import Manifest
from exprengine.errors import EngineError

MODEL = "model.onnx"


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    description = "ONNX Runtime (CPU; CUDA provider when installed)"

    def __init__(self, session):
        self.session = session
        self.providers = session.get_providers()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        import onnx
        import onnxruntime
        return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}

    @classmethod
    def build(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        from exprengine.export.onnx_graph import export_onnx
        export_onnx(generator, directory / MODEL, outputs="blended", max_batch=manifest.max_batch)
        return [MODEL]

    @classmethod
    def load(cls, directory: Path, manifest: Manifest, device: str) -> "OnnxRuntimeBackend":
        import onnxruntime as ort
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        elif device == "cuda":
            raise EngineError("device cuda asked for, but this onnxruntime has no CUDA provider "
                              "(install onnxruntime-gpu)")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(directory / MODEL), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise EngineError(f"onnxruntime cannot load {directory / MODEL}: {str(e).splitlines()[0]}") from None
        return cls(session)

    def run(self, image: np.ndarray, aus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        output, attention = self.session.run(None, {"image": image, "aus": aus})
        return output, attention
