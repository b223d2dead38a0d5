"""exprengine's own weights format: one safetensors file per model, for every model in the registry.

A `.safetensors` file (nothing in it is ever unpickled) whose string metadata holds

    format          "exprengine-weights"
    format_version  "1"
    config          json of the model's config.to_dict()  (rebuilds it: `models.build_model`)
    weights_sha256  tensors_sha256() of the state dict     (checked on every load)
    <extra keys>    json-encoded values given to save_weights(extra=...)

The rig (`exprengine.models.rig.FaceRig`) has no learned weights: its file holds no tensors,
its `config` is `RigConfig.to_dict()` and its `weights_sha256` is `rig_sha256(config)` (the
config and the rig's source), so a file written by another version of the rig is refused.
`model_sha256(model)` is that identity for either family.

Foreign checkpoints (GANimation's public layouts) are converted beside their model, in
`exprengine.models.ganimation`; this module is the one place our own format is read and written.
Writes go through `exprengine.files.write_bytes` (atomic).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from exprengine.errors import UserError
from exprengine.files import write_bytes
from exprengine.models import build_model, is_rig, model_config_from_dict

FORMAT = "exprengine-weights"
FORMAT_VERSION = "1"
_RESERVED_METADATA = ("format", "format_version", "config", "weights_sha256")


# --- hashing ------------------------------------------------------------------------------------
def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """The sha256 (64 lowercase hex digits) of named tensors of any dtype, shape and device: for
    each key in sorted order, the bytes of `key|dtype|shape|` (e.g. `stem.conv.weight|torch.float32|
    (64, 20, 7, 7)|`), then the tensor's raw bytes (contiguous, on the CPU, native byte order).
    Equal tensors give equal hashes on any machine of the same byte order; a changed value, dtype,
    shape or name changes the hash. This is the `weights_sha256` recorded in our weights files."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """`tensors_sha256` of `model.state_dict()` (parameters and buffers, whatever their device):
    equal weights give equal hashes anywhere. 64 lowercase hex digits."""
    return tensors_sha256(model.state_dict())


def model_sha256(model: nn.Module) -> str:
    """A model's identity for manifests and artifacts (64 lowercase hex digits): `weights_sha256`
    for a generator, and for the rig (no learned weights) `models.rig.rig_sha256` of its config
    (its config and the rig's source)."""
    if is_rig(model):
        from exprengine.models.rig import rig_sha256
        return rig_sha256(model.config)
    return weights_sha256(model)


# --- writing ------------------------------------------------------------------------------------
def save_weights(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write `model`'s weights (its state dict, each tensor as it is: dtype and shape kept, moved to
    the CPU) and config to `path` in our safetensors format, atomically through
    `exprengine.files.write_bytes` (a temporary file beside it, fsynced, then renamed over it;
    removed if anything fails). `model` is any registry model: an `AttentionGenerator`, or the
    rig (`FaceRig`), whose file holds no tensors, only its config and `model_sha256`.

    extra: more metadata, each value json-encoded (e.g. `{"model_card": {...}}`); its keys may not
    be one of format / format_version / config / weights_sha256 (ValueError: a programming error).
    Raises UserError when the file cannot be written (disk full, no such directory, ...)."""
    from safetensors.torch import save

    clash = sorted(set(extra or {}) & set(_RESERVED_METADATA))
    if clash:
        raise ValueError(f"extra metadata may not set {', '.join(clash)}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "config": json.dumps(model.config.to_dict()),
                "weights_sha256": model_sha256(model) if is_rig(model) else tensors_sha256(tensors)}
    metadata.update({str(k): json.dumps(v) for k, v in (extra or {}).items()})
    write_bytes(path, save(tensors, metadata=metadata))


# --- reading ------------------------------------------------------------------------------------
def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The string metadata (`{name: value}`, both str) of a safetensors file given as bytes: its
    JSON header's `__metadata__` (`{}` when it has none). The header is the file's first 8 bytes
    (its length, little-endian u64, at most 100 MiB here) then that many bytes of JSON.
    Raises ValueError for a header length out of range, JSON that does not parse, or metadata
    that is not a map of strings."""
    n = int.from_bytes(data[:8], "little")
    if len(data) < 8 or n > len(data) - 8 or n > 100 << 20:
        raise ValueError("header length out of range")
    header = json.loads(data[8:8 + n])
    metadata = (header.get("__metadata__") if isinstance(header, dict) else None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("metadata is not a string map")
    return metadata


def read_safetensors(path: str | os.PathLike, data: bytes | None = None) -> tuple[dict[str, str], dict]:
    """(metadata, tensors) of a safetensors file: its string metadata and its tensors by name
    (torch, on the CPU), from `path` or from its bytes `data` (then `path` only names them in
    messages). No pickle is involved. UserError (one sentence naming `path`) when it is not a
    readable safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_from_bytes
    from safetensors.torch import safe_open
    try:
        if data is not None:
            return safetensors_metadata(data), load_from_bytes(data)
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({first_line(e)})") from None


def load_weights(path: str | os.PathLike, data: bytes | None = None) -> nn.Module:
    """Rebuild the model saved by `save_weights` at `path`, on the CPU in eval mode, with the
    tensors' dtypes cast to the model's own (float32): an `AttentionGenerator`, or for a rig's
    file the rig (a `FaceRig`).

    Checks, each failing with a one-sentence UserError naming `path`: the file exists and is a
    readable safetensors file; its metadata says format "exprengine-weights" version "1" and
    holds a 64-hex-digit weights_sha256 and a valid model config; a generator's tensors hash to
    that sha256 and fit the config exactly (`load_strictly`: every key, every shape, finite
    floating-point values); a rig's file holds no tensors and its sha256 is this install's
    `rig_sha256` of its config (a file from another version of the rig is refused).

    data: the file's bytes, already read (and verified) by the caller; they are parsed from
    memory and `path` only names them in messages."""
    p = existing_file(path, "weights") if data is None else Path(path)
    metadata, tensors = read_safetensors(p, data)
    if metadata.get("format") != FORMAT:
        raise UserError(f"{p} is a safetensors file but not exprengine weights (no exprengine metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{p} has weights format version {metadata.get('format_version')!r}; "
                        f"this install reads version {FORMAT_VERSION}")
    expected = metadata.get("weights_sha256", "")
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise UserError(f"{p} has no valid weights_sha256 in its metadata")
    try:
        config = model_config_from_dict(json.loads(metadata["config"]))
        model = build_model(config)
    except UserError as e:
        raise UserError(f"{p} has an invalid model config ({e})") from None
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise UserError(f"{p} has a missing or invalid model config ({type(e).__name__}: {first_line(e)})") from None
    if is_rig(model):
        if tensors:
            raise UserError(f"{p} is a rig's file but holds {len(tensors)} tensors; the rig has no weights")
        if model_sha256(model) != expected:
            raise UserError(f"{p} was written by another version of the rig (its sha256 differs from this "
                            "install's rig); rebuild it")
        return model
    if tensors_sha256(tensors) != expected:
        raise UserError(f"weights {p} are corrupted (their sha256 does not match the one recorded in the file)")
    load_strictly(model, tensors, p)
    return model.eval()


def load_strictly(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: object) -> None:
    """`model.load_state_dict(strict=True)` with every problem as one UserError naming `source`
    (a path, or any label) and `model` (its config's name): missing keys, unexpected keys, shape
    mismatches (the first one's two shapes given), weights that are not dense floating-point
    tensors (sparse, meta, integer or bool), and NaN or infinite values after the cast to the
    model's own dtype (so a float64 too large for float32 is refused too). The values are copied
    into `model`, cast to its parameters' dtypes; nothing is loaded when any check fails."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshapen = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys ({', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])})")
    if misshapen:
        k = misshapen[0]
        problems.append(f"{len(misshapen)} shape mismatches ({k}: {tuple(state_dict[k].shape)} in the file, "
                        f"{tuple(own[k].shape)} in the model)")
    if problems:
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise UserError(f"checkpoint {source} does not fit model {name}: {'; '.join(problems)}")
    for k, v in state_dict.items():          # weights are real numbers: a dense float tensor, all finite
        if v.layout != torch.strided or v.is_meta or not v.is_floating_point():
            what = f"{v.layout} layout" if v.layout != torch.strided else "no data" if v.is_meta else f"dtype {v.dtype}"
            raise UserError(f"checkpoint {source} has weights that are not floating-point numbers ({k}: {what})")
        if not torch.isfinite(v.to(own[k].dtype)).all():       # also a float64 too large for float32
            raise UserError(f"checkpoint {source} has NaN or infinite weights ({k})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)


def existing_file(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path when it is an existing file; otherwise a UserError saying it is a directory
    or does not exist, `what` naming the file's role ("weights", "checkpoint")."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} path {p} is a directory, not a file")
    if not p.is_file():
        raise UserError(f"{what} file {p} does not exist")
    return p


def first_line(e: BaseException) -> str:
    """An exception's first sentence (at most 160 characters), for a one-line message; prefixed
    with the exception's type name when that sentence is shorter than 12 characters."""
    text = str(e).strip().splitlines()[0].split(". ")[0][:160] if str(e).strip() else ""
    return text if len(text) >= 12 else f"{type(e).__name__} {text}".strip()
