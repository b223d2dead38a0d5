"""Frames in, edited frames out, for videos, cameras and streams, with low latency.

    editor = StreamEditor(engine, "happiness@1.5")
    for edited in editor.process(frames):        # any iterable of uint8 HxWx3 frames
        show_or_encode(edited)
    print(editor.stats.summary())                # per-stage and end-to-end milliseconds

`process` runs as a pipeline of threads joined by short queues, so the stages overlap:

    read + crop  ->  edit (one engine call per frame, every face)  ->  paste (the caller's thread)
         \\-> detect (its own thread, on a downscaled copy)

The engine never waits on the detector: detection runs every `detect_every` frames (and on
every frame while a face is lost) in the background on the newest frame: near the tracked
faces (a window around each, scaled to the face size HOG needs), with a whole-frame scan on
a downscaled copy every `rescan_every` frames for faces that appear; the crops use
the tracker's smoothed boxes (One-Euro filter), so faces neither jitter nor wait. Only the
first frame waits for its detection. `edit_frame(frame)` is the same work for one frame,
inline: a frame in, its edit out. Frames with no face are passed through unchanged. Frames
may be uint8 RGB arrays or `YUVFrame`s (what `VideoReader.iter_yuv` decodes): those are
never converted to RGB as a whole, only each face's square (`exprengine/video/yuv.py`).

`times` gives each frame's time in seconds (a variable-frame-rate video's own), for the
expression's schedule and the tracker; without it frame i is at i / fps.

`in_place=True` pastes into the given frames instead of copies (for frames the caller
owns, such as a decoder's: one copy of the frame less per frame).

With `detect_async=False` detection runs inline every `detect_every` frames instead: slower,
but the output depends only on the input (tests, reproducible renders).

Engines that take the face mesh (the rig) get it the way `FaceEditor` gives it for photos:
every frame, the MediaPipe mesh of each tracked box (found near the box), passed through
`smooth_landmarks` (the one place for a temporal filter of each track's mesh), then the crop
made from the mesh, the mesh carried into the crop, and the paste mask of the face's outline.
A tracked face whose mesh is not found in a frame is left unedited in that frame.

Aging (`age_engine` and `age`): before the expression edit (or instead of it, with no `aus`),
each tracked face is aged the way `faces.age.AgeEditor` ages a photo: its landmarks (dlib's 68
points in the tracked box, or MediaPipe's mesh with MediaPipe's detector), smoothed over time
per track (a One-Euro filter as for meshes, speed in eye distances per second), the FFHQ-style
aligned square, one age-engine call per frame for every face, the change pasted under the
face's outline; the expression edit then sees the aged frame. A face whose aligned square is
under `align.MIN_QUAD_SIDE` pixels in a frame, or whose landmarks are not found, is not aged
in that frame. The age step runs in the read thread and is timed as stage "age".
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from exprengine.aus import as_intensity_array
from exprengine.errors import UserError
from exprengine.faces.detect import Box, FaceDetector
from exprengine.faces.editor import FaceEditor, select_faces
from exprengine.pixels import as_rgb
from exprengine.faces.paste import apply_changes
from exprengine.faces.tracking import FaceTracker
from exprengine.video.yuv import YUVFrame, add_change, region_rgb

STAGES = ("read", "detect", "crop", "edit", "paste")
_DONE = object()


@dataclass
class StreamStats:
    """Per-frame seconds of each stage, end-to-end latency (frame read to edited frame out),
    and the wall time of the whole stream; the frames in which a face was found (`face_frames`);
    with an age engine, the faces aged (one count per face per frame), those of them whose
    aligned square was upscaled to the engine's size, and those left unaged for a square under
    `align.MIN_QUAD_SIDE`."""
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    latency: list[float] = field(default_factory=list)
    frames: int = 0
    wall: float = 0.0
    detections: int = 0
    face_frames: int = 0
    aged: int = 0
    upscaled: int = 0
    too_small: int = 0

    def summary(self) -> dict:
        """The stats as numbers to print or store: frames, frames per second of wall time,
        latency median and 95th percentile (ms), detector runs, frames with a face, each stage's
        median (ms); None where nothing was measured."""
        def ms(v):
            return round(1000 * float(np.median(v)), 3) if v else None
        return {"frames": self.frames, "fps": round(self.frames / self.wall, 2) if self.wall else None,
                "latency_ms_median": ms(self.latency),
                "latency_ms_p95": round(1000 * float(np.percentile(self.latency, 95)), 3) if self.latency else None,
                "detections": self.detections, "face_frames": self.face_frames, **{f"{s}_ms_median": ms(v) for s, v in self.stages.items()}}


AUSource = Callable[[int, float], np.ndarray]


class StreamEditor:
    """Edits the faces of a stream of frames (module docstring): `process(frames)` for a stream,
    `edit_frame(frame)` for one frame inline; `stats` times every stage.

    engine: an `exprengine.engine.Engine`. aus: the expression, one (AUs, a spec string, 17
    intensities; checked by `engine.policy`) or a function (frame index, seconds) -> float32 [17]
    (`video.timeline`). detector: the face detector (None: dlib's HOG). select: "all",
    "largest" or a face number. detect_every: frames between detector runs (>= 1);
    detect_scale: the detector's frame scale; detect_async: detect in a background thread;
    fps: frames per second (> 0) where `times` (seconds, one per frame) is not given; align,
    mask, colour_match: as `FaceEditor`; min_cutoff, beta: the One-Euro filter of the boxes;
    queue_size: frames in flight between stages; in_place: paste into the given frames;
    rescan_every: frames between whole-frame scans while faces are tracked.
    age_engine: an age engine (module docstring) to age the faces first; age: years 0..70 or an
    age class (`faces.age.parse_age`), or a function (frame index, seconds) -> years. With an
    age engine, `aus` may be None (aging only; `engine` may then be None too).
    UserError for detect_every < 1, fps <= 0, a bad expression or age, an expression engine
    given as `age_engine`, and frames of changing size.
    Use it as a context manager (or call `close`) to stop the background detector."""

    def __init__(self, engine, aus, detector: FaceDetector | None = None, select: str | int = "all",
                 detect_every: int = 10, detect_scale: float = 0.5, detect_async: bool = True, fps: float = 30.0,
                 align: bool = False, mask: str = "attention", colour_match: bool = True,
                 min_cutoff: float = 1.0, beta: float = 0.05, queue_size: int = 3, in_place: bool = False,
                 rescan_every: int = 30, times: Sequence[float] | None = None, age_engine=None, age=None):
        if detect_every < 1:
            raise UserError(f"`detect_every` must be at least 1, got {detect_every}")
        if fps <= 0:
            raise UserError(f"`fps` must be positive, got {fps}")
        self.faces = FaceEditor(engine, detector, align=align, mask=mask, colour_match=colour_match,
                                detect_scale=detect_scale)
        self.ager, self.age_at = None, None
        if age_engine is not None or age is not None:
            from exprengine.faces.age import AgeEditor, parse_age
            if age_engine is None or age is None:
                raise UserError("aging a stream needs both `age_engine` and `age`")
            self.ager = AgeEditor(age_engine, self.faces.detector, colour_match=colour_match)
            years = None if callable(age) else parse_age(age)
            self.age_at = age if callable(age) else (lambda index, t: years)
            self._age_filters: dict[int, tuple] = {}
        if aus is None and self.ager is not None:
            self.aus_at: AUSource | None = None                  # aging only
        elif engine is None:
            raise UserError("`engine` is required to edit expressions")
        else:
            self.aus_at = aus if callable(aus) else _constant(engine, aus)
        self.select, self.detect_every, self.detect_scale = select, detect_every, detect_scale
        self.detect_async, self.fps, self.queue_size = detect_async, fps, queue_size
        self.in_place = in_place                # paste into the given frames (writable, the caller's to lose)
        self.rescan_every = rescan_every        # frames between whole-frame scans while faces are tracked
        self.times = list(times) if times else None     # each frame's time, seconds (variable frame rate)
        self._last_full = -10 ** 9
        self.tracker = FaceTracker(min_cutoff, beta)
        self.stats = StreamStats()
        self._lock = threading.Lock()
        self._size: tuple[int, ...] | None = None
        self._last_detect = -10 ** 9
        self._detector: _BackgroundDetector | None = None

    # --- one frame ----------------------------------------------------------------------------
    def _check(self, frame, index: int) -> np.ndarray:
        """The image the detector looks at: the frame as RGB, or a YUV frame's luma plane."""
        if isinstance(frame, YUVFrame):
            rgb = frame.y
        else:
            frame = np.asarray(frame)
            rgb = as_rgb(frame)
        if self._size is None:
            self._size = frame.shape
        elif frame.shape != self._size:
            raise UserError(f"frame {index} is {list(frame.shape)}, but the stream started with {list(self._size)}: "
                            "a stream's frames must all have one size")
        return rgb

    def _boxes(self, rgb: np.ndarray, index: int, t: float) -> tuple[list[Box], list]:
        """The boxes to crop for frame `index` (the tracker's, refreshed by the detector) and
        their tracks (`FaceTracker.tracks` entries: the same object for a face over time)."""
        with self._lock:
            have_tracks, lost = bool(self.tracker.tracks), self.tracker.lost
            tracked = have_tracks and not lost and index - self._last_full < self.rescan_every
            around = self.tracker.boxes() if tracked else None      # cheap: look where the faces are
        if index - self._last_detect >= self.detect_every or lost:
            if not self.detect_async or not have_tracks and self._last_detect < 0:
                self.detect(rgb, around)
                self._detected(index, around)
            elif self._detector is not None and self._detector.submit(rgb, around):
                self._detected(index, around)
        with self._lock:
            self.tracker.step(t)
            boxes, tracks = self.tracker.boxes(), list(self.tracker.tracks)
        chosen = select_faces(boxes, self.select) if boxes else []
        return [boxes[i] for i in chosen], [tracks[i] for i in chosen]

    def smooth_landmarks(self, tracks: list, meshes: list[np.ndarray | None], t: float
                         ) -> list[np.ndarray | None]:
        """The face meshes to use for this frame: `meshes[i]` (float32 [478,3] frame pixels, or None:
        not found) belongs to `tracks[i]`, the tracker's object for that face (the same object
        from frame to frame while the face is tracked); `t` is the frame's time in seconds.
        The one place for a temporal filter of each track's mesh: each track's own MeshSmoother
        (`FaceTracker.smooth_meshes`: One-Euro in inter-ocular distances; a new track starts afresh)."""
        return self.tracker.smooth_meshes(tracks, meshes, t)

    def detect(self, rgb: np.ndarray, around: list[Box] | None) -> None:
        """One detector run (near `around`, or the whole frame), timed, fed to the tracker."""
        start = time.perf_counter()
        found = self.faces.find(rgb, around)
        self.stats.stages["detect"].append(time.perf_counter() - start)
        self.stats.detections += 1
        with self._lock:
            self.tracker.update(found)

    def _detected(self, index: int, around: list[Box] | None) -> None:
        self._last_detect = index
        if around is None:
            self._last_full = index

    def _smooth_anchors(self, tracks: list, anchors: list, t: float) -> list:
        """Each track's face anchors (`faces.align.FaceAnchors`, or None) smoothed over time by the
        track's own One-Euro filter (as `MeshSmoother`: speed in eye distances per second); a
        new track, or anchors of another layout, start afresh."""
        from exprengine.faces.align import FaceAnchors
        from exprengine.faces.tracking import OneEuroFilter
        tracker = self.tracker
        live = {id(tr) for tr in tracker.tracks}
        # each entry holds its track, so no other track can take its id while the entry lives
        self._age_filters = {k: v for k, v in self._age_filters.items() if k in live}
        out = []
        for track, a in zip(tracks, anchors):
            if a is None:
                out.append(None)
                continue
            points = np.concatenate([np.stack([a.eye_left, a.eye_right, a.mouth_left, a.mouth_right]), a.outline])
            entry = self._age_filters.get(id(track))
            if entry is None or entry[0] is not track:
                entry = (track, OneEuroFilter(tracker.mesh_min_cutoff, tracker.mesh_beta, speed_axis=-1), [None])
                self._age_filters[id(track)] = entry
            _, smoother, last = entry
            dt = 0.0 if last[0] is None else t - last[0]
            last[0] = t
            unit = max(float(np.hypot(*(a.eye_right - a.eye_left))), 1e-6)
            p = smoother(points, dt, speed_unit=unit)
            out.append(FaceAnchors(p[0], p[1], p[2], p[3], p[4:]))
        return out

    def _age(self, frame, rgb: np.ndarray, boxes: list[Box], tracks: list, index: int, t: float):
        """Age the tracked faces of one frame (module docstring) -> (the frame, its detector image)."""
        start = time.perf_counter()
        anchors = self._smooth_anchors(tracks, self.ager.anchors_for(rgb, boxes), t)
        crops, anchors, sides, _, _ = self.ager.locate(rgb, boxes, anchors)
        big = [k for k, side in enumerate(sides) if side >= self.ager.min_side]
        self.stats.too_small += len(sides) - len(big)
        self.stats.aged += len(big)
        self.stats.upscaled += sum(sides[k] < self.ager.size for k in big)
        crops, anchors = [crops[k] for k in big], [anchors[k] for k in big]
        if crops:
            size = self.ager.size
            if isinstance(frame, YUVFrame):
                originals = np.stack([c.extract_region(region_rgb(frame, *c.region[:2], c.region[2], c.region[2]), size)
                                      for c in crops])
            else:
                originals = self.ager.extract(rgb, crops)
            aged = self.ager.age_faces(originals, self.age_at(index, t))
            changes = self.ager.changes(crops, originals, aged, anchors)
            in_place = self.in_place and frame.flags.writeable
            if isinstance(frame, YUVFrame):
                if not in_place:
                    frame = YUVFrame(frame.data.copy(), frame.height, frame.width, frame.space, frame.full_range)
                for change, (top, left) in changes:
                    add_change(frame, change, top, left)
                rgb = frame.y
            else:
                frame = apply_changes(frame, changes, in_place=in_place)
                rgb = as_rgb(frame)
        self.stats.stages.setdefault("age", []).append(time.perf_counter() - start)
        return frame, rgb

    def _prepare(self, frame: np.ndarray, index: int):
        t = self.times[index] if self.times is not None and index < len(self.times) else index / self.fps
        rgb = self._check(frame, index)
        boxes, tracks = self._boxes(rgb, index, t)
        self.stats.face_frames += bool(boxes)
        if self.ager is not None and boxes:
            frame, rgb = self._age(frame, rgb, boxes, tracks, index, t)
        if self.aus_at is None:                                  # aging only: no expression edit
            return frame, ((), None), None, t
        start = time.perf_counter()
        meshes = None
        if self.faces.needs_landmarks:
            meshes = self.smooth_landmarks(tracks, self.faces.meshes_for(rgb, boxes), t)
        crops, meshes, _ = self.faces.locate(rgb, boxes, meshes)
        size = self.faces.engine.image_size
        if isinstance(frame, YUVFrame):
            originals = [c.extract_region(region_rgb(frame, *c.region[:2], c.region[2], c.region[2]), size)
                         for c in crops]
        else:
            originals = [c.extract(rgb, size) for c in crops]
        originals = np.stack(originals) if crops else None
        self.stats.stages["crop"].append(time.perf_counter() - start)
        return frame, (crops, meshes), originals, t

    def _edit(self, originals: np.ndarray | None, index: int, t: float, located=((), None)):
        if originals is None:
            return None
        start = time.perf_counter()
        crops, meshes = located
        result = self.faces.edit_faces(originals, as_intensity_array(self.aus_at(index, t)), crops, meshes)
        self.stats.stages["edit"].append(time.perf_counter() - start)
        return result

    def _paste(self, frame, located, originals, result) -> np.ndarray:
        if result is None:
            return frame
        start = time.perf_counter()
        crops, meshes = located
        changes = self.faces.changes(crops, originals, result, meshes)
        in_place = self.in_place and frame.flags.writeable
        if isinstance(frame, YUVFrame):
            out = frame if in_place else YUVFrame(frame.data.copy(), frame.height, frame.width, frame.space,
                                                  frame.full_range)
            for change, (top, left) in changes:
                add_change(out, change, top, left)
        else:
            out = apply_changes(frame, changes, in_place=in_place)
        self.stats.stages["paste"].append(time.perf_counter() - start)
        return out

    def edit_frame(self, frame: np.ndarray, index: int | None = None) -> np.ndarray:
        """One frame in, its edit out (inline; detection in the background after the first frame)."""
        start = time.perf_counter()
        index = self.stats.frames if index is None else index
        if self.detect_async and self._detector is None:
            self._detector = _BackgroundDetector(self)
        frame, located, originals, t = self._prepare(frame, index)
        out = self._paste(frame, located, originals, self._edit(originals, index, t, located))
        self.stats.latency.append(time.perf_counter() - start)
        self.stats.frames += 1
        return out

    # --- a stream -----------------------------------------------------------------------------
    def process(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Edited frames in order, one per input frame, with read, crop, edit and paste overlapped."""
        stop = threading.Event()
        prepared: queue.Queue = queue.Queue(self.queue_size)
        edited: queue.Queue = queue.Queue(self.queue_size)
        if self.detect_async and self._detector is None:
            self._detector = _BackgroundDetector(self)
        wall = time.perf_counter()

        def put(q: queue.Queue, item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def read_and_crop():
            try:
                it = iter(frames)
                index = 0
                while not stop.is_set():
                    start = time.perf_counter()
                    try:
                        frame = next(it)
                    except StopIteration:
                        break
                    self.stats.stages["read"].append(time.perf_counter() - start)
                    if not put(prepared, (index, start, *self._prepare(frame, index))):
                        return
                    index += 1
                put(prepared, _DONE)
            except BaseException as e:      # noqa: BLE001 -- handed to the caller's thread
                put(prepared, e)

        def edit():
            try:
                while not stop.is_set():
                    item = prepared.get()
                    if item is _DONE or isinstance(item, BaseException):
                        put(edited, item)
                        return
                    index, start, frame, located, originals, t = item
                    if not put(edited, (index, start, frame, located, originals,
                                        self._edit(originals, index, t, located))):
                        return
            except BaseException as e:      # noqa: BLE001
                put(edited, e)

        workers = [threading.Thread(target=read_and_crop, name="exprengine-read", daemon=True),
                   threading.Thread(target=edit, name="exprengine-edit", daemon=True)]
        for w in workers:
            w.start()
        try:
            while True:
                item = edited.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                index, start, frame, located, originals, result = item
                out = self._paste(frame, located, originals, result)
                self.stats.latency.append(time.perf_counter() - start)
                self.stats.frames += 1
                self.stats.wall = time.perf_counter() - wall
                yield out
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=5)
            self.stats.wall = time.perf_counter() - wall

    def close(self) -> None:
        """Stop the background detector's thread (if one runs); the editor can be used again."""
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> "StreamEditor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _BackgroundDetector:
    """Runs the detector on the newest submitted frame in its own thread and feeds the tracker.
    `submit` never blocks: while a detection runs, a newer frame replaces a waiting one."""

    def __init__(self, editor: StreamEditor):
        self.editor = editor
        self._job: tuple[np.ndarray, list[Box] | None] | None = None
        self._busy = False
        self._cv = threading.Condition()
        self._closed = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="exprengine-detect", daemon=True)
        self._thread.start()

    def submit(self, rgb: np.ndarray, around: list[Box] | None = None) -> bool:
        with self._cv:
            if self.error is not None:
                raise self.error
            if self._busy and self._job is not None:
                return False
            self._job = (np.ascontiguousarray(rgb), around)
            self._cv.notify()
            return True

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._job is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                rgb, around = self._job
                self._job, self._busy = None, True
            try:
                self.editor.detect(rgb, around)
            except BaseException as e:      # noqa: BLE001 -- raised on the next submit
                self.error = e
            finally:
                with self._cv:
                    self._busy = False

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=5)


def _constant(engine, aus) -> AUSource:
    values = engine.policy.check(as_intensity_array(aus))
    if values.ndim != 1:
        raise UserError("a stream's expression is one AU vector of 17 values (or a function of the frame)")
    return lambda index, t: values
