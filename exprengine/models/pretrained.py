"""The shipped default models in `exprengine/assets/`, each with its model card: the expression
generator and the age model (a LATS generator).

    >>> from exprengine.models.pretrained import load_default_generator, default_model_card
    >>> g = load_default_generator()              # AttentionGenerator, eval mode, sha256-checked
    >>> card = default_model_card()               # training command, data, evaluation numbers
    >>> a = load_default_age_model()              # LATSGenerator (lats-small at 128x128)
    >>> card = default_model_card(DEFAULT_AGE_WEIGHTS)

Both are trained on the synthetic face world only (`exprengine/data/synthetic.py`): they edit
the renderer's faces, not photographs. This module only locates and loads the file and reads its
card (the models layer reaches nothing above it). The card is written, and its evaluation
measured, by `exprengine.training.package` (re-measured by tests/test_pretrained.py);
maintainers make the files from finished `exprengine train` runs with

    python -m exprengine.training.package RUN_DIR --command "exprengine train ..."
    python -m exprengine.training.package RUN_DIR --age --command "exprengine train --model lats-small ..."
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from exprengine.errors import UserError
from exprengine.models.generator import AttentionGenerator
from exprengine.models.weights import load_weights

DEFAULT_WEIGHTS = "default_model.safetensors"           # the expression generator
DEFAULT_AGE_WEIGHTS = "default_age_model.safetensors"   # the age model (LATS)


def default_weights_path(name: str = DEFAULT_WEIGHTS) -> Path:
    """Where a shipped default model lives: `name` (DEFAULT_WEIGHTS, the expression generator, or
    DEFAULT_AGE_WEIGHTS, the age model) in the installed package's `assets/` (the path is
    returned whether or not the file is there)."""
    return Path(str(resources.files("exprengine") / "assets" / name))


def has_default_model() -> bool:
    """True when this install has the default weights file."""
    return default_weights_path().is_file()


def load_default_generator() -> AttentionGenerator:
    """The default generator (on the CPU, eval mode, float32), loaded and sha256-checked by
    `models.weights.load_weights`. It takes Nx3x128x128 images in [-1, 1] and Nx17 AUs in [0, 1].
    Raises UserError when this install has no default model, or its file is damaged."""
    if not has_default_model():
        raise UserError(f"this install has no default model ({default_weights_path()} is missing); "
                        "reinstall exprengine or build from a `checkpoint`")
    return load_weights(default_weights_path())


def has_default_age_model() -> bool:
    """True when this install has the default age model's file."""
    return default_weights_path(DEFAULT_AGE_WEIGHTS).is_file()


def load_default_age_model():
    """The default age model, a `LATSGenerator` (lats-small, on the CPU, eval mode, float32),
    loaded and sha256-checked by `models.weights.load_weights`. It takes Nx3x128x128 faces in
    [-1, 1] aligned as LATS aligns them (`faces.align`) and ages in years 0..70 through an
    `Engine` (`Engine.from_generator(...).age`). Raises UserError when this install has no
    default age model, or its file is damaged."""
    if not has_default_age_model():
        raise UserError("this install has no default age model; give an age engine built from a LATS generator")
    return load_weights(default_weights_path(DEFAULT_AGE_WEIGHTS))


def default_model_card(name: str = DEFAULT_WEIGHTS) -> dict:
    """The model card stored with the default model `name` (DEFAULT_WEIGHTS or
    DEFAULT_AGE_WEIGHTS; the `model_card` metadata key, json): its name, architecture, training
    command and config, data, evaluation numbers and limitations; `{}` when the file has none.
    Raises the safetensors error for a missing or unreadable file."""
    from safetensors.torch import safe_open
    with safe_open(str(default_weights_path(name)), framework="pt") as f:
        metadata = f.metadata() or {}
    return json.loads(metadata.get("model_card", "{}"))
