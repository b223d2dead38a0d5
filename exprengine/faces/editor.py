"""Whole photos and frames in, edited photos and frames out: find the faces, crop them, edit
every face of the frame in one engine call, paste the changes back.

    editor = FaceEditor(engine)                               # HOG detector, shape+attention mask
    result = editor.edit(photo, "happiness@1.5")              # every face
    result = editor.edit(photo, "happiness", select="largest")
    result.image, result.found, result.edited                 # same shape and mode as `photo`

Photos may be uint8 HxW (grayscale), HxWx3 (RGB) or HxWx4 (RGBA: alpha is kept as it is).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from exprengine.engine import EditResult
from exprengine.errors import UserError
from exprengine.faces.crop import FaceCrop
from exprengine.faces.detect import Box, FaceDetector
from exprengine.faces.paste import MASKS, apply_changes, pasted_change


@dataclass
class PhotoEdit:
    image: np.ndarray                       # the edited photo, same shape and dtype as the input
    found: list[Box]                        # every face detected, most confident first
    edited: list[int] = field(default_factory=list)   # indices into `found` that were edited
    crops: list[FaceCrop] = field(default_factory=list)


def as_rgb(photo: np.ndarray) -> np.ndarray:
    """uint8 HxW, HxWx1, HxWx3 or HxWx4 -> HxWx3 (a view where possible) for detection and crops."""
    a = np.asarray(photo)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)) or 0 in a.shape:
        raise UserError(f"a photo must be uint8 HxW, HxWx3 or HxWx4, got {a.dtype} {list(a.shape)}")
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    return a[:, :, :3] if a.shape[2] == 4 else a


def select_faces(found: list[Box], select: str | int) -> list[int]:
    """Which detected faces to edit: "all", "largest", or one index (0 = most confident)."""
    if not found:
        return []
    if select == "all":
        return list(range(len(found)))
    if select == "largest":
        return [max(range(len(found)), key=lambda i: found[i].area)]
    if isinstance(select, int) or (isinstance(select, str) and select.isdigit()):
        i = int(select)
        if not 0 <= i < len(found):
            raise UserError(f"--face {i}: only {len(found)} face(s) found (numbered 0 to {len(found) - 1})")
        return [i]
    raise UserError(f"faces to edit: all, largest or a face number, not {select!r}")


class FaceEditor:
    def __init__(self, engine, detector: FaceDetector | None = None, align: bool = False,
                 mask: str = "attention", colour_match: bool = True, detect_scale: float = 1.0):
        if mask not in MASKS:
            raise UserError(f"mask must be one of {', '.join(MASKS)}, not {mask!r}")
        self.engine = engine
        self.detector = detector or FaceDetector()
        self.align, self.mask, self.colour_match, self.detect_scale = align, mask, colour_match, detect_scale

    def find(self, rgb: np.ndarray, around: list[Box] | None = None) -> list[Box]:
        """Faces in the frame: a whole-frame scan at `detect_scale`, or only near `around`."""
        rgb = np.ascontiguousarray(rgb)
        return self.detector.detect_near(rgb, around) if around else self.detector.detect(rgb, self.detect_scale)

    def crops_for(self, rgb: np.ndarray, boxes: list[Box]) -> list[FaceCrop]:
        eyes = [self.detector.eye_centres(rgb, b) if self.align else None for b in boxes]
        return [FaceCrop.from_box(b, rgb.shape, e) for b, e in zip(boxes, eyes)]

    def edit_crops(self, photo: np.ndarray, crops: list[FaceCrop], aus) -> np.ndarray:
        """Edit the faces at `crops` (all in one engine call) and paste them back -> new photo.

        `aus`: one AU spec for every face, or an [N,17] array with one row per crop.
        """
        if not crops:
            return photo.copy()
        rgb = as_rgb(photo)
        originals = np.stack([c.extract(rgb, self.engine.image_size) for c in crops])
        return apply_changes(photo, self.changes(crops, originals, self.edit_faces(originals, aus)))

    def edit_faces(self, originals: np.ndarray, aus) -> EditResult:
        """The engine's edit of the face crops (one call), with the attention maps if the mask uses them."""
        return self.engine.edit_detailed(originals, aus, attention=self.mask == "attention")

    def changes(self, crops: list[FaceCrop], originals: np.ndarray, result: EditResult
                ) -> list[tuple[np.ndarray, tuple[int, int]]]:
        """Each face's change to the frame (`paste.pasted_change`), ready for the paste."""
        return [pasted_change(c, originals[i], result.images[i],
                              None if result.attention is None else result.attention[i],
                              self.mask, self.colour_match) for i, c in enumerate(crops)]

    def edit(self, photo: np.ndarray, aus, select: str | int = "all") -> PhotoEdit:
        rgb = np.ascontiguousarray(as_rgb(photo))
        found = self.find(rgb)
        chosen = select_faces(found, select)
        crops = self.crops_for(rgb, [found[i] for i in chosen])
        return PhotoEdit(self.edit_crops(photo, crops, aus), found, chosen, crops)
