"""The engine a command uses when it is given none: the rig (`exprengine/models/rig.py`) for
real photos and video, compiled once per rig version for ONNX Runtime into the user's cache;
for ages, the shipped age model (`models.pretrained.load_default_age_model`), compiled the same
way once per weights file.

    path = default_rig_engine(progress=True)       # ~/.cache/exprengine/engines/rig-<sha>/
    engine = Engine.load(path)
    ages = default_age()                           # Engine over ~/.cache/exprengine/engines/age-<sha>/

The cache is `$EXPRENGINE_CACHE`, else `$XDG_CACHE_HOME/exprengine`, else `~/.cache/exprengine`.
An engine there is reused only if it verifies (`inspect_engine`: manifest, hashes, metadata)
and was built from this install's model (its weights sha256 is `rig_sha256`, the rig's config
and source, or the shipped age weights' sha256); otherwise it is rebuilt, atomically (`build_engine`), so two processes never see half
of one. The first build exports the rig to ONNX and checks it against eager PyTorch (about 20 s
on a 2-core CPU).
"""
from __future__ import annotations

import os
from pathlib import Path

from exprengine.errors import EngineError, UserError
from exprengine.files import cache_dir


def cached_engine(model, sha: str, name: str, label: str, seconds: int, progress: bool = False) -> Path:
    """The directory of an ONNX Runtime engine of `model` in the cache (`cache_dir("engines")` /
    `name`-<sha[:16]>), reused when it verifies and its weights sha256 is `sha`, else built
    (atomically, checked against eager PyTorch; about `seconds` s, said when `progress`).
    `label` ("rig engine") names the engine in its message and manifest. OSError if the cache cannot be
    written; EngineError if the build fails its check."""
    from exprengine.engine import inspect_engine
    from exprengine.engines.build import build_engine
    from exprengine.files import apart_from_outputs

    path = cache_dir("engines") / f"{name}-{sha[:16]}"
    if (path / "engine.json").is_file():
        try:
            if inspect_engine(path).weights_sha256 == sha:
                return path
        except EngineError:
            pass                                        # damaged: rebuilt below
    path.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        import click
        click.echo(f"building the {label} once for this install (about {seconds} s): {path}", err=True)
    with apart_from_outputs():                      # a cache entry, not an output of the command running
        build_engine(model, path, "onnxruntime", weights_source=f"the default {label}", progress=progress)
    return path


def cached_or_eager(model, sha: str, name: str, label: str, seconds: int, policy=None, progress: bool = False,
                    warn=None):
    """`model` as an `Engine` on the CPU: its ONNX Runtime engine from the cache (`cached_engine`),
    or, when the cache cannot be written (OSError), the model eager in memory (the same outputs,
    no files), after calling `warn(sentence)` if given. EngineError if a build fails its check."""
    from exprengine.engine import Engine
    try:
        return Engine.load(cached_engine(model, sha, name, label, seconds, progress), "cpu", policy)
    except OSError as e:
        if warn is not None:
            warn(f"cannot cache the {label} ({e.strerror or e}); running it eagerly")
        return Engine.from_generator(model, policy=policy)


def _rig():
    """(this install's rig in eval mode, its `rig_sha256`)."""
    from exprengine.models.rig import FaceRig, RigConfig, rig_sha256
    config = RigConfig()
    return FaceRig(config).eval(), rig_sha256(config)


def _age_model():
    """(the shipped age model, its weights' sha256); UserError when this install has none."""
    from exprengine.models.pretrained import load_default_age_model
    from exprengine.models.weights import model_sha256
    model = load_default_age_model()
    return model, model_sha256(model)


def default_rig_engine(progress: bool = False) -> Path:
    """The directory of this install's rig engine for ONNX Runtime (`cached_engine`, keyed by
    `rig_sha256`: the rig's config and source). OSError if the cache cannot be written;
    EngineError if the build fails its check against eager PyTorch."""
    return cached_engine(*_rig(), "rig", "rig engine", 20, progress)


def default_age_engine(progress: bool = False) -> Path:
    """The directory of the shipped age model's engine for ONNX Runtime (`cached_engine`, keyed
    by the weights' sha256). UserError when this install has no default age model; OSError if
    the cache cannot be written; EngineError if the build fails its check."""
    return cached_engine(*_age_model(), "age", "age engine", 30, progress)


def default_rig(policy=None, progress: bool = False, warn=None):
    """The rig as an `Engine`: `default_rig_engine` loaded on the CPU, or, when the cache cannot
    be written, the rig eager in memory (`cached_or_eager`). EngineError if a build fails its check."""
    return cached_or_eager(*_rig(), "rig", "rig engine", 20, policy, progress, warn)


def default_age(device: str = "auto", progress: bool = False, warn=None):
    """The shipped age model as an `Engine`: on the CPU `default_age_engine` loaded (or, when
    the cache cannot be written, the model eager in memory: `cached_or_eager`); on "cuda" the
    model eager on the GPU. UserError when this install has none; EngineError if a build fails
    its check."""
    from exprengine.engine import Engine
    from exprengine.engines.backends import resolve_device
    device = resolve_device(device)
    model, sha = _age_model()
    if device == "cpu":
        return cached_or_eager(model, sha, "age", "age engine", 30, None, progress, warn)
    return Engine.from_generator(model.to(device), device=device)


def engine_or_default(engine: str | os.PathLike | None, device: str = "auto", policy=None,
                      default: str = "rig", progress: bool = False, warn=None):
    """The `Engine` at the directory `engine`, or when none is given the default one:
    `default` "rig" (real photos and video: `default_rig`, on the CPU) or "generator" (the
    shipped generator, eager PyTorch on `device`: crops and morphs) or "age" (the shipped age
    model: `default_age`). `device`: "auto", "cpu" or
    "cuda". EngineError / UserError (one sentence): a bad engine directory, or a GPU asked of
    the CPU-only default rig."""
    from exprengine.engine import Engine
    if engine:
        return Engine.load(engine, device=device, policy=policy)
    if default == "rig":
        if device == "cuda":
            raise UserError("the default rig engine runs on the CPU; build a GPU engine of your own model "
                            "and pass it as `engine`, or use `device` cpu")
        return default_rig(policy, progress=progress, warn=warn)
    if default == "age":
        return default_age(device, progress=progress, warn=warn)
    from exprengine.engines.backends import resolve_device
    from exprengine.models.pretrained import load_default_generator
    device = resolve_device(device)
    return Engine.from_generator(load_default_generator().to(device), policy=policy, device=device)
