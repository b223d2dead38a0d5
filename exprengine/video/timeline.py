"""The expression over a video's time: held, morphed across the clip, or keyframed.

A timeline is a function (frame index, seconds) -> 17 AU intensities, what `StreamEditor`
takes. Three kinds:

    hold(aus)                                       the same expression on every frame
    morph(src, dst, frames, schedule)               src on the first frame to dst on the last
    Keyframes.read("timeline.json" | ".csv")        linear between keyframes, held outside them

Keyframe files give a time in seconds (`t`) or a frame number (`frame`) and an expression,
either as a spec (`expression`: "happiness@1.5,AU25=0.5") or as AU columns/keys
(`AU12`, `AU12_r` or `12`; missing AUs are 0):

    [{"t": 0, "expression": "natural"}, {"t": 1.5, "expression": "happiness@1.5"},
     {"frame": 90, "AU12": 2.0, "AU25": 0.8}]

    t,expression                     frame,AU01,AU12,AU25
    0,natural                        0,0,0,0
    2.5,surprise@1.2                 60,0,2.0,1.0
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from exprengine.aus import AU_NAMES, NUM_AUS, AUs
from exprengine.errors import UserError
from exprengine.morph import SCHEDULES

Timeline = Callable[[int, float], np.ndarray]


def hold(aus: AUs) -> Timeline:
    values = aus.values.copy()
    return lambda index, t: values


def morph(src: AUs, dst: AUs, frames: int, schedule: str = "linear") -> Timeline:
    """src on frame 0, dst on frame `frames - 1`, along `schedule` (as `exprengine morph`)."""
    if schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    a, b, ease, last = src.values.copy(), dst.values.copy(), SCHEDULES[schedule], max(frames - 1, 1)

    def at(index: int, t: float) -> np.ndarray:
        w = np.float32(ease(np.float64(min(max(index / last, 0.0), 1.0))))
        return (w * b + (1 - w) * a).astype(np.float32)
    return at


def _au_column(name: str) -> int | None:
    key = name.strip().upper().removesuffix("_R")
    key = key if key.startswith("AU") else f"AU{key}"
    if key[2:].isdigit():
        key = f"AU{int(key[2:]):02d}"
    return AU_NAMES.index(key) if key in AU_NAMES else None


class Keyframes:
    """Expressions at given times; linear in between, held before the first and after the last."""

    def __init__(self, times: list[float], aus: list[np.ndarray], in_frames: bool, source: str = "timeline"):
        if not times:
            raise UserError(f"{source}: no keyframes")
        order = np.argsort(times, kind="stable")
        self.times = np.asarray(times, np.float64)[order]
        self.values = np.stack(aus).astype(np.float32)[order]
        if np.any(np.diff(self.times) == 0):
            raise UserError(f"{source}: two keyframes at the same {'frame' if in_frames else 'time'} "
                            f"{self.times[np.argmax(np.diff(self.times) == 0)]:g}")
        self.in_frames = in_frames

    def __call__(self, index: int, t: float) -> np.ndarray:
        x = float(index if self.in_frames else t)
        return np.array([np.interp(x, self.times, self.values[:, k]) for k in range(NUM_AUS)], np.float32)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Keyframes":
        p = Path(path)
        if not p.is_file():
            raise UserError(f"timeline {p} " + ("is a directory" if p.is_dir() else "does not exist"))
        suffix = p.suffix.lower()
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"timeline {p} cannot be read ({e})") from None
        if suffix == ".json":
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as e:
                raise UserError(f"timeline {p} is not valid JSON ({e.msg}, line {e.lineno})") from None
            if isinstance(rows, dict):
                rows = rows.get("keyframes")
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise UserError(f"timeline {p}: expected a list of keyframes (objects with t or frame)")
        elif suffix == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
        else:
            raise UserError(f"timeline {p}: use a .json or .csv file")
        return cls.from_rows(rows, str(p))

    @classmethod
    def from_rows(cls, rows: list[dict], source: str = "timeline") -> "Keyframes":
        times, values, kinds = [], [], set()
        for n, row in enumerate(rows, 1):
            row = {str(k).strip(): v for k, v in row.items() if k is not None}
            kind = "frame" if "frame" in row else "t" if "t" in row else "time" if "time" in row else None
            if kind is None:
                raise UserError(f"{source}: keyframe {n} has no time (t, time or frame)")
            kinds.add("frame" if kind == "frame" else "t")
            try:
                at = float(row[kind])
            except (TypeError, ValueError):
                raise UserError(f"{source}: keyframe {n}: {kind} {row[kind]!r} is not a number") from None
            if not math.isfinite(at) or at < 0:
                raise UserError(f"{source}: keyframe {n}: {kind} must be a number >= 0, got {row[kind]!r}")
            v = AUs.parse(str(row["expression"])).values.copy() if row.get("expression") not in (None, "") \
                else np.zeros(NUM_AUS, np.float32)
            for key, value in row.items():
                col = _au_column(key) if key not in ("frame", "t", "time", "expression") else None
                if col is None:
                    if key not in ("frame", "t", "time", "expression"):
                        raise UserError(f"{source}: keyframe {n}: unknown column {key!r} (AU01..AU45, t, frame, expression)")
                    continue
                if value in (None, ""):
                    continue
                try:
                    x = float(value)
                except (TypeError, ValueError):
                    raise UserError(f"{source}: keyframe {n}: {key}={value!r} is not a number") from None
                if not math.isfinite(x) or not 0 <= x <= 5:
                    raise UserError(f"{source}: keyframe {n}: {key}={value!r} is outside 0..5")
                v[col] = x
            times.append(at)
            values.append(v)
        if len(kinds) > 1:
            raise UserError(f"{source}: mix of frame numbers and times; use one")
        return cls(times, values, kinds == {"frame"}, source)
