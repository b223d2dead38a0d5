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

Age engines (`Engine.is_age`: built from a LATS model, "lats" or "lats-small") age and
rejuvenate faces instead; ages are in years, 0 to 70 (`exprengine.ages.check_age`), continuous:

    old = eng.age(faces, 60)                     # uint8 [N,S,S,3]; one age for all, or one per face
    life = eng.traverse(face)                    # uint8 [101,S,S,3]: the reference's traversal
    some = eng.traverse(face, [5, 20, 42, 65])   # uint8 [4,S,S,3]

A traversal encodes the face's identity once (one encoder call), takes each frame's style from
the engine's stored class styles (interpolated between adjacent classes at the age's class
position, `exprengine.ages.class_position`), and decodes every frame in one decoder call (split
only by the engine's max batch). `age_features` and `decode_ages` are the two halves. An
expression engine refuses `age`/`traverse` and an age engine refuses `edit`/`morph`/`run_*`
(EngineError, one sentence).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from exprengine.ages import check_age, class_position
from exprengine.aus import NUM_AUS, AUPolicy, AUs, as_intensity_array
from exprengine.engines.backends import Backend, check_device, get_backend, resolve_device
from exprengine.engines.manifest import Manifest
from exprengine.errors import EngineError, UserError
from exprengine.morph import au_trajectory
from exprengine.preprocess import stack_faces

NUM_POINTS = 478            # MediaPipe's face mesh (the rig's landmarks)


def backend_for(manifest: Manifest, path: Path) -> type[Backend]:
    """The backend class of a read manifest, refusing a precision or device it does not build (for a
    LATS engine: a backend, device or precision `Backend.lats_refusal` refuses)."""
    backend_cls = get_backend(manifest.backend)
    if manifest.precision not in backend_cls.precisions or manifest.device not in backend_cls.devices \
            or (manifest.is_lats and backend_cls.lats_refusal(manifest.device, manifest.precision)):
        raise EngineError(f"engine {path} says backend {manifest.backend} with {manifest.precision} on "
                          f"{manifest.device}{' for a LATS model' if manifest.is_lats else ''}, which that backend "
                          "does not build")
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
    """A compiled generator behind a uniform uint8-in, uint8-out API (expression edits, the rig,
    or ages: `kind`)."""

    def __init__(self, backend: Backend, manifest: Manifest, path: Path | None = None,
                 policy: AUPolicy | None = None):
        self.backend = backend
        self.manifest = manifest
        self.path = path
        self.policy = policy or AUPolicy()
        self.backend_calls = 0      # one per call into the compiled artifact
        self.encoder_calls = 0      # age engines: calls into the encoder graph (also in backend_calls)
        self.decoder_calls = 0      # age engines: calls into the decoder graph (also in backend_calls)
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
        load = backend_cls.load_lats if manifest.is_lats else backend_cls.load
        return cls(load(path, manifest, device), manifest, path, policy)

    @classmethod
    def from_generator(cls, generator, policy: AUPolicy | None = None, device: str = "cpu",
                       max_batch: int = 64) -> "Engine":
        """An eager-PyTorch engine around an in-memory generator or rig (`FaceRig`; CPU only), no files.

        `device`: "cpu", "cuda" (fp32, in the CUDA pipeline) or "auto" (`resolve_device`);
        `max_batch`: the largest batch one backend call takes. A LATS generator makes an age
        engine (its class styles computed here, once). UserError for an unknown device,
        EngineError for the rig or CUDA without a GPU on "cuda"."""
        from exprengine.models.weights import model_sha256
        from exprengine.engines.backends.torch_backend import TorchBackend
        from exprengine.export.graph import graph_inputs
        from exprengine.models import is_lats
        device = resolve_device(device)
        cfg = generator.config
        if is_lats(generator):
            import torch

            from exprengine.engines.backends.torch_backend import TorchLATS
            from exprengine.engines.manifest import LATS_GRAPHS, LATS_INPUTS
            with torch.inference_mode():
                styles = generator.eval().class_styles().float().cpu().numpy()
            manifest = Manifest(
                model=cfg.name, model_config=cfg.to_dict(), weights_sha256=model_sha256(generator),
                inputs=list(LATS_INPUTS), graphs={k: {io: list(v) for io, v in g.items()} for k, g in LATS_GRAPHS.items()},
                weights_source="in-memory", backend="torch", precision="fp32", device=device, graph_outputs="image",
                min_batch=1, max_batch=max_batch, opt_batch=min(16, max_batch), image_size=cfg.image_size)
            return cls(TorchLATS(generator, styles, device, "fp32", max_batch), manifest, None, policy)
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

    @property
    def kind(self) -> str:
        """"expression" (a generator: `edit`, `morph`), "rig" (the AU rig: the same calls, with
        landmarks) or "age" (a LATS generator: `age`, `traverse`)."""
        return self.manifest.kind

    @property
    def is_age(self) -> bool:
        """True for age engines (built from a LATS model): `age`, `traverse`, not `edit`."""
        return self.manifest.is_lats

    def _expressions_only(self, call: str) -> None:
        """EngineError when an age engine is asked for an expression call (`call`, e.g. "edit")."""
        if self.is_age:
            raise EngineError(f"Engine.{call} edits expressions, but this is an age engine ({self.manifest.model}); "
                              "use Engine.age or Engine.traverse, or load an expression engine")

    def _ages_only(self, call: str) -> None:
        """EngineError when an expression (or rig) engine is asked for an age call (`call`)."""
        if not self.is_age:
            raise EngineError(f"Engine.{call} needs an age engine (built from a LATS model, 'lats' or 'lats-small'), "
                              f"but this engine runs the {self.manifest.kind} model {self.manifest.model}")

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
        AssertionError for inputs of other shapes (or a rig engine without landmarks);
        EngineError for an age engine.
        """
        self._expressions_only("run_network")
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
        with MediaPipe (`crop_landmarks`). Generators' engines ignore them. EngineError for an
        age engine.
        """
        self._expressions_only("run_frames")
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
        self._expressions_only("edit")
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
        self._expressions_only("morph")
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

    # --- ages (LATS engines) --------------------------------------------------------------------
    @property
    def class_styles(self) -> np.ndarray:
        """float32 [6, D]: the style of each age class (0-2 first), computed at build time by eager
        PyTorch and stored in the engine. EngineError for an expression engine."""
        self._ages_only("class_styles")
        return self.backend.class_styles

    @staticmethod
    def _age_list(ages, n: int | None = None) -> np.ndarray:
        """float64 [K] years from one age (K = n, or 1) or a sequence of ages (each `check_age`d);
        a sequence must have n ages (or 1, broadcast) when n is given. UserError (one sentence)."""
        if isinstance(ages, (str, bytes)) or (not np.isscalar(ages) and not isinstance(ages, (Sequence, np.ndarray))):
            raise UserError(f"`ages` must be one age in years (0 to 70) or a sequence of them, not {type(ages).__name__}")
        values = np.asarray(ages, dtype=object).reshape(-1) if not np.isscalar(ages) else np.array([ages], dtype=object)
        if values.size == 0:
            raise UserError("`ages` is empty; give one age in years (0 to 70) or one per face")
        out = np.empty(values.size)
        for i, a in enumerate(values):
            try:
                out[i] = check_age(a.item() if isinstance(a, np.generic) else a)
            except UserError:
                which = f" (item {i})" if values.size > 1 else ""
                raise UserError(f"`ages` must be years between 0 and 70, got {a!r}{which}") from None
        if n is not None and out.size not in (1, n):
            raise UserError(f"{n} faces but {out.size} ages; give one age for all faces or one per face")
        if n is not None and out.size == 1:
            out = np.repeat(out, n)
        return out

    def styles_at(self, ages) -> np.ndarray:
        """float32 [K, D]: the styles of ages in years (one, or a sequence of K; 0..70): each at its
        class position (`exprengine.ages.class_position`), between the two adjacent class styles
        (`models.lats.interpolate_styles`, the reference's interpolation). UserError for a bad age."""
        self._ages_only("styles_at")
        years = self._age_list(ages)
        return self._styles_at_positions([class_position(float(a)) for a in years])

    def _styles_at_positions(self, positions) -> np.ndarray:
        import torch

        from exprengine.models.lats import interpolate_styles
        styles = interpolate_styles(torch.from_numpy(self.backend.class_styles), list(map(float, positions)))
        return np.ascontiguousarray(styles.numpy(), dtype=np.float32)

    def age_features(self, images: np.ndarray | Sequence[np.ndarray], progress: bool = False) -> np.ndarray:
        """The identity features of N faces (uint8, NHWC or a list, any size: resized as `edit`'s
        crops) -> float32 [N, C, S/4, S/4]: one encoder call per `max_batch` faces."""
        self._ages_only("age_features")
        from exprengine.pixels import to_network_input
        faces = stack_faces(images, self.image_size)
        x = to_network_input(faces)
        chunks = []
        starts = range(0, x.shape[0], self.max_batch)
        for start in tqdm(starts, desc="encoding", unit="batch", disable=not progress or len(starts) < 2):
            self.backend_calls += 1
            self.encoder_calls += 1
            chunks.append(self.backend.run_encoder(np.ascontiguousarray(x[start:start + self.max_batch])))
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def decode_ages(self, features: np.ndarray, ages, progress: bool = False) -> np.ndarray:
        """Faces at ages from identity features (`age_features`): features float32 [1|K, C, S/4, S/4]
        (one row is shared by every age, not copied where the backend allows), ages: one or K
        years (0..70) -> uint8 [K, S, S, 3]. One decoder call per `max_batch` frames.
        UserError for bad ages or features of another shape."""
        self._ages_only("decode_ages")
        features = self._check_features(features)
        years = self._age_list(ages, None if features.shape[0] == 1 else features.shape[0])
        return self._decode(features, self._styles_at_positions([class_position(float(a)) for a in years]), progress)

    def _check_features(self, features) -> np.ndarray:
        cfg = self.manifest.model_config
        f = self.image_size >> (len(cfg["encoder_dims"]) - 1)
        shape = (cfg["encoder_dims"][-1], f, f)
        features = np.asarray(features)
        if features.ndim != 4 or features.shape[1:] != shape or features.shape[0] < 1 \
                or not np.issubdtype(features.dtype, np.floating):
            raise UserError(f"`features` must be float32 [N,{','.join(map(str, shape))}] (from Engine.age_features), "
                            f"got {features.dtype} {list(features.shape)}")
        return np.ascontiguousarray(features, dtype=np.float32)

    def _decode(self, features: np.ndarray, styles: np.ndarray, progress: bool) -> np.ndarray:
        """uint8 [K,S,S,3] of features [1|K] and styles [K,D]: one decoder call per max_batch rows."""
        k = styles.shape[0]
        frames = []
        starts = range(0, k, self.max_batch)
        for start in tqdm(starts, desc="aging", unit="batch", disable=not progress or len(starts) < 2):
            rows = slice(start, start + self.max_batch)
            self.backend_calls += 1
            self.decoder_calls += 1
            frames.append(self.backend.run_decoder_frames(features if features.shape[0] == 1 else features[rows],
                                                          styles[rows]))
        return frames[0] if len(frames) == 1 else np.concatenate(frames)

    def age(self, images: np.ndarray | Sequence[np.ndarray], ages, progress: bool = False) -> np.ndarray:
        """N faces (uint8, NHWC or a list, any size: resized as `edit`'s crops) at `ages` (years,
        0..70: one for all, or one per face; one face with K ages gives K frames) -> uint8 [N,S,S,3].
        The faces are encoded (one encoder call per max_batch) and decoded at their ages' styles
        (one decoder call per max_batch). UserError for bad ages or images; EngineError for an
        expression engine."""
        self._ages_only("age")
        faces = stack_faces(images, self.image_size)
        years = self._age_list(ages, faces.shape[0] if faces.shape[0] > 1 else None)
        features = self.age_features(faces, progress)
        styles = self._styles_at_positions([class_position(float(a)) for a in years])
        return self._decode(features, styles, progress)

    @staticmethod
    def traversal_ages(step: float = 0.05) -> np.ndarray:
        """float64 [K]: the ages in years of `traverse`'s frames without `ages`: the reference's class
        positions 0, step, .., 5 (`models.lats.traversal_positions`; 101 for 0.05) as years
        (`exprengine.ages.age_of_position`: 1 to 59.5). UserError unless 1/step is whole."""
        from exprengine.ages import age_of_position
        from exprengine.models.lats import traversal_positions
        return np.array([age_of_position(float(p)) for p in traversal_positions(step)])

    def traverse(self, image: np.ndarray, ages=None, step: float = 0.05, progress: bool = False) -> np.ndarray:
        """One face (uint8 [H,W,3], any size) across ages -> uint8 [K,S,S,3], frame k at ages[k].

        `ages`: years (0..70), or None for the reference's traversal: class positions 0, step, ..,
        5 (`traversal_ages`; 101 frames for step 0.05), styles between adjacent class styles. The
        identity features are computed once (one encoder call) and every frame is decoded in one
        decoder call (split only by max_batch), the features shared by every frame.
        UserError for more than one face or bad ages; EngineError for an expression engine."""
        self._ages_only("traverse")
        faces = stack_faces(image, self.image_size)
        if faces.shape[0] != 1:
            raise UserError(f"traverse takes one face, got {faces.shape[0]}")
        if ages is None:
            from exprengine.models.lats import traversal_positions
            styles = self._styles_at_positions(traversal_positions(step).tolist())
        else:
            styles = self._styles_at_positions([class_position(float(a)) for a in self._age_list(ages)])
        return self._decode(self.age_features(faces), styles, progress)


def load(path: str | Path, device: str = "auto") -> Engine:
    """`Engine.load(path, device)`: the verified engine at `path` on `device` ("auto", "cpu", "cuda")."""
    return Engine.load(path, device)


__all__ = ["Engine", "EditResult", "AUs", "load", "inspect_engine"]
