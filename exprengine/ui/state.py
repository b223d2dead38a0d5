"""What the web page edits: one uploaded photo per session, its faces found once, and every edit,
morph, age and download made by the library's own calls.

    bench = Workbench(Engine.load(default_rig_engine()))
    session = bench.open("astronaut.png", Path("upload/astronaut.png"))    # read, detect, mesh: once
    target, warnings = bench.target([0] * 8 + [1.5] + [0] * 8)             # AU12=1.5; the CLI's warnings
    jpeg, ms = bench.preview(session, target, "all")                        # one engine call, display size
    data, summary, command = bench.download(session, target, "all", None, "png")

A slider change costs one engine call for every chosen face, the paste-back and a JPEG encode:
the photo is decoded once (`media.read_photo`) and its faces found and meshed once
(`FaceEditor.find` / `locate`, as the video `StreamEditor` keeps them between frames), then
each preview is `FaceEditor.edit_crops` on them. A download runs the command's own call
(`faces.photo.edit_photo_file`, or `age_photo_file` with an age) on the saved upload, so its
bytes are those `exprengine edit PHOTO ... --out X.png` (or `exprengine age`) writes.
"""
from __future__ import annotations

import io
import secrets
import shlex
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from exprengine import media
from exprengine.aus import AU_DESCRIPTIONS, AU_NAMES, CONFLICTS, DEFAULT_CAP, NUM_AUS, PRESETS, AUs, AUWarning
from exprengine.errors import UserError, plural
from exprengine.faces.detect import Box
from exprengine.faces.editor import FaceEditor, select_faces
from exprengine.faces.paste import apply_changes
from exprengine.morph import SCHEDULES
from exprengine.pixels import as_rgb

#: The 17 AUs by region of the face, top to bottom, as the page groups its sliders.
REGIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Brows", ("AU01", "AU02", "AU04")),
    ("Eyes", ("AU05", "AU07", "AU45")),
    ("Cheeks and nose", ("AU06", "AU09")),
    ("Mouth", ("AU10", "AU12", "AU14", "AU15", "AU20", "AU23", "AU25")),
    ("Chin and jaw", ("AU17", "AU26")),
)
#: Longest side of the preview image, pixels: larger photos are previewed downscaled (box filter);
#: downloads are always the full-resolution photo.
PREVIEW_MAX_SIDE = 1024
PREVIEW_QUALITY = 90            # JPEG quality of the preview
#: Largest upload accepted, bytes (the pixel limit is `media.MAX_PIXELS`, checked on the header).
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
MAX_SESSIONS = 4                # photos kept open at once; the oldest is dropped
MIN_FRAMES = 2                  # frames of a morph or traversal: the first and the last at least
MAX_FRAMES = 96
#: What the page and the terminal say when no age engine is loaded.
NO_AGE_NOTE = ("No age model is installed: start the page with --engine-age DIR, an engine built from a "
               "LATS generator.")
DOWNLOAD_FORMATS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def controls(cap: float = DEFAULT_CAP) -> dict:
    """What the page draws its controls from: the AU sliders by region (name, muscle action,
    0..`cap`), the presets with the AUs each raises, the conflicting pairs, the morph schedules."""
    assert sorted(a for _, names in REGIONS for a in names) == sorted(AU_NAMES)
    return {
        "aus": list(AU_NAMES), "cap": cap, "step": 0.05,
        "regions": [{"name": r, "aus": [{"name": a, "action": AU_DESCRIPTIONS[a]} for a in names]}
                    for r, names in REGIONS],
        "presets": {name: list(p.aus) for name, p in PRESETS.items()},
        "conflicts": [{"a": c.a, "b": c.b, "why": c.why} for c in CONFLICTS],
        "schedules": list(SCHEDULES),
    }


@dataclass
class Session:
    """One uploaded photo: the file saved as uploaded (`path`; `name`: the user's own file name,
    which messages, command lines and downloads use), the photo as
    `media.read_photo` read it, every face `found` (most confident first), and for each face
    with a mesh its crop and mesh (`crops`, `meshes`, by face number; faces absent there have
    none and cannot be edited by a rig engine). Aged photos, morphs and traversals are kept
    in `aged` and `animations` for reuse and download."""
    id: str
    name: str
    path: Path
    photo: media.Photo
    rgb: np.ndarray
    found: list[Box]
    crops: dict = field(default_factory=dict)
    meshes: dict = field(default_factory=dict)
    aged: OrderedDict = field(default_factory=OrderedDict)
    animations: OrderedDict = field(default_factory=OrderedDict)

    def describe(self) -> dict:
        """JSON for the page: the photo's size and every face (box, score, editable)."""
        h, w = self.rgb.shape[:2]
        return {"session": self.id, "name": self.name, "width": w, "height": h,
                "faces": [{"index": i, "left": b.left, "top": b.top, "width": b.width, "height": b.height,
                           "score": round(float(b.score), 3), "editable": i in self.crops}
                          for i, b in enumerate(self.found)]}


