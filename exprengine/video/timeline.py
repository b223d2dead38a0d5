"""The expression over a video's time: held, morphed across the clip, or keyframed.

A timeline is a function (frame index, seconds) -> 17 AU intensities, what `StreamEditor`
takes. Three kinds:

    hold(aus)                                       the same expression on every frame
    morph(src, dst, frames, schedule)               src on the first frame to dst on the last
    Keyframes.read("timeline.json" | ".csv")        linear between keyframes, held outside them

`expression_plan(target, start=, schedule=, keyframes=, policy=)` takes these as a user gives
them (what `edit_video` and the `video` command take), checks them before any video is read,
and makes the timeline once the clip's length is known (`ExpressionPlan.timeline`).

Keyframe files give a time in seconds (`t`) or a frame number (`frame`) and an expression,
either as a spec (`expression`: "happiness@1.5,AU25=0.5") or as AU columns/keys
(`AU12`, `AU12_r` or `12`; missing AUs are 0):

    [{"t": 0, "expression": "natural"}, {"t": 1.5, "expression": "happiness@1.5"},
     {"frame": 90, "AU12": 2.0, "AU25": 0.8}]

    t,expression                     frame,AU01,AU12,AU25
    0,natural                        0,0,0,0
    2.5,surprise@1.2                 60,0,2.0,1.0

An OpenFace CSV (FeatureExtraction / FaceLandmarkVidMulti output: `frame, face_id, timestamp,
confidence, success, ..., AU01_r, ..., AU45_r, AU01_c, ...`, header names with or without
OpenFace's leading spaces) is a timeline too, read by `Keyframes.from_openface`: every tracked
row is a keyframe of its 17 `AUxx_r` intensities; `AUxx_c` and the gaze, pose, landmark and
shape columns are ignored. Time: OpenFace's `timestamp` (seconds from the first frame, which is
frame index / fps for a video), so the track drives a video of any frame rate; when the
timestamps do not increase (an image folder, `-fdir`, where OpenFace writes 0) its `frame`
numbers are used instead, and as OpenFace counts frames from 1, its frame n is our frame index
n - 1. Rows OpenFace marks `success` 0, or fitted with confidence below
exprengine.data.labels.OPENFACE_MIN_CONFIDENCE, are skipped (the expression is interpolated
across them), and with several `face_id`s the face tracked on the most frames is followed
(ties: the lowest id); both are reported as an AUWarning.

Every bad file is one UserError sentence: unreadable or non-UTF-8 text, invalid or too deeply
nested JSON, malformed CSV (a field over the csv module's 131,072-character limit included),
numbers that are not finite floats (400 digits overflow), unknown columns.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exprengine.aus import AU_NAMES, NUM_AUS, AUPolicy, AUs, AUWarning
from exprengine.errors import UserError
from exprengine.textfiles import parse_csv, read_text
from exprengine.morph import SCHEDULES

Timeline = Callable[[int, float], np.ndarray]


def hold(aus: AUs) -> Timeline:
    """`aus` on every frame: (index, seconds) -> float32 [17] intensities (OpenFace's 0..5 scale)."""
    values = aus.values.copy()
    return lambda index, t: values


def morph(src: AUs, dst: AUs, frames: int, schedule: str = "linear") -> Timeline:
    """src on frame 0, dst on frame `frames - 1`, along `schedule` (as `exprengine morph`): (index,
    seconds) -> float32 [17]; frames outside 0..frames-1 hold the nearer end. UserError for an
    unknown schedule (`exprengine.morph.SCHEDULES`)."""
    if schedule not in SCHEDULES:
        raise UserError(f"unknown `schedule` {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    a, b, ease, last = src.values.copy(), dst.values.copy(), SCHEDULES[schedule], max(frames - 1, 1)

    def at(index: int, t: float) -> np.ndarray:
        w = np.float32(ease(np.float64(min(max(index / last, 0.0), 1.0))))
        return (w * b + (1 - w) * a).astype(np.float32)
    return at


def _short(value: object) -> str:
    """A value for a one-line message: its repr, cut to 40 characters (a 400-digit number too)."""
    try:
        text = repr(value)
    except ValueError:                  # an int too long for str()
        text = f"<a number of about {int(value.bit_length() * 0.30103)} digits>"
    return text if len(text) <= 40 else text[:37] + "..."


def _finite(text: str, p: Path, what: str) -> float:
    try:
        x = float(text)
    except (TypeError, ValueError):
        raise UserError(f"timeline {p}: OpenFace {what} {_short(text)} is not a number") from None
    if not math.isfinite(x):
        raise UserError(f"timeline {p}: OpenFace {what} {_short(text)} is not a finite number")
    return x


def _sort_key(face_id: str) -> tuple:
    try:
        return (0, float(face_id), face_id)
    except ValueError:
        return (1, 0.0, face_id)


def _au_column(name: str) -> int | None:
    key = name.strip().upper().removesuffix("_R")
    key = key if key.startswith("AU") else f"AU{key}"
    if key[2:].isdigit() and len(key) <= 6:            # a longer digit run is no AU (and int() may refuse it)
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
        self.source = source            # what messages call these keyframes (a file's path)

    def __call__(self, index: int, t: float) -> np.ndarray:
        x = float(index if self.in_frames else t)
        return np.array([np.interp(x, self.times, self.values[:, k]) for k in range(NUM_AUS)], np.float32)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Keyframes":
        """Keyframes from a .json or .csv file (module docstring: our own rows, or an OpenFace
        CSV through `from_openface`). Every bad file is one UserError sentence naming it."""
        p = Path(path)
        if not p.is_file():
            raise UserError(f"timeline {p} " + ("is a directory" if p.is_dir() else "does not exist"))
        suffix = p.suffix.lower()
        if suffix not in (".json", ".csv"):
            raise UserError(f"timeline {p}: use a .json or .csv file")
        text = read_text(p, "timeline")
        if suffix == ".json":
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as e:
                raise UserError(f"timeline {p} is not valid JSON ({e.msg}, line {e.lineno})") from None
            except RecursionError:
                raise UserError(f"timeline {p} is nested too deeply to be a list of keyframes") from None
            except ValueError as e:     # e.g. an integer of more than 4300 digits
                raise UserError(f"timeline {p} is not valid JSON ({str(e).splitlines()[0][:120]})") from None
            if isinstance(rows, dict):
                rows = rows.get("keyframes")
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise UserError(f"timeline {p}: expected a list of keyframes (objects with t or frame)")
            return cls.from_rows(rows, str(p))
        table = parse_csv(text, "timeline", p)
        header = [h.strip() for h in table[0]] if table else []
        if "face_id" in header or {"frame", "timestamp", "success"} <= set(header):
            return cls.from_openface(p)
        rows = [{key: (r[i] if i < len(r) else None) for i, key in enumerate(header)}
                for r in table[1:] if r]
        return cls.from_rows(rows, str(p))

    @classmethod
    def from_openface(cls, path: str | os.PathLike) -> "Keyframes":
        """An OpenFace FeatureExtraction / FaceLandmarkVidMulti CSV as keyframes (see the module
        docstring: AUxx_r columns; timestamp seconds, else frame n -> index n - 1; failed and
        low-confidence rows skipped; one face followed). Raises UserError; warns AUWarning."""
        from exprengine.data.labels import OPENFACE_MIN_CONFIDENCE, read_openface_csv
        p = Path(path)
        table = read_openface_csv(p)
        if table.kind != "FeatureExtraction":
            raise UserError(f"timeline {p}: an OpenFace CSV needs its frame column (FeatureExtraction output)")
        faces: dict[str, list[int]] = {}
        for i, info in enumerate(table.meta):
            faces.setdefault(info.get("face_id", "0"), []).append(i)
        face = min(faces, key=lambda f: (-len(faces[f]), _sort_key(f)))
        rows = faces[face]
        timestamps = [_finite(table.meta[i].get("timestamp", ""), p, "timestamp") for i in rows] \
            if "timestamp" in table.header else []
        by_time = len(rows) > 1 and all(b > a for a, b in zip(timestamps, timestamps[1:]))
        if by_time:
            times = timestamps
        else:
            frames = [_finite(table.meta[i].get("frame", ""), p, "frame") for i in rows]
            if any(f < 1 or f != int(f) for f in frames):
                raise UserError(f"timeline {p}: OpenFace frame numbers must be whole numbers from 1")
            times = [f - 1 for f in frames]
        notes = []
        if table.failed or table.low_confidence:
            notes.append(f"skipped {table.failed} rows OpenFace marks failed (success 0) and {table.low_confidence} "
                         f"fitted with confidence below {OPENFACE_MIN_CONFIDENCE}")
        if len(faces) > 1:
            notes.append(f"followed face_id {face} ({len(rows)} rows) of {len(faces)} tracked faces")
        if notes:
            warnings.warn(f"timeline {p}: " + "; ".join(notes), AUWarning, stacklevel=2)
        return cls(times, [table.aus[i] for i in rows], not by_time, str(p))

    @classmethod
    def from_rows(cls, rows: list[dict], source: str = "timeline") -> "Keyframes":
        """Keyframes from dicts, one a keyframe: a time (`t` or `time` in seconds, or `frame`, a
        frame index; one kind for all), an optional `expression` spec, and AU columns (0..5)
        that set single AUs on top of it. UserError (naming `source` and the keyframe's number)
        for a missing or bad time, a bad value, an unknown column, or a mix of times and frames."""
        times, values, kinds = [], [], set()
        for n, row in enumerate(rows, 1):
            row = {str(k).strip(): v for k, v in row.items() if k is not None}
            kind = "frame" if "frame" in row else "t" if "t" in row else "time" if "time" in row else None
            if kind is None:
                raise UserError(f"{source}: keyframe {n} has no time (t, time or frame)")
            kinds.add("frame" if kind == "frame" else "t")
            try:
                at = float(row[kind])
            except OverflowError:
                raise UserError(f"{source}: keyframe {n}: {kind} {_short(row[kind])} is too large") from None
            except (TypeError, ValueError):
                raise UserError(f"{source}: keyframe {n}: {kind} {_short(row[kind])} is not a number") from None
            if not math.isfinite(at) or at < 0:
                raise UserError(f"{source}: keyframe {n}: {kind} must be a number >= 0, got {_short(row[kind])}")
            v = AUs.parse(str(row["expression"])).values.copy() if row.get("expression") not in (None, "") \
                else np.zeros(NUM_AUS, np.float32)
            for key, value in row.items():
                col = _au_column(key) if key not in ("frame", "t", "time", "expression") else None
                if col is None:
                    if key not in ("frame", "t", "time", "expression"):
                        raise UserError(f"{source}: keyframe {n}: unknown column {_short(key)} (AU01..AU45, t, frame, expression)")
                    continue
                if value in (None, ""):
                    continue
                try:
                    x = float(value)
                except OverflowError:
                    raise UserError(f"{source}: keyframe {n}: {key}={_short(value)} is outside 0..5") from None
                except (TypeError, ValueError):
                    raise UserError(f"{source}: keyframe {n}: {key}={_short(value)} is not a number") from None
                if not math.isfinite(x) or not 0 <= x <= 5:
                    raise UserError(f"{source}: keyframe {n}: {key}={_short(value)} is outside 0..5")
                v[col] = x
            times.append(at)
            values.append(v)
        if len(kinds) > 1:
            raise UserError(f"{source}: mix of frame numbers and times; use one")
        return cls(times, values, kinds == {"frame"}, source)


@dataclass(frozen=True)
class ExpressionPlan:
    """The expression over a clip as a user gives it, already checked (`expression_plan`): held
    (`target` alone), morphed across the clip (`start` -> `target` along `schedule`), or
    keyframed (`keyframes`, called `name` in messages). `timeline` makes the per-frame function
    once the clip's length is known."""

    target: AUs | None = None
    start: AUs | None = None
    schedule: str = "linear"
    keyframes: Keyframes | None = None
    name: str = "timeline"

    def timeline(self, frames: int, duration: float) -> Timeline:
        """The per-frame expression, (frame index, seconds) -> float32 [17], for a clip of
        `frames` frames lasting `duration` seconds (frames / fps): a morph runs from the first
        frame to the last. Keyframes that run past the clip's end warn (AUWarning: "NAME:
        keyframes run to X s but the video ends at Y s; ..."), in frames for frame-numbered keys."""
        if self.keyframes is not None:
            keys = self.keyframes
            last, end = float(keys.times[-1]), float(frames - 1 if keys.in_frames else duration)
            if last > end:
                unit = "frame" if keys.in_frames else "s"
                warnings.warn(f"{self.name}: keyframes run to {last:g} {unit} but the video ends at {end:g} {unit}; "
                              "the keys after the end are not reached", AUWarning, stacklevel=2)
            return keys
        if self.start is not None:
            return morph(self.start, self.target, frames, self.schedule)
        return hold(self.target)


def _as_aus(value, what: str) -> AUs:
    if isinstance(value, AUs):
        return value
    if isinstance(value, str):
        return AUs.parse(value)
    try:
        return AUs(np.asarray(value, np.float32))
    except (TypeError, ValueError):
        raise UserError(f"`{what}` must be AUs, a spec such as 'happiness@1.5' or 17 intensities, "
                        f"not {_short(value)}") from None


def expression_plan(target: AUs | str | np.ndarray | None = None, *, start: AUs | str | np.ndarray | None = None,
                    schedule: str = "linear", keyframes: str | os.PathLike | Keyframes | None = None,
                    policy: AUPolicy | None = None) -> ExpressionPlan:
    """The expression over a clip from what a user gives, checked before any video is read.

    One of: `target` alone (held on every frame); `start` and `target` (a morph from the first
    frame to the last along `schedule`, one of `exprengine.morph.SCHEDULES`); or `keyframes` (a
    .json/.csv path read by `Keyframes.read`, or Keyframes). Expressions are AUs, a spec string
    ("happiness@1.5,AU25=0.5") or 17 intensities on OpenFace's 0..5 scale. Every expression is
    checked by `policy` (default `AUPolicy()`; pass the engine's): values above its cap or
    conflicting AUs warn (AUWarning) or, strict, raise. The values are not changed here (the
    engine applies its policy, clipping included, to each frame).

    UserError: none or both of target and keyframes, start without target, an unknown schedule,
    a bad spec or keyframes file, or what `policy` refuses.
    """
    policy = policy if policy is not None else AUPolicy()
    if schedule not in SCHEDULES:
        raise UserError(f"unknown `schedule` {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if keyframes is not None:
        if target is not None or start is not None:
            raise UserError("`keyframes` give the expression themselves: pass no `target` or `start` with them")
        if isinstance(keyframes, Keyframes):
            keys, name = keyframes, keyframes.source
        elif isinstance(keyframes, (str, os.PathLike)):
            keys, name = Keyframes.read(keyframes), os.fspath(keyframes)
        else:
            raise UserError(f"`keyframes` must be a .json or .csv path or Keyframes, not {type(keyframes).__name__}")
        policy.check(keys.values)
        return ExpressionPlan(keyframes=keys, name=name)
    if target is None:
        raise UserError("say which expression: a `target` (AUs or a spec such as 'happiness@1.5'), or `keyframes`"
                        + (" (`start` is where a morph to the target begins)" if start is not None else ""))
    target = _as_aus(target, "target")
    policy.check(target.values)
    if start is not None:
        start = _as_aus(start, "start")
        policy.check(start.values)
    return ExpressionPlan(target=target, start=start, schedule=schedule)
