"""`tensorrt`: a TensorRT plan on NVIDIA GPUs, followed by the fused CUDA epilogue.

Build (`exprengine build --backend tensorrt --device cuda`):
  1. export the "heads" graph to ONNX (`model.onnx`): for FP16, weights, activations and I/O
     in FP16 with every InstanceNorm/LayerNorm computed in FP32 between casts
     (`exprengine.models.precision`); FP16 norms are what break accuracy (SPEC section 6);
  2. parse it into a *strongly typed* network (TensorRT runs each layer in the type the
     graph gives it: the norms stay FP32, no BuilderFlag.FP16 needed, which TensorRT 10
     deprecates and TensorRT-RTX and 11 do not have);
  3. one optimisation profile over the batch range: min 1, opt the manifest's opt batch
     (a typical morph), max the max batch;
  4. a timing cache (reused across builds on this GPU) and the serialised plan `model.plan`.

A plan only runs on the GPU model, compute capability and TensorRT version that built it.
The manifest records them; its `plan_key` is the sha256 over everything the plan depends
on (ONNX bytes, GPU, compute capability, TensorRT version, precision, profile). Loading on
another GPU or TensorRT finds a plan for the current key in the user cache
(`$EXPRENGINE_CACHE/tensorrt/`), else rebuilds it from `model.onnx` (saying so on stderr),
or refuses with one sentence when `EXPRENGINE_TENSORRT_REBUILD=0`. Plans are checked
(sha256) before TensorRT deserialises them: the engine's plan and ONNX graph are the listed
artifacts (roles "plan" and "onnx-model"), read once and verified on the bytes that are used,
and the ONNX graph's metadata must agree with the manifest.

Runtime: device buffers allocated once for the max batch, `execute_async_v3` on the
pipeline's stream followed by the CUDA epilogue, the steady state captured as a CUDA graph
(`exprengine.engines.cuda_pipeline`).

The TensorRT builder is not installable on the project's CI machines, and no TensorRT
builder that supports Hopper was available on the lent H100 either (README): this module is
written against TensorRT's public Python API (10.x; 11 keeps the strongly typed path).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from exprengine.engines.backends.base import Backend
from exprengine.engines.backends.onnxruntime_backend import check_onnx_metadata
from exprengine.engines.manifest import Manifest
from exprengine.errors import EngineError
from exprengine.files import cache_dir, store_in_cache
from exprengine.models.precision import torch_dtype

ONNX_MODEL = "model.onnx"
PLAN = "model.plan"
WORKSPACE_BYTES = 4 << 30
MODULES = ("tensorrt", "tensorrt_rtx")      # the full builder, or TensorRT for RTX (same API family)


def import_tensorrt():
    """The first importable TensorRT module that has a builder, or None."""
    for name in MODULES:
        try:
            module = __import__(name)
        except Exception:  # ImportError, or a broken install raising OSError at load
            continue
        if hasattr(module, "Builder"):
            return module
    return None


def plan_dependencies(onnx_sha256: str, gpu_name: str, capability: str, tensorrt_version: str,
                      precision: str, profile: tuple[int, int, int], image_size: int) -> dict:
    """Everything a serialised plan depends on; `plan_key` hashes it."""
    return {"onnx_sha256": onnx_sha256, "gpu": gpu_name, "compute_capability": capability,
            "tensorrt": tensorrt_version, "precision": precision,
            "profile_min_opt_max": list(profile), "image_size": image_size}


def plan_key(dependencies: dict) -> str:
    """sha256 (hex) of `dependencies` (`plan_dependencies`) as sorted JSON: the plan cache's key."""
    return hashlib.sha256(json.dumps(dependencies, sort_keys=True).encode()).hexdigest()


def plan_mismatch(built: dict, here: dict) -> str | None:
    """None when a plan built under `built` runs under `here`, else what differs (one phrase)."""
    labels = {"gpu": "GPU", "compute_capability": "compute capability", "tensorrt": "TensorRT version",
              "onnx_sha256": "model", "precision": "precision", "profile_min_opt_max": "batch profile",
              "image_size": "image size"}
    for key, label in labels.items():
        if built.get(key) != here.get(key):
            return f"{label} {built.get(key)} (this machine: {here.get(key)})"
    return None


