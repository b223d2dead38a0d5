"""The engine manifest (`engine.json`): what an engine directory holds and depends on.

An engine directory is `engine.json` plus the backend's artifacts. Loading trusts nothing
in the directory that the manifest does not vouch for, in this order:

1. `engine.json` itself: at most `MAX_MANIFEST_BYTES`, JSON of bounded nesting, format and
   version, then the JSON schema `SCHEMA` (every field's type, bounds and allowed values:
   image size 16..1024 and a multiple of 4, batches 1..4096, artifact names plain file
   names; the model config a generator's or the rig's), then the checks between fields (image
   size = the model config's, min <= opt <= max batch, this exprengine's AU vocabulary, the
   graph's `inputs`: the rig's take the landmarks, a generator's do not; manifests written
   before `inputs` existed are generators' and read as ["image", "aus"]). Any failure is one
   `EngineError` sentence.
2. every listed artifact: a regular file inside the directory (a symbolic link that leads
   outside it is refused even when its bytes match), of the listed size and sha256.
3. the backend's own compatibility checks (e.g. an AOTInductor package needs the same torch).

Backends never open a file because of its name: they ask the manifest for the artifact that
plays a role (`Manifest.artifact_bytes`), which reads the listed file once into memory,
checks its size and sha256 on those very bytes, and hands them over for deserialising.
Each artifact entry records its `role`; manifests written before roles existed name the
role's conventional file (e.g. `model.onnx`), which is then used only if listed and hashed.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from exprengine.aus import AU_NAMES, AU_SCALE
from exprengine.errors import EngineError

MANIFEST_NAME = "engine.json"
FORMAT = "exprengine-engine"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 20         # a real manifest is ~2 kB
IMAGE_SIZE_RANGE = (16, 1024)        # the generator downsamples twice by 2: a multiple of 4
BATCH_RANGE = (1, 4096)              # `exprengine build --max-batch` accepts the same
MAX_ARTIFACT_BYTES = 1 << 40
ARTIFACT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z"   # a plain file name: no '/', no '..', no dot-files

_INT = {"type": "integer"}
_SHA256 = {"type": "string", "pattern": r"^[0-9a-f]{64}\Z"}
_TEXT = {"type": "string", "maxLength": 4096}
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"}
_IMAGE_SIZE = {"type": "integer", "minimum": IMAGE_SIZE_RANGE[0], "maximum": IMAGE_SIZE_RANGE[1], "multipleOf": 4}
_BATCH = {"type": "integer", "minimum": BATCH_RANGE[0], "maximum": BATCH_RANGE[1]}

GENERATOR_CONFIG: dict = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "block", "expansion", "dims", "depth", "num_aus", "image_size"],
    "properties": {
        "name": _NAME,
        "block": {"enum": ["resnet", "convnext", "convnext-ln"]},
        "expansion": {"type": "integer", "minimum": 1, "maximum": 16},
        "dims": {"type": "array", "minItems": 3, "maxItems": 3,
                 "items": {"type": "integer", "minimum": 1, "maximum": 4096}},
        "depth": {"type": "integer", "minimum": 0, "maximum": 64},
        "num_aus": {"type": "integer", "const": len(AU_NAMES)},
        "image_size": _IMAGE_SIZE,
    },
}
#: The rig's config (`exprengine.models.rig.RigConfig`); `RigConfig.from_dict` checks it again
#: (its own bounds) when a backend rebuilds the rig.
RIG_CONFIG: dict = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "family", "image_size", "flow_grid", "num_aus", "version"],
    "properties": {
        "name": _NAME,
        "family": {"const": "rig"},
        "image_size": _IMAGE_SIZE,
        "flow_grid": {"type": "integer", "minimum": 16, "maximum": 256},
        "num_aus": {"type": "integer", "const": len(AU_NAMES)},
        "version": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
}
#: A LATS age generator's config (`exprengine.models.lats.LATSConfig`); `LATSConfig.from_dict`
#: checks it again (the widths' consistency) when the manifest is validated.
_WIDTHS = {"type": "array", "minItems": 1, "maxItems": 10, "items": {"type": "integer", "minimum": 1, "maximum": 4096}}
LATS_CONFIG: dict = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "family", "image_size", "encoder_dims", "encoder_blocks", "decoder_dims", "decoder_blocks",
                 "age_encoder_dims", "mapping_dim", "mapping_layers", "style_dim", "num_classes", "code_per_class",
                 "discriminator_dims"],
    "properties": {
        "name": _NAME,
        "family": {"const": "lats"},
        "image_size": _IMAGE_SIZE,
        "encoder_dims": _WIDTHS, "decoder_dims": _WIDTHS, "age_encoder_dims": _WIDTHS, "discriminator_dims": _WIDTHS,
        "encoder_blocks": {"type": "integer", "minimum": 0, "maximum": 32},
        "decoder_blocks": {"type": "integer", "minimum": 0, "maximum": 32},
        "mapping_dim": {"type": "integer", "minimum": 1, "maximum": 4096},
        "mapping_layers": {"type": "integer", "minimum": 1, "maximum": 32},
        "style_dim": {"type": "integer", "minimum": 1, "maximum": 4096},
        "num_classes": {"type": "integer", "const": 6},
        "code_per_class": {"type": "integer", "minimum": 1, "maximum": 256},
    },
}
#: The graph's inputs: every expression engine takes the image and the AUs; the rig also the
#: landmarks (MediaPipe's 478-point mesh in crop pixels). Manifests written before this field:
#: GRAPH_INPUTS. A LATS engine has two graphs (`LATS_GRAPHS`); its `inputs` are theirs, in order.
GRAPH_INPUTS, RIG_INPUTS = ("image", "aus"), ("image", "aus", "landmarks")
LATS_INPUTS = ("image", "features", "style")
#: A LATS engine's two graphs, their inputs and outputs (the manifest's `graphs`):
#:   encoder: image float32 [N,3,S,S] in [-1,1] -> features float32 [N,C,S/4,S/4] (identity)
#:   decoder: features [N,C,S/4,S/4], style float32 [N,D] -> output float32 [N,3,S,S] in [-1,1] (tanh)
LATS_GRAPHS: dict[str, dict[str, list[str]]] = {
    "encoder": {"inputs": ["image"], "outputs": ["features"]},
    "decoder": {"inputs": ["features", "style"], "outputs": ["output"]},
}
#: The artifact role of a LATS engine's class styles (float32 [6, D], `LATSGenerator.class_styles()`).
CLASS_STYLES_ROLE = "class-styles"
_GRAPH = {"type": "object", "additionalProperties": False, "required": ["inputs", "outputs"],
          "properties": {"inputs": {"type": "array", "minItems": 1, "maxItems": 4, "items": _NAME},
                         "outputs": {"type": "array", "minItems": 1, "maxItems": 4, "items": _NAME}}}

SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "exprengine engine manifest (engine.json), format version 1",
    "type": "object",
    "additionalProperties": False,
    "required": ["model", "model_config", "weights_sha256", "weights_source", "backend", "precision", "device",
                 "graph_outputs", "min_batch", "max_batch", "opt_batch", "image_size", "artifacts", "format",
                 "format_version"],
    "properties": {
        "model": _NAME,
        "model_config": {"oneOf": [GENERATOR_CONFIG, RIG_CONFIG, LATS_CONFIG]},
        "inputs": {"type": "array", "minItems": 2, "maxItems": 3, "uniqueItems": True,
                   "items": {"enum": list(dict.fromkeys(RIG_INPUTS + LATS_INPUTS))}},
        "graphs": {"type": "object", "additionalProperties": False,
                   "properties": {"encoder": _GRAPH, "decoder": _GRAPH}},
        "weights_sha256": _SHA256,
        "weights_source": _TEXT,
        "backend": _NAME,
        "precision": {"enum": ["fp32", "fp16"]},
        "device": {"enum": ["cpu", "cuda"]},
        "graph_outputs": {"enum": ["blended", "heads", "image"]},
        "min_batch": _BATCH,
        "max_batch": _BATCH,
        "opt_batch": _BATCH,
        "image_size": _IMAGE_SIZE,
        "artifacts": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 16,
            "propertyNames": {"pattern": ARTIFACT_NAME},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["bytes", "sha256"],
                "properties": {"bytes": {"type": "integer", "minimum": 0, "maximum": MAX_ARTIFACT_BYTES},
                               "sha256": _SHA256,
                               "role": _NAME},
            },
        },
        "versions": {"type": "object", "maxProperties": 64, "additionalProperties": _TEXT},
        "verification": {
            "type": "object",
            "additionalProperties": False,
            "dependentRequired": {"max_rel_error": ["batch"], "batch": ["max_rel_error"]},
            "properties": {"max_rel_error": {"type": "number", "minimum": 0},
                           "batch": _BATCH, "tolerance": {"type": "number", "minimum": 0},
                           "reference": _TEXT},
        },
        "au_order": {"type": "array", "maxItems": 64, "items": {"type": "string", "maxLength": 16}},
        "au_scale": {"type": "number"},
        "created": {"type": "string", "maxLength": 64},
        "format": {"const": FORMAT},
        "format_version": {"type": "integer", "const": FORMAT_VERSION},
    },
}


def _validator():
    from jsonschema import Draft202012Validator, validators

    # JSON integers only: neither true/false nor 1.0 passes as an integer
    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    return validators.extend(Draft202012Validator, type_checker=checker)(SCHEMA)


def schema_error(raw) -> str | None:
    """None when `raw` (parsed engine.json) fits `SCHEMA`, else one line saying where and why."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(raw))
    if error is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                    for i, p in enumerate(error.absolute_path)) or "the top level"
    message = " ".join(error.message.split())
    shown = repr(error.instance)
    if len(shown) > 40 and message.startswith(shown):      # a long value: say what it is, not all of it
        message = f"{shown[:24]}... ({type(error.instance).__name__} of {len(shown)} characters)" + \
            message[len(shown):]
    if len(message) > 160:
        message = message[:150] + " ..."
    return f"{where}: {message}"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of the file at `path` as 64 lowercase hex digits, read in blocks of `chunk` bytes.
    OSError (missing, unreadable) passes through.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_verified(directory: Path, name: str, expected: dict, keep: bool = True) -> bytes:
    """The bytes of artifact `name`, checked against `expected` ({bytes, sha256}) on those bytes.

    The file must be a regular file reached inside `directory` (a symbolic link may point
    only within it); it is opened once (not following a link at the last step), its size
    checked before reading, and the sha256 taken over exactly the bytes returned, so a file
    swapped or rewritten after the check cannot be what gets deserialised. keep=False hashes
    in chunks and returns b"" (for verifying without loading). EngineError on any mismatch.
    """
    if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", "..") \
            or Path(name).is_absolute() or ".." in Path(name).parts:
        raise EngineError(f"engine {directory} names an artifact outside itself: {name}")
    root = directory.resolve()
    path = root / name
    try:
        is_link = path.is_symlink()
        target = path.resolve(strict=True)
    except FileNotFoundError:
        raise EngineError(f"engine {directory} is missing its artifact {name}") from None
    except (OSError, RuntimeError) as e:
        raise EngineError(f"engine artifact {directory / name} cannot be read ({type(e).__name__})") from None
    if root not in target.parents:
        raise EngineError(f"engine artifact {directory / name} is a link to {target}, outside the engine "
                          "directory; an engine's artifacts must be files inside it")
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise EngineError(f"engine artifact {directory / name} cannot be opened "
                          f"({e.strerror or type(e).__name__}{'; it was a link' if is_link else ''})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise EngineError(f"engine artifact {directory / name} is not a regular file")
        size = expected["bytes"]
        if st.st_size != size:
            raise EngineError(f"engine artifact {directory / name} is truncated or altered "
                              f"({st.st_size} bytes, the manifest says {size})")
        h = hashlib.sha256()
        if keep:
            data = f.read(size + 1)
            h.update(data)
            got = len(data)
        else:
            data, got = b"", 0
            while block := f.read(1 << 20):
                h.update(block)
                got += len(block)
    if got != size:
        raise EngineError(f"engine artifact {directory / name} changed while being read "
                          f"({got} bytes, the manifest says {size})")
    if h.hexdigest() != expected["sha256"]:
        raise EngineError(f"engine artifact {directory / name} is corrupted (sha256 does not match the manifest)")
    return data


@dataclass
class Manifest:
    """The contents of `engine.json` (module docstring; schema `SCHEMA`): the model and its config,
    the weights' sha256 and source, backend, precision ("fp32" | "fp16"), device ("cpu" |
    "cuda"), graph outputs ("blended" | "heads"; "image" for a LATS engine's decoder, its tanh
    image), batch range and image size (pixels, square), the artifacts ({name: {bytes, sha256,
    role}}), the graph's inputs, for a LATS engine its two graphs (`graphs`: `LATS_GRAPHS`, the
    class styles being the artifact of role `CLASS_STYLES_ROLE`, whose entry holds their
    sha256), the versions the artifacts depend on, the verification against eager PyTorch, the
    AU vocabulary and scale, and the build time (UTC, ISO 8601). `Manifest.read` validates one
    from disk; build writes one with `write`.
    """

    model: str                       # registry name
    model_config: dict               # GeneratorConfig, RigConfig or LATSConfig .to_dict()
    weights_sha256: str
    weights_source: str              # "random-init seed=0", or the checkpoint's file name
    backend: str
    precision: str                   # "fp32" | "fp16"
    device: str                      # "cpu" | "cuda"
    graph_outputs: str               # "blended" | "heads" | "image" (LATS)
    min_batch: int
    max_batch: int
    opt_batch: int
    image_size: int
    artifacts: dict[str, dict] = field(default_factory=dict)    # name -> {bytes, sha256, role}
    inputs: list[str] = field(default_factory=lambda: list(GRAPH_INPUTS))   # the graph's inputs, in order
    graphs: dict[str, dict] = field(default_factory=dict)       # LATS: LATS_GRAPHS; others: none
    versions: dict[str, str] = field(default_factory=dict)      # what the artifacts depend on
    verification: dict = field(default_factory=dict)            # check against eager PyTorch
    au_order: list[str] = field(default_factory=lambda: list(AU_NAMES))
    au_scale: float = AU_SCALE
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def needs_landmarks(self) -> bool:
        """The engine's graph takes the face mesh (the rig): `inputs` ends with "landmarks"."""
        return "landmarks" in self.inputs

    @property
    def is_rig(self) -> bool:
        """The engine runs the rig (its model config's family is "rig"), not a generator."""
        return self.model_config.get("family") == "rig"

    @property
    def is_lats(self) -> bool:
        """The engine runs a LATS age generator (its model config's family is "lats"): two graphs,
        `encoder` and `decoder` (`LATS_GRAPHS`), and the stored class styles."""
        return self.model_config.get("family") == "lats"

    @property
    def kind(self) -> str:
        """What the engine does: "age" (a LATS generator), "rig" (the AU rig) or "expression"."""
        return "age" if self.is_lats else ("rig" if self.is_rig else "expression")

    @property
    def random_init(self) -> bool:
        """The engine's weights were randomly initialised, not trained (`weights_source` says
        "random-init ...").
        """
        return self.weights_source.startswith("random-init")

    def record_artifact(self, directory: Path, name: str, role: str | None = None) -> None:
        """List the file `directory/name` as an artifact: its size in bytes, its sha256 and, when given,
        its `role` (e.g. "onnx-model", "plan"). OSError passes through when it cannot be read.
        """
        p = directory / name
        entry = {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        if role:
            entry["role"] = role
        self.artifacts[name] = entry

    def write(self, directory: Path) -> Path:
        """Write the manifest as `directory/engine.json` (indented JSON), replacing any; returns the path.
        Not atomic by itself: build writes into a directory that appears whole (files.atomic_directory).
        """
        path = directory / MANIFEST_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    # --- artifacts by role -------------------------------------------------------------------
    def artifact_name(self, role: str, legacy_name: str, directory: Path | str = "") -> str:
        """The listed artifact that plays `role`; EngineError when none (or several) is listed.

        A manifest without roles (written before they existed) may list the role's
        conventional file `legacy_name`; a file that is not listed is never used.
        """
        named = [n for n, info in self.artifacts.items() if info.get("role") == role]
        if not named and not any("role" in info for info in self.artifacts.values()) \
                and legacy_name in self.artifacts:
            named = [legacy_name]
        if len(named) != 1:
            listed = ", ".join(self.artifacts) or "nothing"
            raise EngineError(f"engine {directory} {'lists no' if not named else 'lists several'} {role} "
                              f"artifact (it lists {listed}); files it does not list are never loaded")
        return named[0]

    def artifact_bytes(self, directory: str | Path, role: str, legacy_name: str) -> tuple[str, bytes]:
        """(name, bytes) of the artifact playing `role`, verified (size, sha256) on the bytes returned."""
        directory = Path(directory)
        name = self.artifact_name(role, legacy_name, directory)
        return name, read_verified(directory, name, self.artifacts[name])

    @property
    def has_roles(self) -> bool:
        """Some artifact records its role (manifests written before roles existed record none)."""
        return any("role" in info for info in self.artifacts.values())

    # --- reading -----------------------------------------------------------------------------
    def describe(self, directory: str | Path = "") -> list[tuple[str, str]]:
        """(label, value) rows saying what the engine is, for people (`exprengine info`): model,
        weights and their sha256, backend, graph outputs, batch range, image size, artifacts
        (MB), build time, versions, verification (max relative error vs eager PyTorch)."""
        rows = [
            ("engine", str(directory)), ("model", self.model), ("weights", self.weights_source),
            ("weights sha256", self.weights_sha256[:16] + "..."),
            ("backend", f"{self.backend} ({self.device}, {self.precision})"), ("graph outputs", self.graph_outputs),
            ("batch", f"{self.min_batch}..{self.max_batch} (opt {self.opt_batch})"),
            ("image", f"{self.image_size}x{self.image_size} RGB"),
            ("artifacts", ", ".join(f"{k} ({v['bytes'] / 1e6:.1f} MB)" for k, v in self.artifacts.items())),
            ("built", self.created), ("depends on", ", ".join(f"{k} {v}" for k, v in self.versions.items())),
        ]
        if self.is_lats:
            rows.insert(5, ("graphs", "; ".join(f"{g}: {', '.join(io['inputs'])} -> {', '.join(io['outputs'])}"
                                                  for g, io in self.graphs.items())))
            styles = [(n, a) for n, a in self.artifacts.items() if a.get("role") == CLASS_STYLES_ROLE]
            if styles:
                rows.insert(6, ("class styles", f"{styles[0][0]} (sha256 {styles[0][1]['sha256'][:16]}...)"))
        if self.verification:
            v = self.verification
            rows.append(("verified", f"max relative error {v['max_rel_error']:.2e} vs eager PyTorch at batch {v['batch']}"))
        if self.random_init:
            rows.append(("note", "randomly initialised weights: not a trained model"))
        return rows

    @classmethod
    def read(cls, directory: str | Path, verify_artifacts: bool = True) -> "Manifest":
        """Read and validate `engine.json` (schema, bounds) and the artifacts' integrity; EngineError if bad."""
        directory = Path(directory)
        if not directory.exists():
            raise EngineError(f"engine {directory} does not exist (build one with `exprengine build`)")
        if not directory.is_dir():
            raise EngineError(f"engine {directory} is not a directory (an engine is a directory with {MANIFEST_NAME})")
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise EngineError(f"{directory} is not an engine: it has no {MANIFEST_NAME}")
        try:
            with open(path, "rb") as f:
                text = f.read(MAX_MANIFEST_BYTES + 1)
        except OSError as e:
            raise EngineError(f"engine manifest {path} cannot be read ({e.strerror or type(e).__name__})") from None
        if len(text) > MAX_MANIFEST_BYTES:
            raise EngineError(f"engine manifest {path} is over {MAX_MANIFEST_BYTES // 1024} kB; "
                              "it is not an exprengine manifest")
        try:
            raw = json.loads(text.decode("utf-8"))
        except RecursionError:
            raise EngineError(f"engine manifest {path} is corrupt (nested too deeply)") from None
        except (UnicodeDecodeError, ValueError) as e:     # JSONDecodeError, or an integer of too many digits
            raise EngineError(f"engine manifest {path} is corrupt ({type(e).__name__})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise EngineError(f"{path} is not an exprengine engine manifest")
        version = raw.get("format_version")
        if type(version) is not int or version != FORMAT_VERSION:
            shown = repr(version) if type(version) in (int, str) and len(str(version)) < 20 else "(invalid)"
            raise EngineError(f"engine {directory} has format version {shown}, "
                              f"this exprengine reads version {FORMAT_VERSION}; rebuild it")
        artifacts = raw.get("artifacts")
        for name in artifacts if isinstance(artifacts, dict) else ():
            if not re.fullmatch(ARTIFACT_NAME, name):
                shown = name if len(name) <= 80 else name[:77] + "..."
                raise EngineError(f"engine {directory} names an artifact outside itself or not a plain file "
                                  f"name: {shown!r}")
        try:
            problem = schema_error(raw)
        except RecursionError:
            problem = "nested too deeply"
        if problem:
            raise EngineError(f"engine manifest {path} is invalid: {problem}")
        manifest = cls(**raw)
        manifest.validate(directory, verify_artifacts)
        return manifest

    def validate(self, directory: Path, verify_artifacts: bool = True) -> None:
        """The checks between fields, then (verify_artifacts) every artifact's size and sha256."""
        if self.image_size != self.model_config["image_size"]:
            raise EngineError(f"engine {directory} says image size {self.image_size}, but its model "
                              f"{self.model_config['name']} takes {self.model_config['image_size']}")
        if self.model != self.model_config["name"]:
            raise EngineError(f"engine {directory} says model {self.model}, but its model config is "
                              f"{self.model_config['name']}")
        expected_inputs = list(LATS_INPUTS if self.is_lats else RIG_INPUTS if self.is_rig else GRAPH_INPUTS)
        if list(self.inputs) != expected_inputs:
            whose = "an age engine's graphs" if self.is_lats else f"a {'rig' if self.is_rig else 'generator'}"
            raise EngineError(f"engine {directory} says its graph takes {', '.join(self.inputs)}, but {whose} "
                              f"{'take' if self.is_lats else 'takes'} {', '.join(expected_inputs)}")
        if self.is_lats:
            from exprengine.errors import UserError
            from exprengine.models.lats import LATSConfig
            try:
                LATSConfig.from_dict(self.model_config)
            except UserError as e:
                raise EngineError(f"engine {directory} has an invalid LATS config ({e})") from None
            if self.graphs != LATS_GRAPHS or self.graph_outputs != "image":
                raise EngineError(f"engine {directory} is a LATS engine, whose graphs are an encoder (image -> "
                                  "features) and a decoder (features, style -> output image), but its manifest "
                                  "says otherwise")
        elif self.graphs or self.graph_outputs == "image":
            raise EngineError(f"engine {directory} lists LATS graphs or outputs, but its model is not a LATS model")
        if list(self.au_order) != list(AU_NAMES) or float(self.au_scale) != AU_SCALE:
            raise EngineError(f"engine {directory} uses another AU vocabulary or scale than this exprengine")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise EngineError(f"engine {directory} has an invalid batch range "
                              f"{self.min_batch}..{self.max_batch} (opt {self.opt_batch})")
        if not self.artifacts:
            raise EngineError(f"engine {directory} lists no artifacts")
        roles = [info["role"] for info in self.artifacts.values() if "role" in info]
        if len(roles) != len(set(roles)):
            raise EngineError(f"engine {directory} lists two artifacts for one role")
        if verify_artifacts:
            for name, info in self.artifacts.items():
                read_verified(directory, name, info, keep=False)


def base_versions() -> dict[str, str]:
    """What every engine depends on, for the manifest's `versions`: exprengine, Python, torch,
    NumPy and the machine's architecture (`platform.machine()`), as text.
    """
    import numpy
    import torch

    from exprengine import __version__
    return {"exprengine": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__, "machine": platform.machine()}
