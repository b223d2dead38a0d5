"""Weights in and out: our safetensors format, and both public GANimation layouts.

**Our format** is one `.safetensors` file (nothing in it is ever unpickled) whose string
metadata holds

    format          "exprengine-weights"
    format_version  "1"
    config          json of GeneratorConfig.to_dict()     (rebuilds the generator)
    weights_sha256  weights_sha256() of the state dict    (checked on every load)
    <extra keys>    json-encoded values given to save_weights(extra=...)

The rig (`exprengine.models.rig.FaceRig`) has no learned weights: its file holds no tensors,
its `config` is `RigConfig.to_dict()` and its `weights_sha256` is `rig_sha256(config)` (the
config and the rig's source), so a file written by another version of the rig is refused.
`model_sha256(model)` is that identity for either family.

**Public PyTorch checkpoints** are read with `torch.load(weights_only=True)` only, as a plain
state dict or one wrapped under `state_dict` / `model` / `net_gen` / `G` / `generator`.
Two GANimation layouts exist; both map onto our generator, which has conv biases *and*
affine InstanceNorms, so the half a layout lacks is filled with the identity (conv bias 0,
or IN weight 1 / bias 0), which is exact: conv(x) + 0 and IN(x) * 1 + 0.

| ours                      | original (Pumarola, `main.*`) | re-implementation (`model.*`)  |
|---------------------------|-------------------------------|--------------------------------|
| stem.conv / stem.norm     | main.0 / main.1               | model.0 / -                    |
| down1.conv / down1.norm   | main.3 / main.4               | model.3 / -                    |
| down2.conv / down2.norm   | main.6 / main.7               | model.6 / -                    |
| blocks.k.conv1 / .norm1   | main.(9+k).main.0 / .main.1   | model.(9+k).conv_block.0 / -   |
| blocks.k.conv2 / .norm2   | main.(9+k).main.3 / .main.4   | model.(9+k).conv_block.3 / -   |
| up1.conv / up1.norm       | main.15 / main.16 (transposed)| model.15 / -                   |
| up2.conv / up2.norm       | main.18 / main.19 (transposed)| model.18 / -                   |
| color_head                | img_reg.0                     | color_top.0                    |
| attention_head            | attetion_reg.0 (sic)          | au_top.0                       |
| filled with the identity  | every conv bias (zeros)       | every IN weight (1), bias (0)  |

(k = 0..5.) The `module.` (DataParallel) and `_orig_mod.` (torch.compile) prefixes, in any
combination, are stripped from every key, and stale
InstanceNorm buffers (`running_mean`, `running_var`, `num_batches_tracked`, which old
PyTorch saved and current PyTorch rejects) are dropped.

Discriminators (no normalisation, so nothing to fill):

| ours                 | original             | re-implementation    |
|----------------------|----------------------|----------------------|
| trunk.{0,2,..,10}    | main.{0,2,..,10}     | model.{0,2,..,10}    |
| realness_head        | conv1                | dis_top              |
| au_head              | conv2                | aus_top              |
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from exprengine.errors import UserError
from exprengine.files import write_bytes
from exprengine.models import (AttentionGenerator, Discriminator, build_generator,
                               build_model, generator_config, is_rig, model_config_from_dict)

FORMAT = "exprengine-weights"
FORMAT_VERSION = "1"
ORIGINAL, REPLICATE, EXPRENGINE = "ganimation-original", "ganimation-replicate", "exprengine"
LAYOUTS = (ORIGINAL, REPLICATE, EXPRENGINE)
PUBLIC_LAYOUT_MODEL = "ganimation"          # the only architecture public checkpoints fit
WRAPPER_KEYS = ("state_dict", "model", "net_gen", "G", "generator")
STALE_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_RESERVED_METADATA = ("format", "format_version", "config", "weights_sha256")
_StateDict = dict[str, torch.Tensor]


# --- hashing ------------------------------------------------------------------------------------
def _tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the state dict: for each key in sorted order, `key|dtype|shape|` then the
    tensor's raw bytes (contiguous, on the CPU). Equal weights give equal hashes anywhere."""
    return _tensors_sha256(model.state_dict())


