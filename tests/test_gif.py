"""GIF colours and stillness: one palette for every frame, no dithering (media._write_gif)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from exprengine.media import GIF_DITHER_SPREAD, write_animation


def decode_gif(path) -> np.ndarray:
    with Image.open(path) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(np.asarray(im.convert("RGB")))
    return np.stack(out)


def face_like_morph(n=12, size=96):
    """A green, noisy background (the same in every frame), a skin ellipse with shading, two
    small eye whites and a dark mouth that opens frame by frame: far more than 256 colours,
    where the only white pixels are a few dozen eye pixels (as in the demo's synthetic face)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    background = np.stack([90 + 0.4 * x, 200 + 0.3 * y, 40 + 0.2 * x], -1) + rng.normal(0, 3, (size, size, 3))
    skin = ((x - size / 2) / (size * 0.33)) ** 2 + ((y - size / 2) / (size * 0.42)) ** 2 < 1
    shade = np.stack([150 - 0.4 * y, 95 - 0.3 * y, 60 - 0.2 * y], -1)
    eyes = np.zeros((size, size), bool)
    for cx in (0.38, 0.62):
        eyes |= ((x - cx * size) / 5) ** 2 + ((y - 0.42 * size) / 2.5) ** 2 < 1
    base = np.where(skin[..., None], shade, background)
    base[eyes] = (236, 238, 240)
    frames = []
    for i in range(n):
        f = base.copy()
        mouth = ((x - size / 2) / 12) ** 2 + ((y - 0.7 * size) / (1 + 6 * i / (n - 1))) ** 2 < 1
        f[mouth] = (110 - 4 * i, 30 + 2 * i, 35)
        frames.append(np.clip(np.round(f), 0, 255).astype(np.uint8))
    return np.stack(frames), eyes, ~skin


def test_gif_keeps_colours_and_still_pixels_still(tmp_path):
    frames, eyes, background = face_like_morph()
    assert len(np.unique(frames.reshape(-1, 3), axis=0)) > 1000          # the writer must quantise
    back = decode_gif(write_animation(tmp_path / "m.gif", frames, fps=12)).astype(int)
    assert back.shape == frames.shape
    error = np.abs(back - frames).max(axis=3)                              # per pixel, worst channel
    limit = 16 + GIF_DITHER_SPREAD / 2                                     # a palette step + the dither
    assert error[:, eyes].max() <= limit, error[:, eyes].max()            # eye whites stay white
    assert error[:, background].max() <= limit, error[:, background].max()
    assert error.max() <= 24
    assert _local_mean_error(back, frames) < 2.5                           # what the eye sees
    still = np.all(frames == frames[:1], axis=(0, 3))                      # background + face, not mouth
    assert still.mean() > 0.9
    assert np.array_equal(back[:, still], np.broadcast_to(back[:1, still], back[:, still].shape))


def test_gif_of_large_frames_builds_its_palette_from_a_sample(tmp_path, monkeypatch):
    from exprengine import media
    monkeypatch.setattr(media, "GIF_PALETTE_SAMPLE", 5000)                 # forces a strided sample
    frames, eyes, _ = face_like_morph(n=4)
    back = decode_gif(write_animation(tmp_path / "m.gif", frames)).astype(int)
    assert back.shape == frames.shape
    still = np.all(frames == frames[:1], axis=(0, 3))
    assert np.array_equal(back[:, still], np.broadcast_to(back[:1, still], back[:, still].shape))
    assert np.abs(back - frames).max(axis=3)[:, eyes].max() <= 24


def test_gif_of_few_colours_is_exact(tmp_path):
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    frames[:, :4] = (255, 255, 255)
    for i in range(3):
        frames[i, 5, i] = (200, 10, 10)
    back = decode_gif(write_animation(tmp_path / "m.gif", frames))
    assert np.array_equal(back, frames)


def test_gif_of_the_default_models_morph_keeps_the_eye_whites(tmp_path):
    """The demo's morph.gif: per-frame palettes turned the synthetic face's eye whites green
    (error 68 levels) and made the background shimmer."""
    from exprengine.engine import Engine
    from exprengine.evaluation.synthetic_eval import demo_face
    from exprengine.models.pretrained import load_default_generator
    _, face = demo_face()
    frames = Engine.from_generator(load_default_generator()).morph(face, "natural", "happiness@2", frames=16)
    back = decode_gif(write_animation(tmp_path / "m.gif", frames)).astype(int)
    error = np.abs(back - frames).max(axis=3)
    bright = frames.min(axis=3) > 170                                      # the eye whites
    assert bright.sum() > 100 and error[bright].max() <= 16 + GIF_DITHER_SPREAD / 2, error[bright].max()
    assert error.max() <= 24
    still = np.all(frames == frames[:1], axis=(0, 3))
    assert np.array_equal(back[:, still], np.broadcast_to(back[:1, still], back[:, still].shape))


def _local_mean_error(back, frames) -> float:
    """Mean absolute error of 4x4 local means: the colour the eye sees, dither averaged out."""
    from scipy.ndimage import uniform_filter
    return float(np.abs(uniform_filter(np.asarray(back, float), (0, 4, 4, 0))
                        - uniform_filter(np.asarray(frames, float), (0, 4, 4, 0))).mean())


def test_ordered_dither_breaks_up_the_bands_of_a_smooth_gradient(tmp_path, monkeypatch):
    import exprengine.media as media
    x = np.linspace(0, 1, 192)[None, :]
    y = np.linspace(0, 1, 96)[:, None]
    frame = 255 * np.stack([0.3 * x + 0.2 * y, 0.6 * x + 0.3 + 0 * y, 0.2 + 0 * x + 0.5 * y], axis=2)
    frames = np.stack([np.clip(np.rint(frame), 0, 255).astype(np.uint8)] * 2)
    dithered = _local_mean_error(decode_gif(write_animation(tmp_path / "d.gif", frames)), frames)
    monkeypatch.setattr(media, "GIF_DITHER_SPREAD", 0.0)
    banded = _local_mean_error(decode_gif(write_animation(tmp_path / "b.gif", frames)), frames)
    assert dithered < 0.9 * banded, (dithered, banded)
