"""Whole photos and frames in, edited photos and frames out: find the faces, crop them, edit
every face of the frame in one engine call, paste the changes back.

    editor = FaceEditor(engine)                               # HOG detector, shape+attention mask
    result = editor.edit(photo, "happiness@1.5")              # every face
    result = editor.edit(photo, "happiness", select="largest")
    result.image, result.found, result.edited                 # same shape and mode as `photo`

Photos may be uint8 HxW (grayscale), HxWx3 (RGB) or HxWx4 (RGBA: alpha is kept as it is).

Engines that need the face mesh (the rig: `engine.needs_landmarks`) get it through the same
steps: each detected face's MediaPipe mesh (`meshes_for`: the detector's own when it is the
MediaPipe detector, else a MediaPipe Face Landmarker used only as the mesher on the detected
boxes), the crop made from the mesh (`FaceCrop.from_landmarks`, level with `align`), the
mesh carried into the crop (`FaceCrop.to_crop`) and given to the engine, and the paste mask
shaped by the face's outline (`paste.face_outline`). A face whose mesh is not found is not
edited (`PhotoEdit.unmeshed`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from exprengine.aus import NUM_AUS
from exprengine.errors import UserError, plural
from exprengine.faces.crop import FaceCrop
from exprengine.faces.detect import Box, FaceDetector
from exprengine.faces.paste import MASKS, apply_changes, face_outline, pasted_change
from exprengine.pixels import as_rgb

if TYPE_CHECKING:      # the faces room drives any engine it is given; it does not import one
    from exprengine.engine import EditResult


@dataclass
class PhotoEdit:
    """What `FaceEditor.edit` did to a photo: the edited `image` (same shape and dtype as the
    input), every face `found` (most confident first), the indices into `found` that were
    `edited`, their `crops`, and the chosen faces left `unmeshed` (an engine that needs the face
    mesh found none for them).
    """

    image: np.ndarray                       # the edited photo, same shape and dtype as the input
    found: list[Box]                        # every face detected, most confident first
    edited: list[int] = field(default_factory=list)   # indices into `found` that were edited
    crops: list[FaceCrop] = field(default_factory=list)
    unmeshed: list[int] = field(default_factory=list)  # chosen faces left as they were: no face mesh found


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
            raise UserError(f"`select` {i}: only {plural(len(found), 'face')} found (numbered 0 to {len(found) - 1})")
        return [i]
    raise UserError(f"faces to edit: all, largest or a face number, not {select!r}")


class FaceEditor:
    """Edits the faces of photos and video frames with `engine` (an `exprengine.engine.Engine`, or
    anything with its `image_size`, `edit_detailed` and `needs_landmarks`).

    `detector`: a face detector (`faces.detect.FaceDetector`, HOG, by default; or
    `faces.landmarks.MediaPipeDetector`); `align` turns each crop so the eyes lie level; `mask`:
    how the change is pasted back ("attention": the face's ellipse or outline times where the
    attention map says the network changed something, "shape": the ellipse or outline alone;
    `paste.MASKS`); `colour_match` removes the change's mean colour along the mask's fading
    ring (`paste.colour_matched`); `detect_scale` in (0, 1] detects on a downscaled copy.
    UserError for an unknown `mask`.
    """
    def __init__(self, engine, detector: FaceDetector | None = None, align: bool = False,
                 mask: str = "attention", colour_match: bool = True, detect_scale: float = 1.0,
                 mesher=None):
        """`mesher`: the MediaPipe detector that finds the face meshes for an engine that needs
        them (default: `detector` itself when it is MediaPipe's, else one made on first need)."""
        if mask not in MASKS:
            raise UserError(f"mask must be one of {', '.join(MASKS)}, not {mask!r}")
        self.engine = engine
        self.detector = detector or FaceDetector()
        self.align, self.mask, self.colour_match, self.detect_scale = align, mask, colour_match, detect_scale
        self._mesher = mesher

    @property
    def needs_landmarks(self) -> bool:
        """The engine takes each face's mesh (the rig's engines)."""
        return bool(getattr(self.engine, "needs_landmarks", False))

    @property
    def mesher(self):
        """The MediaPipe detector that finds face meshes (made on first use unless given or the detector is one)."""
        if self._mesher is None:
            from exprengine.faces.landmarks import MediaPipeDetector
            self._mesher = self.detector if isinstance(self.detector, MediaPipeDetector) else MediaPipeDetector()
        return self._mesher

    def meshes_for(self, rgb: np.ndarray, boxes: list[Box]) -> list[np.ndarray | None]:
        """Each box's face mesh, float32 [478,3] in the frame's pixels (`MediaPipeDetector.meshes`
        on a window around the box), or None where the mesh finds no face. `rgb`: uint8 HxWx3, or
        a video frame's HxW luma plane."""
        if not boxes:
            return []
        rgb = np.ascontiguousarray(rgb)
        found = {m.box: m.points for m in self.mesher.meshes(rgb, boxes)}
        return [found.get(b) for b in boxes]

    def locate(self, rgb: np.ndarray, boxes: list[Box], meshes: list[np.ndarray | None] | None = None
               ) -> tuple[list[FaceCrop], list[np.ndarray] | None, list[int]]:
        """(crops, their meshes, the indices of `boxes` left out) for the faces in `boxes`.

        For an engine that needs the mesh: the mesh of each box (`meshes`, or `meshes_for`), the
        crop made from it (`FaceCrop.from_landmarks`); boxes without a mesh are left out. For
        other engines: `crops_for` (meshes None, nothing left out)."""
        if not self.needs_landmarks:
            return self.crops_for(rgb, boxes), None, []
        if meshes is None:
            meshes = self.meshes_for(rgb, boxes)
        kept = [i for i, m in enumerate(meshes) if m is not None]
        crops = [FaceCrop.from_landmarks(meshes[i], rgb.shape, self.align) for i in kept]
        return crops, [meshes[i] for i in kept], [i for i in range(len(boxes)) if meshes[i] is None]

    def find(self, rgb: np.ndarray, around: list[Box] | None = None) -> list[Box]:
        """Faces in the frame: a whole-frame scan at `detect_scale`, or only near `around`."""
        rgb = np.ascontiguousarray(rgb)
        return self.detector.detect_near(rgb, around) if around else self.detector.detect(rgb, self.detect_scale)

    def crops_for(self, rgb: np.ndarray, boxes: list[Box]) -> list[FaceCrop]:
        """The crop of each box (`FaceCrop.from_box`), turned level by dlib's 5-point eye centres when
        `align`: one FaceCrop per box, in order. `rgb`: uint8 HxWx3.
        """
        eyes = [self.detector.eye_centres(rgb, b) if self.align else None for b in boxes]
        return [FaceCrop.from_box(b, rgb.shape, e) for b, e in zip(boxes, eyes)]

    def edit_crops(self, photo: np.ndarray, crops: list[FaceCrop], aus,
                   meshes: list[np.ndarray] | None = None) -> np.ndarray:
        """Edit the faces at `crops` (all in one engine call) and paste them back -> new photo.

        `aus`: one AU spec for every face, or an [N,17] array with one row per crop. `meshes`:
        each crop's face mesh [478,2|3] in the photo's pixels (from `locate`), for the engines
        that take it (without them such an engine meshes the crops itself) and for the paste
        mask of the face's outline.
        """
        if not crops:
            return photo.copy()
        rgb = as_rgb(photo, "a photo")
        originals = np.stack([c.extract(rgb, self.engine.image_size) for c in crops])
        result = self.edit_faces(originals, aus, crops, meshes)
        return apply_changes(photo, self.changes(crops, originals, result, meshes))

    def crop_landmarks(self, crops: list[FaceCrop], meshes: list[np.ndarray]) -> np.ndarray:
        """float32 [N,478,2]: each mesh (frame pixels) in the pixels of its crop at the engine's size."""
        size = self.engine.image_size
        return np.stack([c.to_crop(m, size) for c, m in zip(crops, meshes)])

    def edit_faces(self, originals: np.ndarray, aus, crops: list[FaceCrop] | None = None,
                   meshes: list[np.ndarray] | None = None) -> EditResult:
        """The engine's edit of the face crops (one call), with the attention maps if the mask uses
        them; for an engine that takes the mesh, each crop's (`crops` and `meshes` from `locate`)."""
        attention = self.mask == "attention"
        if self.needs_landmarks and meshes is not None:
            return self.engine.edit_detailed(originals, aus, attention=attention,
                                             landmarks=self.crop_landmarks(crops, meshes))
        return self.engine.edit_detailed(originals, aus, attention=attention)

    def changes(self, crops: list[FaceCrop], originals: np.ndarray, result: EditResult,
                meshes: list[np.ndarray] | None = None) -> list[tuple[np.ndarray, tuple[int, int]]]:
        """Each face's change to the frame (`paste.pasted_change`), ready for the paste; with
        `meshes`, masked by each face's outline instead of the ellipse."""
        size = originals.shape[1]
        outlines = [None] * len(crops) if meshes is None else \
            [c.to_crop(face_outline(m), size) for c, m in zip(crops, meshes)]
        return [pasted_change(c, originals[i], result.images[i],
                              None if result.attention is None else result.attention[i],
                              self.mask, self.colour_match, outlines[i]) for i, c in enumerate(crops)]

    def edit(self, photo: np.ndarray, aus, select: str | int = "all") -> PhotoEdit:
        """Edit the faces `select` picks ("all", "largest", or a face number; `select_faces`) to `aus`
        (an AU spec, AUs, [17] or [N,17] intensities 0..5, as `Engine.edit` takes them) in one
        engine call, and paste them back. `photo`: uint8 HxW, HxWx3 or HxWx4 (alpha kept).

        Returns a PhotoEdit (a photo without a face comes back unchanged, `found` empty). Raises
        UserError for a photo of another dtype or shape, a face number not found, or AUs the
        engine's policy refuses.
        """
        rgb = np.ascontiguousarray(as_rgb(photo, "a photo"))
        found = self.find(rgb)
        chosen = select_faces(found, select)
        crops, meshes, missing = self.locate(rgb, [found[i] for i in chosen])
        unmeshed = [chosen[i] for i in missing]
        edited = [i for i in chosen if i not in unmeshed]
        return PhotoEdit(self.edit_crops(photo, crops, aus, meshes), found, edited, crops, unmeshed)

    def edit_variants(self, photo: np.ndarray, aus: np.ndarray, select: str | int = "largest"
                      ) -> tuple[list[np.ndarray], PhotoEdit]:
        """One face of `photo` (`select`: "largest", or a face number), K expressions of it in
        one engine call: aus float32 [K,17] (0..5) -> (K edited photos, the PhotoEdit saying which
        face; its `image` is the first variant). A photo without that face gives K copies."""
        rgb = np.ascontiguousarray(as_rgb(photo, "a photo"))
        aus = np.asarray(aus, np.float32)
        if aus.ndim != 2 or aus.shape[1] != NUM_AUS or aus.shape[0] < 1:
            raise UserError(f"variants need AU rows [K,{NUM_AUS}], got {list(aus.shape)}")
        found = self.find(rgb)
        if select == "all":
            raise UserError("variants are of one face: select 'largest' or a face number")
        chosen = select_faces(found, select)
        crops, meshes, missing = self.locate(rgb, [found[i] for i in chosen])
        if not crops:
            return [photo.copy() for _ in range(len(aus))], PhotoEdit(photo.copy(), found, [], [], chosen)
        k = len(aus)
        original = crops[0].extract(rgb, self.engine.image_size)[None]
        result = self.edit_faces(original, aus, crops, meshes)
        # each row's change as the face's change (`changes`), pasted onto its own copy of the photo
        rows = self.changes(crops * k, np.broadcast_to(original, (k, *original.shape[1:])), result,
                            None if meshes is None else meshes * k)
        images = [apply_changes(photo, [change]) for change in rows]
        return images, PhotoEdit(images[0], found, chosen, crops, [])
