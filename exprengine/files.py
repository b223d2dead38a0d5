"""Files: the one owner of where outputs go and how they get there.

- Output places: `check_writable_place` (the directory exists and is writable, the name fits)
  and `check_outputs_apart` (no output is an input or another output), checked before any work.
- Atomic writes: `atomic_output` (a file), `atomic_directory` (a directory), `write_bytes` (bytes
  in one call). They write beside the target and rename into place, never leave a partial file,
  and remove the temporary on any failure, Ctrl-C and SIGTERM included (`signals_deferred`).
  `outputs_together` puts every output of a command in place at the end, or none.
- Cache directories: `cache_dir` ($EXPRENGINE_CACHE, $XDG_CACHE_HOME/exprengine, ~/.cache/exprengine).

Every module that writes a file goes through here (media, checkpoints, engines, kernels, video).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from exprengine.errors import DISK_ERRNOS, UserError


def cache_dir(*parts: str) -> Path:
    """The user's exprengine cache directory, or `parts` inside it (not created here).

    `$EXPRENGINE_CACHE` if set, else `$XDG_CACHE_HOME/exprengine`, else `~/.cache/exprengine`
    (the XDG Base Directory specification). Engines built on demand, compiled kernels and
    TensorRT plans live in named subdirectories ("kernels", "tensorrt", "engines").
    """
    for var, sub in (("EXPRENGINE_CACHE", ""), ("XDG_CACHE_HOME", "exprengine")):
        value = os.environ.get(var)
        if value:
            return Path(value).expanduser().joinpath(sub, *parts)
    return Path.home().joinpath(".cache", "exprengine", *parts)


def store_in_cache(path: str | os.PathLike, data: bytes) -> bool:
    """Write `data` to the cache file `path` atomically, creating its directories; at once, even
    inside `outputs_together` (a cache entry is not a command's output).

    Returns False, writing nothing, when the cache cannot be written (a read-only home still
    works; it recomputes next time). Readers see the whole file or none.
    """
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with apart_from_outputs():
            write_bytes(p, data)
    except (OSError, UserError):
        return False
    return True


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (`atomic_output`): the file is whole or untouched.

    Returns the path. UserError (one sentence) when the place cannot be written or the disk is full.
    """
    p = Path(path)
    with atomic_output(p) as tmp:
        tmp.write_bytes(data)
    return p


def check_writable_place(p: Path, inputs: Iterable[str | os.PathLike] = (), directory: bool = False) -> None:
    """An output can be created at `p`: its directory exists (for a `directory` output: its
    nearest existing ancestor, the rest is created) and is writable, its name fits the file
    system, and it is none of `inputs` (see `check_outputs_apart`). One-sentence UserError
    otherwise."""
    absolute = Path(os.path.abspath(p))
    parent = absolute.parent
    if directory:
        while not parent.exists() and parent != parent.parent:
            if parent.is_symlink():
                break
            parent = parent.parent
    if not parent.exists():
        raise UserError(f"cannot write {p}: the directory {parent} does not exist")
    if not parent.is_dir():
        raise UserError(f"cannot write {p}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {p}: the directory {parent} is not writable")
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for part in absolute.relative_to(parent).parts:
        # the temporary beside it adds up to 48 + 8 + 21 bytes, which _temp_prefix keeps within
        if len(os.fsencode(part)) > name_max:
            raise UserError(f"cannot write {p}: the name {part[:40]}... is longer than this file system's "
                            f"limit of {name_max} bytes")
    check_outputs_apart({str(p): p}, {str(s): s for s in inputs if s is not None})


def check_outputs_apart(outputs: Mapping[str, str | os.PathLike], inputs: Mapping[str, str | os.PathLike]) -> None:
    """The one rule for output places: no output may resolve to an input or to another output.

    `outputs` and `inputs` map a label for messages (an option such as "--out", or a path) to a
    path. Refused, with one UserError sentence: an output that is an input file (the same file
    through a symbolic or hard link, the same inode), an output inside an input directory (an
    engine, a data set: writing there changes the input), an output directory that holds an
    input (replacing it would delete the input), and two outputs naming the same place.
    Inputs that do not exist are skipped (their own checks report them).
    """
    def real(path) -> str:
        return os.path.realpath(os.fspath(path))

    existing_inputs = [(label, Path(path)) for label, path in inputs.items()
                       if path is not None and os.fspath(path) != "" and Path(path).exists()]
    outs = [(label, Path(path)) for label, path in outputs.items() if path is not None and os.fspath(path) != ""]
    for label, out in outs:
        r_out = real(out)
        for in_label, src in existing_inputs:
            r_in = real(src)
            same = r_out == r_in or (out.exists() and _same_file(out, src))
            if same:
                raise UserError(f"{_named(label, out)} is the input {'directory' if src.is_dir() else 'file'} "
                                f"{_named(in_label, src)}; "
                                f"refusing to overwrite an input, give another output name")
            if src.is_dir() and _is_within(r_out, r_in):
                raise UserError(f"{_named(label, out)} is inside the input directory {_named(in_label, src)}; "
                                f"refusing to write into an input, give a place outside it")
            if _is_within(r_in, r_out):
                raise UserError(f"{_named(label, out)} is a directory holding the input {_named(in_label, src)}; "
                                f"writing it would replace the input, give an output place that does not contain it")
    for i, (label_a, a) in enumerate(outs):
        for label_b, b in outs[i + 1:]:
            if real(a) == real(b) or (a.exists() and b.exists() and _same_file(a, b)):
                raise UserError(f"{_named(label_a, a)} and {_named(label_b, b)} name the same place; "
                                f"give each output its own name")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _named(label: str, path: Path) -> str:
    return f"{label} {path}" if label.startswith("-") or label.isupper() else str(path)


# --- atomic writes ---------------------------------------------------------------------------
def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(target: Path) -> str:
    return f".{target.name[:48]}."                # stays within NAME_MAX with mkstemp's suffix


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _disk_error(target: Path, e: OSError) -> UserError:
    return UserError(f"cannot write {target}: {e.strerror or e}")


@dataclass
class _Pending:
    """An output written to `tmp` beside `target`, waiting to be put in place."""
    tmp: Path
    target: Path
    is_dir: bool
    backup: Path | None = None          # the replaced file (hard link) or directory, until committed
    installed: bool = False


#: Outputs of the current `outputs_together` block, or None outside one.
_TOGETHER: ContextVar[list[_Pending] | None] = ContextVar("exprengine_outputs_together", default=None)
#: Temporary directories being filled right now: files written inside them go in at once.
_OPEN_DIRS: ContextVar[tuple[Path, ...]] = ContextVar("exprengine_open_dirs", default=())


@contextmanager
def outputs_together() -> Iterator[None]:
    """Every atomic output written inside the block appears when the block succeeds, or none does.

    `atomic_output` and `atomic_directory` called inside write their temporaries as usual but
    leave them beside their targets; on success all are put in place one after another (each
    replaced file or directory kept until all are in, and put back if one fails); on any
    exception (SIGTERM and Ctrl-C included) the temporaries are removed and every target is
    left as it was. Commands with several outputs (an image and its attention map, an animation
    and its sheet, a report and its sheet) run inside one block.
    """
    if _TOGETHER.get() is not None:               # nested: the outer block decides
        yield
        return
    pending: list[_Pending] = []
    token = _TOGETHER.set(pending)
    try:
        yield
    except BaseException:
        _TOGETHER.reset(token)
        for item in pending:
            _remove(item.tmp, item.is_dir)
        raise
    _TOGETHER.reset(token)
    _commit(pending)


@contextmanager
def apart_from_outputs() -> Iterator[None]:
    """Atomic writes inside this block are not the command's outputs (a cache entry the command
    makes for itself): each appears as soon as it is written, even inside `outputs_together`."""
    token = _TOGETHER.set(None)
    try:
        yield
    finally:
        _TOGETHER.reset(token)


def _commit(pending: list[_Pending]) -> None:
    try:
        for item in pending:
            _install(item)
    except BaseException:
        for item in reversed(pending):
            if item.installed:
                _uninstall(item)
            _remove(item.tmp, item.is_dir)
        raise
    for item in pending:
        _finish(item)


def _remove(path: Path, is_dir: bool) -> None:
    if is_dir:
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def _parent_locked(target: Path) -> Iterator[None]:
    """An exclusive flock on the target's directory: replacements of one target by several
    processes at once take turns instead of racing (no ENOTEMPTY, no stray `.old` folders)."""
    try:
        fd = os.open(Path(os.path.abspath(target)).parent, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                                 # releases the lock


def _install(item: _Pending) -> None:
    """Put `item.tmp` at `item.target`, keeping what was there in `item.backup` until `_finish`."""
    target, parent = item.target, Path(os.path.abspath(item.target)).parent
    try:
        if not item.is_dir:
            if target.is_file():
                item.backup = _unused_name(target, ".old")
                os.link(target, item.backup)         # the old file stays reachable until committed
            os.replace(item.tmp, target)
        else:
            with _parent_locked(target):
                if target.is_dir():
                    item.backup = _unused_name(target, ".old")
                    os.replace(target, item.backup)
                try:
                    os.replace(item.tmp, target)
                except BaseException:
                    if item.backup is not None:
                        os.replace(item.backup, target)
                        item.backup = None
                    raise
    except OSError as e:
        if item.backup is not None and not item.is_dir:
            item.backup.unlink(missing_ok=True)
            item.backup = None
        raise _disk_error(target, e) from None
    item.installed = True
    _fsync_dir(parent)


def _uninstall(item: _Pending) -> None:
    """Undo `_install`: the old file or directory back in place, or the new one removed."""
    with suppress(OSError):
        if item.is_dir:
            with _parent_locked(item.target):
                os.replace(item.target, item.tmp)
                if item.backup is not None:
                    os.replace(item.backup, item.target)
        elif item.backup is not None:
            os.replace(item.backup, item.target)
        else:
            os.replace(item.target, item.tmp)
    item.backup, item.installed = None, False


def _finish(item: _Pending) -> None:
    if item.backup is not None:
        _remove(item.backup, item.is_dir)
        item.backup = None


def _unused_name(target: Path, suffix: str) -> Path:
    parent = Path(os.path.abspath(target)).parent
    name = tempfile.mktemp(prefix=_temp_prefix(target), suffix=suffix, dir=parent)  # noqa: S306 -- used with link/rename, which fail rather than overwrite a name taken meanwhile
    return Path(name)


def _put_in_place(tmp: Path, target: Path, is_dir: bool) -> None:
    """Install now, or at the end of the enclosing `outputs_together` block."""
    item = _Pending(tmp, target, is_dir)
    pending = _TOGETHER.get()
    inside_open_dir = any(_is_within(target, d) for d in _OPEN_DIRS.get())
    if pending is not None and not inside_open_dir:
        pending.append(item)
        return
    _install(item)
    _finish(item)


def _is_within(path: Path, directory: Path) -> bool:
    a, b = os.path.abspath(path), os.path.abspath(directory)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait until the block ends: creating a temporary and taking
    charge of removing it must not be split by one (it would leave the temporary behind).

    The Python handlers are swapped for one that only notes the signal, and the first signal
    noted is handed to the original handler when the block ends (a KeyboardInterrupt, or the
    CLI's SIGTERM exception, raised there). A signal mask would not do: CPython runs handlers
    in the main thread whichever thread the kernel delivers to, and video has worker threads.
    Outside the main thread (where handlers cannot be changed) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    held = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, lambda signum, frame: noted.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if noted:
            handler = previous[noted[0]]
            if callable(handler):
                handler(noted[0], None)          # raises here, inside the caller's clean-up region
            elif handler != signal.SIG_IGN:
                signal.raise_signal(noted[0])    # the default action


@contextmanager
def temp_beside(target: str | os.PathLike, suffix: str, *, directory: bool = False,
                keep: bool = False) -> Iterator[Path]:
    """A new empty temporary file (or `directory`) beside `target`, named `.<target name>.XXXX<suffix>`.

    It is removed when the block raises (Ctrl-C and SIGTERM included, also one that arrives
    while it is being created), and when the block ends unless `keep` (the caller has moved it
    into place or will). UserError (one line) when it cannot be created.
    """
    target = Path(target)
    parent = Path(os.path.abspath(target)).parent
    tmp = None
    try:
        with signals_deferred():
            try:
                if directory:
                    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=suffix, dir=parent))
                else:
                    fd, name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=suffix, dir=parent)
                    os.close(fd)
                    tmp = Path(name)
            except OSError as e:
                raise _disk_error(target, e) from None
        yield tmp
    except BaseException:
        if tmp is not None:
            _remove(tmp, directory)
        raise
    if not keep:
        _remove(tmp, directory)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success it replaces `path` atomically.

    On any exception (KeyboardInterrupt and SIGTERM included) the temporary is removed and an
    existing `path` is left as it was. The new file gets the old file's permissions, or the
    umask's. Inside `outputs_together` the replacement waits for the end of the block.
    """
    target = Path(path)
    with temp_beside(target, ".part" + target.suffix[:16], keep=True) as tmp_path:
        try:
            yield tmp_path
        except OSError as e:
            if e.errno in DISK_ERRNOS:
                raise _disk_error(target, e) from None
            raise
        try:
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            mode = stat.S_IMODE(target.stat().st_mode) if target.is_file() else 0o666 & ~_umask()
            os.chmod(tmp_path, mode)
        except OSError as e:
            raise _disk_error(target, e) from None
        _put_in_place(tmp_path, target, is_dir=False)


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it takes the place of `path`.

    Missing parent directories of `path` are created first. An existing directory at `path`
    is removed only after the new one is in place; several processes replacing the same
    directory at once take turns (a lock on the parent directory). On any exception the
    temporary is removed and an existing `path` is untouched. Inside `outputs_together` the
    replacement waits for the end of the block.
    """
    target = Path(path)
    try:                              # one stat: another process may be swapping the directory now
        is_file = not stat.S_ISDIR(os.stat(target).st_mode)
    except OSError:
        is_file = False
    if is_file:
        raise UserError(f"cannot write directory {target}: a file of that name exists")
    try:
        Path(os.path.abspath(target)).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _disk_error(target, e) from None
    with temp_beside(target, ".part", directory=True, keep=True) as tmp:
        token = _OPEN_DIRS.set(_OPEN_DIRS.get() + (tmp,))
        try:
            yield tmp
        except OSError as e:
            if e.errno in DISK_ERRNOS:
                raise _disk_error(target, e) from None
            raise
        finally:
            _OPEN_DIRS.reset(token)
        os.chmod(tmp, 0o777 & ~_umask())
        _put_in_place(tmp, target, is_dir=True)
