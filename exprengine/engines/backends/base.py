"""The backend interface every engine implements.

A backend turns a generator into artifacts (`build`) and runs them (`load` + `run`):

    run(image [N,3,S,S] float32 in [-1,1], aus [N,17] float32 = intensity/5,
        landmarks [N,478,2] float32 crop pixels: the rig's engines only, None for generators)
        -> (output [N,3,S,S] float32 in [-1,1], attention [N,1,S,S] float32)

`run` is one call into the compiled artifact for the whole batch; the runtime
(`exprengine.engine.Engine`) splits only by the manifest's max batch. `run_frames` is the
pixel-space hot path the runtime uses for edits and morphs:

    run_frames(frames uint8 [1|N,S,S,3], intensities float32 [N,17] on the 0..5 scale,
               want_attention, landmarks float32 [1|N,478,2] crop pixels or None)
        -> (uint8 [N,S,S,3], attention float32 [N,S,S] or None)

A single frame (and its landmarks) is broadcast to every AU row (a morph). Which backends
build the rig, on which devices: `rig_refusal`. The default implementation is the
portable one (NumPy pre-processing, `run`, NumPy uint8 pass); CUDA backends override it
with `exprengine.engines.cuda_pipeline.CudaPipeline` (fused kernels, pinned memory, CUDA graphs).

Artifacts are loaded by role only (`artifacts`: role -> the file name `build` writes), through
`Manifest.artifact_bytes`: listed, size- and sha256-checked on the bytes that are then
deserialised. Before deserialising, each backend compares the metadata the artifact carries
(model, config, weights sha256, image size, graph outputs, precision) with the manifest
(`check_metadata`) and refuses a contradiction; `check_artifacts` does the same without
loading (for `exprengine info`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import json

import numpy as np

from exprengine.aus import AU_NAMES
from exprengine.engines.manifest import Manifest
from exprengine.errors import EngineError
from exprengine.models import AttentionGenerator

METADATA_LABELS = {"exprengine.model": "model", "exprengine.config": "model config",
                   "exprengine.weights_sha256": "weights sha256", "exprengine.image_size": "image size",
                   "exprengine.outputs": "graph outputs", "exprengine.precision": "precision",
                   "exprengine.au_order": "AU order", "exprengine.inputs": "graph inputs"}


def expected_metadata(manifest: Manifest) -> dict[str, str]:
    """What an artifact's own `exprengine.*` metadata must say for `manifest` (strings)."""
    return {"exprengine.model": manifest.model, "exprengine.config": manifest.model_config,
            "exprengine.weights_sha256": manifest.weights_sha256, "exprengine.image_size": str(manifest.image_size),
            "exprengine.outputs": manifest.graph_outputs, "exprengine.precision": manifest.precision,
            "exprengine.au_order": ",".join(AU_NAMES), "exprengine.inputs": ",".join(manifest.inputs)}


def metadata_keys(manifest: Manifest, keys: tuple[str, ...]) -> tuple[str, ...]:
    """`keys`, plus the graph's inputs for the rig's engines (whose artifacts always carry them;
    generators' artifacts built before the key existed do not)."""
    return keys + ("exprengine.inputs",) if manifest.needs_landmarks else keys



def compare_metadata(manifest: Manifest, directory: Path, name: str, found: dict[str, str],
                     keys: tuple[str, ...]) -> None:
    """EngineError (one sentence) when artifact `name`'s metadata `found` lacks or contradicts
    one of `keys` of `expected_metadata(manifest)`."""
    expected = expected_metadata(manifest)
    for key in keys:
        value = found.get(key)
        if value is None:
            raise EngineError(f"engine artifact {Path(directory) / name} carries no {METADATA_LABELS[key]} "
                              "in its metadata; rebuild the engine with `exprengine build`")
        want = expected[key]
        if key == "exprengine.config":
            try:
                same = json.loads(value) == want
            except (ValueError, RecursionError):
                same = False
            if not same:
                raise EngineError(f"engine artifact {Path(directory) / name} holds another model config than "
                                  "its manifest says; refusing the engine")
        elif value != want:
            shown = value if len(value) <= 70 else value[:64] + "..."
            raise EngineError(f"engine artifact {Path(directory) / name} says {METADATA_LABELS[key]} {shown!r}, "
                              f"but its manifest says {want!r}; refusing the engine")


class Backend(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    device_bound: ClassVar[bool] = False     # artifacts compiled for the build's device only
    artifacts: ClassVar[dict[str, str]] = {}  # role -> the file name `build` writes for it

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when this backend can build and run here, else one sentence saying why not."""
        return None

    @classmethod
    def rig_refusal(cls, device: str, precision: str) -> str | None:
        """None when this backend builds the rig (`FaceRig`) for `device` and `precision`, else
        one sentence saying why not (the default: it does not build the rig at all)."""
        return (f"the {cls.name} backend does not build the rig; build it with --backend onnxruntime "
                "(or torch, aoti)")

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
    def artifact(cls, directory: Path, manifest: Manifest, role: str) -> tuple[str, bytes]:
        """(name, bytes) of the listed artifact playing `role`, verified on the bytes returned."""
        return manifest.artifact_bytes(directory, role, cls.artifacts[role])

    @classmethod
    def check_metadata(cls, manifest: Manifest, directory: Path, role: str, name: str, data: bytes) -> None:
        """Raise EngineError when the artifact's own metadata contradicts the manifest."""

    @classmethod
    def check_artifacts(cls, manifest: Manifest, directory: Path) -> None:
        """Every role's artifact: listed, verified, and its metadata agreeing with the manifest
        (what `load` checks, without deserialising anything)."""
        for role in cls.artifacts:
            name, data = cls.artifact(directory, manifest, role)
            cls.check_metadata(manifest, directory, role, name, data)

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, manifest: Manifest, device: str) -> "Backend":
        """Deserialise the verified artifacts (never a file the manifest does not list)."""

    @abstractmethod
    def run(self, image: np.ndarray, aus: np.ndarray, landmarks: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        ...

    def run_frames(self, frames: np.ndarray, intensities: np.ndarray, want_attention: bool = True,
                   landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        from exprengine.aus import AU_SCALE
        from exprengine.kernels.blend import to_uint8_nhwc
        from exprengine.preprocess import to_network_input
        n = intensities.shape[0]
        x = to_network_input(frames)
        if x.shape[0] == 1 and n > 1:
            x = np.broadcast_to(x, (n, *x.shape[1:]))
        extra = ()
        if landmarks is not None:
            if landmarks.shape[0] == 1 and n > 1:
                landmarks = np.broadcast_to(landmarks, (n, *landmarks.shape[1:]))
            extra = (np.ascontiguousarray(landmarks, dtype=np.float32),)
        output, attention = self.run(np.ascontiguousarray(x), np.ascontiguousarray(intensities / AU_SCALE,
                                                                                    dtype=np.float32), *extra)
        return to_uint8_nhwc(output), (attention[:, 0] if want_attention else None)
