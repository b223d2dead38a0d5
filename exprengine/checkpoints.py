"""Weights in and out: our safetensors format, and both public GANimation layouts.

Our format: one `.safetensors` file whose metadata holds the generator's JSON config and
the weights' sha256. Nothing is ever unpickled from it.

Public PyTorch checkpoints are read with `torch.load(weights_only=True)` only. Two layouts
exist (SPEC section 3); both map onto our generator, which has conv biases *and* affine
InstanceNorms, so the half a layout lacks is filled with the identity (bias 0, IN 1/0):

| ours                     | original GANimation (`main.*`)   | re-implementation (`model.*`)    |
|--------------------------|----------------------------------|----------------------------------|
| stem.conv / stem.norm    | main.0 / main.1                  | model.0 / (no IN params)         |
| down1.conv / down1.norm  | main.3 / main.4                  | model.3 / -                      |
| down2.conv / down2.norm  | main.6 / main.7                  | model.6 / -                      |
| blocks.k.conv1 / norm1   | main.(9+k).main.0 / .main.1      | model.(9+k).conv_block.0 / -     |
| blocks.k.conv2 / norm2   | main.(9+k).main.3 / .main.4      | model.(9+k).conv_block.3 / -     |
| up1.conv / up1.norm      | main.15 / main.16                | model.15 / -                     |
| up2.conv / up2.norm      | main.18 / main.19                | model.18 / -                     |
| color_head               | img_reg.0                        | color_top.0                      |
| attention_head           | attetion_reg.0 (sic)             | au_top.0                         |

Convs are bias-free in the original and have biases in the re-implementation. A
`module.` prefix (DataParallel) is stripped; stale InstanceNorm running statistics are
dropped. Discriminators: original `main.{0,2,..,10}`, `conv1`, `conv2`; re-implementation
`model.{0,2,..,10}`, `dis_top`, `aus_top` -> ours `trunk.*`, `realness_head`, `au_head`.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from exprengine.errors import UserError
from exprengine.models import AttentionGenerator, Discriminator, GeneratorConfig, build_generator, create_generator

FORMAT = "exprengine-weights"
STALE_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_TRUNK_UNITS = {0: "stem", 3: "down1", 6: "down2", 15: "up1", 18: "up2"}   # conv index -> our unit
_BLOCKS = range(9, 15)


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the state dict: sorted keys, each with dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --- our own format -------------------------------------------------------------------------
def save_weights(model: AttentionGenerator, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write weights + config as safetensors, atomically."""
    from safetensors.torch import save_file

    from exprengine.media import atomic_output
    meta = {"format": FORMAT, "format_version": "1", "config": json.dumps(model.config.to_dict()),
            "weights_sha256": weights_sha256(model)}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_weights(path: str | os.PathLike) -> AttentionGenerator:
    """Rebuild a generator from our safetensors file, verifying its hash."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open
    p = _existing_file(path, "weights")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{p} is not a readable safetensors file ({str(e).splitlines()[0]})") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise UserError(f"{p} is a safetensors file but not exprengine weights (no config in its metadata)")
    try:
        config = GeneratorConfig.from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"{p} has an invalid model config ({e})") from None
    model = build_generator(config)
    _load_strict(model, tensors, p)
    if meta.get("weights_sha256") and weights_sha256(model) != meta["weights_sha256"]:
        raise UserError(f"weights {p} are corrupted (sha256 does not match the one recorded in the file)")
    return model.eval()


# --- public layouts ----------------------------------------------------------------------------
def strip_module_prefix(state_dict: dict) -> dict:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def detect_layout(state_dict: dict) -> str:
    keys = set(strip_module_prefix(state_dict))
    if "attetion_reg.0.weight" in keys or "img_reg.0.weight" in keys:
        return "ganimation-original"
    if "color_top.0.weight" in keys or "au_top.0.weight" in keys:
        return "ganimation-replicate"
    if "color_head.weight" in keys and "stem.conv.weight" in keys:
        return "exprengine"
    sample = ", ".join(sorted(keys)[:4])
    raise UserError(f"unrecognised checkpoint layout (keys like {sample}); expected GANimation's "
                    "original or re-implementation layout, or exprengine's own")


def convert_generator_state_dict(state_dict: dict, layout: str) -> dict:
    """Map a public-layout generator state dict onto our key names (see the module table)."""
    sd = {k: v for k, v in strip_module_prefix(state_dict).items() if not k.endswith(STALE_BUFFERS)}
    if layout == "exprengine":
        return sd
    if layout not in ("ganimation-original", "ganimation-replicate"):
        raise UserError(f"unknown checkpoint layout {layout!r}")
    original = layout == "ganimation-original"
    trunk, inner = ("main", "main") if original else ("model", "conv_block")
    heads = {"img_reg.0": "color_head", "attetion_reg.0": "attention_head"} if original else \
        {"color_top.0": "color_head", "au_top.0": "attention_head"}
    out: dict[str, torch.Tensor] = {}
    units: dict[str, str] = {}
    for i, unit in _TRUNK_UNITS.items():
        units[f"{trunk}.{i}"] = f"{unit}.conv"
        units[f"{trunk}.{i + 1}"] = f"{unit}.norm"
    for b in _BLOCKS:
        for j, ours in ((0, "conv1"), (1, "norm1"), (3, "conv2"), (4, "norm2")):
            units[f"{trunk}.{b}.{inner}.{j}"] = f"blocks.{b - 9}.{ours}"
    units.update(heads)
    unknown = []
    for key, value in sd.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in units:
            out[f"{units[prefix]}.{leaf}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise UserError(f"checkpoint has {len(unknown)} keys that fit no layer of the {layout} layout "
                        f"({', '.join(unknown[:3])})")
    return out


def fill_identity(state_dict: dict, template: dict, layout: str) -> dict:
    """Add what a public layout lacks, as the identity, with the target's shapes: zero conv
    biases (original layout) or InstanceNorm weight 1 / bias 0 (re-implementation)."""
    out = dict(state_dict)
    for key, t in template.items():
        if key in out:
            continue
        layer, _, leaf = key.rpartition(".")
        kind = layer.rpartition(".")[2]
        if layout == "ganimation-original" and kind.startswith("conv") and leaf == "bias":
            out[key] = torch.zeros_like(t)
        elif layout == "ganimation-replicate" and kind.startswith("norm"):
            out[key] = torch.ones_like(t) if leaf == "weight" else torch.zeros_like(t)
    return out


def convert_discriminator_state_dict(state_dict: dict) -> dict:
    sd = {k: v for k, v in strip_module_prefix(state_dict).items() if not k.endswith(STALE_BUFFERS)}
    if "conv1.weight" in sd:
        trunk, heads = "main", {"conv1": "realness_head", "conv2": "au_head"}
    elif "dis_top.weight" in sd:
        trunk, heads = "model", {"dis_top": "realness_head", "aus_top": "au_head"}
    elif "realness_head.weight" in sd:
        return sd
    else:
        raise UserError("unrecognised discriminator checkpoint layout")
    out = {}
    for key, value in sd.items():
        m = re.fullmatch(rf"{trunk}\.(\d+)\.(weight|bias)", key)
        head = key.rpartition(".")[0]
        if m:
            out[f"trunk.{m.group(1)}.{m.group(2)}"] = value
        elif head in heads:
            out[f"{heads[head]}.{key.rpartition('.')[2]}"] = value
        else:
            raise UserError(f"discriminator checkpoint key {key} fits no layer")
    return out


# --- import ------------------------------------------------------------------------------------
def _existing_file(path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} file {p} does not exist")
    if p.is_dir():
        raise UserError(f"{what} path {p} is a directory, not a file")
    return p


def load_state_dict(path: str | os.PathLike) -> dict:
    """A state dict from a PyTorch file, never executing pickled code."""
    p = _existing_file(path, "checkpoint")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"refusing to unpickle {p}: it holds more than tensors "
                        f"({str(e).splitlines()[0][:120]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        raise UserError(f"{p} is not a readable PyTorch checkpoint (truncated or corrupt: "
                        f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model", "net_gen", "G", "generator"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{p} does not hold a state dict of tensors")
    return obj


def _load_strict(model: nn.Module, state_dict: dict, source) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys ({', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({shapes[0]}: {tuple(state_dict[shapes[0]].shape)} "
                        f"vs {tuple(own[shapes[0]].shape)})")
    if problems:
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise UserError(f"checkpoint {source} does not fit model {name}: {'; '.join(problems)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=True)


def import_checkpoint(path: str | os.PathLike, model_name: str = "ganimation") -> AttentionGenerator:
    """Our .safetensors, or a .pth in either public GANimation layout (or ours), -> generator."""
    p = Path(path)
    if p.suffix == ".safetensors":
        model = load_weights(p)
        if model.config.name != model_name:
            raise UserError(f"{p} holds a {model.config.name} generator, not {model_name}; pass --model "
                            f"{model.config.name}")
        return model
    state_dict = load_state_dict(p)
    layout = detect_layout(state_dict)
    if layout != "exprengine" and model_name != "ganimation":
        raise UserError(f"{p} is a public GANimation checkpoint ({layout}); it fits --model ganimation, "
                        f"not {model_name}")
    model = create_generator(model_name)
    converted = convert_generator_state_dict(state_dict, layout)
    _load_strict(model, fill_identity(converted, model.state_dict(), layout), p)
    return model.eval()


def import_discriminator(path: str | os.PathLike) -> Discriminator:
    d = Discriminator()
    _load_strict(d, convert_discriminator_state_dict(load_state_dict(path)), path)
    return d.eval()
