"""The engine a command uses when it is given none: the rig (`exprengine/models/rig.py`) for
real photos and video, compiled once per rig version for ONNX Runtime into the user's cache.

    path = default_rig_engine(progress=True)       # ~/.cache/exprengine/engines/rig-<sha>/
    engine = Engine.load(path)

The cache is `$EXPRENGINE_CACHE`, else `$XDG_CACHE_HOME/exprengine`, else `~/.cache/exprengine`.
An engine there is reused only if it verifies (`inspect_engine`: manifest, hashes, metadata)
and was built from this install's rig (its weights sha256 is `rig_sha256`: the rig's config and
source); otherwise it is rebuilt, atomically (`build_engine`), so two processes never see half
of one. The first build exports the rig to ONNX and checks it against eager PyTorch (about 20 s
on a 2-core CPU).
"""
from __future__ import annotations

import os
from pathlib import Path

from exprengine.errors import EngineError, UserError
from exprengine.files import cache_dir


def default_rig_engine(progress: bool = False) -> Path:
    """The directory of this install's rig engine for ONNX Runtime, built into the cache when
    missing, stale or damaged. OSError if the cache cannot be written; EngineError if the build
    fails its check against eager PyTorch."""
    from exprengine.engine import inspect_engine
    from exprengine.engines.build import build_engine
    from exprengine.models.rig import FaceRig, RigConfig, rig_sha256

    config = RigConfig()
    sha = rig_sha256(config)
    path = cache_dir("engines") / f"rig-{sha[:16]}"
    if (path / "engine.json").is_file():
        try:
            if inspect_engine(path).weights_sha256 == sha:
                return path
        except EngineError:
            pass                                        # damaged: rebuilt below
    from exprengine.files import apart_from_outputs
    path.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        import click
        click.echo(f"building the rig engine once for this install (about 20 s): {path}", err=True)
    with apart_from_outputs():                      # a cache entry, not an output of the command running
        build_engine(FaceRig(config).eval(), path, "onnxruntime", weights_source="the default rig engine",
                     progress=progress)
    return path


def default_rig(policy=None, progress: bool = False, warn=None):
    """The rig as an `Engine`: `default_rig_engine` loaded on the CPU, or, when the cache cannot
    be written (OSError), the rig eager in memory (same edits, no files), after calling
    `warn(sentence)` if given. EngineError if a build fails its check."""
    from exprengine.engine import Engine
    try:
        return Engine.load(default_rig_engine(progress=progress), "cpu", policy)
    except OSError as e:
        if warn is not None:
            warn(f"cannot cache the rig engine ({e.strerror or e}); running it eagerly")
        from exprengine.models.rig import FaceRig
        return Engine.from_generator(FaceRig().eval(), policy=policy)


def engine_or_default(engine: str | os.PathLike | None, device: str = "auto", policy=None,
                      default: str = "rig", progress: bool = False, warn=None):
    """The `Engine` at the directory `engine`, or when none is given the default one:
    `default` "rig" (real photos and video: `default_rig`, on the CPU) or "generator" (the
    shipped generator, eager PyTorch on `device`: crops and morphs). `device`: "auto", "cpu" or
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
    from exprengine.engines.backends import resolve_device
    from exprengine.models.pretrained import load_default_generator
    device = resolve_device(device)
    return Engine.from_generator(load_default_generator().to(device), policy=policy, device=device)
