"""The command line's process around the commands of `exprengine.cli`.

- `Command`: a click command that names its input and output paths; before its body runs,
  every output is checked against every input (`files.check_outputs_apart`), with
  `together=True` its outputs appear together or not at all (`files.outputs_together`), and
  library errors, which quote Python argument names, are said with the command's options.
- `Group`: prints the examples of its epilog as written.
- `run(group, argv)`: the entry point. A user error is one line on stderr and exit status 2;
  Ctrl-C, SIGTERM and SIGHUP run every clean-up and leave no partial output (130, 128 + n);
  anything else is a bug: one line and exit status 1 (the traceback with EXPRENGINE_DEBUG=1).
- `say`, `reported_warnings`: stderr lines, and AU warnings shown once each as `warning: ...`.
"""
from __future__ import annotations

import errno
import os
import warnings
from contextlib import contextmanager

import click

from exprengine.aus import AUWarning
from exprengine.errors import DISK_ERRNOS, UserError, rename_arguments, renamed

EXIT_USER_ERROR = 2
#: Library argument names that differ from the parameter of the command that passes them.
API_NAMES = {"model_name": "model", "n": "count", "spec": "data", "engine": "engine_dir"}


class RegistryChoice(click.Choice):
    """A choice among the names a registry gives: "module:NAME" (a tuple or dict of names) or
    "module:function" (called with `kwargs`), e.g. "exprengine.engines.backends:backend_names".
    Read when first needed: some registries import torch, which `exprengine --help` and the
    commands that do not need them should not wait for."""

    def __init__(self, registry: str, **kwargs):
        self.registry, self.kwargs, self.case_sensitive = registry, kwargs, True

    @property
    def choices(self) -> tuple[str, ...]:
        """The registry's names now (imported on first use)."""
        import importlib
        module, name = self.registry.split(":")
        names = getattr(importlib.import_module(module), name)
        return tuple(names(**self.kwargs) if callable(names) else names)


def say(msg: str) -> None:
    """`msg` as a line on stderr, its quoted argument names said as the running command's options."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and isinstance(ctx.command, Command):
        msg = rename_arguments(msg, ctx.command.option_names())
    click.echo(msg, err=True)


@contextmanager
def reported_warnings():
    """Show AU warnings (above cap, conflicts) once each, as `warning: ...` lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AUWarning)
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                if issubclass(w.category, AUWarning) and str(w.message) not in seen:
                    seen.add(str(w.message))
                    say(f"warning: {w.message}")