def current_gpu() -> tuple[str, str]:
    """(name, compute capability "major.minor") of the current CUDA device."""
    import torch
    return torch.cuda.get_device_name(), "%d.%d" % torch.cuda.get_device_capability()


class TensorRTBackend(Backend):
    """A deserialised TensorRT `plan` (bytes) run inside the CUDA pipeline, its output buffers
    sized and typed by `manifest`; EngineError when TensorRT cannot deserialise the plan."""
    name = "tensorrt"
    description = "TensorRT plan (strongly typed FP16 with FP32 norms, or FP32) + fused CUDA epilogue"
    precisions = ("fp16", "fp32")
    default_precision = "fp16"
    devices = ("cuda",)
    default_device = "cuda"
    device_bound = True
    artifacts = {"onnx-model": ONNX_MODEL, "plan": PLAN}

    def __init__(self, plan: bytes, manifest: Manifest):
        import torch

        trt = import_tensorrt()
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineError("TensorRT could not deserialise the plan (built by another TensorRT version or GPU)")
        self.context = self.engine.create_execution_context()
        dtype = torch_dtype(manifest.precision)
        s, b = manifest.image_size, manifest.max_batch
        self.color = torch.empty(b, 3, s, s, dtype=dtype, device="cuda")
        self.attention = torch.empty(b, 1, s, s, dtype=dtype, device="cuda")
        self.use_cuda_pipeline(self._network, s, b, manifest.precision, graphs=True)

    def _network(self, x, aus):
        """The plan on (x [n,3,S,S], aus [n,17]) CUDA tensors -> views of its (color, attention)
        buffers, enqueued on the current stream; EngineError when TensorRT cannot enqueue."""
        import torch
        n = x.shape[0]
        self.context.set_input_shape("image", tuple(x.shape))
        self.context.set_input_shape("aus", tuple(aus.shape))
        for name, tensor in (("image", x), ("aus", aus), ("color", self.color), ("attention", self.attention)):
            self.context.set_tensor_address(name, tensor.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise EngineError("TensorRT failed to enqueue the engine")
        return self.color[:n], self.attention[:n]

    # --- availability and versions -------------------------------------------------------------
    @classmethod
    def unavailable_reason(cls) -> str | None:
        trt = import_tensorrt()
        if trt is None:
            try:
                import tensorrt
                return (f"the installed tensorrt {getattr(tensorrt, '__version__', '?')} is a runtime without a "
                        "builder (lean/dispatch); the tensorrt backend needs the full TensorRT 10+ package")
            except Exception:
                return ("the tensorrt backend needs TensorRT 10 or later with its Python builder "
                        "(pip install tensorrt, on a machine with an NVIDIA GPU), and it is not installed here")
        import torch
        if not torch.cuda.is_available():
            return "the tensorrt backend needs an NVIDIA GPU, and none is visible here"
        from exprengine.kernels.cuda import nvrtc_unavailable_reason
        return nvrtc_unavailable_reason()

    @classmethod
    def versions(cls) -> dict[str, str]:
        trt = import_tensorrt()
        gpu, cc = current_gpu()
        return {"tensorrt": f"{trt.__name__} {trt.__version__}", "cuda_device": gpu, "cuda_capability": cc}

    # --- build --------------------------------------------------------------------------------
    @classmethod
    def build(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        from exprengine.export.onnx_graph import export_onnx
        if manifest.device != "cuda":
            raise EngineError("TensorRT engines run on CUDA; build them with `device` 'cuda'")
        manifest.graph_outputs = "heads"
        export_onnx(generator.cpu(), directory / ONNX_MODEL, outputs="heads", max_batch=manifest.max_batch,
                    precision=manifest.precision)
        onnx_bytes = (directory / ONNX_MODEL).read_bytes()
        deps = cls._dependencies(onnx_bytes, manifest)
        (directory / PLAN).write_bytes(build_plan(onnx_bytes, manifest))
        manifest.versions["tensorrt_plan"] = json.dumps(deps, sort_keys=True)
        return [ONNX_MODEL, PLAN]

    @classmethod
    def _dependencies(cls, onnx_bytes: bytes, manifest: Manifest) -> dict:
        trt = import_tensorrt()
        gpu, cc = current_gpu()
        return plan_dependencies(hashlib.sha256(onnx_bytes).hexdigest(), gpu, cc, f"{trt.__name__} {trt.__version__}",
                                 manifest.precision, (manifest.min_batch, manifest.opt_batch, manifest.max_batch),
                                 manifest.image_size)

    # --- load ---------------------------------------------------------------------------------
    @classmethod
    def check_compatible(cls, manifest: Manifest, directory: Path) -> None:
        if manifest.device != "cuda":
            raise EngineError(f"engine {directory} is not a CUDA engine")
        if not isinstance(plan_record(manifest), dict):
            raise EngineError(f"engine {directory} does not record what its TensorRT plan depends on; rebuild it")

    @classmethod
    def check_metadata(cls, manifest: Manifest, directory: Path, role: str, name: str, data: bytes) -> None:
        if role == "onnx-model":
            check_onnx_metadata(manifest, directory, name, data)

    @classmethod
    def load(cls, directory: Path, manifest: Manifest, device: str) -> "TensorRTBackend":
        if device == "cpu":
            raise EngineError(f"engine {directory} is a TensorRT engine and runs on CUDA only")
        cls.check_compatible(manifest, directory)
        built = plan_record(manifest)
        onnx_name, onnx_bytes = cls.artifact(directory, manifest, "onnx-model")
        cls.check_metadata(manifest, directory, "onnx-model", onnx_name, onnx_bytes)
        here = cls._dependencies(onnx_bytes, manifest)
        mismatch = plan_mismatch(built, here)
        if mismatch is None:
            _, plan = cls.artifact(directory, manifest, "plan")     # verified on these bytes
            return cls(plan, manifest)
        return cls(cached_or_rebuilt_plan(directory, manifest, here, mismatch, onnx_bytes), manifest)


def plan_record(manifest: Manifest) -> dict | None:
    """The manifest's record of what its plan depends on (a JSON object), or None."""
    try:
        record = json.loads(manifest.versions.get("tensorrt_plan", "null"))
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def cached_or_rebuilt_plan(directory: Path, manifest: Manifest, here: dict, mismatch: str,
                           onnx_bytes: bytes | None = None) -> bytes:
    """A plan for this GPU/TensorRT: from the user cache (hash-checked), else rebuilt from the
    engine's verified ONNX bytes and cached."""
    key = plan_key(here)
    path = cache_dir("tensorrt") / f"{key}.plan"
    digest_path = path.with_suffix(".sha256")
    if path.is_file() and digest_path.is_file():
        try:
            plan, digest = path.read_bytes(), digest_path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            plan, digest = b"", None
        if hashlib.sha256(plan).hexdigest() == digest:
            return plan
    if os.environ.get("EXPRENGINE_TENSORRT_REBUILD", "1") == "0":
        raise EngineError(f"engine {directory}'s TensorRT plan was built for {mismatch}; rebuild it with "
                          "`exprengine build --backend tensorrt` (EXPRENGINE_TENSORRT_REBUILD=0 forbids doing it here)")
    print(f"exprengine: engine {directory}'s TensorRT plan was built for {mismatch}; "
          f"rebuilding it for this GPU into {cache_dir('tensorrt')} (once)", file=sys.stderr)
    if onnx_bytes is None:
        _, onnx_bytes = TensorRTBackend.artifact(Path(directory), manifest, "onnx-model")
    plan = build_plan(onnx_bytes, manifest)
    for target, data in ((path, plan), (digest_path, hashlib.sha256(plan).hexdigest().encode())):
        store_in_cache(target, data)
    return plan


def build_plan(onnx_bytes: bytes, manifest: Manifest) -> bytes:
    """ONNX bytes -> serialised TensorRT plan (strongly typed, one profile, timing cache)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT could not parse the ONNX graph: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    s = manifest.image_size
    profile = builder.create_optimization_profile()
    for name, shape in (("image", (3, s, s)), ("aus", (manifest.model_config.get("num_aus", 17),))):
        profile.set_shape(name, (manifest.min_batch, *shape), (manifest.opt_batch, *shape),
                          (manifest.max_batch, *shape))
    config.add_optimization_profile(profile)
    gpu, cc = current_gpu()
    timing_path = cache_dir("tensorrt") / f"timing-{gpu.replace(' ', '_')}-{cc}-{trt.__version__}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError("TensorRT failed to build the engine (see its messages above)")
    store_in_cache(timing_path, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)
