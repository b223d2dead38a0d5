"""Image, animation and frame IO: read safely, write atomically, lay out contact sheets.

Reading: `read_image` turns any supported image into uint8 HxWx3 RGB with its EXIF orientation
applied, and every bad file into one `UserError` sentence that names the path.

Writing: `check_output_path` validates an output path up front, before any expensive work.
The writers (`write_image`, `write_animation`) never leave a partial file: they write beside
the target and rename into place (`atomic_output`, `atomic_directory`), and remove the
temporary on any failure, Ctrl-C included. An existing target is untouched until the new
output is complete.
"""
from __future__ import annotations

import errno
import fcntl
import math
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from exprengine.errors import UserError

#: Largest image `read_image` accepts, in pixels (width * height); larger files are refused.
MAX_PIXELS = 8192 * 8192

#: Formats `read_image` opens. Deliberately a short list of raster formats: Pillow's other
#: plugins include ones (EPS) that run external programs on untrusted input.
READ_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB", "GIF", "TIFF", "PPM", "TGA", "QOI", "AVIF")

#: Output kinds by suffix. The key "/" stands for a directory of PNG frames
#: (frame_0000.png, ...): a path ending in "/", an existing directory, or a path with no suffix.
OUTPUT_KINDS: dict[str, str] = {
    ".png": "image", ".jpg": "image", ".jpeg": "image", ".webp": "image", ".bmp": "image",
    ".gif": "animation", ".mp4": "animation",
    "/": "frames",
}
IMAGE_SUFFIXES = tuple(s for s, k in OUTPUT_KINDS.items() if k == "image")
ANIMATION_SUFFIXES = tuple(s for s, k in OUTPUT_KINDS.items() if k == "animation")

JPEG_QUALITY = 95
#: imageio's 0..10 quality scale; for libx264 8 maps to CRF 10 (near-lossless at face-crop sizes).
MP4_QUALITY = 8

_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
# Errors from the body of an atomic write that are about the disk, not the data: shown as one line.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.ENAMETOOLONG}


