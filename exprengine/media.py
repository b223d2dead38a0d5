"""Image, animation and frame IO: read safely, write atomically, lay out contact sheets.

Readers turn every bad file into one UserError sentence. Writers never leave a partial
file: they write beside the target and rename into place (`atomic_output`,
`atomic_directory`), and remove the temporary on any failure, Ctrl-C included.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from exprengine.errors import UserError

MAX_PIXELS = 8192 * 8192
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ANIMATION_SUFFIXES = (".gif", ".mp4")
OUTPUT_KINDS = {"image": IMAGE_SUFFIXES, "animation": ANIMATION_SUFFIXES + ("<directory>/",)}


# --- reading ---------------------------------------------------------------------------------
def read_image(path: str | os.PathLike) -> np.ndarray:
    """Any Pillow-readable image -> uint8 HxWx3 RGB, EXIF orientation applied.

    Grayscale, palette, 16-bit and alpha images become RGB (alpha is dropped).
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"image {p} does not exist")
    if p.is_dir():
        raise UserError(f"image {p} is a directory, not an image file")
    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                img.load()                              # decode fully: catches truncation
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"image {p} is larger than the {MAX_PIXELS:,}-pixel limit") from None
    except UnidentifiedImageError:
        raise UserError(f"{p} is not an image this program can read") from None
    except PermissionError:
        raise UserError(f"image {p} is not readable (permission denied)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"image {p} is truncated or corrupt ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise UserError(f"image {p} is empty (0 pixels)")
    return rgb


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0)
        gray = np.clip(np.rint(a / hi * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(a * 255.0 if a.max() <= 1.0 else a), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.array(img.convert("RGB"), dtype=np.uint8)


# --- output paths ----------------------------------------------------------------------------
def _is_frames_dir(p: Path, raw: str) -> bool:
    return raw.endswith(("/", os.sep)) or p.is_dir() or p.suffix == ""


def check_output_path(path: str | os.PathLike, kind: str) -> Path:
    """Validate an output path before any expensive work; UserError if it cannot be written."""
    raw = str(path)
    p = Path(raw)
    if kind == "image":
        if p.is_dir():
            raise UserError(f"output {p} is a directory; give an image file name such as {p / 'out.png'}")
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"output {p} must end in one of {', '.join(IMAGE_SUFFIXES)}")
    elif kind == "animation":
        if _is_frames_dir(p, raw):
            if p.exists() and not p.is_dir():
                raise UserError(f"output {p} exists and is not a directory")
            if p.is_dir() and any(p.iterdir()):
                raise UserError(f"output directory {p} is not empty; give a new or empty directory for the frames")
        elif p.suffix.lower() not in ANIMATION_SUFFIXES:
            raise UserError(f"output {p} must end in .gif or .mp4, or be a directory for PNG frames")
    else:
        raise ValueError(f"unknown output kind {kind!r}")
    parent = p.resolve().parent
    if not parent.is_dir():
        raise UserError(f"cannot write {p}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {p}: the directory {parent} is not writable")
    return p


# --- atomic writes ---------------------------------------------------------------------------
@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, else it is removed."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path` (an existing
    directory there is removed only after the new one is complete), else it is removed."""
    target = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if target.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- writers ---------------------------------------------------------------------------------
def _check_frame(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {a.dtype} {a.shape}")
    return a


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """uint8 HxWx3 -> PNG/JPEG/WebP/BMP by suffix, atomically."""
    p = Path(path)
    img = Image.fromarray(_check_frame(image))
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}.get(p.suffix.lower())
    if fmt is None:
        raise UserError(f"output {p} must end in one of {', '.join(IMAGE_SUFFIXES)}")
    with atomic_output(p) as tmp:
        img.save(tmp, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return p


def write_animation(path: str | os.PathLike, frames: np.ndarray, fps: float = 12.0, loop: bool = True) -> Path:
    """[F,H,W,3] uint8 -> .gif, .mp4 (H.264), or a directory of PNG frames; atomically."""
    raw = str(path)
    p = Path(raw)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 1:
        raise ValueError(f"expected frames [F,H,W,3], got {frames.shape}")
    _check_frame(frames[0])
    if _is_frames_dir(p, raw):
        with atomic_directory(p) as tmp:
            digits = max(4, len(str(len(frames) - 1)))
            for i, f in enumerate(frames):
                Image.fromarray(f).save(tmp / f"frame_{i:0{digits}d}.png")
        return p
    suffix = p.suffix.lower()
    if suffix == ".gif":
        import imageio.v3 as iio
        with atomic_output(p) as tmp:
            iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0 if loop else 1)
        return p
    if suffix == ".mp4":
        import imageio.v2 as iio2
        h, w = frames.shape[1:3]
        even = frames
        if h % 2 or w % 2:     # yuv420p needs even sizes: pad by edge replication
            even = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        with atomic_output(p) as tmp:
            writer = iio2.get_writer(str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                     pixelformat="yuv420p", quality=8, macro_block_size=1,
                                     output_params=["-movflags", "+faststart"])
            try:
                for f in even:
                    writer.append_data(f)
            finally:
                writer.close()
        return p
    raise UserError(f"output {p} must end in .gif or .mp4, or be a directory for PNG frames")


def contact_sheet(frames: np.ndarray, columns: int | None = None, labels: list[str] | None = None,
                  pad: int = 2) -> np.ndarray:
    """Tile [F,H,W,3] frames into one uint8 image (white gaps), with an optional label under each."""
    frames = np.asarray(frames)
    n, h, w = frames.shape[:3]
    cols = columns or min(8, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    label_h = 14 if labels else 0
    sheet = np.full((pad + rows * (h + label_h + pad), pad + cols * (w + pad), 3), 255, np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + label_h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = f
    if labels:
        img = Image.fromarray(sheet)
        draw, font = ImageDraw.Draw(img), ImageFont.load_default()
        for i, text in enumerate(labels[:n]):
            r, c = divmod(i, cols)
            y, x = pad + r * (h + label_h + pad) + h + 1, pad + c * (w + pad)
            draw.text((x + 2, y), str(text), fill=(0, 0, 0), font=font)
        sheet = np.asarray(img)
    return sheet
