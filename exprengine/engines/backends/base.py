"""The backend interface every engine implements.

A backend turns a generator into artifacts (`build`) and runs them (`load`, then the two
calls below). Each call's name says its space:

    run_network(image [N,3,S,S] float32 in [-1,1], aus [N,17] float32 = intensity/5,
                landmarks [N,478,2] float32 crop pixels: the rig's engines only, None for generators)
        -> (output [N,3,S,S] float32 in [-1,1], attention [N,1,S,S] float32)

    run_frames(frames uint8 [1|N,S,S,3], intensities float32 [N,17] on the 0..5 scale,
               want_attention, landmarks float32 [1|N,478,2] crop pixels or None)
        -> (uint8 [N,S,S,3], attention float32 [N,S,S] or None)

Each is one call into the compiled artifact for the whole batch; the runtime
(`exprengine.engine.Engine`) splits only by the manifest's max batch. `run_frames` is the
pixel-space hot path the runtime uses for edits and morphs; a single frame (and its
landmarks) is broadcast to every AU row (a morph).

Where the network runs: a backend that runs on CUDA hands its network to the base class
(`use_cuda_pipeline`), and both calls go through `exprengine.engines.cuda_pipeline.CudaPipeline`
(fused kernels, pinned memory, CUDA graphs); otherwise the base class runs the portable path
(NumPy pre-processing, the backend's `_run_network`, NumPy uint8 pass). A backend says only
how to run its network.

The class attributes are the backend's defaults and abilities (the registry,
`exprengine.engines.backends`, lists them for the CLI): which precisions and devices it builds
and which by default, whether its artifacts are bound to the device that built them, whether
it builds the rig (on the CPU in fp32: `rig_refusal`), whether it compiles ahead of time.

A LATS age generator's engine (`Manifest.is_lats`) is built by `build_lats` and loaded by
`load_lats` into a `LATSRunner` (two graphs, the 6 class styles of the artifact of role
`CLASS_STYLES_ROLE`):

    run_encoder(image [N,3,S,S] float32 in [-1,1]) -> features [N,C,S/4,S/4] float32
    run_decoder(features [1|N,C,S/4,S/4], style [N,D]) -> output [N,3,S,S] float32 in [-1,1]
    run_decoder_frames(features, style) -> uint8 [N,S,S,3]   (the fused epilogue on CUDA)

Which backends build it, on which devices and in which precisions, says `lats_refusal`; its
artifacts are `lats_artifacts` (role -> file).

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
from typing import TYPE_CHECKING, ClassVar

import json

import numpy as np

from exprengine.aus import AU_NAMES
from exprengine.engines.manifest import CLASS_STYLES_ROLE, LATS_GRAPHS, Manifest
from exprengine.errors import EngineError, UserError
from exprengine.models import AttentionGenerator

if TYPE_CHECKING:
    from exprengine.engines.cuda_pipeline import CudaPipeline

METADATA_LABELS = {"exprengine.model": "model", "exprengine.config": "model config",
                   "exprengine.weights_sha256": "weights sha256", "exprengine.image_size": "image size",
                   "exprengine.outputs": "graph outputs", "exprengine.precision": "precision",
                   "exprengine.au_order": "AU order", "exprengine.inputs": "graph inputs",
                   "exprengine.graph": "graph"}


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



def lats_expected_metadata(manifest: Manifest, graph: str) -> dict[str, str]:
    """What the artifact of a LATS engine's graph `graph` ("encoder" or "decoder") must say in its
    metadata: `expected_metadata`, with that graph's inputs and its name ("exprengine.graph")."""
    expected = expected_metadata(manifest)
    expected["exprengine.inputs"] = ",".join(LATS_GRAPHS[graph]["inputs"])
    expected["exprengine.graph"] = graph
    return expected


#: The keys a LATS graph's artifact must carry and agree on (ONNX and AOTInductor alike).
LATS_METADATA_KEYS = ("exprengine.model", "exprengine.weights_sha256", "exprengine.config", "exprengine.image_size",
                      "exprengine.outputs", "exprengine.precision", "exprengine.inputs", "exprengine.graph")


