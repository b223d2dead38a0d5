"""The engine manifest (`engine.json`): what an engine directory holds and depends on.

An engine directory is `engine.json` plus the backend's artifacts. Loading verifies the
manifest before anything is deserialised: format and version, AU vocabulary, image size,
every artifact's size and sha256 (a truncated or corrupted file is refused), and the
backend's own compatibility checks (e.g. an AOTInductor package needs the same torch).
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from exprengine.aus import AU_NAMES, AU_SCALE
from exprengine.errors import EngineError

MANIFEST_NAME = "engine.json"
FORMAT = "exprengine-engine"
FORMAT_VERSION = 1


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Manifest:
    model: str                       # registry name
    model_config: dict               # GeneratorConfig.to_dict()
    weights_sha256: str
    weights_source: str              # "random-init seed=0", or the checkpoint's file name
    backend: str
    precision: str                   # "fp32" | "fp16"
    device: str                      # "cpu" | "cuda"
    graph_outputs: str               # "blended" | "heads"
    min_batch: int
    max_batch: int
    opt_batch: int
    image_size: int
    artifacts: dict[str, dict] = field(default_factory=dict)    # name -> {bytes, sha256}
    versions: dict[str, str] = field(default_factory=dict)      # what the artifacts depend on
    verification: dict = field(default_factory=dict)            # check against eager PyTorch
    au_order: list[str] = field(default_factory=lambda: list(AU_NAMES))
    au_scale: float = AU_SCALE
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def random_init(self) -> bool:
        return self.weights_source.startswith("random-init")

    def record_artifact(self, directory: Path, name: str) -> None:
        p = directory / name
        self.artifacts[name] = {"bytes": p.stat().st_size, "sha256": file_sha256(p)}

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> "Manifest":
        """Read and validate `engine.json` and the artifacts' integrity; EngineError if bad."""
        directory = Path(directory)
        if not directory.exists():
            raise EngineError(f"engine {directory} does not exist (build one with `exprengine build`)")
        if not directory.is_dir():
            raise EngineError(f"engine {directory} is not a directory (an engine is a directory with {MANIFEST_NAME})")
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise EngineError(f"{directory} is not an engine: it has no {MANIFEST_NAME}")
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EngineError(f"engine manifest {path} is corrupt ({type(e).__name__})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise EngineError(f"{path} is not an exprengine engine manifest")
        if raw.get("format_version") != FORMAT_VERSION:
            raise EngineError(f"engine {directory} has format version {raw.get('format_version')}, "
                              f"this exprengine reads version {FORMAT_VERSION}; rebuild it")
        try:
            manifest = cls(**raw)
        except TypeError as e:
            raise EngineError(f"engine manifest {path} is incomplete or has unknown fields ({e})") from None
        manifest.validate(directory)
        return manifest

    def validate(self, directory: Path) -> None:
        if list(self.au_order) != list(AU_NAMES) or float(self.au_scale) != AU_SCALE:
            raise EngineError(f"engine {directory} uses another AU vocabulary or scale than this exprengine")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise EngineError(f"engine {directory} has an invalid batch range "
                              f"{self.min_batch}..{self.max_batch} (opt {self.opt_batch})")
        if not self.artifacts:
            raise EngineError(f"engine {directory} lists no artifacts")
        for name, info in self.artifacts.items():
            p = directory / name
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise EngineError(f"engine {directory} names an artifact outside itself: {name}")
            if not p.is_file():
                raise EngineError(f"engine {directory} is missing its artifact {name}")
            size = p.stat().st_size
            if size != info.get("bytes"):
                raise EngineError(f"engine artifact {p} is truncated or altered "
                                  f"({size} bytes, the manifest says {info.get('bytes')})")
            if file_sha256(p) != info.get("sha256"):
                raise EngineError(f"engine artifact {p} is corrupted (sha256 does not match the manifest)")


def base_versions() -> dict[str, str]:
    import numpy
    import torch

    from exprengine import __version__
    return {"exprengine": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__, "machine": platform.machine()}