# --- reading ---------------------------------------------------------------------------------
def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 HxWx3 RGB with its EXIF orientation applied.

    Grayscale, palette, 16-bit, CMYK and other modes become RGB; an alpha channel (LA, RGBA,
    transparent palettes) is simply dropped, not composited. Animated files give their first
    frame. The file is only read, never changed.
    """
    return _read(path, _to_rgb)


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """Read a photo keeping what matters for writing it back the same way: uint8 HxW for
    grayscale, HxWx4 for images with transparency (RGBA), HxWx3 RGB otherwise; EXIF
    orientation applied. Same checks and errors as `read_image`."""
    return _read(path, _to_photo_array)


def _read(path: str | os.PathLike, convert) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise UserError(f"image {p} does not exist")
    if p.is_dir():
        raise UserError(f"image {p} is a directory, not an image file")
    if not p.is_file():
        raise UserError(f"image {p} is not a regular file")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit (larger than MAX_PIXELS) and raises above twice it.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p, formats=_read_formats()) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:            # checked on the header, before decoding
                    raise Image.DecompressionBombError(f"{w}x{h}")
                img.load()                        # decode fully: catches truncated files
                img = _exif_transposed(img)
                rgb = convert(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"image {p} is larger than the limit of {MAX_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        raise UserError(f"{p} is not an image this program can read "
                        f"(use PNG, JPEG, WebP, BMP, GIF or TIFF)") from None
    except PermissionError:
        raise UserError(f"image {p} is not readable (permission denied)") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 -- Pillow's decoders raise OSError and others
        detail = str(e).splitlines()[0].strip() if str(e).strip() else type(e).__name__
        raise UserError(f"image {p} is truncated or corrupt ({detail})") from None
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise UserError(f"image {p} is empty (0 pixels)")
    return rgb


def _read_formats() -> list[str]:
    Image.init()
    return [f for f in READ_FORMATS if f in Image.OPEN]


def _exif_transposed(img: Image.Image) -> Image.Image:
    # Broken EXIF data does not make the pixels unusable: keep the stored orientation then.
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        return img


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I;16"):
        gray = _scale_to_uint8(np.asarray(img, dtype=np.float64), 65535.0)
    elif mode == "I":
        a = np.asarray(img, dtype=np.float64)
        top = float(a.max()) if a.size else 0.0
        gray = _scale_to_uint8(a, 255.0 if top <= 255 else 65535.0 if top <= 65535 else top)
    elif mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        gray = _scale_to_uint8(a, 1.0 if a.size == 0 or a.max() <= 1.0 else 255.0)
    else:
        if mode == "La":                          # no direct RGB conversion: drop alpha first
            img = img.getchannel(0)
        return np.array(img.convert("RGB"), dtype=np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _to_photo_array(img: Image.Image) -> np.ndarray:
    has_alpha = img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        return np.array(img.convert("RGBA"), dtype=np.uint8)
    if img.mode in ("L", "1") or img.mode.startswith("I") or img.mode == "F":
        return np.ascontiguousarray(_to_rgb(img)[:, :, 0])
    return _to_rgb(img)


def _scale_to_uint8(a: np.ndarray, top: float) -> np.ndarray:
    return np.clip(np.rint(a / top * 255.0), 0, 255).astype(np.uint8)


# --- output paths ----------------------------------------------------------------------------
def output_kind(path: str | os.PathLike) -> str | None:
    """"image", "animation" or "frames" for an output path by its suffix; None if unsupported."""
    raw = os.fspath(path)
    p = Path(raw)
    if raw.endswith(("/", os.sep)) or p.is_dir() or p.suffix == "":
        return "frames"
    return OUTPUT_KINDS.get(p.suffix.lower())


def check_output_path(path: str | os.PathLike, kind: str, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Validate an output path before any expensive work; raise UserError if it cannot be written.

    kind "image": a file ending in one of IMAGE_SUFFIXES. kind "animation": a .gif or .mp4
    file, or a directory for PNG frames (a path ending in "/", a missing path with no suffix,
    or an existing empty directory). `inputs` are files the output must not overwrite.
    """
    if kind not in ("image", "animation"):
        raise ValueError(f"unknown output kind {kind!r}; use 'image' or 'animation'")
    raw = os.fspath(path)
    p = Path(raw)
    if not raw.strip():
        raise UserError("the output path is empty")
    found = output_kind(raw)
    if kind == "image":
        if p.is_dir():
            raise UserError(f"output {p} is a directory; give an image file name such as {p / 'out.png'}")
        if raw.endswith(("/", os.sep)):
            raise UserError(f"output {raw} ends in '/' and so names a directory; give an image file name")
        if found != "image":
            raise UserError(f"output {p} must end in one of {', '.join(IMAGE_SUFFIXES)}")
    elif found == "frames":
        if p.is_dir():
            if any(p.iterdir()):
                raise UserError(f"output directory {p} is not empty; give a new or empty directory for the frames")
        elif p.exists():
            raise UserError(f"output {p} exists and is not a directory")
        elif p.suffix:
            # The trailing "/" is all that marks "name.ext/" as a directory, and a Path drops it.
            raise UserError(f"output directory {raw} has a suffix ({p.suffix}); create it first or "
                            f"choose a frames directory name without a dot")
    elif found != "animation":
        raise UserError(f"output {p} must end in {' or '.join(ANIMATION_SUFFIXES)}, "
                        f"or name a directory for PNG frames (end it with /)")
    if p.exists() and not p.is_dir() and not p.is_file():
        raise UserError(f"output {p} exists and is not a regular file")
    check_writable_place(p, inputs)
    return p


