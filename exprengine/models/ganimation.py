"""GANimation (`ganimation`, the baseline generator): its ResNet bottleneck block, and the two
public checkpoint layouts converted onto our generator and discriminator (timm's pattern: a
foreign checkpoint's conversion lives beside its model; our own format is `models.weights`).

The two public layouts are those of

- the original code, Pumarola et al. (https://github.com/albertpumarola/GANimation,
  `networks/generator_wasserstein_gan.py` and `networks/discriminator_wasserstein_gan.py`;
  files `net_epoch_<E>_id_G.pth` / `_D.pth`): bias-free convs and affine InstanceNorms;
- its PyTorch re-implementation (https://github.com/donydchen/ganimation_replicate,
  `model/model_utils.py`: `SplitGenerator`, `SplitDiscriminator`; files `<epoch>_net_gen.pth`):
  convs with biases and InstanceNorms without affine parameters.

Public PyTorch checkpoints are read with `torch.load(weights_only=True)` only, as a plain
state dict or one wrapped under `state_dict` / `model` / `net_gen` / `G` / `generator`.
Both layouts map onto our generator, which has conv biases *and* affine InstanceNorms, so the
half a layout lacks is filled with the identity (conv bias 0, or IN weight 1 / bias 0), which
is exact: conv(x) + 0 and IN(x) * 1 + 0.

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
combination, are stripped from every key, and stale InstanceNorm buffers (`running_mean`,
`running_var`, `num_batches_tracked`, which old PyTorch saved and current PyTorch rejects)
are dropped.

Discriminators (no normalisation, so nothing to fill):

| ours                 | original             | re-implementation    |
|----------------------|----------------------|----------------------|
| trunk.{0,2,..,10}    | main.{0,2,..,10}     | model.{0,2,..,10}    |
| realness_head        | conv1                | dis_top              |
| au_head              | conv2                | aus_top              |
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from exprengine.errors import UserError
from exprengine.models import build_generator, generator_config
from exprengine.models.discriminator import Discriminator
from exprengine.models.generator import AttentionGenerator
from exprengine.models.weights import existing_file, first_line, load_strictly, load_weights

ORIGINAL, REPLICATE, EXPRENGINE = "ganimation-original", "ganimation-replicate", "exprengine"
LAYOUTS = (ORIGINAL, REPLICATE, EXPRENGINE)
PUBLIC_LAYOUT_MODEL = "ganimation"          # the only architecture public checkpoints fit
WRAPPER_KEYS = ("state_dict", "model", "net_gen", "G", "generator")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
STALE_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_StateDict = dict[str, torch.Tensor]


class ResidualBlock(nn.Module):
    """y = x + IN(conv3(ReLU(IN(conv3(x)))))   (3x3 convs, zero padding, width kept)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=True)
        self.norm1 = nn.InstanceNorm2d(dim, affine=True)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=True)
        self.norm2 = nn.InstanceNorm2d(dim, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x)))))


