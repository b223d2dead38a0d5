"""Keeping faces steady over time: box smoothing with the One-Euro filter, and tracks that
follow detections from frame to frame.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a low-pass filter whose cutoff
rises with the signal's speed: still faces are smoothed hard (no jitter), moving faces
lightly (little lag):

    alpha(fc) = 1 / (1 + 1 / (2 pi fc dt))
    dx_hat    = lowpass(dx, alpha(d_cutoff))
    fc        = min_cutoff + beta * |dx_hat|
    x_hat     = lowpass(x, alpha(fc))
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from exprengine.faces.detect import Box


class OneEuroFilter:
    """Vector One-Euro filter; `dt` is the time between samples (seconds, or frames with rate 1)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * dt))

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or dt <= 0:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self._x) / dt
        self._dx = self._dx + self._alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x = self._x + self._alpha(cutoff, dt) * (x - self._x)
        return self._x.copy()


@dataclass
class Track:
    box: Box                    # the last detection
    smoothed: np.ndarray        # (cx, cy, side) after the filter
    filter: OneEuroFilter
    missed: int = 0             # detector runs in a row that did not find it

    def smoothed_box(self) -> Box:
        cx, cy, side = self.smoothed
        half = side / 2
        return Box(int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half)),
                   self.box.score)


def box_state(box: Box) -> np.ndarray:
    return np.array([(box.left + box.right) / 2, (box.top + box.bottom) / 2, max(box.width, box.height)], np.float64)


class FaceTracker:
    """Tracks faces across frames from (possibly infrequent, possibly late) detections.

    `update(boxes)` matches a detector run's boxes to the tracks by overlap (IoU >= `min_iou`),
    starts tracks for new faces and drops tracks the detector missed `max_missed` runs in a
    row. `step(t)` runs once per frame at time `t` (seconds): each track's One-Euro filter
    moves its (centre, size) toward its last detection. `boxes()` are the smoothed boxes.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, min_iou: float = 0.2, max_missed: int = 2):
        self.min_cutoff, self.beta, self.min_iou, self.max_missed = min_cutoff, beta, min_iou, max_missed
        self.tracks: list[Track] = []
        self._t: float | None = None

    def update(self, detections: list[Box]) -> None:
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
        dt = 0.0 if self._t is None else t - self._t
        self._t = t
        if dt <= 0:
            return
        for track in self.tracks:
            track.smoothed = track.filter(box_state(track.box), dt)

    @property
    def lost(self) -> bool:
        return not self.tracks or any(tr.missed for tr in self.tracks)

    def boxes(self) -> list[Box]:
        return [tr.smoothed_box() for tr in self.tracks]
