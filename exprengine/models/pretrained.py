"""The shipped default model: a trained generator in `exprengine/assets/`, with its model card.

    >>> from exprengine.models.pretrained import load_default_generator, default_model_card
    >>> g = load_default_generator()              # AttentionGenerator, eval mode, sha256-checked
    >>> card = default_model_card()               # training command, data, evaluation numbers

It is trained on the synthetic face world only (`exprengine/data/synthetic.py`): it edits the
renderer's faces, not photographs. This module only locates and loads the file and reads its
card (the models layer reaches nothing above it). The card is written, and its evaluation
measured, by `exprengine.training.package` (re-measured by tests/test_pretrained.py);
maintainers make the file from a finished `exprengine train` run with

    python -m exprengine.training.package RUN_DIR --command "exprengine train ..."
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from exprengine.errors import UserError
from exprengine.models.generator import AttentionGenerator
from exprengine.models.weights import load_weights

DEFAULT_WEIGHTS = "default_model.safetensors"


def default_weights_path() -> Path:
    """Where the shipped default weights live: `default_model.safetensors` in the installed
    package's `assets/` (the path is returned whether or not the file is there)."""
    return Path(str(resources.files("exprengine") / "assets" / DEFAULT_WEIGHTS))


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


def default_model_card() -> dict:
    """The model card stored with the default weights (the `model_card` metadata key, json):
    its name, architecture, training command and config, data, evaluation numbers and
    limitations; `{}` when the file has none. Raises the safetensors error for a missing or
    unreadable file."""
    from safetensors.torch import safe_open
    with safe_open(str(default_weights_path()), framework="pt") as f:
        metadata = f.metadata() or {}
    return json.loads(metadata.get("model_card", "{}"))
