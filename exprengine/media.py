"""Image, animation and frame IO: read safely, write atomically, lay out contact sheets.

Reading: `read_image` turns any supported image into uint8 HxWx3 RGB with its EXIF orientation
applied, and every bad file into one `UserError` sentence that names the path.

Writing: `check_output_path` validates an output path of a media kind up front, before any
expensive work. The writers (`write_image`, `write_animation`, `write_photo`) write through
`exprengine.files` (`atomic_output`, `atomic_directory`): never a partial file, and an
existing target untouched until the new output is complete.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from exprengine.errors import UserError
from exprengine.files import atomic_directory, atomic_output, check_writable_place

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


# --- reading ---------------------------------------------------------------------------------
def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 HxWx3 RGB with its EXIF orientation applied.

    Grayscale, palette, 16-bit, CMYK and other modes become RGB; an alpha channel (LA, RGBA,
    transparent palettes) is simply dropped, not composited. Animated files give their first
    frame. The file is only read, never changed.
    """
    return _read(path, _to_rgb)


def read_photo(path: str | os.PathLike) -> Photo:
    """Read a photo with what writing it back the same way needs (see `Photo`): its pixels as
    uint8 HxW for grayscale, HxWx4 RGBA for images with transparency, HxWx3 RGB otherwise,
    EXIF orientation applied; the exact samples of a 16-bit PNG (or other 16-bit grayscale);
    its ICC colour profile and its EXIF block. Same checks and errors as `read_image`: one
    `UserError` for a missing, unreadable, oversized, truncated or corrupt file."""
    p = Path(path)
    read: list[Photo] = []

    def convert(upright: Image.Image) -> np.ndarray:
        read.append(_photo(p, upright))
        return read[0].pixels

    _read(p, convert)
    return read[0]


@dataclass(frozen=True)
class Photo:
    """A photo as `read_photo` read it, with what `write_photo` needs to keep it as it was.

    pixels: uint8 HxW (grayscale), HxWx4 (RGBA: the file has transparency) or HxWx3 (RGB),
        upright (EXIF orientation applied); what the face pipeline looks at and edits.
    high: None, or uint16 of the same shape: the file's exact 16-bit samples (a 16-bit PNG,
        gray, gray+alpha, RGB or RGBA, or a 16-bit grayscale image of another format);
        `pixels` is then `high / 257` rounded.
    icc_profile: the embedded ICC colour profile when it describes `pixels`' colour space (an
        RGB profile for RGB/RGBA, a gray one for grayscale), else None.
    exif: the file's EXIF block (starting b"Exif\\0\\0") with its Orientation tag removed when
        the pixels were turned upright, or None.
    format: Pillow's name for the file's format ("JPEG", "PNG", "MPO", ...).
    """
    pixels: np.ndarray
    high: np.ndarray | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    format: str | None = None


_EXIF_HEADER = b"Exif\x00\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_EXIF_MAX = 65533 - 2           # one APP1 segment, less its length field


def _photo(p: Path, upright: Image.Image) -> Photo:
    """`Photo` of the file `p`, from `upright` (the decoded image, orientation applied)."""
    pixels = _to_photo_array(upright)
    with Image.open(p, formats=_read_formats()) as source:    # the header again: format, orientation
        fmt = source.format
        high = _high_samples(p, source, upright, pixels)
    if high is not None:
        pixels = _scale_to_uint8(high.astype(np.float64), 65535.0)
    icc = upright.info.get("icc_profile") or None
    space = icc[16:20] if isinstance(icc, bytes) and len(icc) >= 128 else None
    if space != (b"GRAY" if pixels.ndim == 2 else b"RGB "):
        icc = None                   # a CMYK profile for pixels converted to RGB, say: it no longer applies
    exif = upright.info.get("exif") or None
    if isinstance(exif, bytes) and not exif.startswith(_EXIF_HEADER):
        exif = _EXIF_HEADER + exif   # WebP may store it bare; JPEG needs the header
    return Photo(pixels, high, icc, exif if isinstance(exif, bytes) else None, fmt)


