"""Video frames kept in the codec's own format, YUV 4:2:0, so that a 1080p frame is never
converted to RGB as a whole: only the face regions are.

Decoders produce and encoders take planar YUV 4:2:0 (yuv420p, limited range); converting
every 1920x1080 frame to RGB and back costs more than the edit itself. A `YUVFrame` is that
layout in one buffer; detection runs on its Y plane (luma is what HOG looks at), the crops
convert their own square to RGB (`region_rgb`), and the paste-back adds the face's change,
converted to YUV and its chroma averaged over 2x2 blocks, to the three planes
(`add_change`). Pixels where the change is zero keep their bytes, as in RGB.

The matrix is BT.709 for frames 720 lines high or more and BT.601 below (what players assume
for untagged video); a wrong guess only tints what the model sees slightly, since the change
goes back through the same matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exprengine.faces.paste import add_rounded

# Limited-range Y'CbCr: Y' = 16 + 219 * (Kr R + Kg G + Kb B) / 255, Cb/Cr = 128 + 224 * ... / 255
_K = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}


def matrix_for(height: int) -> str:
    return "bt709" if height >= 720 else "bt601"


def _rgb_to_yuv_matrix(name: str) -> np.ndarray:
    kr, kb = _K[name]
    kg = 1 - kr - kb
    y = np.array([kr, kg, kb])
    cb = (np.array([0, 0, 1.0]) - y) / (2 * (1 - kb))
    cr = (np.array([1.0, 0, 0]) - y) / (2 * (1 - kr))
    return np.stack([y * 219 / 255, cb * 224 / 255, cr * 224 / 255]).astype(np.float32)


_M = {name: _rgb_to_yuv_matrix(name) for name in _K}
_M_INV = {name: np.linalg.inv(m.astype(np.float64)).astype(np.float32) for name, m in _M.items()}
_OFFSET = np.array([16.0, 128.0, 128.0], np.float32)


@dataclass
class YUVFrame:
    """One yuv420p frame: `data` is the contiguous H*W*3/2 bytes (Y, then U, then V)."""
    data: np.ndarray
    height: int
    width: int

    def __post_init__(self):
        assert self.height % 2 == 0 and self.width % 2 == 0, (self.height, self.width)
        assert self.data.dtype == np.uint8 and self.data.size == self.height * self.width * 3 // 2, self.data.shape

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    @property
    def y(self) -> np.ndarray:
        return self.data[:self.height * self.width].reshape(self.height, self.width)

    def chroma(self) -> tuple[np.ndarray, np.ndarray]:
        h2, w2, n = self.height // 2, self.width // 2, self.height * self.width
        return (self.data[n:n + h2 * w2].reshape(h2, w2), self.data[n + h2 * w2:].reshape(h2, w2))

    @property
    def matrix(self) -> str:
        return matrix_for(self.height)

    @property
    def flags(self):
        return self.data.flags

    @classmethod
    def from_rgb(cls, rgb: np.ndarray) -> "YUVFrame":
        """For tests and synthetic input: an RGB frame in this layout (chroma averaged 2x2)."""
        h, w = rgb.shape[:2]
        yuv = rgb.astype(np.float32) @ _M[matrix_for(h)].T + _OFFSET
        y = np.clip(np.rint(yuv[..., 0]), 0, 255).astype(np.uint8)
        c = yuv[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean((1, 3))
        c = np.clip(np.rint(c), 0, 255).astype(np.uint8)
        return cls(np.concatenate([y.ravel(), c[..., 0].ravel(), c[..., 1].ravel()]), h, w)

    def to_rgb(self) -> np.ndarray:
        return region_rgb(self, 0, 0, self.height, self.width)


def region_rgb(frame: YUVFrame, top: int, left: int, height: int, width: int) -> np.ndarray:
    """uint8 RGB of frame[top:top+height, left:left+width] (chroma repeated 2x2), the frame's
    edge repeated where the region runs outside it."""
    h, w = frame.height, frame.width
    t, l, b, r = max(top, 0), max(left, 0), min(top + height, h), min(left + width, w)
    if t >= b or l >= r:                                       # wholly outside: the nearest edge pixels
        t, b = (h - 1, h) if top >= h else (0, 1) if b <= 0 else (t, b)
        l, r = (w - 1, w) if left >= w else (0, 1) if r <= 0 else (l, r)
    u, v = frame.chroma()
    t2, l2 = t // 2, l // 2
    cu = u[t2:(b + 1) // 2, l2:(r + 1) // 2].repeat(2, 0).repeat(2, 1)[t - 2 * t2:t - 2 * t2 + b - t,
                                                                      l - 2 * l2:l - 2 * l2 + r - l]
    cv = v[t2:(b + 1) // 2, l2:(r + 1) // 2].repeat(2, 0).repeat(2, 1)[t - 2 * t2:t - 2 * t2 + b - t,
                                                                      l - 2 * l2:l - 2 * l2 + r - l]
    yuv = np.stack([frame.y[t:b, l:r], cu, cv], axis=-1).astype(np.float32) - _OFFSET
    rgb = np.clip(np.rint(yuv @ _M_INV[frame.matrix].T), 0, 255).astype(np.uint8)
    pads = ((t - top, top + height - b), (l - left, left + width - r), (0, 0))
    if any(p for pair in pads[:2] for p in pair):
        rgb = np.pad(rgb, [(max(0, a), max(0, c)) for a, c in pads], mode="edge")
        rgb = rgb[max(0, -(t - top)):, max(0, -(l - left)):][:height, :width]
    return rgb


def add_change(frame: YUVFrame, change: np.ndarray, top: int, left: int) -> None:
    """Add an RGB change (float [E,E,3], at (top, left), clipped to the frame) to the frame's
    planes in place, rounded; chroma gets the change's mean over each 2x2 block."""
    e = change.shape[0]
    h, w = frame.height, frame.width
    t, l, b, r = max(top, 0), max(left, 0), min(top + e, h), min(left + e, w)
    if t >= b or l >= r:
        return
    c = np.ascontiguousarray(change[t - top:b - top, l - left:r - left], np.float32)
    d = (c.reshape(-1, 3) @ _M[frame.matrix].T).reshape(c.shape)             # dY, dCb, dCr
    add_rounded(frame.y[t:b, l:r], d[..., 0])
    t2, l2, b2, r2 = t // 2, l // 2, (b + 1) // 2, (r + 1) // 2              # chroma rows/cols touched
    padded = np.zeros((2 * (b2 - t2), 2 * (r2 - l2), 2), np.float32)
    padded[t - 2 * t2:t - 2 * t2 + (b - t), l - 2 * l2:l - 2 * l2 + (r - l)] = d[..., 1:]
    dc = 0.25 * (padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2])
    for plane, k in zip(frame.chroma(), (0, 1)):
        add_rounded(plane[t2:b2, l2:r2], dc[..., k])