def compare_metadata(manifest: Manifest, directory: Path, name: str, found: dict[str, str],
                     keys: tuple[str, ...], expected: dict[str, str] | None = None) -> None:
    """EngineError (one sentence) when artifact `name`'s metadata `found` lacks or contradicts
    one of `keys` of `expected` (default `expected_metadata(manifest)`)."""
    expected = expected_metadata(manifest) if expected is None else expected
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


#: The one device and precision the rig (`FaceRig`) is built for, by every backend that builds it.
RIG_DEVICE, RIG_PRECISION = "cpu", "fp32"

# --- LATS engines: the class styles and the runner ----------------------------------------------
CLASS_STYLES = "class_styles.safetensors"
CLASS_STYLES_KEYS = ("exprengine.model", "exprengine.config", "exprengine.weights_sha256", "exprengine.image_size")


def write_class_styles(generator, directory: Path) -> str:
    """Write the 6 class styles of a LATS generator, computed once by eager FP32 PyTorch
    (`LATSGenerator.class_styles()`, float32 [6, style_dim]), to `directory/CLASS_STYLES` (a
    safetensors file, tensor "class_styles", with the model, config, weights sha256 and image
    size in its metadata); returns the file name. Inference never runs the mapping network."""
    import copy

    import torch
    from safetensors.torch import save

    from exprengine.export.onnx_graph import lats_graph_metadata
    from exprengine.files import write_bytes
    reference = copy.deepcopy(generator).float().cpu().eval()
    with torch.inference_mode():
        styles = reference.class_styles().float().contiguous()
    metadata = {k: v for k, v in lats_graph_metadata(reference, "encoder").items() if k in CLASS_STYLES_KEYS}
    write_bytes(directory / CLASS_STYLES, save({"class_styles": styles}, metadata=metadata))
    return CLASS_STYLES


def read_class_styles(manifest: Manifest, directory: Path, name: str, data: bytes, keep: bool = True
                      ) -> np.ndarray | None:
    """The class styles float32 [num_classes, style_dim] from the verified bytes `data` of artifact
    `name`, after its metadata was compared with the manifest (keep=False: only that). EngineError
    (one sentence) when it is not such a file, contradicts the manifest, or holds another shape
    or non-finite values."""
    from exprengine.models.weights import safetensors_metadata
    label = Path(directory) / name
    try:
        found = safetensors_metadata(data)
    except (ValueError, RecursionError) as e:
        raise EngineError(f"engine artifact {label} is not a readable safetensors file ({type(e).__name__})") from None
    compare_metadata(manifest, directory, name, found, CLASS_STYLES_KEYS)
    if not keep:
        return None
    from safetensors import SafetensorError
    from safetensors.numpy import load
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, OSError) as e:
        raise EngineError(f"engine artifact {label} is not a readable safetensors file ({type(e).__name__})") from None
    cfg = manifest.model_config
    styles = tensors.get("class_styles")
    shape = (cfg["num_classes"], cfg["style_dim"])
    if styles is None or set(tensors) != {"class_styles"} or styles.dtype != np.float32 or styles.shape != shape             or not np.isfinite(styles).all():
        raise EngineError(f"engine artifact {label} does not hold the class styles (finite float32 {list(shape)}); "
                          "rebuild the engine")
    return np.ascontiguousarray(styles)


