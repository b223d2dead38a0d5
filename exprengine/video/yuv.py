"""Video frames kept in the codec's own format, YUV 4:2:0, so that a 1080p frame is never
converted to RGB as a whole: only the face regions are.

Decoders produce and encoders take planar YUV 4:2:0 (yuv420p; limited range, or full range
as phones record: yuvj420p); converting
every 1920x1080 frame to RGB and back costs more than the edit itself. A `YUVFrame` is that
layout in one buffer; detection runs on its Y plane (luma is what HOG looks at), the crops
convert their own square to RGB (`region_rgb`), and the paste-back adds the face's change,
converted to YUV and its chroma averaged over 2x2 blocks, to the three planes
(`add_change`). Pixels where the change is zero keep their bytes, as in RGB.

The matrix and range are the file's (its colorspace and colour-range tags); an untagged file
gets BT.709 for frames 720 lines high or more and BT.601 below (what players assume), and a
wrong guess only tints what the model sees slightly, since the change goes back through the
same matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exprengine.faces.paste import add_rounded

# Limited-range Y'CbCr: Y' = 16 + 219 * (Kr R + Kg G + Kb B) / 255, Cb/Cr = 128 + 224 * ... / 255;
# full range (JPEG, phones' "yuvj420p"): Y' = 255 * (...) / 255, Cb/Cr = 128 + 255 * ... / 255.
_K = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114), "bt2020": (0.2627, 0.0593)}
# ffmpeg's names of the matrices (colorspace tags) -> ours
_SPACES = {"bt709": "bt709", "bt470bg": "bt601", "smpte170m": "bt601", "bt2020nc": "bt2020"}


def matrix_for(height: int, space: str | None = None) -> str:
    """The matrix of a video's YUV: its `space` tag (ffmpeg's name) when it is one we know, else
    BT.709 for frames 720 lines high or more and BT.601 below (what players assume)."""
    if space in _SPACES:
        return _SPACES[space]
    return "bt709" if height >= 720 else "bt601"


def _rgb_to_yuv_matrix(name: str, full: bool) -> np.ndarray:
    kr, kb = _K[name]
    kg = 1 - kr - kb
    y = np.array([kr, kg, kb])
    cb = (np.array([0, 0, 1.0]) - y) / (2 * (1 - kb))
    cr = (np.array([1.0, 0, 0]) - y) / (2 * (1 - kr))
    sy, sc = (1.0, 1.0) if full else (219 / 255, 224 / 255)
    return np.stack([y * sy, cb * sc, cr * sc]).astype(np.float32)


_M = {(name, full): _rgb_to_yuv_matrix(name, full) for name in _K for full in (False, True)}
_M_INV = {key: np.linalg.inv(m.astype(np.float64)).astype(np.float32) for key, m in _M.items()}
_OFFSET = {False: np.array([16.0, 128.0, 128.0], np.float32), True: np.array([0.0, 128.0, 128.0], np.float32)}


@dataclass
class YUVFrame:
    """One yuv420p frame: `data` is the contiguous H*W*3/2 bytes (Y, then U, then V).

    space: the file's matrix tag (ffmpeg's name: "bt709", "bt470bg", ...; None: guessed from
    the height); full_range: Y' and chroma use 0..255 (yuvj420p, "pc") rather than 16..235/240."""
    data: np.ndarray
    height: int
    width: int
    space: str | None = None
    full_range: bool = False

    def __post_init__(self):
        assert self.height % 2 == 0 and self.width % 2 == 0, (self.height, self.width)
        assert self.data.dtype == np.uint8 and self.data.size == self.height * self.width * 3 // 2, self.data.shape

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, 3): the shape of the frame as RGB (what a frame's size is compared by)."""
        return (self.height, self.width, 3)

    @property
    def y(self) -> np.ndarray:
        """The luma plane, uint8 [height, width], a view of `data` (as stored: 16..235 unless full range)."""
        return self.data[:self.height * self.width].reshape(self.height, self.width)

    def chroma(self) -> tuple[np.ndarray, np.ndarray]:
        """The Cb and Cr planes, uint8 [height/2, width/2] each, views of `data`."""
        h2, w2, n = self.height // 2, self.width // 2, self.height * self.width
        return (self.data[n:n + h2 * w2].reshape(h2, w2), self.data[n + h2 * w2:].reshape(h2, w2))

    @property
    def matrix(self) -> str:
        """The YUV<->RGB matrix these values are read with: "bt709", "bt601" or "bt2020" (`matrix_for`)."""
        return matrix_for(self.height, self.space)

    @property
    def _key(self) -> tuple[str, bool]:
        return self.matrix, self.full_range

    @property
    def flags(self):
        """`data.flags` (so that a paste in place can ask `frame.flags.writeable` of either kind of frame)."""
        return self.data.flags

    @classmethod
    def from_rgb(cls, rgb: np.ndarray, space: str | None = None, full_range: bool = False) -> "YUVFrame":
        """For tests and synthetic input: an RGB frame in this layout (chroma averaged 2x2)."""
        h, w = rgb.shape[:2]
        yuv = colour_transform(rgb.astype(np.float32), _M[matrix_for(h, space), full_range]) + _OFFSET[full_range]
        y = np.clip(np.rint(yuv[..., 0]), 0, 255).astype(np.uint8)
        c = yuv[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean((1, 3))
        c = np.clip(np.rint(c), 0, 255).astype(np.uint8)
        return cls(np.concatenate([y.ravel(), c[..., 0].ravel(), c[..., 1].ravel()]), h, w, space, full_range)

    def to_rgb(self) -> np.ndarray:
        """The whole frame as uint8 [height, width, 3] RGB (chroma upsampled, `region_rgb`)."""
        return region_rgb(self, 0, 0, self.height, self.width)


def colour_transform(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """x [..., 3] times the 3x3 colour matrix m transposed (each pixel's row times m^T), float32.
    By einsum, not `@`: BLAS's threads make a matmul of N x 3 by 3 x 3 up to 100x slower on a
    busy machine (48 ms against 0.5 ms for a face region, bench/results/rig-video-cpu.md)."""
    return np.einsum("...k,lk->...l", x, m.astype(np.float32, copy=False))


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
    yuv = np.stack([frame.y[t:b, l:r], cu, cv], axis=-1).astype(np.float32) - _OFFSET[frame.full_range]
    rgb = np.clip(np.rint(colour_transform(yuv, _M_INV[frame._key])), 0, 255).astype(np.uint8)
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
    d = colour_transform(c, _M[frame._key])                                  # dY, dCb, dCr
    add_rounded(frame.y[t:b, l:r], d[..., 0])
    t2, l2, b2, r2 = t // 2, l // 2, (b + 1) // 2, (r + 1) // 2              # chroma rows/cols touched
    padded = np.zeros((2 * (b2 - t2), 2 * (r2 - l2), 2), np.float32)
    padded[t - 2 * t2:t - 2 * t2 + (b - t), l - 2 * l2:l - 2 * l2 + (r - l)] = d[..., 1:]
    dc = 0.25 * (padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2])
    for plane, k in zip(frame.chroma(), (0, 1)):
        add_rounded(plane[t2:b2, l2:r2], dc[..., k])
