"""The backend interface every engine implements.

A backend turns a generator into artifacts (`build`) and runs them (`load` + `run`):

    run(image [N,3,S,S] float32 in [-1,1], aus [N,17] float32 = intensity/5)
        -> (output [N,3,S,S] float32 in [-1,1], attention [N,1,S,S] float32)

`run` is one call into the compiled artifact for the whole batch; the runtime
(`exprengine.engine.Engine`) splits only by the manifest's max batch.
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