def _high_samples(p: Path, source: Image.Image, upright: Image.Image, pixels: np.ndarray) -> np.ndarray | None:
    """The 16-bit samples laid out like `pixels`, upright, or None for an 8-bit image."""
    if upright.mode in ("I;16", "I;16L", "I;16B", "I;16N") and pixels.ndim == 2:
        return np.asarray(upright).astype(np.uint16)
    if source.format != "PNG":
        return None
    with open(p, "rb") as f:
        head = f.read(26)
    # IHDR is the first chunk: bit depth at byte 24, colour type at 25 (2 RGB, 4 gray+alpha, 6 RGBA)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[24] != 16 or head[25] not in (2, 4, 6):
        return None
    # Pillow decodes these to 8 bits; pypng (pure Python) gives the exact samples.
    import png
    width, height, rows, info = png.Reader(filename=os.fspath(p)).read()
    planes = info["planes"]
    a = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, planes)
    source.load()                    # PNG may keep its EXIF after the pixels
    channels = []
    for i in range(planes):          # turned upright exactly as `_read` turned the 8-bit image
        plane = Image.fromarray(np.ascontiguousarray(a[:, :, i]))
        plane.info = dict(source.info)
        channels.append(np.asarray(_exif_transposed(plane)).astype(np.uint16))
    a = np.stack(channels, axis=2)
    if planes == 2:                  # gray + alpha: the photo is RGBA
        a = a[:, :, [0, 0, 0, 1]]
    if a.shape != pixels.shape:
        return None
    return np.ascontiguousarray(a)


def write_photo(path: str | os.PathLike, pixels: np.ndarray, photo: Photo) -> Path:
    """Write `pixels` (uint8, the shape of `photo.pixels`: the photo edited, or unchanged) as
    PNG, JPEG (quality 95), WebP or BMP by suffix, atomically, keeping what the format can hold
    of what `photo` came with: its ICC colour profile (PNG, JPEG, WebP), its EXIF (PNG, WebP;
    JPEG up to 64 KB) and, in PNG, its 16-bit samples: a sample whose 8-bit value is unchanged
    keeps its exact 16-bit value, a changed one moves by the 8-bit change x 257. `photo_losses`
    names what a format leaves out. RGBA keeps its alpha in PNG and WebP; JPEG and BMP get RGB.
    Raises ValueError when `pixels` does not match `photo.pixels`; UserError (one line) when
    the file cannot be written.
    """
    p = check_output_path(path, "image")
    a = np.asarray(pixels)
    if a.dtype != np.uint8 or a.shape != photo.pixels.shape or 0 in a.shape:
        raise ValueError(f"expected uint8 pixels shaped like the photo {photo.pixels.shape}, got {a.dtype} {a.shape}")
    fmt = _PIL_FORMATS[p.suffix.lower()]
    icc = photo.icc_profile if _keeps_icc(fmt, photo) else None
    exif = photo.exif if _keeps_exif(fmt, photo) else None
    if fmt == "PNG" and photo.high is not None:
        data = _png16(_high_edited(photo, a), icc, exif)
        with atomic_output(p) as tmp:
            tmp.write_bytes(data)
        return p
    if a.ndim == 2:
        img = Image.fromarray(np.ascontiguousarray(a), "L")
    elif a.shape[2] == 4 and fmt in ("PNG", "WEBP"):
        img = Image.fromarray(np.ascontiguousarray(a), "RGBA")
    else:
        img = Image.fromarray(np.ascontiguousarray(a[:, :, :3]), "RGB")
    options: dict = {"quality": JPEG_QUALITY} if fmt in ("JPEG", "WEBP") else {}
    if icc:
        options["icc_profile"] = icc
    if exif:
        options["exif"] = exif
    with atomic_output(p) as tmp:
        img.save(tmp, format=fmt, **options)
    return p


def photo_losses(path: str | os.PathLike, photo: Photo) -> str | None:
    """One sentence naming what `write_photo` cannot keep of `photo` in `path`'s format (BMP
    holds no colour profile or EXIF, WebP no gray profile, JPEG at most 64 KB of EXIF, only PNG
    16-bit samples), or None when it keeps all of it."""
    p = Path(path)
    fmt = image_format(p)
    if fmt is None:
        return None
    lost = [what for what, gone in (
        ("colour profile", photo.icc_profile is not None and not _keeps_icc(fmt, photo)),
        ("EXIF data", photo.exif is not None and not _keeps_exif(fmt, photo)),
        ("16-bit samples", photo.high is not None and fmt != "PNG"),
    ) if gone]
    if not lost:
        return None
    things = lost[0] if len(lost) == 1 else ", ".join(lost[:-1]) + " and " + lost[-1]
    return f"{fmt} cannot hold the photo's {things}: {p} is written without {'it' if len(lost) == 1 else 'them'}"


def image_format(path: str | os.PathLike) -> str | None:
    """Pillow's name of the format an image output path is written in ("PNG", "JPEG", "WEBP",
    "BMP"), by its suffix; None for a suffix that is not an image output."""
    return _PIL_FORMATS.get(Path(path).suffix.lower())


def _keeps_icc(fmt: str, photo: Photo) -> bool:
    # Pillow writes grayscale WebP as RGB, which a gray profile does not describe.
    return fmt in ("PNG", "JPEG") or (fmt == "WEBP" and photo.pixels.ndim == 3)