class LATSRunner(ABC):
    """A loaded LATS engine (see the module): its two graphs and the class styles.

    `class_styles`: float32 [6, D] from the engine's verified artifact. `broadcasts_features`:
    the decoder takes features with a batch of one for N styles without copying them (eager
    PyTorch); otherwise `run_decoder` repeats them. `pipeline`: the CUDA decoder pipeline
    (`exprengine.engines.cuda_pipeline.LATSCudaDecoder`) or None. Subclasses say how to run
    each graph (`run_encoder`, `_run_decoder`).
    """
    broadcasts_features: bool = False
    pipeline = None

    def __init__(self, class_styles: np.ndarray):
        self.class_styles = np.ascontiguousarray(class_styles, dtype=np.float32)

    @abstractmethod
    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        """image float32 [N,3,S,S] in [-1,1] (contiguous) -> features float32 [N,C,S/4,S/4]."""

    @abstractmethod
    def _run_decoder(self, features: np.ndarray, style: np.ndarray) -> np.ndarray:
        """features float32 [N,C,s,s] ([1,...] only when `broadcasts_features`), style float32
        [N,D] (contiguous) -> output float32 [N,3,S,S] in [-1,1]."""

    def _features_for(self, features: np.ndarray, n: int) -> np.ndarray:
        if features.shape[0] == 1 and n > 1 and not self.broadcasts_features:
            features = np.broadcast_to(features, (n, *features.shape[1:]))
        return np.ascontiguousarray(features, dtype=np.float32)

    def run_decoder(self, features: np.ndarray, style: np.ndarray) -> np.ndarray:
        """Network space: features float32 [1|N,C,s,s] (one row shared by every style), style float32
        [N,D] -> output float32 [N,3,S,S] in [-1,1]. One call into the decoder graph; N <= the
        manifest's max batch (`Engine` splits)."""
        style = np.ascontiguousarray(style, dtype=np.float32)
        if self.pipeline is not None:
            return self.pipeline.run_network(features, style)
        return self._run_decoder(self._features_for(features, style.shape[0]), style)

    def run_decoder_frames(self, features: np.ndarray, style: np.ndarray) -> np.ndarray:
        """Pixel space: the decoder's output as uint8 [N,S,S,3] (`pixels.to_uint8_nhwc`: rint((x + 1)
        * 127.5) clamped); on CUDA the fused epilogue kernel (`exprengine_to_u8_*`) does it."""
        style = np.ascontiguousarray(style, dtype=np.float32)
        if self.pipeline is not None:
            return self.pipeline.run_frames(features, style)
        from exprengine.pixels import to_uint8_nhwc
        return to_uint8_nhwc(self.run_decoder(features, style))


#: What a caller may ask an engine (or a model) to run on; "auto" is resolved by `resolve_device`.
DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str) -> str:
    """`device` itself when it is one of DEVICES, else UserError naming the choices."""
    if device not in DEVICES:
        raise UserError(f"`device` must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, not {device!r}")
    return device


def resolve_device(device: str, built_for: str | None = None) -> str:
    """The device ("cpu" or "cuda") to run on for a requested `device` (one of DEVICES; UserError otherwise).

    "auto" is "cuda" when PyTorch sees an NVIDIA GPU and, given `built_for` (the device an
    engine was built for), that engine was built for CUDA; else "cpu". "cpu" and "cuda" are
    returned as asked: whoever runs on CUDA refuses there when no GPU is visible.
    """
    if check_device(device) != "auto":
        return device
    import torch
    return "cuda" if built_for in (None, "cuda") and torch.cuda.is_available() else "cpu"