class Command(click.Command):
    """A command that names which of its parameters are input and output paths.

    Before the command's body runs, every output is checked against every input and every
    other output by the one rule in `files.check_outputs_apart` (no output may be an input,
    through links or not, lie inside an input directory, or hold an input). With
    `together=True` the body runs inside `files.outputs_together`: its outputs appear
    together when it succeeds, or none does.
    """

    def __init__(self, *args, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = (),
                 together: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.inputs, self.outputs, self.together = inputs, outputs, together

    def _paths(self, ctx: click.Context, names: tuple[str, ...]) -> dict[str, str]:
        found = {}
        params = {p.name: p for p in self.params}
        for name in names:
            values = ctx.params.get(name)
            for value in values if isinstance(values, (tuple, list)) else [values]:
                if value is None or str(value).lower() == "none" or not str(value).strip():
                    continue
                param = params[name]
                label = param.opts[-1] if isinstance(param, click.Option) else (param.metavar or name.upper())
                found[label if label not in found else f"{label} {value}"] = str(value)
        return found

    def invoke(self, ctx: click.Context):
        try:
            return self._invoke(ctx)
        except UserError as e:                     # library errors name arguments; say the options
            raise renamed(e, self.option_names()) from e.__cause__

    def option_names(self) -> dict[str, str]:
        """Each parameter's Python name -> what the user typed: its long option, or its metavar."""
        names = {p.name: max(p.opts, key=len) if isinstance(p, click.Option) else (p.metavar or p.name.upper())
                 for p in self.params}
        return {**names, **{api: names[cli] for api, cli in API_NAMES.items() if cli in names}}

    def _invoke(self, ctx: click.Context):
        from exprengine.files import check_outputs_apart, outputs_together
        check_outputs_apart(self._paths(ctx, self.outputs), self._paths(ctx, self.inputs))
        if not self.together:
            return super().invoke(ctx)
        finished = None
        with outputs_together():
            try:
                return super().invoke(ctx)
            except click.exceptions.Exit as e:     # a deliberate exit status (edit --require-face):
                finished = e                       # what was written stays
        raise finished


class Group(click.Group):
    """Prints the epilog's example lines as they are (click would re-wrap them)."""

    command_class = Command

    def format_epilog(self, ctx, formatter):
        if self.epilog:
            formatter.write_paragraph()
            for line in self.epilog.splitlines():
                formatter.write(f"{'':>{formatter.current_indent}}{line}\n")


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so that every clean-up runs as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def run(group: click.Group, argv: list[str] | None = None) -> int:
    """Run `group` on `argv` (default sys.argv[1:]) -> the exit status; see the module docstring."""
    import signal
    import threading

    def _terminated(signum, frame):         # SIGTERM/SIGHUP: clean up exactly as Ctrl-C does
        for sig in previous:                # a second signal must not interrupt the clean-up
            signal.signal(sig, signal.SIG_IGN)
        raise _Terminated(signum)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                previous[sig] = signal.signal(sig, _terminated)
    try:
        return _main(group, argv)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(group: click.Group, argv: list[str] | None) -> int:
    try:
        code = group.main(args=argv, prog_name="exprengine", standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool):     # a command's `raise Exit(n)`
            return code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort as e:     # click turns KeyboardInterrupt into Abort
        return _interrupted(_interrupt_in_chain(e) or KeyboardInterrupt())
    except KeyboardInterrupt as e:
        return _interrupted(e)
    except click.ClickException as e:
        say(f"exprengine: error: {e.format_message()}" + (
            f" (see `exprengine {e.ctx.info_name} --help`)" if getattr(e, "ctx", None) and e.ctx.parent else ""))
        return EXIT_USER_ERROR
    except UserError as e:
        say(f"exprengine: error: {e}")
        return EXIT_USER_ERROR
    except OSError as e:
        # A path the user gave that the system refuses (a name too long, a loop of links, no
        # permission, a full disk) wherever it is first touched: their input, not our bug.
        if e.errno not in _USER_ERRNOS or (e.filename is None and e.errno not in DISK_ERRNOS):
            return _internal_error(e)
        where = f"{_short(e.filename)}: " if e.filename is not None else ""
        say(f"exprengine: error: {where}{e.strerror or e}")
        return EXIT_USER_ERROR
    except Exception as e:   # a bug, not bad input: one line unless asked for the traceback
        interrupt = _interrupt_in_chain(e)      # a library that wrapped our SIGTERM or Ctrl-C
        if interrupt is not None:
            return _interrupted(interrupt)
        return _internal_error(e)
    return 0


def _interrupt_in_chain(e: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (Ctrl-C, or SIGTERM/SIGHUP as `_Terminated`) that `e` was raised
    from, if any: torch.export, for one, re-raises it as its own error."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _interrupted(e: KeyboardInterrupt) -> int:
    if isinstance(e, _Terminated):
        say(f"exprengine: terminated by signal {e.signum}; no partial output was left")
        return 128 + e.signum
    say("exprengine: interrupted")
    return 130


_USER_ERRNOS = DISK_ERRNOS | {errno.ELOOP, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR,
                              errno.EEXIST, errno.ENOTEMPTY}


def _short(path) -> str:
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    return text if len(text) <= 80 else text[:40] + "..." + text[-30:]


def _internal_error(e: BaseException) -> int:
    """A bug, not bad input: one line (the traceback with EXPRENGINE_DEBUG=1) and exit status 1."""
    if os.environ.get("EXPRENGINE_DEBUG"):
        raise e
    say(f"exprengine: internal error: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''} "
         "(rerun with EXPRENGINE_DEBUG=1 for the traceback, and please report it)")
    return 1
