"""`torch`: eager PyTorch, the reference every compiled engine is checked against.

On the CPU it runs the generator in FP32. On CUDA it runs FP32 or FP16 (channels-last, so
cuDNN uses the tensor cores) inside `CudaPipeline`: the fused CUDA kernels around the
network, pinned memory, and the whole call captured as a CUDA graph.

The rig (`FaceRig`) runs here on the CPU in FP32. Its "weights" artifact is a safetensors
file that holds no tensors, only the rig's config and `rig_sha256` (nothing is unpickled);
loading rebuilds the rig from this install's code, so an engine built by another version of
the rig (another `rig_sha256`) is refused with a message to rebuild it.

A LATS age generator's engine holds its weights and its class styles (`TorchLATS`): eager
FP32 on the CPU (a traversal's features are shared by every style, not copied); on CUDA in
FP32 or FP16 the encoder runs eagerly and the decoder inside `LATSCudaDecoder` (pinned
buffers, the fused uint8 epilogue `exprengine_to_u8_*`, CUDA graphs).
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from exprengine.engines.backends.base import (CLASS_STYLES, RIG_DEVICE, RIG_PRECISION, Backend, LATSRunner,
                                              compare_metadata, resolve_device, write_class_styles)
from exprengine.engines.manifest import Manifest
from exprengine.errors import EngineError
from exprengine.pixels import blend
from exprengine.models import AttentionGenerator, is_rig
from exprengine.models.precision import torch_dtype

WEIGHTS = "weights.safetensors"
WEIGHTS_METADATA_KEYS = ("exprengine.model", "exprengine.config", "exprengine.weights_sha256",
                         "exprengine.image_size")


def check_weights_metadata(manifest: Manifest, directory: Path, name: str, data: bytes) -> None:
    """Refuse a weights artifact whose safetensors metadata (config, weights sha256) contradicts the manifest."""
    import json

    from exprengine.models.weights import safetensors_metadata
    try:
        metadata = safetensors_metadata(data)
        config = json.loads(metadata.get("config", "null"))
    except (ValueError, RecursionError) as e:
        raise EngineError(f"engine artifact {Path(directory) / name} is not a readable safetensors file "
                          f"({type(e).__name__})") from None
    found = {"exprengine.config": metadata.get("config"), "exprengine.weights_sha256": metadata.get("weights_sha256")}
    if isinstance(config, dict):
        found["exprengine.model"] = str(config.get("name"))
        found["exprengine.image_size"] = str(config.get("image_size"))
    compare_metadata(manifest, directory, name, found, WEIGHTS_METADATA_KEYS)


def check_rig_version(manifest: Manifest, directory: Path) -> None:
    """EngineError when a rig engine that runs this install's rig code (eager backends) was built
    by another version of the rig (its manifest's weights sha256 is not this rig's `rig_sha256`)."""
    if not manifest.is_rig:
        return
    from exprengine.errors import UserError
    from exprengine.models.rig import RigConfig, rig_sha256
    try:
        here = rig_sha256(RigConfig.from_dict(manifest.model_config))
    except UserError as e:
        raise EngineError(f"engine {directory} has an invalid rig config ({e})") from None
    if here != manifest.weights_sha256:
        raise EngineError(f"engine {directory} was built by another version of the rig than this install's "
                          "(exprengine/models/rig.py changed); rebuild it with `exprengine build --model rig`")


def load_verified_weights(directory: Path, manifest: Manifest, backend: type[Backend]) -> AttentionGenerator:
    """The generator in the listed, verified weights artifact whose metadata agrees with the manifest."""
    from exprengine.models.weights import load_weights
    name, data = backend.artifact(directory, manifest, "weights")
    backend.check_metadata(manifest, directory, "weights", name, data)
    generator = load_weights(Path(directory) / name, data=data)      # parsed from the verified bytes
    return generator


class HeadsNetwork:
    """(x [n,3,S,S], aus [n,17]) -> (color [n,3,S,S], attention [n,1,S,S]) of a generator on CUDA,
    in `precision`'s dtype ("fp32" or "fp16", `torch_dtype`) and one memory format (channels-last
    by default): the network a CudaPipeline runs. FP32 means FP32 (no TF32 convolutions)."""

    def __init__(self, generator: AttentionGenerator, precision: str, channels_last: bool = True):
        dtype = torch_dtype(precision)
        self.channels_last = channels_last
        # FP32 means FP32: cuDNN would otherwise run the convolutions in TF32 (10-bit mantissa)
        self.allow_tf32 = dtype != torch.float32
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        # a copy: the caller's generator stays where it was, in FP32
        self.module = copy.deepcopy(generator).eval().to(device="cuda", dtype=dtype, memory_format=fmt)

    def __call__(self, x: torch.Tensor, aus: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        previous = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = self.allow_tf32 and previous
        try:
            return self.module(x, aus)
        finally:
            torch.backends.cudnn.allow_tf32 = previous


class TorchBackend(Backend):
    """Eager PyTorch around an in-memory generator (or the rig, on the CPU in fp32).

    `device` "cpu" (fp32, the portable path) or "cuda" (`precision` fp32 or fp16, inside the
    CUDA pipeline for batches up to `max_batch`; `graphs`: capture CUDA graphs). The caller's
    generator is not moved or cast (CUDA runs a copy). EngineError for fp16 on the CPU, the rig
    elsewhere than the CPU in fp32, or CUDA without a GPU.
    """
    name = "torch"
    description = "eager PyTorch (reference; CPU FP32, or CUDA FP32/FP16 with the fused kernels and CUDA graphs)"
    precisions = ("fp32", "fp16")
    builds_rig = True
    compiled = False
    artifacts = {"weights": WEIGHTS}
    builds_lats = True
    lats_devices = ("cpu", "cuda")
    lats_precisions = ("fp32", "fp16")
    lats_artifacts = {"weights": WEIGHTS, "class-styles": CLASS_STYLES}

    def __init__(self, generator: AttentionGenerator, device: str = "cpu", precision: str = "fp32",
                 max_batch: int = 64, graphs: bool = True):
        self.device = torch.device("cuda" if device == "cuda" else "cpu")
        self.precision = precision
        self.rig = is_rig(generator)
        if self.rig and (self.device.type != RIG_DEVICE or precision != RIG_PRECISION):
            raise EngineError(f"the rig's torch engine runs on the CPU in fp32 (`device` {RIG_DEVICE!r}, "
                              f"`precision` {RIG_PRECISION!r})")
        if self.device.type == "cpu":
            if precision != "fp32":
                raise EngineError("the torch backend runs fp16 on CUDA only; use `precision` 'fp32' on the CPU")
            self.generator = generator.eval()
        else:
            network = HeadsNetwork(generator, precision)
            self.generator = network.module
            self.use_cuda_pipeline(network, generator.config.image_size, max_batch, precision, graphs=graphs)

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"torch": torch.__version__}

    @classmethod
    def build(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        from exprengine.models.weights import save_weights
        if manifest.device == "cuda":
            manifest.graph_outputs = "heads"         # the fused epilogue blends on the GPU
        save_weights(generator, directory / WEIGHTS)
        return [WEIGHTS]

    @classmethod
    def check_metadata(cls, manifest: Manifest, directory: Path, role: str, name: str, data: bytes) -> None:
        check_weights_metadata(manifest, directory, name, data)
        check_rig_version(manifest, directory)            # the rig runs this install's code

    @classmethod
    def load(cls, directory: Path, manifest: Manifest, device: str) -> "TorchBackend":
        if manifest.is_rig and device == "cuda":
            raise EngineError("the rig's torch engine runs on the CPU; load it with `device` 'cpu' or 'auto'")
        device = resolve_device(device, built_for=manifest.device)
        if device == "cuda" and not torch.cuda.is_available():
            raise EngineError("device cuda asked for, but no NVIDIA GPU is visible")
        precision = manifest.precision if device == "cuda" else "fp32"
        return cls(load_verified_weights(directory, manifest, cls), device, precision, manifest.max_batch)

    # --- LATS ---------------------------------------------------------------------------------
    @classmethod
    def build_lats(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        from exprengine.models.weights import save_weights
        save_weights(generator, directory / WEIGHTS)
        return [WEIGHTS, write_class_styles(generator, directory)]

    @classmethod
    def check_lats_metadata(cls, manifest: Manifest, directory: Path, role: str, name: str, data: bytes) -> None:
        check_weights_metadata(manifest, directory, name, data)

    @classmethod
    def load_lats(cls, directory: Path, manifest: Manifest, device: str) -> "TorchLATS":
        device = resolve_device(device, built_for=manifest.device)
        if device == "cuda" and not torch.cuda.is_available():
            raise EngineError("device cuda asked for, but no NVIDIA GPU is visible")
        precision = manifest.precision if device == "cuda" else "fp32"
        styles = cls.lats_class_styles(directory, manifest)
        return TorchLATS(load_verified_weights(directory, manifest, cls), styles, device, precision, manifest.max_batch)

    @torch.inference_mode()
    def _run_network(self, image: np.ndarray, aus: np.ndarray, landmarks: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The generator (or rig) on the CPU in fp32, blended (`Backend.run_network`'s shapes)."""
        x = torch.from_numpy(image)
        a = torch.from_numpy(aus)
        extra = (torch.from_numpy(np.ascontiguousarray(landmarks, np.float32)),) if self.rig else ()
        color, attention = self.generator(x, a, *extra)
        return blend(x, color, attention).numpy(), attention.numpy()


