"""`aoti`: an AOTInductor package (torch.export + Inductor ahead-of-time C++/CUDA build).

The package is a shared library compiled for this torch version and this CPU's vector ISA
(or CUDA device), so the manifest records both and loading refuses a mismatch.

On the CPU the package holds the "blended" FP32 graph. Built with `--device cuda` it holds
the "heads" graph (FP32 or FP16) and runs inside `CudaPipeline`: the CUDA prologue and
epilogue kernels around it, pinned memory, and the whole call captured as a CUDA graph
(falling back to plain stream launches if the package cannot be captured).

The package is native code: it is loaded only from the bytes the manifest lists and that
were verified (size, sha256) just before, and only after the exprengine metadata compiled
into it (model, config, weights sha256, image size, outputs, precision; read from the zip
without loading anything) agrees with the manifest. Packages built before the metadata was
embedded are accepted only from manifests of that time (no artifact roles).

The rig (`FaceRig`, three inputs: image, AUs, landmarks) is built as a CPU FP32 package.
A LATS age generator is built as two CPU FP32 packages (`encoder.pt2`, `decoder.pt2`, each with
its graph's metadata, `AOTInductorLATS`) beside the class styles.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from exprengine.engines.backends.base import (CLASS_STYLES, LATS_METADATA_KEYS, Backend, LATSRunner, compare_metadata,
                                              lats_expected_metadata, metadata_keys, write_class_styles)
from exprengine.engines.manifest import Manifest
from exprengine.errors import EngineError
from exprengine.models.precision import torch_dtype

PACKAGE = "model.pt2"
LATS_PACKAGES = {"encoder": "encoder.pt2", "decoder": "decoder.pt2"}
X86_ISA_ORDER = ("DEFAULT", "AVX2", "AVX512")     # each runs code built for the ones before it
AOTI_METADATA_KEYS = ("exprengine.model", "exprengine.weights_sha256", "exprengine.config",
                      "exprengine.image_size", "exprengine.outputs", "exprengine.precision")
MAX_METADATA_BYTES = 1 << 20


def package_metadata(data: bytes, label: str) -> dict[str, str]:
    """The metadata compiled into an AOTInductor package (its `*_metadata.json` members), read
    from the zip without loading any code; EngineError if it is not such a package."""
    found: dict[str, str] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for info in z.infolist():
                if not info.filename.endswith("_metadata.json") or "/aotinductor/" not in info.filename:
                    continue
                if info.file_size > MAX_METADATA_BYTES:
                    raise ValueError("oversized metadata")
                entry = json.loads(z.read(info))
                if isinstance(entry, dict):
                    for key, value in entry.items():
                        if key.startswith("exprengine.") and isinstance(value, str):
                            if found.setdefault(key, value) != value:
                                raise ValueError(f"two different {key}")
    except (zipfile.BadZipFile, ValueError, RecursionError, OSError, EOFError) as e:
        raise EngineError(f"engine artifact {label} is not a readable AOTInductor package "
                          f"({type(e).__name__})") from None
    return found


def package_metadata_for(generator, manifest: Manifest) -> dict[str, str]:
    """The exprengine metadata compiled into a package of `generator` (the FP32 weights' hash)."""
    from exprengine.export.onnx_graph import graph_metadata
    metadata = graph_metadata(generator, manifest.graph_outputs)
    metadata["exprengine.precision"] = manifest.precision
    return metadata


def cpu_capability() -> str:
    """PyTorch's name for this CPU's vector ISA ("DEFAULT", "AVX2", "AVX512", ...; X86_ISA_ORDER)."""
    return torch.backends.cpu.get_cpu_capability()


class AOTInductorBackend(Backend):
    """A loaded AOTInductor package: `runner` (its callable) on `device` ("cpu": the blended
    graph, the rig's too; "cuda": the heads graph inside the CUDA pipeline, sized and typed by
    `manifest`, which a CUDA engine needs)."""
    name = "aoti"
    description = "AOTInductor package (compiled C++ on CPU; CUDA when built on a GPU)"
    device_bound = True
    precisions = ("fp32", "fp16")
    builds_rig = True
    artifacts = {"aoti-package": PACKAGE}
    builds_lats = True
    lats_devices = ("cpu",)
    lats_artifacts = {"encoder-aoti": LATS_PACKAGES["encoder"], "decoder-aoti": LATS_PACKAGES["decoder"],
                      "class-styles": CLASS_STYLES}

    def __init__(self, runner, device: str, manifest: Manifest | None = None):
        self.runner = runner
        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.use_cuda_pipeline(lambda x, a: tuple(runner(x, a)), manifest.image_size, manifest.max_batch,
                                   manifest.precision, graphs=True)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        import shutil
        if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
            return "AOTInductor needs a C++ compiler (g++ or clang++) on PATH to build"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        v = {"torch": torch.__version__, "cpu_capability": cpu_capability()}
        if torch.cuda.is_available():
            v["cuda_device"] = torch.cuda.get_device_name()
            v["cuda_capability"] = "%d.%d" % torch.cuda.get_device_capability()
        return v

    @classmethod
    def build(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        from exprengine.export.graph import export_program
        import copy
        if manifest.device == "cuda":
            manifest.graph_outputs = "heads"
        metadata = package_metadata_for(generator, manifest)      # before any FP16 copy
        if manifest.device == "cuda":
            generator = copy.deepcopy(generator).to("cuda", torch_dtype(manifest.precision))
        elif manifest.precision != "fp32":
            raise EngineError("AOTInductor CPU packages are fp32; fp16 needs `device` 'cuda'")
        program = export_program(generator, outputs=manifest.graph_outputs, max_batch=manifest.max_batch)
        compile_package(program, directory / PACKAGE, metadata)
        return [PACKAGE]

    # --- LATS ---------------------------------------------------------------------------------
    @classmethod
    def build_lats(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        from exprengine.export.graph import export_lats_program
        from exprengine.export.onnx_graph import lats_graph_metadata
        if manifest.device != "cpu" or manifest.precision != "fp32":
            raise EngineError(cls.lats_refusal(manifest.device, manifest.precision) or
                              "AOTInductor LATS packages are built for the CPU in fp32")
        for graph, file in LATS_PACKAGES.items():
            metadata = lats_graph_metadata(generator, graph)
            metadata["exprengine.precision"] = manifest.precision
            compile_package(export_lats_program(generator, graph, max_batch=manifest.max_batch), directory / file,
                            metadata)
        return [*LATS_PACKAGES.values(), write_class_styles(generator, directory)]

    @classmethod
    def check_lats_metadata(cls, manifest: Manifest, directory: Path, role: str, name: str, data: bytes) -> None:
        compare_metadata(manifest, directory, name, package_metadata(data, str(Path(directory) / name)),
                         LATS_METADATA_KEYS, lats_expected_metadata(manifest, role.split("-")[0]))

    @classmethod
    def load_lats(cls, directory: Path, manifest: Manifest, device: str) -> "AOTInductorLATS":
        if device == "cuda":
            raise EngineError(f"engine {directory} is an AOTInductor package for the CPU; load it with `device` "
                              "'cpu' or 'auto'")
        runners = {}
        for graph in LATS_PACKAGES:
            role = f"{graph}-aoti"
            name, data = cls.artifact(directory, manifest, role)      # verified right now
            cls.check_lats_metadata(manifest, directory, role, name, data)
            runners[graph] = load_package(data, directory / name)
        return AOTInductorLATS(runners["encoder"], runners["decoder"], cls.lats_class_styles(directory, manifest))

    @classmethod
    def check_compatible(cls, manifest: Manifest, directory: Path) -> None:
        built = manifest.versions.get("torch")
        if built != torch.__version__:
            raise EngineError(f"engine {directory} is an AOTInductor package for torch {built}, "
                              f"this is torch {torch.__version__}; rebuild it with `exprengine build`")
        isa, here = manifest.versions.get("cpu_capability"), cpu_capability()
        runs_here = isa == here or (isa in X86_ISA_ORDER and here in X86_ISA_ORDER
                                    and X86_ISA_ORDER.index(isa) <= X86_ISA_ORDER.index(here))
        if manifest.device == "cpu" and not runs_here:
            raise EngineError(f"engine {directory} was compiled for a {isa} CPU and this CPU is {here}; "
                              "rebuild it on this machine")
        if manifest.device == "cuda":
            if not torch.cuda.is_available():
                raise EngineError(f"engine {directory} is a CUDA AOTInductor package and no CUDA device is present")
            built_cc, here_cc = manifest.versions.get("cuda_capability"), "%d.%d" % torch.cuda.get_device_capability()
            if built_cc != here_cc:
                raise EngineError(f"engine {directory} was compiled for a GPU of compute capability {built_cc}, "
                                  f"this GPU is {here_cc}; rebuild it on this machine")

    @classmethod
    def check_metadata(cls, manifest: Manifest, directory: Path, role: str, name: str, data: bytes) -> None:
        found = package_metadata(data, str(Path(directory) / name))
        if not found and not manifest.has_roles:
            return          # built before packages carried metadata; its bytes are verified all the same
        compare_metadata(manifest, directory, name, found, metadata_keys(manifest, AOTI_METADATA_KEYS))

    @classmethod
    def load(cls, directory: Path, manifest: Manifest, device: str) -> "AOTInductorBackend":
        name, data = cls.artifact(directory, manifest, "aoti-package")      # verified right now
        cls.check_metadata(manifest, directory, "aoti-package", name, data)
        return cls(load_package(data, directory / name), manifest.device, manifest)

    @torch.inference_mode()
    def _run_network(self, image: np.ndarray, aus: np.ndarray, landmarks: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The CPU package (blended graph; the rig's takes the landmarks too), `Backend.run_network`'s shapes."""
        extra = () if landmarks is None else (torch.from_numpy(np.ascontiguousarray(landmarks, np.float32)),)
        output, attention = self.runner(torch.from_numpy(image), torch.from_numpy(aus), *extra)
        return output.numpy(), attention.numpy()


def compile_package(program, path: Path, metadata: dict[str, str]) -> None:
    """AOTInductor-compile an exported program into the package `path`, with the exprengine
    `metadata` compiled into it (Inductor's own output and warnings silenced)."""
    quiet = logging.getLogger("torch._inductor")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch._inductor.aoti_compile_and_package(program, package_path=str(path),
                                                     inductor_configs={"aot_inductor.metadata": metadata})
    finally:
        quiet.setLevel(level)


def load_package(data: bytes, label: Path):
    """The runner of an AOTInductor package from its verified bytes (torch copies them into a
    private temporary file to load); EngineError (one sentence naming `label`) when it cannot."""
    try:
        return torch._inductor.aoti_load_package(io.BytesIO(data))
    except Exception as e:
        raise EngineError(f"cannot load AOTInductor package {label}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


class AOTInductorLATS(LATSRunner):
    """A LATS engine's two CPU FP32 AOTInductor packages (`encoder`, `decoder` runners; the decoder's
    features are repeated for a traversal: its two inputs share one batch axis) and the class styles."""

    def __init__(self, encoder, decoder, class_styles):
        super().__init__(class_styles)
        self.encoder, self.decoder = encoder, decoder

    @torch.inference_mode()
    def run_encoder(self, image: np.ndarray) -> np.ndarray:
        """The encoder package (`LATSRunner.run_encoder`)."""
        out = self.encoder(torch.from_numpy(image))
        return (out[0] if isinstance(out, (list, tuple)) else out).numpy()

    @torch.inference_mode()
    def _run_decoder(self, features: np.ndarray, style: np.ndarray) -> np.ndarray:
        """The decoder package (`LATSRunner._run_decoder`)."""
        out = self.decoder(torch.from_numpy(features), torch.from_numpy(style))
        return (out[0] if isinstance(out, (list, tuple)) else out).numpy()
