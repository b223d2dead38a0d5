"""`tensorrt`: TensorRT FP16 engine on NVIDIA GPUs (graph ends at the heads; fused epilogue).

The builder (parse ONNX, FP16 with accurate normalisation, optimisation profile over the
batch range, timing and engine caches) comes with the GPU issue. Today the backend name
exists so that scripts can ask for it, and it says in one sentence why it cannot build.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from exprengine.engines.backends.base import Backend
from exprengine.engines.manifest import Manifest
from exprengine.errors import EngineError


class TensorRTBackend(Backend):
    name = "tensorrt"
    description = "TensorRT FP16 on NVIDIA GPUs (not built in this version)"
    precisions = ("fp16", "fp32")
    device_bound = True

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import tensorrt
        except ImportError:
            return ("the tensorrt backend needs the TensorRT Python builder (TensorRT 10 or later, "
                    "`pip install tensorrt` with an NVIDIA GPU), and it is not installed here")
        if not hasattr(tensorrt, "Builder"):
            return (f"the installed tensorrt {getattr(tensorrt, '__version__', '?')} is a runtime without "
                    "a builder (lean/dispatch); building needs the full TensorRT package")
        return ("TensorRT is installed, but this exprengine version does not build TensorRT engines yet "
                "(planned: the GPU engine release); use --backend onnxruntime or aoti")

    @classmethod
    def build(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        raise EngineError(cls.unavailable_reason())

    @classmethod
    def load(cls, directory: Path, manifest: Manifest, device: str) -> "TensorRTBackend":
        raise EngineError(f"engine {directory}: {cls.unavailable_reason()}")

    def run(self, image: np.ndarray, aus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise EngineError(self.unavailable_reason())
