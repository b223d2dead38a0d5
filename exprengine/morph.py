"""The morph scheduler: AU trajectories between a source and a target expression.

    target_i = a_i * y_dst + (1 - a_i) * y_src,    a_i = schedule(i / F),  i = 1..F

so a_i runs over (0, 1] and the last frame is the target (SPEC section 5). With
`include_source`, i runs 0..F-1 over [0, 1] instead, so the first frame is the source.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from exprengine.errors import UserError

SCHEDULES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda t: t,
    "ease-in-out": lambda t: t * t * (3.0 - 2.0 * t),          # smoothstep
    "ease-in": lambda t: t * t,
    "ease-out": lambda t: 1.0 - (1.0 - t) ** 2,
    "cosine": lambda t: 0.5 - 0.5 * np.cos(math.pi * t),
}


def schedule_weights(frames: int, schedule: str = "linear", include_source: bool = False) -> np.ndarray:
    """The blend weights a_i, float32 [frames]."""
    if schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if not isinstance(frames, (int, np.integer)) or frames < 1:
        raise UserError(f"a morph needs at least 1 frame, got {frames}")
    if include_source:
        t = np.linspace(0.0, 1.0, frames) if frames > 1 else np.ones(1)
    else:
        t = np.arange(1, frames + 1, dtype=np.float64) / frames
    return SCHEDULES[schedule](t).astype(np.float32)


def au_trajectory(src: np.ndarray, dst: np.ndarray, frames: int, schedule: str = "linear",
                  include_source: bool = False) -> np.ndarray:
    """[frames, 17] AU intensities from src [17] to dst [17]."""
    src = np.asarray(src, np.float32).reshape(-1)
    dst = np.asarray(dst, np.float32).reshape(-1)
    if src.shape != dst.shape:
        raise UserError(f"source and target AU vectors differ in length ({src.size} vs {dst.size})")
    a = schedule_weights(frames, schedule, include_source)[:, None]
    return a * dst[None, :] + (1.0 - a) * src[None, :]


# --- a rendered morph to files --------------------------------------------------------------
#: Most tiles a morph's contact sheet shows (every k-th frame beyond that).
SHEET_TILES = 32


def default_sheet_path(out: str | os.PathLike) -> Path:
    """The contact sheet beside a morph output: `m.gif` -> `m_sheet.png`, `frames/` -> `frames_sheet.png`."""
    p = Path(out)
    return p.with_name(p.stem + "_sheet.png") if p.suffix else p.parent / (p.name + "_sheet.png")


def write_morph(out: str | os.PathLike, rendered: np.ndarray, fps: float = 12.0, bounce: bool = False,
                sheet: str | os.PathLike | None = None) -> None:
    """Write a rendered morph (uint8 [F,H,W,3]) as a GIF, an MP4 or a directory of PNG frames
    (`media.write_animation`, by `out`'s suffix) at `fps` frames/s; `bounce` plays it forward
    then backward (GIF/MP4 only); `sheet`: also a labelled contact sheet PNG of at most
    SHEET_TILES frames. Atomic per file; UserError (one sentence) when a file cannot be written.
    """
    from exprengine import media
    frames = len(rendered)
    out = Path(out)
    animation = np.concatenate([rendered, rendered[-2:0:-1]]) if bounce and out.suffix else rendered
    media.write_animation(out, animation, fps=fps)
    if sheet is not None:
        step = max(1, -(-frames // SHEET_TILES))
        picks = list(range(0, frames, step))
        media.write_image(sheet, media.contact_sheet(rendered[picks], labels=[f"{i + 1}/{frames}" for i in picks]))
