"""`exprengine`: build engines and edit facial expressions from the command line.

Every command is options, one library call and one summary line. The group and what the
commands share are in `options`; the commands, by topic, in `build` (build, info, presets,
models), `edit` (edit, video, morph), `age` (age) and `research` (train, eval, compare, synth, prepare,
train-au-estimator, demo). The process around them (exit statuses, signals, one-line errors
said with the command's options, outputs written together) is `exprengine.console`.

Every user-fixable problem (a bad path, AU spec, preset, value or engine) is one line on
stderr and exit status 2; nothing partial is written and inputs are never modified.
"""
from __future__ import annotations

from exprengine.cli import age, build, edit, research, ui  # noqa: F401  (each registers its commands on `cli`)
from exprengine.cli.options import cli
from exprengine.console import run


def main(argv: list[str] | None = None) -> int:
    """Console entry point (`exprengine`): runs `cli` through `console.run` (user errors: one
    line, exit status 2; Ctrl-C and SIGTERM: clean-up, no partial output)."""
    return run(cli, argv)


__all__ = ["cli", "main"]