def _keeps_exif(fmt: str, photo: Photo) -> bool:
    return fmt in ("PNG", "WEBP") or (fmt == "JPEG" and photo.exif is not None and len(photo.exif) <= _JPEG_EXIF_MAX)


def _high_edited(photo: Photo, pixels: np.ndarray) -> np.ndarray:
    """photo.high with the 8-bit changes of `pixels` (against photo.pixels) applied x 257."""
    out = photo.high.copy()
    changed = pixels != photo.pixels
    delta = pixels[changed].astype(np.int32) - photo.pixels[changed].astype(np.int32)
    out[changed] = np.clip(photo.high[changed].astype(np.int32) + delta * 257, 0, 65535).astype(np.uint16)
    return out


def _png16(a: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """A 16-bit PNG file of uint16 HxW (gray) or HxWxC (C = 3 RGB, 4 RGBA), with the profile
    (iCCP) and EXIF (eXIf) chunks right after the header."""
    import io
    import zlib

    import png
    h, w = a.shape[:2]
    planes = 1 if a.ndim == 2 else a.shape[2]
    encoded = io.BytesIO()
    png.Writer(w, h, greyscale=planes in (1, 2), alpha=planes in (2, 4), bitdepth=16).write(
        encoded, np.ascontiguousarray(a).reshape(h, w * planes))
    chunks = list(png.Reader(bytes=encoded.getvalue()).chunks())
    extra = []
    if icc:
        extra.append((b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        extra.append((b"eXIf", exif[len(_EXIF_HEADER):] if exif.startswith(_EXIF_HEADER) else exif))
    chunks[1:1] = extra              # after IHDR, before the pixels
    out = io.BytesIO()
    png.write_chunks(out, chunks)
    return out.getvalue()


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
    or an existing empty directory). kind "file": any other file (a JSON report).
    `inputs` are files the output must not overwrite (see `check_outputs_apart`).
    """
    if kind not in ("image", "animation", "file"):
        raise ValueError(f"unknown output kind {kind!r}; use 'image', 'animation' or 'file'")
    raw = os.fspath(path)
    p = Path(raw)
    if not raw.strip():
        raise UserError("the output path is empty")
    found = output_kind(raw)
    if kind == "file":
        if p.is_dir() or raw.endswith(("/", os.sep)):
            raise UserError(f"output {raw} is a directory; give a file name")
        found = "file"
    elif kind == "image":
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
    check_writable_place(p, inputs, directory=found == "frames")
    return p


def bundled_face(name: str = "face.png") -> np.ndarray:
    """A face shipped with the package, as uint8 HxWx3 RGB: `face.png` (a real face crop, the
    demo's and the checks'; see `exprengine/assets/README.md`) or `synthetic_face.png` (a held-out
    synthetic face at 8 years, 128x128, what the shipped age model ages)."""
    from importlib import resources
    with resources.as_file(resources.files("exprengine") / "assets" / name) as p:
        return read_image(p)


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
    or BMP by suffix, atomically: `write_photo` with nothing to keep. RGBA keeps its alpha in
    PNG and WebP; JPEG and BMP, which cannot hold it, get the RGB channels. ValueError for
    another shape or dtype."""
    a = np.asarray(image)
    if not (a.dtype == np.uint8 and (a.ndim == 2 or a.ndim == 3 and a.shape[2] == 4) and 0 not in a.shape):
        a = _check_frames(image, "image")
    return write_photo(path, a, Photo(a))


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
    """[F,H,W,3] uint8 -> F palette images sharing ONE palette built from all frames, ordered dither.

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
    if len(np.unique(sample.reshape(-1, 3), axis=0)) <= 256:      # few colours: the palette is exact
        return [Image.fromarray(frame, "RGB").quantize(palette=palette, dither=Image.Dither.NONE)
                for frame in frames]
    # Ordered (Bayer) dithering: an offset that depends only on the pixel's position breaks up
    # the bands of smooth gradients (on a face morph: 22 % less error in 4x4 local means, what
    # the eye sees) and, unlike error diffusion, maps a pixel that is equal in two frames to the
    # same index in both, so still regions stay still.
    offset = np.tile(_BAYER4, (h // 4 + 1, w // 4 + 1))[:h, :w, None] * GIF_DITHER_SPREAD
    return [Image.fromarray(np.clip(np.rint(frame + offset), 0, 255).astype(np.uint8), "RGB")
            .quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]


#: 4x4 Bayer threshold matrix centred on zero (-15/32 .. 15/32).
_BAYER4 = (np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]], np.float32) + 0.5) / 16 - 0.5
#: Peak-to-peak size of the ordered dither in 8-bit levels, about one palette step on faces.
GIF_DITHER_SPREAD = 12.0


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