# --- key names ----------------------------------------------------------------------------------
def _strip_wrappers(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        key = key.removeprefix("module.").removeprefix("_orig_mod.")
    return key


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> _StateDict:
    """The same state dict (values untouched, any type) with the prefixes that model wrappers put
    on every key dropped, in any order and nesting: `module.` (DataParallel /
    DistributedDataParallel) and `_orig_mod.` (torch.compile), so `_orig_mod.module.x`,
    `module._orig_mod.x` and `x` are all `x`."""
    return {_strip_wrappers(k): v for k, v in state_dict.items()}


def _clean(state_dict: Mapping[str, torch.Tensor]) -> _StateDict:
    """Prefix stripped, stale normalisation buffers dropped."""
    return {k: v for k, v in strip_module_prefix(state_dict).items() if not k.endswith(STALE_BUFFERS)}


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Which generator layout a state dict (wrapper prefixes allowed) is in: `ganimation-original`
    (Pumarola's: `main.*`, `img_reg`, `attetion_reg`), `ganimation-replicate` (donydchen's:
    `model.*`, `color_top`, `au_top`) or `exprengine` (ours: `stem.conv`, `color_head`), told by
    its head names or its residual blocks' names. Only key names are read.
    Raises UserError for a discriminator's state dict, or keys that fit no layout."""
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
    """Map a generator state dict in `layout` (one of LAYOUTS, e.g. from `detect_layout`) onto our
    `ganimation` generator's key names (see the module's table), wrapper prefixes stripped and
    stale InstanceNorm buffers dropped. What the layout lacks is filled as the identity, in the
    dtype and on the device of its conv's weight: conv bias zeros / IN weight ones, bias zeros,
    each of length the conv's output channels (dim 0 of a conv weight, dim 1 of a transposed
    one). Tensors are passed through unchanged (no copy, no cast); `exprengine` layout is only
    cleaned. A missing conv weight is left for `load_strictly` to report.
    Raises UserError for an unknown layout, a key that fits no layer, or a conv weight that is
    not 4-dimensional."""
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
    """Map a discriminator state dict (Pumarola's original, donydchen's re-implementation or ours;
    wrapper prefixes allowed) onto our `Discriminator`'s key names: `main.i` / `model.i` ->
    `trunk.i`; `conv1` / `dis_top` -> `realness_head`; `conv2` / `aus_top` -> `au_head`. Tensors
    pass through unchanged; stale normalisation buffers are dropped.
    Raises UserError when no layout's head is present or a key fits no layer."""
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
def _looks_like_safetensors(p: Path) -> bool:
    """A safetensors file starts with a little-endian u64 header size, then a JSON object."""
    try:
        with open(p, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < p.stat().st_size


def load_state_dict(path: str | os.PathLike) -> _StateDict:
    """The state dict (`{str: torch.Tensor}`, non-empty, tensors on the CPU in their saved dtypes
    and shapes) in a PyTorch file, plain or wrapped under one of WRAPPER_KEYS, read with
    `torch.load(weights_only=True)` so that no pickled code is ever run.
    Raises UserError when the file is missing or a directory, references a Python object
    (refused unpickling), is truncated or not a checkpoint, or holds anything but tensors."""
    p = existing_file(path, "checkpoint")
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
        raise UserError(f"{p} is not a readable PyTorch checkpoint (truncated or corrupt: {first_line(e)})") from None
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


def import_checkpoint(path: str | os.PathLike, model_name: str = PUBLIC_LAYOUT_MODEL) -> AttentionGenerator:
    """A registry generator `model_name` (on the CPU, eval mode, float32 weights) from our
    `.safetensors` (`models.weights.load_weights`; told by its suffix or its header) or a
    PyTorch file in either public GANimation layout (these fit only `ganimation`) or our own key
    names, loaded with `load_strictly` after `convert_generator_state_dict`. The generator takes
    Nx3x128x128 images in [-1, 1] and Nx17 AUs in [0, 1] (intensity / 5), like the originals.
    Raises UserError for an unknown `model_name` (before any reading), a file of another model,
    a public layout with a model other than `ganimation`, and every problem `load_state_dict`,
    `detect_layout` or `load_strictly` reports."""
    config = generator_config(model_name)           # unknown names fail before any reading
    p = existing_file(path, "checkpoint")
    if p.suffix.lower() == ".safetensors" or _looks_like_safetensors(p):
        model = load_weights(p)
        if model.config.name != model_name:
            raise UserError(f"{p} holds a {model.config.name} generator, not {model_name}; "
                            f"use `model_name` {model.config.name}")
        return model
    state_dict = load_state_dict(p)
    layout = detect_layout(state_dict)
    if layout != EXPRENGINE and model_name != PUBLIC_LAYOUT_MODEL:
        raise UserError(f"{p} is a public GANimation checkpoint ({layout}): it fits `model_name` "
                        f"{PUBLIC_LAYOUT_MODEL}, not {model_name}")
    model = build_generator(config)
    load_strictly(model, convert_generator_state_dict(state_dict, layout), p)
    return model.eval()


def import_discriminator(path: str | os.PathLike) -> Discriminator:
    """A 128x128 `Discriminator` (on the CPU, eval mode, float32 weights) from a PyTorch file in
    either public layout or ours (`convert_discriminator_state_dict`, then `load_strictly`).
    Raises UserError for every problem `load_state_dict`, the conversion or the strict load
    reports."""
    state_dict = convert_discriminator_state_dict(load_state_dict(path))
    model = Discriminator()
    load_strictly(model, state_dict, path)
    return model.eval()