def check_writable_place(p: Path, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """An output file can be created at `p`: its directory exists and is writable, and it is
    none of `inputs` (hard and symbolic links included). One-sentence UserError otherwise."""
    parent = Path(os.path.abspath(p)).parent
    if not parent.exists():
        raise UserError(f"cannot write {p}: the directory {parent} does not exist")
    if not parent.is_dir():
        raise UserError(f"cannot write {p}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {p}: the directory {parent} is not writable")
    for source in inputs:
        if source is not None and p.is_file() and Path(source).exists() and os.path.samefile(p, source):
            raise UserError(f"output {p} is the input file {source}; give another output name")


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
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success it replaces `path` atomically.

    On any exception (KeyboardInterrupt and SIGTERM included) the temporary is removed and an
    existing `path` is left as it was. The new file gets the old file's permissions, or the
    umask's. Inside `outputs_together` the replacement waits for the end of the block.
    """
    target = Path(path)
    parent = Path(os.path.abspath(target)).parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".part" + target.suffix[:16], dir=parent)
    except OSError as e:
        raise _disk_error(target, e) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as e:
            if e.errno in _DISK_ERRNOS:
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
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


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
    parent = Path(os.path.abspath(target)).parent
    if target.exists() and not target.is_dir():
        raise UserError(f"cannot write directory {target}: a file of that name exists")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".part", dir=parent))
    except OSError as e:
        raise _disk_error(target, e) from None
    token = _OPEN_DIRS.set(_OPEN_DIRS.get() + (tmp,))
    try:
        try:
            yield tmp
        except OSError as e:
            if e.errno in _DISK_ERRNOS:
                raise _disk_error(target, e) from None
            raise
        finally:
            _OPEN_DIRS.reset(token)
        os.chmod(tmp, 0o777 & ~_umask())
        _put_in_place(tmp, target, is_dir=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- writers ---------------------------------------------------------------------------------
def _check_frames(frames: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(frames)
    want_ndim = 3 if what == "image" else 4
    if a.dtype != np.uint8 or a.ndim != want_ndim or a.shape[-1] != 3 or 0 in a.shape:
        shape = "HxWx3" if what == "image" else "[F,H,W,3]"
        raise ValueError(f"expected a non-empty uint8 {shape} array, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write uint8 HxWx3 RGB (or HxW grayscale, or HxWx4 RGBA) as PNG, JPEG (quality 95), WebP
    or BMP by suffix, atomically. RGBA keeps its alpha in PNG and WebP; JPEG and BMP, which
    cannot hold it, get the RGB channels."""
    p = check_output_path(path, "image")
    a = np.asarray(image)
    if a.dtype == np.uint8 and a.ndim == 2 and 0 not in a.shape:
        img = Image.fromarray(np.ascontiguousarray(a), "L")
    elif a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 4 and 0 not in a.shape:
        fmt_alpha = _PIL_FORMATS[p.suffix.lower()] in ("PNG", "WEBP")
        img = Image.fromarray(np.ascontiguousarray(a if fmt_alpha else a[:, :, :3]), "RGBA" if fmt_alpha else "RGB")
    else:
        img = Image.fromarray(_check_frames(image, "image"), "RGB")
    fmt = _PIL_FORMATS[p.suffix.lower()]
    options = {"quality": JPEG_QUALITY} if fmt in ("JPEG", "WEBP") else {}
    with atomic_output(p) as tmp:
        img.save(tmp, format=fmt, **options)
    return p


def write_animation(path: str | os.PathLike, frames: np.ndarray, fps: float = 12.0, loop: bool = True) -> Path:
    """Write [F,H,W,3] uint8 frames as .gif, .mp4 (H.264, yuv420p) or a directory of PNG frames.

    GIF: `loop` plays it endlessly, else once; Pillow merges identical consecutive frames
    (adding up their durations). MP4: odd sizes are padded to even by repeating the edge.
    Frames directory: frame_0000.png, frame_0001.png, ...; an existing empty directory is
    replaced. Every kind is written atomically.
    """
    raw = os.fspath(path)
    p = check_output_path(raw, "animation")
    frames = _check_frames(frames, "animation")
    try:
        rate = float(fps)
    except (TypeError, ValueError):
        rate = float("nan")
    if not (math.isfinite(rate) and rate > 0):
        raise UserError(f"the frame rate must be a positive number of frames per second, not {fps!r}")
    fps = rate
    kind = output_kind(raw)
    if kind == "frames":
        digits = max(4, len(str(len(frames) - 1)))
        with atomic_directory(p) as tmp:
            for i, frame in enumerate(frames):
                Image.fromarray(frame, "RGB").save(tmp / f"frame_{i:0{digits}d}.png", format="PNG")
        return p
    if p.suffix.lower() == ".gif":
        _write_gif(p, frames, fps, loop)
    else:
        _write_mp4(p, frames, fps)
    return p


GIF_PALETTE_SAMPLE = 4_000_000   # pixels the shared GIF palette is built from, at most


def _gif_frames(frames: np.ndarray) -> list[Image.Image]:
    """[F,H,W,3] uint8 -> F palette images sharing ONE palette built from all frames, no dithering.

    One palette for the whole animation, chosen by Pillow's octree quantizer from the pixels
    of every frame (a strided sample past GIF_PALETTE_SAMPLE pixels), so a colour seen in
    any frame (eye whites, say) has a close entry, and no dithering, so a pixel that is the
    same in two input frames gets the same index in both: still regions stay still. (Per-frame
    palettes with Floyd-Steinberg dithering, Pillow's default for RGB frames, made the
    background shimmer and shifted small bright areas to the nearest frequent colour.)
    """
    n, h, w = frames.shape[:3]
    step = max(1, math.ceil(math.sqrt(n * h * w / GIF_PALETTE_SAMPLE)))
    sample = np.ascontiguousarray(frames[:, ::step, ::step]).reshape(1, -1, 3)
    palette = Image.fromarray(sample, "RGB").quantize(256, method=Image.Quantize.FASTOCTREE,
                                                      dither=Image.Dither.NONE)
    return [Image.fromarray(frame, "RGB").quantize(palette=palette, dither=Image.Dither.NONE)
            for frame in frames]


def _write_gif(p: Path, frames: np.ndarray, fps: float, loop: bool) -> None:
    # Pillow directly (what imageio's pillow plugin calls): after a failed encode imageio's
    # plugin would retry the whole encode when it is garbage-collected.
    images = _gif_frames(frames)
    options: dict = {"save_all": True, "append_images": images[1:], "duration": 1000.0 / fps}
    if loop:
        options["loop"] = 0                      # 0 = forever; no loop key = play once
    with atomic_output(p) as tmp:
        images[0].save(tmp, format="GIF", **options)


def _write_mp4(p: Path, frames: np.ndarray, fps: float) -> None:
    import imageio.v2 as iio2
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:                           # yuv420p needs even sizes: repeat the last row/column
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with atomic_output(p) as tmp:
        writer = iio2.get_writer(str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                 pixelformat="yuv420p", quality=MP4_QUALITY, macro_block_size=1,
                                 ffmpeg_log_level="error",
                                 output_params=["-movflags", "+faststart", "-f", "mp4"])
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()


# --- contact sheets --------------------------------------------------------------------------
def contact_sheet(frames: np.ndarray, columns: int | None = None, labels: list[str] | None = None,
                  pad: int = 2) -> np.ndarray:
    """Tile [F,H,W,3] uint8 frames into one uint8 image with white gaps of `pad` pixels.

    columns defaults to ceil(sqrt(F)), at most 8 (and never more than F). With `labels` (one
    per frame) each tile gets a white strip below it with its label, centred, in Pillow's
    default font; a label wider than the tile is shortened with "...".
    """
    frames = _check_frames(frames, "animation")
    n, h, w = frames.shape[:3]
    if columns is not None and columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{n} frames but {len(labels)} labels")
    cols = min(n, columns or min(8, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    font = ImageFont.load_default() if labels else None
    label_h = _label_height(font) if font is not None else 0
    cell_h, cell_w = h + label_h + pad, w + pad
    sheet = np.full((pad + rows * cell_h, pad + cols * cell_w, 3), 255, np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, cols)
        y, x = pad + r * cell_h, pad + c * cell_w
        sheet[y:y + h, x:x + w] = frame
    if font is not None:
        img = Image.fromarray(sheet)
        draw = ImageDraw.Draw(img)
        for i, text in enumerate(labels):
            r, c = divmod(i, cols)
            y, x = pad + r * cell_h + h, pad + c * cell_w
            text = _fit_text(draw, font, str(text), w)
            left, _, right, _ = draw.textbbox((0, 0), text, font=font)
            draw.text((x + (w - (right - left)) // 2 - left, y + 1), text, fill=(0, 0, 0), font=font)
        sheet = np.asarray(img).copy()
    return sheet


def _label_height(font) -> int:
    bottom = font.getbbox("Ag/0@")[3]
    return bottom + 3                              # glyphs start at y=0 of the strip, 2px below them


def _fit_text(draw: ImageDraw.ImageDraw, font, text: str, width: int) -> str:
    def fits(s: str) -> bool:
        left, _, right, _ = draw.textbbox((0, 0), s, font=font)
        return right - left <= width
    if fits(text):
        return text
    while text and not fits(text + "..."):
        text = text[:-1]
    return text + "..." if text else ""