class Workbench:
    """The editing state behind the page: the engines, the face detector, open sessions.

    `engine`: the expression `Engine` (the rig's by default, `default_engines.engine_or_default`);
    `age_engine`: an age `Engine` or None; `age_note`: why there is none, or what the one given
    ages; `detector`, `min_face`: as `exprengine edit --detector/--min-face` (`faces.landmarks.make_detector`);
    `engine_dir`, `age_engine_dir`: the directories the engines came from (None: the defaults),
    for the equivalent command lines; `workdir`: where uploads are kept (a new temporary
    directory by default, removed by `close`). Every engine call is made under one lock
    (the CPU is shared; warnings are collected per call). Thread-safe.
    """

    def __init__(self, engine, age_engine=None, detector: str = "hog", min_face: int = 40,
                 engine_dir: str | None = None, age_engine_dir: str | None = None, age_note: str = "",
                 workdir: str | Path | None = None, max_sessions: int = MAX_SESSIONS):
        from exprengine.faces.landmarks import make_detector
        if getattr(engine, "is_age", False):
            raise UserError("`engine` ages faces; give an expression engine (the rig's or a generator's)")
        if age_engine is not None:
            from exprengine.faces.age import require_age_engine
            require_age_engine(age_engine, "age_engine")
        self.engine, self.age_engine, self.age_note = engine, age_engine, age_note
        self.detector_name, self.min_face = detector, min_face
        self.detector = make_detector(detector, min_face)
        self.editor = FaceEditor(engine, self.detector)
        self._ager = None
        self.engine_dir, self.age_engine_dir = engine_dir, age_engine_dir
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="exprengine-ui-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)
        self.max_sessions = max_sessions
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.lock = threading.RLock()

    @property
    def ager(self):
        """The `faces.age.AgeEditor` of the age engine, with the same detector (None without one)."""
        if self._ager is None and self.age_engine is not None:
            from exprengine.faces.age import AgeEditor
            self._ager = AgeEditor(self.age_engine, self.detector)
        return self._ager

    def close(self) -> None:
        """Forget every session and remove the temporary upload directory (if this made it)."""
        with self.lock:
            self.sessions.clear()
            if self._tmp is not None:
                self._tmp.cleanup()

    def info(self) -> dict:
        """JSON for the page: `controls`, the engine, whether ages are available (and why not)."""
        info = controls(float(self.engine.policy.max_intensity))
        note = self.age_note or ("" if self.age_engine is not None else NO_AGE_NOTE)
        info.update(engine=self.engine.manifest.model, age=self.age_engine is not None, age_note=note,
                    age_range=[0, 70], preview_max_side=PREVIEW_MAX_SIDE, max_upload_bytes=MAX_UPLOAD_BYTES,
                    max_pixels=media.MAX_PIXELS, min_frames=MIN_FRAMES, max_frames=MAX_FRAMES,
                    formats=list(DOWNLOAD_FORMATS))
        return info

    # --- sessions ------------------------------------------------------------------------------
    def new_place(self, name: str) -> tuple[str, Path]:
        """(a new session id, the path to save its upload `name` at): a fresh directory per session,
        the file named by `display_name(name)` with characters other than ASCII letters, digits and
        `.-_` replaced (the user's own name is given to `open`, for messages and command lines)."""
        sid = secrets.token_urlsafe(12)
        base = display_name(name)
        safe = "".join(c if (c.isascii() and c.isalnum()) or c in ".-_" else "_" for c in base).lstrip(".") or "photo"
        place = self.workdir / sid
        place.mkdir(parents=True)
        return sid, place / safe[-100:]

    def open(self, sid: str, path: Path, name: str | None = None) -> Session:
        """Read the photo saved at `path` (`media.read_photo`), find its faces and mesh them once,
        and keep it as session `sid`, named `name` (the user's file name; None: `path`'s). UserError
        (one sentence, naming the file by `name`) for a file that is not a readable image, one over
        `media.MAX_PIXELS`, or one with no face the engine can edit."""
        name = display_name(name) if name is not None else path.name
        try:
            photo = media.read_photo(path)
        except UserError as e:
            raise UserError(str(e).replace(str(path), name)) from None
        rgb = np.ascontiguousarray(as_rgb(photo.pixels, "a photo"))
        with self.lock:
            found = self.editor.find(rgb)
            if not found:
                raise UserError(f"no face found in {name} (faces of at least {self.min_face} pixels are looked "
                                "for); choose a photo with a face")
            crops, meshes, missing = self.editor.locate(rgb, found)
        kept = [i for i in range(len(found)) if i not in missing]
        if not kept:
            raise UserError(f"no face mesh found in {name} for the {plural(len(found), 'face')} detected (the "
                            f"{self.engine.manifest.model} engine needs one); choose a photo with a clearer face")
        session = Session(sid, name, path, photo, rgb, found, dict(zip(kept, crops)),
                          dict(zip(kept, meshes)) if meshes is not None else {})
        with self.lock:
            self.sessions[sid] = session
            while len(self.sessions) > self.max_sessions:
                self.sessions.popitem(last=False)
        return session

    def session(self, sid: str) -> Session:
        """The open session `sid`. UserError when there is none (never opened, or dropped)."""
        with self.lock:
            if sid not in self.sessions:
                raise UserError("this photo is no longer open on the server; load it again")
            self.sessions.move_to_end(sid)
            return self.sessions[sid]

    # --- settings -------------------------------------------------------------------------------
    def target(self, values) -> tuple[AUs, list[str]]:
        """(the AUs of `values`, 17 intensities in AU_NAMES order, and the warnings the CLI says of
        them: the engine policy's sentences for an intensity above the cap and for conflicting AUs).
        UserError for a wrong count, a value that is not a finite number or one outside 0..5."""
        if not isinstance(values, (list, tuple)) or len(values) != NUM_AUS:
            raise UserError(f"`aus` must be {NUM_AUS} intensities in the order {' '.join(AU_NAMES)}")
        try:
            floats = [float(v) for v in values]
        except (TypeError, ValueError):
            raise UserError("`aus` must be numbers") from None
        target = AUs(np.array(floats, np.float32))
        with self.lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AUWarning)
            self.engine.policy.check(target.values)
        return target, _messages(caught)

    def select(self, session: Session, face) -> str | int:
        """`face` as `select_faces` takes it ("all" or a face number), checked against the session."""
        select = "all" if face in (None, "all") else face
        if isinstance(select, bool) or not (select == "all" or isinstance(select, int)):
            raise UserError(f"`face` must be 'all' or a face number, not {face!r}")
        select_faces(session.found, select)            # a face number not found: its sentence
        if select != "all" and select not in session.crops:
            raise UserError(f"face #{select} has no face mesh, so the engine cannot edit it; choose another face")
        return select

    def age_years(self, age) -> float | None:
        """Years 0..70 of `age` (None: no aging). UserError for a bad age, or an age without an age engine."""
        if age is None:
            return None
        if self.age_engine is None:
            raise UserError("no age engine is loaded, so faces cannot be aged")
        from exprengine.faces.age import parse_age
        return parse_age(age, "age")

    # --- edits -----------------------------------------------------------------------------------
    def edited(self, session: Session, target: AUs, select: str | int, years: float | None = None) -> np.ndarray:
        """The whole photo (its full resolution, the shape of `session.photo.pixels`) with the chosen
        faces aged to `years` (None: not aged) and then edited to `target` by one engine call
        (`FaceEditor.edit_crops` on the faces found when the session opened)."""
        with self.lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", AUWarning)      # said once, by `target`
            if years is None:
                chosen = [i for i in select_faces(session.found, select) if i in session.crops]
                return self.editor.edit_crops(session.photo.pixels, [session.crops[i] for i in chosen], target,
                                              [session.meshes[i] for i in chosen] if session.meshes else None)
            pixels, crops, meshes = self._aged(session, select, years)
            if not target.values.any():
                return pixels
            return self.editor.edit_crops(pixels, crops, target, meshes)

    def _aged(self, session: Session, select, years: float):
        """(the photo with the chosen faces aged to `years`, the crops and meshes of those faces on
        it for the expression edit): `AgeEditor`'s steps on the session's faces, as `age_photo_file`
        takes them (age first, then the expression on the aged faces), kept for reuse."""
        key = (select, round(float(years), 4))
        if key in session.aged:
            session.aged.move_to_end(key)
            return session.aged[key]
        ager = self.ager
        chosen = select_faces(session.found, select)
        crops, anchors, sides, kept, _ = ager.locate(session.rgb, [session.found[i] for i in chosen])
        aged_faces = [chosen[k] for k in kept]
        ager.check_sizes(session.found, aged_faces, sides)
        pixels = session.photo.pixels
        if crops:
            originals = ager.extract(session.rgb, crops)
            pixels = apply_changes(pixels, ager.changes(crops, originals, ager.age_faces(originals, years), anchors))
        rgb = np.ascontiguousarray(as_rgb(pixels, "a photo"))
        faces, meshes, _ = self.editor.locate(rgb, [session.found[i] for i in aged_faces])
        session.aged[key] = (pixels, faces, meshes)
        while len(session.aged) > 3:
            session.aged.popitem(last=False)
        return session.aged[key]

    def preview(self, session: Session, target: AUs, select, years: float | None = None) -> tuple[bytes, float]:
        """(JPEG bytes of the edited photo at display size, at most PREVIEW_MAX_SIDE on its longest
        side; the server's milliseconds for it, edit and encode)."""
        start = time.perf_counter()
        return preview_jpeg(self.edited(session, target, select, years)), (time.perf_counter() - start) * 1000

    def original(self, session: Session) -> bytes:
        """JPEG bytes of the unedited photo at display size."""
        return preview_jpeg(session.photo.pixels)

    def download(self, session: Session, target: AUs, select, years: float | None, fmt: str = "png"
                 ) -> tuple[bytes, str, str, str]:
        """(the file's bytes, its name, the library's one-sentence summary, the command line that
        writes the same bytes) of the edited photo at full resolution: `edit_photo_file` (or, with
        `years`, `age_photo_file`) on the uploaded file, as `exprengine edit` / `exprengine age` run
        it. The name is the photo's own stem with `_edited` (or `_aged`) and the format's suffix.
        `fmt`: png, jpeg or webp. UserError for another format."""
        from exprengine.faces.photo import age_photo_file, edit_photo_file
        if fmt not in DOWNLOAD_FORMATS:
            raise UserError(f"`format` must be one of {', '.join(DOWNLOAD_FORMATS)}, not {fmt!r}")
        out_name = f"{Path(session.name).stem}_{'aged' if years is not None else 'edited'}{DOWNLOAD_FORMATS[fmt]}"
        with tempfile.TemporaryDirectory(dir=session.path.parent) as place, self.lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", AUWarning)
            out = Path(place) / f"out{DOWNLOAD_FORMATS[fmt]}"       # the user's name may not suit the disk
            if years is None:
                editor = FaceEditor(self.engine, self.detector)
                report = edit_photo_file(session.path, out, self.engine, target, editor, select, photo=session.photo)
            else:
                report = age_photo_file(session.path, out, self.age_engine, years, self.ager, select,
                                        expression=target if target.values.any() else None,
                                        expression_engine=self.engine, photo=session.photo)
            data = out.read_bytes()
        summary = report.summary.replace(str(session.path), session.name).replace(str(out), out_name)
        return data, out_name, summary, self.command(session, target, select, years, out_name)

    def command(self, session: Session, target: AUs, select, years: float | None, out_name: str) -> str:
        """The `exprengine edit` (or, with `years`, `exprengine age`) command line whose output has
        the same bytes as `download` with these settings."""
        aus = [f"--au {name}={_number(v)}" for name, v in target.as_dict(nonzero=True).items()]

        def path(name: str) -> str:                     # "-x.png" would read as an option: "./-x.png"
            return shlex.quote(f"./{name}" if name.startswith("-") else name)

        if years is None:
            words = ["exprengine edit", path(session.name), *(aus or ["--preset natural"])]
            if self.engine_dir:
                words.append(f"--engine {shlex.quote(self.engine_dir)}")
        else:
            words = ["exprengine age", path(session.name), f"--to {_number(years)}", *aus]
            if self.age_engine_dir:
                words.append(f"--engine {shlex.quote(self.age_engine_dir)}")
            if aus and self.engine_dir:
                words.append(f"--expression-engine {shlex.quote(self.engine_dir)}")
        if select != "all":
            words.append(f"--face {select}")
        if self.detector_name != "hog":
            words.append(f"--detector {self.detector_name}")
        if self.min_face != 40:
            words.append(f"--min-face {self.min_face}")
        return " ".join(words + [f"--out {path(out_name)}"])

    # --- animations -----------------------------------------------------------------------------
    def morph(self, session: Session, source: AUs, preset: str, intensity: float, frames: int = 24,
              schedule: str = "ease-in-out", select="all") -> tuple[str, int, int]:
        """Render a morph of one face (the chosen one, or with "all" the most confident editable
        face) from `source` to the preset `preset`@`intensity`: its crop at the engine's size, every
        frame in one engine call (`Engine.morph`, the first frame the source). -> (animation id,
        frames, the face's number). UserError for a bad preset, intensity, frame count (MIN_FRAMES
        to MAX_FRAMES) or schedule."""
        frames = _frame_count(frames)
        dst = AUs.preset(preset, intensity)
        face = min(session.crops) if select == "all" else select
        crop = session.crops[face]
        with self.lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", AUWarning)
            size = self.engine.image_size
            image = crop.extract(session.rgb, size)
            marks = self.editor.crop_landmarks([crop], [session.meshes[face]])[0] if session.meshes else None
            rendered = self.engine.morph(image, source, dst, frames=frames, schedule=schedule,
                                         include_source=True, landmarks=marks)
        return self._keep(session, rendered, f"morph_{preset}"), frames, face

    def traverse(self, session: Session, select="all", frames: int = 25) -> tuple[str, int, int | None]:
        """Render one face (the chosen one, or the largest with "all") aligned across the lifespan,
        `frames` ages evenly spaced from the first age class to the last, in one engine traversal
        (`AgeEditor.traverse`) -> (animation id, frames, the face's number as the age editor found
        it, None if it names none). UserError without an age engine or for a bad frame count."""
        from exprengine.faces.age import traversal_ages
        self.age_years(0)                        # says why not, without an age engine
        frames = _frame_count(frames)
        with self.lock:
            rendered, done = self.ager.traverse(session.photo.pixels, traversal_ages(None, None, frames),
                                                "largest" if select == "all" else select)
        face = done.aged[0] if done.aged else (None if select == "all" else select)
        return self._keep(session, rendered, "lifespan"), frames, face

    def _keep(self, session: Session, rendered: np.ndarray, stem: str) -> str:
        aid = secrets.token_urlsafe(8)
        with self.lock:
            session.animations[aid] = (stem, rendered)
            while len(session.animations) > 4:
                session.animations.popitem(last=False)
        return aid

    def animation(self, session: Session, aid: str, kind: str, fps: float = 12.0) -> tuple[bytes, str]:
        """(the bytes, the file name) of animation `aid` as a GIF or MP4 (`morph.write_morph`).
        UserError for an unknown animation or kind."""
        from exprengine.morph import write_morph
        if kind not in ("gif", "mp4"):
            raise UserError(f"an animation is a gif or an mp4, not {kind!r}")
        with self.lock:
            if aid not in session.animations:
                raise UserError("this animation is no longer kept on the server; render it again")
            stem, rendered = session.animations[aid]
        name = f"{Path(session.name).stem}_{stem}.{kind}"
        with tempfile.TemporaryDirectory(dir=session.path.parent) as place:
            out = Path(place) / f"out.{kind}"
            write_morph(out, rendered, fps=fps)
            return out.read_bytes(), name


