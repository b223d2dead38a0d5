"""Photo files in, edited photo files out: the workflow behind `exprengine edit`.

    report = edit_photo_file("group.jpg", "out.png", engine, AUs.parse("happiness@2"),
                             FaceEditor(engine, make_detector("hog")), select="largest")
    print(report.summary)          # found 3 face(s), edited 1 (#0 212x212 at (40,31)): wrote out.png (...)

    edit_crop_file("face.png", "sad.png", engine, AUs.parse("sadness"), attention_out="att.png")

Both read the photo with its metadata (`media.read_photo`) and write the result keeping what the
output format can hold of it (colour profile, EXIF, 16-bit samples: `media.write_photo`),
atomically. A photo in which no face is edited is written unchanged: the file's own bytes when
the output has the input's format, else re-encoded as an edited photo is.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exprengine import media
from exprengine.aus import AUs
from exprengine.faces.detect import Box
from exprengine.faces.editor import FaceEditor
from exprengine.files import atomic_output
from exprengine.media import Photo
from exprengine.pixels import as_rgb

#: Photos no larger than this (longest side, pixels) with no face found get the hint that they
#: may be a face crop already.
CROP_HINT_MAX_SIDE = 512


@dataclass
class PhotoFileEdit:
    """What `edit_photo_file` did. Face numbers index `found` (0 = most confident)."""
    source: Path
    out: Path
    target: AUs
    found: list[Box]
    edited: list[int]                       # faces edited and pasted back
    unmeshed: list[int] = field(default_factory=list)   # chosen faces left as they were: no mesh
    model: str = ""                         # the engine's model (named in the no-mesh sentence)
    notes: list[str] = field(default_factory=list)      # what the output format left out, etc.
    small: bool = False                     # the photo's longest side <= CROP_HINT_MAX_SIDE

    @property
    def summary(self) -> str:
        """One sentence: what was found, edited and written."""
        if not self.found:
            message = f"no face found in {self.source}: wrote it unchanged to {self.out}"
            if self.small:
                message += " (if the image is already a face crop, add --crop to edit all of it)"
            return message
        if not self.edited:
            which = ", ".join(f"#{i}" for i in self.unmeshed)
            return (f"no face mesh found for face {which} in {self.source} (the {self.model} engine needs one): "
                    f"wrote it unchanged to {self.out}")
        boxes = ", ".join(f"#{i} {self.found[i].width}x{self.found[i].height} at "
                          f"({self.found[i].left},{self.found[i].top})" for i in self.edited)
        return f"found {len(self.found)} face(s), edited {len(self.edited)} ({boxes}): wrote {self.out} ({self.target})"


def edit_photo_file(image: str | os.PathLike, out: str | os.PathLike, engine, target: AUs,
                    editor: FaceEditor | None = None, select: str | int = "all",
                    photo: Photo | None = None) -> PhotoFileEdit:
    """Edit every chosen face of the photo file `image` to `target` and write `out`.

    `engine`: a loaded `Engine` (one call edits every face); `editor`: the `FaceEditor` with
    the detector, alignment and mask to use (default: `FaceEditor(engine)`); `select`: "all",
    "largest" or a face number. A face the rig cannot mesh is left as it was (noted in the
    report). The output is written whether or not a face was edited (unchanged, then).
    `photo`: the file as `media.read_photo` read it, when the caller has read it already.
    Raises UserError for an unreadable photo, an unwritable `out` or a face number not found.
    """
    source = Path(image)
    photo = photo or media.read_photo(source)
    editor = editor or FaceEditor(engine)
    result = editor.edit(photo.pixels, target, select)
    report = PhotoFileEdit(source, Path(out), target, result.found, result.edited, result.unmeshed,
                           engine.manifest.model, small=max(photo.pixels.shape[:2]) <= CROP_HINT_MAX_SIDE)
    if result.edited:
        if result.unmeshed:
            report.notes.append(f"no face mesh found for face {', '.join(f'#{i}' for i in result.unmeshed)}; "
                                "left unedited")
        report.notes += _write(report.out, result.image, photo)
    else:
        report.notes += _write_unchanged(source, photo, report.out)
    return report


def edit_crop_file(image: str | os.PathLike, out: str | os.PathLike, engine, target: AUs,
                   attention_out: str | os.PathLike | None = None, photo: Photo | None = None) -> list[str]:
    """Edit the face crop file `image` as a whole (no detection) and write `out`, keeping its
    colour profile and EXIF; with `attention_out`, also the attention map as a gray image
    (white = pixel kept from the input). Returns notes on what the output format left out.
    `photo`: the file as `media.read_photo` read it, when the caller has read it already.
    Raises UserError for an unreadable image or an unwritable output.
    """
    source = photo or media.read_photo(image)
    face = np.ascontiguousarray(as_rgb(source.pixels, "a face image"))
    result = engine.edit_detailed(face, target)
    edited = result.images[0]
    notes = _write(Path(out), edited, dataclasses.replace(
        source, pixels=edited, high=None, icc_profile=source.icc_profile if source.pixels.ndim == 3 else None))
    if attention_out is not None:
        media.write_image(attention_out, np.repeat(np.rint(result.attention[0] * 255).astype(np.uint8)[:, :, None], 3, 2))
    return notes


def _write(out: Path, pixels: np.ndarray, photo: Photo) -> list[str]:
    """Write a photo (edited or not) keeping its metadata -> the note on what the format drops."""
    lost = media.photo_losses(out, photo)
    media.write_photo(out, pixels, photo)
    return [lost] if lost else []


def _write_unchanged(source: Path, photo: Photo, out: Path) -> list[str]:
    """The photo unchanged: the file's own bytes when `out` has the file's own format (every
    chunk and bit kept), else re-encoded by `_write` as an edited photo is."""
    if media.image_format(out) == {"MPO": "JPEG"}.get(photo.format, photo.format):
        with atomic_output(out) as tmp:
            shutil.copyfile(source, tmp)
        return []
    return _write(out, photo.pixels, photo)
