"""Photo files in, edited photo files out: the workflow behind `exprengine edit` and `exprengine age`.

    report = edit_photo_file("group.jpg", "out.png", engine, AUs.parse("happiness@2"),
                             FaceEditor(engine, make_detector("hog")), select="largest")
    print(report.summary)          # found 3 faces, edited 1 (#0 212x212 at (40,31)): wrote out.png (...)

    edit_crop_file("face.png", "sad.png", engine, AUs.parse("sadness"), attention_out="att.png")

    age_photo_file("photo.jpg", "old.png", age_engine, 60, expression="happiness",
                   expression_engine=rig_engine)             # aged, then the expression

All three read the photo with its metadata (`media.read_photo`) and write the result keeping what the
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
from exprengine.errors import UserError, plural
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
        return (f"found {plural(len(self.found), 'face')}, edited {len(self.edited)} ({boxes}): "
                f"wrote {self.out} ({self.target})")


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


# --- ages ------------------------------------------------------------------------------------------
@dataclass
class PhotoFileAge:
    """What `age_photo_file` did. Face numbers index `found` (0 = most confident); `sides` are the
    aged faces' aligned squares in photo pixels (under `size`, the engine's, they were upscaled);
    `edited`: the faces then given `expression` (None: no expression edit)."""
    source: Path
    out: Path
    age: float                              # years
    found: list[Box]
    aged: list[int]
    sides: list[float] = field(default_factory=list)
    size: int = 256
    unlandmarked: list[int] = field(default_factory=list)   # chosen faces without landmarks: left as they were
    expression: AUs | None = None
    edited: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One sentence: what was found, aged (and edited) and written."""
        if not self.found:
            return f"no face found in {self.source}: wrote it unchanged to {self.out}"
        if not self.aged:
            which = ", ".join(f"#{i}" for i in self.unlandmarked)
            return f"no face landmarks found for face {which} in {self.source}: wrote it unchanged to {self.out}"
        faces = ", ".join(f"#{i} {self.found[i].width}x{self.found[i].height} at ({self.found[i].left},"
                          f"{self.found[i].top})" + (f", upscaled from {s:.0f} px" if s < self.size else "")
                          for i, s in zip(self.aged, self.sides))
        then = f", then edited {len(self.edited)} to {self.expression}" if self.expression is not None else ""
        return (f"found {plural(len(self.found), 'face')}, aged {len(self.aged)} of them to {self.age:g} years "
                f"({faces}){then}: wrote {self.out}")


def age_photo_file(image: str | os.PathLike, out: str | os.PathLike, engine, age, editor=None,
                   select: str | int = "all", expression: AUs | str | None = None, expression_engine=None,
                   expression_editor: FaceEditor | None = None, photo: Photo | None = None) -> PhotoFileAge:
    """Age every chosen face of the photo file `image` to `age` and write `out`; with `expression`,
    then edit the same faces of the aged photo to that expression (age first, then expression).

    `engine`: a loaded age `Engine` (one call ages every face); `age`: years 0..70 or an age class
    ("30-39"; `faces.age.parse_age`); `editor`: the `faces.age.AgeEditor` with the detector to use
    (default `AgeEditor(engine)`); `select`: "all", "largest" or a face number. `expression`: an
    AU spec or AUs; `expression_engine`: the expression `Engine` that edits it (the rig's, or a
    generator's; required with `expression`), through `expression_editor` (default a FaceEditor
    with the age editor's detector), on the faces the age step found. The photo's metadata is
    kept (`media.write_photo`), the file written atomically; a photo in which no face is aged is
    written unchanged. `photo`: the file as `media.read_photo` read it, when the caller has.
    Raises UserError for an unreadable photo, a bad age, an unwritable `out`, a face number not
    found, a chosen face too small to age, or engines of the wrong kind.
    """
    from exprengine.faces.age import AgeEditor, is_age_engine, parse_age, require_age_engine
    years = parse_age(age)
    require_age_engine(engine)
    target = None
    if expression is not None:
        if expression_engine is None:
            raise UserError("`expression_engine` is required to edit an `expression` after aging")
        if is_age_engine(expression_engine):
            raise UserError("`expression_engine` ages faces; give an expression engine (the rig's or a generator's)")
        target = expression if isinstance(expression, AUs) else AUs.parse(expression)
        expression_engine.policy.check(target.values)
    editor = editor or AgeEditor(engine)
    source = Path(image)
    photo = photo or media.read_photo(source)
    result = editor.age(photo.pixels, years, select)
    report = PhotoFileAge(source, Path(out), years, result.found, result.aged, result.sides, result.size,
                          result.unlandmarked, target)
    if not result.aged:
        report.notes += _write_unchanged(source, photo, report.out)
        return report
    if result.unlandmarked:
        report.notes.append(f"no face landmarks found for face {', '.join(f'#{i}' for i in result.unlandmarked)}; "
                            "left as it was")
    pixels = result.image
    if target is not None:
        faces = expression_editor or FaceEditor(expression_engine, editor.detector)
        rgb = np.ascontiguousarray(as_rgb(pixels, "a photo"))
        crops, meshes, missing = faces.locate(rgb, [result.found[i] for i in result.aged])
        report.edited = [i for k, i in enumerate(result.aged) if k not in missing]
        if missing:
            report.notes.append(f"no face mesh found for face {', '.join(f'#{result.aged[k]}' for k in missing)} "
                                "after aging; its expression was left as it was")
        pixels = faces.edit_crops(pixels, crops, target, meshes)
    report.notes += _write(report.out, pixels, photo)
    return report


def age_crop_file(image: str | os.PathLike, out: str | os.PathLike, engine, age, photo: Photo | None = None
                  ) -> list[str]:
    """Age the face crop file `image` as a whole (no detection: an aligned face crop, resized to the
    engine's size) to `age` (years or an age class, `faces.age.parse_age`) and write `out`
    (the engine's size), keeping its colour profile and EXIF. Returns notes on what the output
    format left out. Raises UserError for an unreadable image, a bad age, an engine that is not
    an age engine, or an unwritable output."""
    from exprengine.faces.age import parse_age, require_age_engine
    years = parse_age(age)
    require_age_engine(engine)
    source = photo or media.read_photo(image)
    from exprengine.preprocess import stack_faces
    face = stack_faces(np.ascontiguousarray(as_rgb(source.pixels, "a face image")), engine.image_size)
    aged = engine.age(face, np.array([years], np.float32))[0]
    return _write(Path(out), aged, dataclasses.replace(
        source, pixels=aged, high=None, icc_profile=source.icc_profile if source.pixels.ndim == 3 else None))