class Backend(ABC):
    """One way to build and run engines; subclasses are the registry's entries.

    Class attributes (defaults and abilities, read by the registry and the build):
      name: the registry key ("onnxruntime", ...); description: one line for listings.
      precisions: the precisions it builds (of `exprengine.models.precision.PRECISIONS`);
      default_precision: the one a build gets when none is asked for (one of `precisions`).
      devices: the devices it builds for ("cpu", "cuda"); default_device: one of them.
      device_bound: its artifacts run only on the device that built them.
      builds_rig: it builds the rig (on RIG_DEVICE in RIG_PRECISION, `rig_refusal`).
      compiled: it compiles the network ahead of time (False: eager PyTorch, the reference).
      artifacts: role -> the file name `build` writes for it.
      builds_lats, lats_devices, lats_precisions: whether, where and in which precisions it
        builds LATS age engines (`lats_refusal`); lats_artifacts: their role -> file.

    Instance attribute `pipeline`: the CudaPipeline this engine runs in (set by
    `use_cuda_pipeline`), or None for the portable path (`_run_network`).
    """
    name: ClassVar[str]
    description: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    default_precision: ClassVar[str] = "fp32"
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    default_device: ClassVar[str] = "cpu"
    device_bound: ClassVar[bool] = False     # artifacts compiled for the build's device only
    builds_rig: ClassVar[bool] = False
    compiled: ClassVar[bool] = True
    artifacts: ClassVar[dict[str, str]] = {}  # role -> the file name `build` writes for it
    builds_lats: ClassVar[bool] = False       # builds LATS age engines (`lats_refusal`)
    lats_devices: ClassVar[tuple[str, ...]] = ("cpu",)
    lats_precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    lats_artifacts: ClassVar[dict[str, str]] = {}   # a LATS engine's role -> file

    pipeline: "CudaPipeline | None" = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when this backend can build and run here, else one sentence saying why not."""
        return None

    @classmethod
    def rig_refusal(cls, device: str, precision: str) -> str | None:
        """None when this backend builds the rig (`FaceRig`) for `device` and `precision`, else
        one sentence saying why not (it does not build the rig at all, or only on RIG_DEVICE in
        RIG_PRECISION)."""
        if not cls.builds_rig:
            from exprengine.engines.backends import backend_names
            names = backend_names(rig=True)
            return (f"the {cls.name} backend does not build the rig; set `backend` to "
                    f"{', '.join(names[:-1])} or {names[-1]}")
        if device != RIG_DEVICE or precision != RIG_PRECISION:
            return (f"the rig's {cls.name} engine is built for the CPU in fp32 "
                    f"(`device` {RIG_DEVICE!r}, `precision` {RIG_PRECISION!r})")
        return None

    @classmethod
    def lats_refusal(cls, device: str, precision: str) -> str | None:
        """None when this backend builds LATS age engines for `device` and `precision`, else one
        sentence saying why not and what to ask for instead."""
        from exprengine.engines.backends import lats_backend_names
        if not cls.builds_lats:
            names = lats_backend_names()
            return (f"the {cls.name} backend does not build LATS age engines; set `backend` to "
                    f"{', '.join(names[:-1])} or {names[-1]}")
        if device not in cls.lats_devices:
            cuda = lats_backend_names(device="cuda")
            return (f"the {cls.name} backend builds LATS age engines for {' or '.join(cls.lats_devices)} only"
                    + (f"; for CUDA use `backend` {' or '.join(map(repr, cuda))}" if device == "cuda" and cuda else ""))
        if precision not in cls.lats_precisions:
            return f"the {cls.name} backend builds LATS age engines in {', '.join(cls.lats_precisions)}, not {precision}"
        return None

    @classmethod
    def role_files(cls, manifest: Manifest) -> dict[str, str]:
        """role -> conventional file name of the engine's artifacts (`lats_artifacts` for a LATS engine)."""
        return cls.lats_artifacts if manifest.is_lats else cls.artifacts

    @classmethod
    def build_lats(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        """Write a LATS generator's artifacts (its two graphs, `write_class_styles`) into `directory`;
        return their file names. EngineError for a backend that does not build them."""
        raise EngineError(cls.lats_refusal(manifest.device, manifest.precision) or
                          f"the {cls.name} backend does not build LATS age engines")

    @classmethod
    def load_lats(cls, directory: Path, manifest: Manifest, device: str) -> LATSRunner:
        """Deserialise a LATS engine's verified artifacts into a `LATSRunner` on `device`."""
        raise EngineError(f"the {cls.name} backend does not run LATS age engines")

    @classmethod
    def check_lats_metadata(cls, manifest: Manifest, directory: Path, role: str, name: str, data: bytes) -> None:
        """Raise EngineError when a LATS graph artifact's own metadata contradicts the manifest."""

    @classmethod
    def lats_class_styles(cls, directory: Path, manifest: Manifest) -> np.ndarray:
        """The class styles of a LATS engine: its listed, verified artifact of role CLASS_STYLES_ROLE."""
        name, data = cls.artifact(directory, manifest, CLASS_STYLES_ROLE)
        return read_class_styles(manifest, directory, name, data)

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
        return manifest.artifact_bytes(directory, role, cls.role_files(manifest)[role])

    @classmethod
    def check_metadata(cls, manifest: Manifest, directory: Path, role: str, name: str, data: bytes) -> None:
        """Raise EngineError when the artifact's own metadata contradicts the manifest."""

    @classmethod
    def check_artifacts(cls, manifest: Manifest, directory: Path) -> None:
        """Every role's artifact: listed, verified, and its metadata agreeing with the manifest
        (what `load` checks, without deserialising anything)."""
        for role in cls.role_files(manifest):
            name, data = cls.artifact(directory, manifest, role)
            if not manifest.is_lats:
                cls.check_metadata(manifest, directory, role, name, data)
            elif role == CLASS_STYLES_ROLE:
                read_class_styles(manifest, directory, name, data, keep=False)
            else:
                cls.check_lats_metadata(manifest, directory, role, name, data)

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, manifest: Manifest, device: str) -> "Backend":
        """Deserialise the verified artifacts (never a file the manifest does not list).
        `device`: "auto", "cpu" or "cuda" as the caller asked (`resolve_device` resolves "auto")."""

    # --- where the network runs ----------------------------------------------------------------
    def use_cuda_pipeline(self, network, image_size: int, max_batch: int, precision: str,
                          graphs: bool = True) -> None:
        """Run this engine on CUDA: `network` ((x, aus) -> (color, attention) CUDA tensors in
        `precision`'s dtype, see `CudaPipeline`) inside a CudaPipeline for batches up to
        `max_batch` of `image_size` crops; `graphs`: capture CUDA graphs. EngineError without a GPU."""
        from exprengine.engines.cuda_pipeline import CudaPipeline
        from exprengine.models.precision import torch_dtype
        self.pipeline = CudaPipeline(network, image_size, max_batch, torch_dtype(precision), graphs=graphs)

    def _run_network(self, image: np.ndarray, aus: np.ndarray, landmarks: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """How this backend runs its network off the CUDA pipeline (the shapes of `run_network`).
        Backends that run only inside the pipeline keep this default, which refuses."""
        raise EngineError(f"the {self.name} backend runs only in the CUDA pipeline")

    def run_network(self, image: np.ndarray, aus: np.ndarray, landmarks: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Network space: image float32 [N,3,S,S] in [-1,1], aus float32 [N,17] (intensity / 5),
        landmarks float32 [N,478,2] in crop pixels (the rig's engines only; None for generators)
        -> (output float32 [N,3,S,S] in [-1,1], attention float32 [N,1,S,S] in [0,1]).

        Contiguous float32 inputs, N <= the manifest's max batch (`Engine.run_network` checks
        and splits). Through the CUDA pipeline when there is one, else `_run_network`.
        """
        if self.pipeline is not None:
            return self.pipeline.run_network(image, aus)     # generators only: the rig runs on the CPU
        return self._run_network(image, aus, landmarks)

    def run_frames(self, frames: np.ndarray, intensities: np.ndarray, want_attention: bool = True,
                   landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Pixel space: frames uint8 [1|N,S,S,3], intensities float32 [N,17] on the 0..5 scale,
        landmarks float32 [1|N,478,2] in crop pixels (the rig's engines only) -> (uint8
        [N,S,S,3], attention float32 [N,S,S] in [0,1], or None unless `want_attention`).

        A single frame (and its landmarks) is broadcast to every AU row. Through the CUDA
        pipeline's fused kernels when there is one, else NumPy around `run_network`.
        """
        if self.pipeline is not None:
            return self.pipeline.run_frames(frames, np.asarray(intensities, dtype=np.float32), want_attention)
        from exprengine.aus import AU_SCALE
        from exprengine.pixels import to_uint8_nhwc
        from exprengine.pixels import to_network_input
        n = intensities.shape[0]
        x = to_network_input(frames)
        if x.shape[0] == 1 and n > 1:
            x = np.broadcast_to(x, (n, *x.shape[1:]))
        extra = ()
        if landmarks is not None:
            if landmarks.shape[0] == 1 and n > 1:
                landmarks = np.broadcast_to(landmarks, (n, *landmarks.shape[1:]))
            extra = (np.ascontiguousarray(landmarks, dtype=np.float32),)
        aus = np.ascontiguousarray(intensities / AU_SCALE, dtype=np.float32)
        output, attention = self.run_network(np.ascontiguousarray(x), aus, *extra)
        return to_uint8_nhwc(output), (attention[:, 0] if want_attention else None)
