"""The runtime: load an engine, edit N faces in one call, render a morph in one call.

    eng = Engine.load("engines/cx6")
    out = eng.edit(faces, AUs.parse("happiness@1.5"))          # uint8 [N,S,S,3]
    frames = eng.morph(face, "natural", "surprise", frames=24)  # uint8 [F,S,S,3]

AU arguments are on the OpenFace scale (0..5): an `AUs`, a spec string ("happiness@1.5",
"AU12=1.8,AU25=0.6"), a [17] array (broadcast to every face) or an [N,17] array (one row
per face; a single face is broadcast to N rows, so one face renders N expressions at once).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from exprengine.aus import NUM_AUS, AUPolicy, AUs, as_intensity_array
from exprengine.engines.backends import Backend, get_backend
from exprengine.engines.manifest import Manifest
from exprengine.errors import EngineError, UserError
from exprengine.morph import au_trajectory
from exprengine.preprocess import stack_faces



def backend_for(manifest: Manifest, path: Path) -> type[Backend]:
    """The backend class of a read manifest, refusing a precision or device it does not build."""
    backend_cls = get_backend(manifest.backend)
    if manifest.precision not in backend_cls.precisions or manifest.device not in backend_cls.devices:
        raise EngineError(f"engine {path} says backend {manifest.backend} with {manifest.precision} on "
                          f"{manifest.device}, which that backend does not build")
    return backend_cls


def inspect_engine(path: str | Path) -> Manifest:
    """Verify an engine without loading it: what `Engine.load` checks before deserialising
    (manifest, artifact sizes and hashes, and each artifact's own metadata against the
    manifest), so that what the manifest says can be reported; EngineError if anything disagrees."""
    path = Path(path)
    manifest = Manifest.read(path)
    backend_for(manifest, path).check_artifacts(manifest, path)
    return manifest


@dataclass
class EditResult:
    images: np.ndarray      # uint8 [N,S,S,3]
    attention: np.ndarray   # float32 [N,S,S] in [0,1]; 1 keeps the input pixel
    aus: np.ndarray         # float32 [N,17] intensities actually rendered (after the policy)


class Engine:
    """A compiled generator behind a uniform uint8-in, uint8-out API."""

    def __init__(self, backend: Backend, manifest: Manifest, path: Path | None = None,
                 policy: AUPolicy | None = None):
        self.backend = backend
        self.manifest = manifest
        self.path = path
        self.policy = policy or AUPolicy()
        self.backend_calls = 0      # one per call into the compiled artifact

    # --- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str = "auto", policy: AUPolicy | None = None) -> "Engine":
        """Verify (manifest schema and bounds, artifact hashes, compatibility), then deserialise
        an engine from the verified bytes of the artifacts its manifest lists; EngineError if bad."""
        if device not in ("auto", "cpu", "cuda"):
            raise UserError(f"device must be auto, cpu or cuda, not {device!r}")
        path = Path(path)
        manifest = Manifest.read(path)
        backend_cls = backend_for(manifest, path)
        reason = backend_cls.unavailable_reason()
        if reason:
            raise EngineError(f"engine {path} needs backend {manifest.backend}, but {reason}")
        if backend_cls.device_bound and device not in ("auto", manifest.device):
            raise EngineError(f"engine {path} was compiled for {manifest.device}, not {device}; "
                              f"rebuild it with `exprengine build --device {device}`")
        backend_cls.check_compatible(manifest, path)
        return cls(backend_cls.load(path, manifest, device), manifest, path, policy)

    @classmethod
    def from_generator(cls, generator, policy: AUPolicy | None = None, device: str = "cpu",
                       max_batch: int = 64) -> "Engine":
        """An eager-PyTorch engine around an in-memory generator (no files)."""
        from exprengine.checkpoints import weights_sha256
        from exprengine.engines.backends.torch_backend import TorchBackend
        cfg = generator.config
        manifest = Manifest(
            model=cfg.name, model_config=cfg.to_dict(), weights_sha256=weights_sha256(generator),
            weights_source="in-memory", backend="torch", precision="fp32", device=device,
            graph_outputs="blended", min_batch=1, max_batch=max_batch, opt_batch=min(16, max_batch),
            image_size=cfg.image_size)
        return cls(TorchBackend(generator, device), manifest, None, policy)

    @property
    def image_size(self) -> int:
        return self.manifest.image_size

    @property
    def max_batch(self) -> int:
        return self.manifest.max_batch

    def __repr__(self) -> str:
        m = self.manifest
        return (f"Engine({m.model}, backend={m.backend}, {m.precision}, batch<={m.max_batch}, "
                f"weights={m.weights_source})")

    # --- the hot path -------------------------------------------------------------------
    def run(self, image: np.ndarray, aus: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Network-space call: float32 [N,3,S,S] in [-1,1], [N,17] intensity/5 -> output, attention.

        One backend call per `max_batch` slice (a single call whenever N <= max_batch).
        """
        s = self.image_size
        assert image.ndim == 4 and image.shape[1:] == (3, s, s), f"image must be [N,3,{s},{s}], got {image.shape}"
        assert aus.shape == (image.shape[0], NUM_AUS), f"aus must be [N,{NUM_AUS}], got {aus.shape}"
        image = np.ascontiguousarray(image, np.float32)
        aus = np.ascontiguousarray(aus, np.float32)
        outputs, attentions = [], []
        starts = range(0, image.shape[0], self.max_batch)
        for start in tqdm(starts, desc="rendering", unit="batch", disable=not progress or len(starts) < 2):
            stop = start + self.max_batch
            self.backend_calls += 1
            out, att = self.backend.run(image[start:stop], aus[start:stop])
            outputs.append(out)
            attentions.append(att)
        if len(outputs) == 1:
            return outputs[0], attentions[0]
        return np.concatenate(outputs), np.concatenate(attentions)

    def _intensities(self, aus, n: int) -> np.ndarray:
        v = self.policy.check(as_intensity_array(aus))
        if v.ndim == 1:
            return np.broadcast_to(v, (n, NUM_AUS))
        return v

    def run_frames(self, frames: np.ndarray, intensities: np.ndarray, want_attention: bool = True,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Pixel-space call: uint8 [1|N,S,S,3] crops, float32 [N,17] intensities (0..5) -> uint8 [N,S,S,3].

        One frame is broadcast to every row of `intensities` (a morph) without copies. One
        backend call per `max_batch` slice; on CUDA backends each call is the fused pipeline
        (csrc kernels, pinned memory, a CUDA graph replay).
        """
        s = self.image_size
        assert frames.ndim == 4 and frames.shape[1:] == (s, s, 3) and frames.dtype == np.uint8, \
            f"frames must be uint8 [N,{s},{s},3], got {frames.dtype} {frames.shape}"
        n = intensities.shape[0]
        assert intensities.shape == (n, NUM_AUS) and frames.shape[0] in (1, n), \
            f"{frames.shape[0]} frames do not fit {intensities.shape} AU rows"
        intensities = np.ascontiguousarray(intensities, np.float32)
        images, attentions = [], []
        starts = range(0, n, self.max_batch)
        for start in tqdm(starts, desc="rendering", unit="batch", disable=not progress or len(starts) < 2):
            stop = start + self.max_batch
            self.backend_calls += 1
            chunk = frames if frames.shape[0] == 1 else frames[start:stop]
            out, att = self.backend.run_frames(chunk, intensities[start:stop], want_attention)
            images.append(out)
            attentions.append(att)
        if len(images) == 1:
            return images[0], attentions[0]
        return np.concatenate(images), (np.concatenate(attentions) if want_attention else None)

    def edit_detailed(self, images: np.ndarray | Sequence[np.ndarray], aus, attention: bool = True) -> EditResult:
        """`edit`, also returning the attention map (1 keeps the input pixel) and the AUs rendered."""
        faces = stack_faces(images, self.image_size)
        intensities = self._intensities(aus, faces.shape[0])
        if faces.shape[0] != 1 and intensities.shape[0] != faces.shape[0]:
            raise UserError(f"{faces.shape[0]} faces but {intensities.shape[0]} AU vectors; "
                            "give one vector for all faces or one per face")
        out, att = self.run_frames(faces, intensities, want_attention=attention)
        return EditResult(out, att, np.array(intensities))

    def edit(self, images: np.ndarray | Sequence[np.ndarray], aus) -> np.ndarray:
        """Edit N face crops (uint8, NHWC or a list, any size) in one engine call -> uint8 [N,S,S,3]."""
        return self.edit_detailed(images, aus, attention=False).images

    def morph(self, image: np.ndarray, src, dst, frames: int = 24, schedule: str = "linear",
              include_source: bool = False, progress: bool = False) -> np.ndarray:
        """Render the morph src -> dst of one face: all frames in one engine call -> uint8 [F,S,S,3]."""
        faces = stack_faces(image, self.image_size)
        if faces.shape[0] != 1:
            raise UserError(f"morph takes one face, got {faces.shape[0]}")
        src_v = self.policy.check(as_intensity_array(src))
        dst_v = self.policy.check(as_intensity_array(dst))
        if src_v.shape != (NUM_AUS,) or dst_v.shape != (NUM_AUS,):
            raise UserError("morph source and target must each be one AU vector of 17 values")
        trajectory = au_trajectory(src_v, dst_v, frames, schedule, include_source)
        with warnings.catch_warnings():     # endpoints were checked; warn about mid-way conflicts once
            warnings.simplefilter("once")
            self.policy.check(trajectory)
        output, _ = self.run_frames(faces, trajectory, want_attention=False, progress=progress)
        return output


def load(path: str | Path, device: str = "auto") -> Engine:
    return Engine.load(path, device)


__all__ = ["Engine", "EditResult", "AUs", "load", "inspect_engine"]