def preview_jpeg(pixels: np.ndarray) -> bytes:
    """JPEG bytes (quality PREVIEW_QUALITY) of a photo (uint8 HxW, HxWx3 or HxWx4; alpha dropped)
    reduced by a whole factor (box filter) until its longest side is at most PREVIEW_MAX_SIDE."""
    image = Image.fromarray(np.ascontiguousarray(as_rgb(pixels, "a photo")))
    factor = -(-max(image.size) // PREVIEW_MAX_SIDE)
    if factor > 1:
        image = image.reduce(factor)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=PREVIEW_QUALITY)
    return buf.getvalue()


def display_name(name: str | None) -> str:
    """The last component of an uploaded file's name as the user sees it (`my photo (1).png`
    stays as it is; an empty name, `.` or `..` is `photo`)."""
    base = Path((name or "").replace("\0", "")).name
    return base if base not in ("", ".", "..") else "photo"


def _frame_count(frames) -> int:
    if frames is None or frames == "":
        raise UserError(f"`frames` is empty; give a whole number from {MIN_FRAMES} to {MAX_FRAMES}")
    if isinstance(frames, bool) or not isinstance(frames, int) or not MIN_FRAMES <= frames <= MAX_FRAMES:
        raise UserError(f"`frames` must be a whole number from {MIN_FRAMES} to {MAX_FRAMES}, got {frames!r}")
    return frames


def _number(v: float) -> str:
    """The shortest text that reads back as float32 `v` (what the CLI parses `--au AU12=...` to)."""
    text = f"{float(v):g}"
    return text if np.float32(float(text)) == np.float32(v) else repr(float(np.float32(v)))


def _messages(caught) -> list[str]:
    seen: list[str] = []
    for w in caught:
        if issubclass(w.category, AUWarning) and str(w.message) not in seen:
            seen.append(str(w.message))
    return seen