class TorchLATS(LATSRunner):
    """A LATS generator in eager PyTorch behind the `LATSRunner` calls.

    `device` "cpu" (FP32; the decoder takes one row of features for every style without copying
    it) or "cuda" (`precision` "fp32", no TF32, or "fp16"; a copy of the generator, the decoder
    inside `LATSCudaDecoder` for batches up to `max_batch`, `graphs`: CUDA graphs). The caller's
    generator is not moved or cast. EngineError for fp16 on the CPU or CUDA without a GPU.
    """
    broadcasts_features = True

    def __init__(self, generator, class_styles: np.ndarray, device: str = "cpu", precision: str = "fp32",
                 max_batch: int = 64, graphs: bool = True):
        super().__init__(class_styles)
        self.device = torch.device("cuda" if device == "cuda" else "cpu")
        self.precision = precision
        if self.device.type == "cpu":
            if precision != "fp32":
                raise EngineError("the torch backend runs fp16 on CUDA only; use `precision` 'fp32' on the CPU")
            self.generator = generator.eval()
            return
        from exprengine.engines.cuda_pipeline import LATSCudaDecoder
        self.dtype = torch_dtype(precision)
        self.generator = copy.deepcopy(generator).eval().to(device="cuda", dtype=self.dtype)
        cfg = generator.config
        self.pipeline = LATSCudaDecoder(self._decode, (cfg.encoder_dims[-1], cfg.feature_size), cfg.style_dim,
                                        cfg.image_size, max_batch, self.dtype, graphs=graphs)

    def _exact(self):
        """FP32 means FP32 on CUDA: cuDNN's TF32 convolutions off while the network runs."""
        import contextlib

        @contextlib.contextmanager
        def scope():
            previous = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = previous and self.precision != "fp32"
            try:
                yield
            finally:
                torch.backends.cudnn.allow_tf32 = previous
        return scope()

    def _decode(self, features: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The decoder on CUDA tensors of the runner's dtype (the network `LATSCudaDecoder` runs)."""
        with self._exact():
            return self.generator.decode(features, style)

    @torch.inference_mode()
    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        """`LATSGenerator.encode` eagerly (on CUDA in the runner's precision, returned as float32)."""
        x = torch.from_numpy(image)
        if self.device.type == "cpu":
            return self.generator.encode(x).numpy()
        with self._exact():
            return self.generator.encode(x.to(self.device, self.dtype)).float().cpu().numpy()

    @torch.inference_mode()
    def _run_decoder(self, features: np.ndarray, style: np.ndarray) -> np.ndarray:
        """`LATSGenerator.decode` on the CPU in FP32 (features [1|N] shared)."""
        return self.generator.decode(torch.from_numpy(features), torch.from_numpy(style)).numpy()
