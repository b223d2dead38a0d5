"""`aoti`: an AOTInductor package (torch.export + Inductor ahead-of-time C++/CUDA build).

The package is a shared library compiled for this torch version and this CPU's vector ISA
(or CUDA device), so the manifest records both and loading refuses a mismatch.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from exprengine.engines.backends.base import Backend
from exprengine.engines.manifest import Manifest
from exprengine.errors import EngineError

PACKAGE = "model.pt2"
X86_ISA_ORDER = ("DEFAULT", "AVX2", "AVX512")     # each runs code built for the ones before it


def cpu_capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


class AOTInductorBackend(Backend):
    name = "aoti"
    description = "AOTInductor package (compiled C++ on CPU; CUDA when built on a GPU)"
    device_bound = True

    def __init__(self, runner, device: str):
        self.runner = runner
        self.device = torch.device(device)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        import shutil
        if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
            return "AOTInductor needs a C++ compiler (g++ or clang++) on PATH to build"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"torch": torch.__version__, "cpu_capability": cpu_capability()}

    @classmethod
    def build(cls, generator, directory: Path, manifest: Manifest) -> list[str]:
        from exprengine.export.graph import export_program
        device = "cuda" if manifest.device == "cuda" else "cpu"
        program = export_program(generator.to(device), outputs="blended", max_batch=manifest.max_batch)
        quiet = logging.getLogger("torch._inductor")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch._inductor.aoti_compile_and_package(program, package_path=str(directory / PACKAGE))
        finally:
            quiet.setLevel(level)
        return [PACKAGE]

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
        if manifest.device == "cuda" and not torch.cuda.is_available():
            raise EngineError(f"engine {directory} is a CUDA AOTInductor package and no CUDA device is present")

    @classmethod
    def load(cls, directory: Path, manifest: Manifest, device: str) -> "AOTInductorBackend":
        try:
            runner = torch._inductor.aoti_load_package(str(directory / PACKAGE))
        except Exception as e:
            raise EngineError(f"cannot load AOTInductor package {directory / PACKAGE}: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        return cls(runner, manifest.device)

    @torch.inference_mode()
    def run(self, image: np.ndarray, aus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        output, attention = self.runner(torch.from_numpy(image).to(self.device),
                                        torch.from_numpy(aus).to(self.device))
        return output.cpu().numpy(), attention.cpu().numpy()
