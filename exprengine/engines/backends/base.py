"""The backend interface every engine implements.

A backend turns a generator into artifacts (`build`) and runs them (`load` + `run`):

    run(image [N,3,S,S] float32 in [-1,1], aus [N,17] float32 = intensity/5)
        -> (output [N,3,S,S] float32 in [-1,1], attention [N,1,S,S] float32)

`run` is one call into the compiled artifact for the whole batch; the runtime
(`exprengine.engine.Engine`) splits only by the manifest's max batch. `run_frames` is the
pixel-space hot path the runtime uses for edits and morphs:

    run_frames(frames uint8 [1|N,S,S,3], intensities float32 [N,17] on the 0..5 scale)
        -> (uint8 [N,S,S,3], attention float32 [N,S,S] or None)

A single frame is broadcast to every AU row (a morph). The default implementation is the
portable one (NumPy pre-processing, `run`, NumPy uint8 pass); CUDA backends override it
with `exprengine.engines.cuda_pipeline.CudaPipeline` (fused kernels, pinned memory, CUDA graphs).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from exprengine.engines.manifest import Manifest
from exprengine.models import AttentionGenerator


class Backend(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    device_bound: ClassVar[bool] = False     # artifacts compiled for the build's device only

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when this backend can build and run here, else one sentence saying why not."""
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        """Versions of what this backend's artifacts depend on (recorded in the manifest)."""
        return {}

    @classmethod
    @abstractmethod
    def build(cls, generator: AttentionGenerator, directory: Path, manifest: Manifest) -> list[str]:
        """Write the artifacts into `directory`; return their file names."""

    @classmethod
    def check_compatible(cls, manifest: Manifest, directory: Path) -> None:
        """Raise EngineError when this machine cannot run the engine (before deserialising)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, manifest: Manifest, device: str) -> "Backend":
        ...

    @abstractmethod
    def run(self, image: np.ndarray, aus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ...

    def run_frames(self, frames: np.ndarray, intensities: np.ndarray, want_attention: bool = True
                   ) -> tuple[np.ndarray, np.ndarray | None]:
        from exprengine.aus import AU_SCALE
        from exprengine.kernels.blend import to_uint8_nhwc
        from exprengine.preprocess import to_network_input
        x = to_network_input(frames)
        if x.shape[0] == 1 and intensities.shape[0] > 1:
            x = np.broadcast_to(x, (intensities.shape[0], *x.shape[1:]))
        output, attention = self.run(np.ascontiguousarray(x), np.ascontiguousarray(intensities / AU_SCALE,
                                                                                    dtype=np.float32))
        return to_uint8_nhwc(output), (attention[:, 0] if want_attention else None)
