"""The runtime: load an engine, edit N faces in one call, render a morph in one call.

    eng = Engine.load("engines/cx6")
    out = eng.edit(faces, AUs.parse("happiness@1.5"))          # uint8 [N,S,S,3]
    frames = eng.morph(face, "natural", "surprise", frames=24)  # uint8 [F,S,S,3]

AU arguments are on the OpenFace scale (0..5): an `AUs`, a spec string ("happiness@1.5",
"AU12=1.8,AU25=0.6"), a [17] array (broadcast to every face) or an [N,17] array (one row
per face; a single face is broadcast to N rows, so one face renders N expressions at once).

The rig's engines (`Engine.needs_landmarks`) also take each face's MediaPipe mesh,
`landmarks`: float32 [N,478,2] (or [478,2] for one face; a z column is dropped) in the
pixels of the face images as given (x right, y down, pixel i spanning [i, i+1)); they are
carried to the engine's crop size with the images. Without them the engine finds them
itself on each crop with MediaPipe's Face Landmarker (UserError when a crop has no face it
can mesh). A generator's engine ignores landmarks.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from exprengine.aus import NUM_AUS, AUPolicy, AUs, as_intensity_array
from exprengine.engines.backends import Backend, check_device, get_backend, resolve_device
from exprengine.engines.manifest import Manifest
from exprengine.errors import EngineError, UserError
from exprengine.morph import au_trajectory
from exprengine.preprocess import stack_faces

NUM_POINTS = 478            # MediaPipe's face mesh (the rig's landmarks)


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
    """What `Engine.edit_detailed` returns: the edits, their attention maps and the AUs rendered."""
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
        self._mesher = None         # MediaPipe, made on first need (the rig without given landmarks)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str = "auto", policy: AUPolicy | None = None) -> "Engine":
        """Verify (manifest schema and bounds, artifact hashes, compatibility), then deserialise
        an engine from the verified bytes of the artifacts its manifest lists; EngineError if bad.

        `device`: "cpu", "cuda" or "auto" (where the engine was built when that device is here,
        `resolve_device`; an ONNX Runtime engine takes CUDA when its CUDA provider is installed);
        UserError for another value. `policy`: what to do with AU intensities (`AUPolicy`)."""
        check_device(device)
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
        """An eager-PyTorch engine around an in-memory generator or rig (`FaceRig`; CPU only), no files.

        `device`: "cpu", "cuda" (fp32, in the CUDA pipeline) or "auto" (`resolve_device`);
        `max_batch`: the largest batch one backend call takes. UserError for an unknown device,
        EngineError for the rig or CUDA without a GPU on "cuda"."""
        from exprengine.models.weights import model_sha256
        from exprengine.engines.backends.torch_backend import TorchBackend
        from exprengine.export.graph import graph_inputs
        device = resolve_device(device)
        cfg = generator.config
        manifest = Manifest(
            model=cfg.name, model_config=cfg.to_dict(), weights_sha256=model_sha256(generator),
            inputs=list(graph_inputs(generator)),
            weights_source="in-memory", backend="torch", precision="fp32", device=device,
            graph_outputs="blended", min_batch=1, max_batch=max_batch, opt_batch=min(16, max_batch),
            image_size=cfg.image_size)
        return cls(TorchBackend(generator, device), manifest, None, policy)

    @property
    def image_size(self) -> int:
        """S: the side of the square crops (pixels) the engine takes and returns."""
        return self.manifest.image_size

    @property
    def max_batch(self) -> int:
        """The largest batch one backend call takes (`run_network`/`run_frames` split bigger ones)."""
        return self.manifest.max_batch

    @property
    def needs_landmarks(self) -> bool:
        """True for the rig's engines: each face's MediaPipe mesh goes in with it (`landmarks`)."""
        return self.manifest.needs_landmarks

    def __repr__(self) -> str:
        m = self.manifest
        return (f"Engine({m.model}, backend={m.backend}, {m.precision}, batch<={m.max_batch}, "
                f"weights={m.weights_source})")

    # --- the hot path -------------------------------------------------------------------
    def _in_batches(self, n: int, progress: bool, call: Callable[[slice], tuple[np.ndarray, np.ndarray | None]]
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        """`call(rows)` once per `max_batch` slice of n rows (one backend call each, counted in
        `backend_calls`; a tqdm bar when `progress` and more than one), the results concatenated
        along the batch axis; the second is None when the calls return None."""
        firsts, seconds = [], []
        starts = range(0, n, self.max_batch)
        for start in tqdm(starts, desc="rendering", unit="batch", disable=not progress or len(starts) < 2):
            self.backend_calls += 1
            first, second = call(slice(start, start + self.max_batch))
            firsts.append(first)
            seconds.append(second)
        if len(firsts) == 1:
            return firsts[0], seconds[0]
        return np.concatenate(firsts), (None if seconds[0] is None else np.concatenate(seconds))

    def run_network(self, image: np.ndarray, aus: np.ndarray, progress: bool = False,
                    landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Network space: image float32 [N,3,S,S] in [-1,1], aus float32 [N,17] = intensity / 5
        (and for the rig's engines landmarks float32 [N,478,2] in crop pixels) -> (output
        float32 [N,3,S,S] in [-1,1], attention float32 [N,1,S,S] in [0,1]).

        One backend call per `max_batch` slice (a single call whenever N <= max_batch).
        AssertionError for inputs of other shapes (or a rig engine without landmarks).
        """
        s = self.image_size
        assert image.ndim == 4 and image.shape[1:] == (3, s, s), f"image must be [N,3,{s},{s}], got {image.shape}"
        assert aus.shape == (image.shape[0], NUM_AUS), f"aus must be [N,{NUM_AUS}], got {aus.shape}"
        if self.needs_landmarks:
            assert landmarks is not None and landmarks.shape == (image.shape[0], NUM_POINTS, 2), \
                f"this engine needs landmarks [N,{NUM_POINTS},2], got {None if landmarks is None else landmarks.shape}"
            landmarks = np.ascontiguousarray(landmarks, np.float32)
        image = np.ascontiguousarray(image, np.float32)
        aus = np.ascontiguousarray(aus, np.float32)

        def call(rows: slice):
            extra = (landmarks[rows],) if self.needs_landmarks else ()
            return self.backend.run_network(image[rows], aus[rows], *extra)
        return self._in_batches(image.shape[0], progress, call)

    def _intensities(self, aus, n: int) -> np.ndarray:
        v = self.policy.check(as_intensity_array(aus))
        if v.ndim == 1:
            return np.broadcast_to(v, (n, NUM_AUS))
        return v

    def run_frames(self, frames: np.ndarray, intensities: np.ndarray, want_attention: bool = True,
                   progress: bool = False, landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Pixel-space call: uint8 [1|N,S,S,3] crops, float32 [N,17] intensities (0..5) -> uint8 [N,S,S,3].

        One frame is broadcast to every row of `intensities` (a morph) without copies. One
        backend call per `max_batch` slice; on CUDA backends each call is the fused pipeline
        (CUDA kernels, pinned memory, a CUDA graph replay). The rig's engines take landmarks
        float32 [1|N,478,2] in the crops' pixels (one row per frame); None: found on the crops
        with MediaPipe (`crop_landmarks`). Generators' engines ignore them.
        """
        s = self.image_size
        assert frames.ndim == 4 and frames.shape[1:] == (s, s, 3) and frames.dtype == np.uint8, \
            f"frames must be uint8 [N,{s},{s},3], got {frames.dtype} {frames.shape}"
        n = intensities.shape[0]
        assert intensities.shape == (n, NUM_AUS) and frames.shape[0] in (1, n), \
            f"{frames.shape[0]} frames do not fit {intensities.shape} AU rows"
        intensities = np.ascontiguousarray(intensities, np.float32)
        if self.needs_landmarks:
            if landmarks is None:
                landmarks = self.crop_landmarks(frames)
            landmarks = np.ascontiguousarray(landmarks, np.float32)
            assert landmarks.shape == (frames.shape[0], NUM_POINTS, 2), \
                f"landmarks must be [{frames.shape[0]},{NUM_POINTS},2] (one mesh per frame), got {landmarks.shape}"

        def call(rows: slice):
            chunk = frames if frames.shape[0] == 1 else frames[rows]
            if self.needs_landmarks:
                marks = landmarks if landmarks.shape[0] == 1 else landmarks[rows]
                return self.backend.run_frames(chunk, intensities[rows], want_attention, marks)
            return self.backend.run_frames(chunk, intensities[rows], want_attention)
        return self._in_batches(n, progress, call)

    # --- the rig's landmarks -------------------------------------------------------------
    def crop_landmarks(self, faces: np.ndarray) -> np.ndarray:
        """float32 [N,478,2]: MediaPipe's face mesh of each crop (uint8 [N,S,S,3]) in its pixels,
        the largest face of each; UserError when a crop has no face the mesh finds."""
        if self._mesher is None:
            from exprengine.faces.landmarks import MediaPipeDetector
            self._mesher = MediaPipeDetector(min_size=1)
        marks = []
        for i, face in enumerate(faces):
            found = self._mesher.landmarks(np.ascontiguousarray(face))
            if len(found) == 0:
                which = f"face crop {i}" if len(faces) > 1 else "the face crop"
                raise UserError(f"MediaPipe finds no face mesh in {which}, and the {self.manifest.model} engine "
                                "needs one; give a crop where the whole face shows")
            marks.append(found[0, :, :2])
        return np.stack(marks).astype(np.float32)

    def _given_landmarks(self, landmarks, images, n: int) -> np.ndarray | None:
        """The caller's landmarks ([478,2|3] or [N,478,2|3], in the pixels of `images` as given)
        carried to the engine's crop size as `stack_faces` resizes each image (its centred square,
        scaled); None when the engine takes none or none were given. UserError if malformed."""
        if landmarks is None or not self.needs_landmarks:
            return None
        marks = np.asarray(landmarks, dtype=np.float64)
        if marks.ndim == 2:
            marks = marks[None]
        if marks.ndim != 3 or marks.shape[1] != NUM_POINTS or marks.shape[2] not in (2, 3) \
                or marks.shape[0] != n:
            raise UserError(f"landmarks must be [{NUM_POINTS},2] or [N,{NUM_POINTS},2] with one mesh per face "
                            f"({n}), not {list(marks.shape)}")
        if not np.isfinite(marks).all():
            raise UserError("landmarks must be finite numbers")
        if isinstance(images, np.ndarray) and images.ndim in (2, 3):
            shapes = [images.shape[:2]]
        else:
            shapes = [np.shape(f)[:2] for f in images]
        out = marks[..., :2].copy()
        for i, (h, w) in enumerate(shapes):
            side = min(h, w)
            out[i] = (out[i] - ((w - side) // 2, (h - side) // 2)) * (self.image_size / side)
        return out.astype(np.float32)

    def edit_detailed(self, images: np.ndarray | Sequence[np.ndarray], aus, attention: bool = True,
                      landmarks: np.ndarray | None = None) -> EditResult:
        """`edit`, also returning the attention map (1 keeps the input pixel) and the AUs rendered."""
        faces = stack_faces(images, self.image_size)
        intensities = self._intensities(aus, faces.shape[0])
        if faces.shape[0] != 1 and intensities.shape[0] != faces.shape[0]:
            raise UserError(f"{faces.shape[0]} faces but {intensities.shape[0]} AU vectors; "
                            "give one vector for all faces or one per face")
        marks = self._given_landmarks(landmarks, images, faces.shape[0])
        out, att = self.run_frames(faces, intensities, want_attention=attention, landmarks=marks)
        return EditResult(out, att, np.array(intensities))

    def edit(self, images: np.ndarray | Sequence[np.ndarray], aus, landmarks: np.ndarray | None = None) -> np.ndarray:
        """Edit N face crops (uint8, NHWC or a list, any size) in one engine call -> uint8 [N,S,S,3].
        The rig's engines take each face's mesh (`landmarks`, see the module) or find it."""
        return self.edit_detailed(images, aus, attention=False, landmarks=landmarks).images

    def morph(self, image: np.ndarray, src, dst, frames: int = 24, schedule: str = "linear",
              include_source: bool = False, progress: bool = False,
              landmarks: np.ndarray | None = None) -> np.ndarray:
        """Render the morph src -> dst of one face: all frames in one engine call -> uint8 [F,S,S,3].
        The rig's engines take the face's mesh (`landmarks` [478,2]) or find it."""
        faces = stack_faces(image, self.image_size)
        if faces.shape[0] != 1:
            raise UserError(f"morph takes one face, got {faces.shape[0]}")
        marks = self._given_landmarks(landmarks, image, 1)
        src_v = self.policy.check(as_intensity_array(src))
        dst_v = self.policy.check(as_intensity_array(dst))
        if src_v.shape != (NUM_AUS,) or dst_v.shape != (NUM_AUS,):
            raise UserError("morph source and target must each be one AU vector of 17 values")
        trajectory = au_trajectory(src_v, dst_v, frames, schedule, include_source)
        with warnings.catch_warnings():     # endpoints were checked; warn about mid-way conflicts once
            warnings.simplefilter("once")
            self.policy.check(trajectory)
        output, _ = self.run_frames(faces, trajectory, want_attention=False, progress=progress, landmarks=marks)
        return output


def load(path: str | Path, device: str = "auto") -> Engine:
    """`Engine.load(path, device)`: the verified engine at `path` on `device` ("auto", "cpu", "cuda")."""
    return Engine.load(path, device)


__all__ = ["Engine", "EditResult", "AUs", "load", "inspect_engine"]