def model_sha256(model: nn.Module) -> str:
    """A model's identity for manifests and artifacts: `weights_sha256` for a generator, and for
    the rig (no learned weights) `rig_sha256` of its config (its config and the rig's source)."""
    if is_rig(model):
        from exprengine.models.rig import rig_sha256
        return rig_sha256(model.config)
    return weights_sha256(model)


# --- our own format -----------------------------------------------------------------------------
def save_weights(model: AttentionGenerator, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write `model`'s weights and config to `path` as safetensors, atomically (a temporary
    file beside it, fsynced, then renamed over it; removed if anything fails). The rig's file
    holds no tensors: its config, and `model_sha256` as its weights_sha256."""
    from safetensors.torch import save

    clash = sorted(set(extra or {}) & set(_RESERVED_METADATA))
    if clash:
        raise ValueError(f"extra metadata may not set {', '.join(clash)}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "config": json.dumps(model.config.to_dict()),
                "weights_sha256": model_sha256(model) if is_rig(model) else _tensors_sha256(tensors)}
    metadata.update({str(k): json.dumps(v) for k, v in (extra or {}).items()})
    write_bytes(path, save(tensors, metadata=metadata))


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors file given as bytes (its JSON header's `__metadata__`)."""
    n = int.from_bytes(data[:8], "little")
    if len(data) < 8 or n > len(data) - 8 or n > 100 << 20:
        raise ValueError("header length out of range")
    header = json.loads(data[8:8 + n])
    metadata = (header.get("__metadata__") if isinstance(header, dict) else None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("metadata is not a string map")
    return metadata


def load_weights(path: str | os.PathLike, data: bytes | None = None) -> AttentionGenerator:
    """Rebuild a generator (eval mode) from a file written by `save_weights`, checking its
    metadata, that the weights fit the config exactly, and their sha256. A rig's file rebuilds
    the rig (a `FaceRig`): it must hold no tensors, and its weights_sha256 must be this
    install's `rig_sha256` of its config (a file from another version of the rig is refused).

    data: the file's bytes, already read (and verified) by the caller; they are parsed from
    memory and `path` only names them in messages."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_from_bytes
    from safetensors.torch import safe_open

    p = _existing_file(path, "weights") if data is None else Path(path)
    try:
        if data is not None:
            metadata, tensors = safetensors_metadata(data), load_from_bytes(data)
        else:
            with safe_open(str(p), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{p} is not a readable safetensors file ({_first_line(e)})") from None
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
        raise UserError(f"{p} has a missing or invalid model config ({type(e).__name__}: {_first_line(e)})") from None
    if is_rig(model):
        if tensors:
            raise UserError(f"{p} is a rig's file but holds {len(tensors)} tensors; the rig has no weights")
        if model_sha256(model) != expected:
            raise UserError(f"{p} was written by another version of the rig (its sha256 differs from this "
                            "install's rig); rebuild it")
        return model
    if _tensors_sha256(tensors) != expected:
        raise UserError(f"weights {p} are corrupted (their sha256 does not match the one recorded in the file)")
    _load_strictly(model, tensors, p)
    return model.eval()


# --- public layouts -----------------------------------------------------------------------------
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _strip_wrappers(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        key = key.removeprefix("module.").removeprefix("_orig_mod.")
    return key


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> _StateDict:
    """Drop the prefixes that model wrappers put on every key, in any order and nesting:
    `module.` (DataParallel / DistributedDataParallel) and `_orig_mod.` (torch.compile), so
    `_orig_mod.module.x`, `module._orig_mod.x` and `x` are all `x`."""
    return {_strip_wrappers(k): v for k, v in state_dict.items()}


def _clean(state_dict: Mapping[str, torch.Tensor]) -> _StateDict:
    """Prefix stripped, stale normalisation buffers dropped."""
    return {k: v for k, v in strip_module_prefix(state_dict).items() if not k.endswith(STALE_BUFFERS)}


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Which generator layout a state dict is in: `ganimation-original`, `ganimation-replicate`
    or `exprengine` (told by its head names, or its residual blocks' names)."""
    keys = set(strip_module_prefix(state_dict))
    tops = {k.partition(".")[0] for k in keys}
    if tops & {"img_reg", "attetion_reg"} or "main.9.main.0.weight" in keys:
        return ORIGINAL
    if tops & {"color_top", "au_top"} or "model.9.conv_block.0.weight" in keys:
        return REPLICATE
    if {"stem.conv.weight", "color_head.weight"} <= keys:
        return EXPRENGINE
    sample = ", ".join(sorted(keys)[:4]) or "none"
    if tops & {"conv1", "dis_top", "realness_head"}:
        raise UserError(f"this is a discriminator checkpoint (keys {sample}), not a generator")
    raise UserError(f"unrecognised generator checkpoint layout: unexpected keys {sample}; expected "
                    "GANimation's original (main.*, img_reg), its re-implementation (model.*, color_top) "
                    "or exprengine's own")


def _conv_norm_pairs(trunk: str, inner: str) -> list[tuple[str, str, str, str, bool]]:
    """(public conv, public norm, our conv, our norm, transposed) for every conv + IN pair."""
    pairs = [(f"{trunk}.{i}", f"{trunk}.{i + 1}", f"{unit}.conv", f"{unit}.norm", unit.startswith("up"))
             for i, unit in ((0, "stem"), (3, "down1"), (6, "down2"), (15, "up1"), (18, "up2"))]
    for k in range(6):
        block = f"{trunk}.{9 + k}.{inner}"
        pairs += [(f"{block}.0", f"{block}.1", f"blocks.{k}.conv1", f"blocks.{k}.norm1", False),
                  (f"{block}.3", f"{block}.4", f"blocks.{k}.conv2", f"blocks.{k}.norm2", False)]
    return pairs


_PUBLIC_GENERATORS = {
    ORIGINAL: (_conv_norm_pairs("main", "main"), {"img_reg.0": "color_head", "attetion_reg.0": "attention_head"}),
    REPLICATE: (_conv_norm_pairs("model", "conv_block"), {"color_top.0": "color_head", "au_top.0": "attention_head"}),
}


def convert_generator_state_dict(state_dict: Mapping[str, torch.Tensor], layout: str) -> _StateDict:
    """Map a generator state dict in `layout` onto our key names (see the module's table), with
    what the layout lacks filled as the identity: conv bias 0 / IN weight 1, bias 0, each sized
    from its conv's weight. A key that fits no layer raises UserError."""
    sd = _clean(state_dict)
    if layout == EXPRENGINE:
        return sd
    if layout not in _PUBLIC_GENERATORS:
        raise UserError(f"unknown checkpoint layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    pairs, heads = _PUBLIC_GENERATORS[layout]
    modules = dict(heads)
    for public_conv, public_norm, conv, norm, _ in pairs:
        modules[public_conv], modules[public_norm] = conv, norm
    out: _StateDict = {}
    unknown = []
    for key, value in sd.items():
        module, _, leaf = key.rpartition(".")
        if module in modules and leaf in ("weight", "bias"):
            out[f"{modules[module]}.{leaf}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise UserError(f"{len(unknown)} checkpoint keys fit no layer of the {layout} layout "
                        f"({', '.join(unknown[:3])})")
    for _, _, conv, norm, transposed in pairs:
        weight = out.get(f"{conv}.weight")
        if weight is None:
            continue                        # reported as missing when loaded
        if weight.ndim != 4:
            raise UserError(f"checkpoint weight {conv}.weight ({layout}) has shape {tuple(weight.shape)}, "
                            "not the 4 dimensions of a convolution")
        channels = weight.shape[1] if transposed else weight.shape[0]
        out.setdefault(f"{conv}.bias", weight.new_zeros(channels))
        out.setdefault(f"{norm}.weight", weight.new_ones(channels))
        out.setdefault(f"{norm}.bias", weight.new_zeros(channels))
    return out


def convert_discriminator_state_dict(state_dict: Mapping[str, torch.Tensor]) -> _StateDict:
    """Map a discriminator state dict (original, re-implementation or ours) onto our key names:
    `main.i` / `model.i` -> `trunk.i`; `conv1` / `dis_top` -> `realness_head`;
    `conv2` / `aus_top` -> `au_head`."""
    sd = _clean(state_dict)
    keys = set(sd)
    if "realness_head.weight" in keys:
        return sd
    if "conv1.weight" in keys or "conv2.weight" in keys:
        trunk, heads = "main", {"conv1": "realness_head", "conv2": "au_head"}
    elif "dis_top.weight" in keys or "aus_top.weight" in keys:
        trunk, heads = "model", {"dis_top": "realness_head", "aus_top": "au_head"}
    else:
        raise UserError(f"unrecognised discriminator checkpoint layout (keys {', '.join(sorted(keys)[:4])})")
    out: _StateDict = {}
    for key, value in sd.items():
        module, _, leaf = key.rpartition(".")
        if module in heads:
            out[f"{heads[module]}.{leaf}"] = value
        elif re.fullmatch(rf"{trunk}\.\d+", module):
            out[f"trunk.{module.partition('.')[2]}.{leaf}"] = value
        else:
            raise UserError(f"discriminator checkpoint key {key} fits no layer")
    return out


# --- reading files ------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    """An exception's first sentence, for a one-line message."""
    text = str(e).strip().splitlines()[0].split(". ")[0][:160] if str(e).strip() else ""
    return text if len(text) >= 12 else f"{type(e).__name__} {text}".strip()


def _existing_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} path {p} is a directory, not a file")
    if not p.is_file():
        raise UserError(f"{what} file {p} does not exist")
    return p


def _looks_like_safetensors(p: Path) -> bool:
    """A safetensors file starts with a little-endian u64 header size, then a JSON object."""
    try:
        with open(p, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < p.stat().st_size


def load_state_dict(path: str | os.PathLike) -> _StateDict:
    """The state dict in a PyTorch file (plain, or wrapped under one of WRAPPER_KEYS), read with
    `torch.load(weights_only=True)` so that no pickled code is ever run."""
    p = _existing_file(path, "checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol")
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = (f"it references the Python object {refused.group(1)}" if refused
                else "it is not a plain state dict (or is truncated or corrupt)")
        raise UserError(f"refusing to unpickle {p}: {what}; only tensors are loaded") from None
    except Exception as e:      # torch.load raises almost anything on a file that is not a checkpoint
        raise UserError(f"{p} is not a readable PyTorch checkpoint (truncated or corrupt: {_first_line(e)})") from None
    if isinstance(obj, dict):
        for wrapper in WRAPPER_KEYS:
            if isinstance(obj.get(wrapper), dict) and obj[wrapper]:
                obj = obj[wrapper]
                break
    if not (isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in obj.items())):
        if isinstance(obj, dict):
            found = f"a dict with keys {', '.join(map(str, list(obj)[:5]))}" if obj else "an empty dict"
        else:
            found = f"a {type(obj).__name__}"
        raise UserError(f"{p} holds {found}, not a state dict of tensors "
                        f"(plain or under one of: {', '.join(WRAPPER_KEYS)})")
    return obj


def _load_strictly(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: object) -> None:
    """load_state_dict(strict=True), with missing / unexpected / misshapen keys as one UserError."""
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


def import_checkpoint(path: str | os.PathLike, model_name: str = PUBLIC_LAYOUT_MODEL) -> AttentionGenerator:
    """A generator (eval mode) from our `.safetensors` or a PyTorch file in either public
    GANimation layout (these fit only `ganimation`) or our own key names."""
    config = generator_config(model_name)           # unknown names fail before any reading
    p = _existing_file(path, "checkpoint")
    if p.suffix.lower() == ".safetensors" or _looks_like_safetensors(p):
        model = load_weights(p)
        if model.config.name != model_name:
            raise UserError(f"{p} holds a {model.config.name} generator, not {model_name}; "
                            f"use --model {model.config.name}")
        return model
    state_dict = load_state_dict(p)
    layout = detect_layout(state_dict)
    if layout != EXPRENGINE and model_name != PUBLIC_LAYOUT_MODEL:
        raise UserError(f"{p} is a public GANimation checkpoint ({layout}): it fits --model "
                        f"{PUBLIC_LAYOUT_MODEL}, not {model_name}")
    model = build_generator(config)
    _load_strictly(model, convert_generator_state_dict(state_dict, layout), p)
    return model.eval()


def import_discriminator(path: str | os.PathLike) -> Discriminator:
    """A 128x128 discriminator (eval mode) from a PyTorch file in either public layout or ours."""
    state_dict = convert_discriminator_state_dict(load_state_dict(path))
    model = Discriminator()
    _load_strictly(model, state_dict, path)
    return model.eval()
