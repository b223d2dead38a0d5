"""Image/animation IO: safe reads, atomic writes, clear errors."""
from __future__ import annotations

import imageio.v2 as iio2
import numpy as np
import pytest
from PIL import Image

from exprengine import media
from exprengine.errors import UserError
from exprengine.media import (atomic_output, check_output_path, contact_sheet, read_image, write_animation,
                              write_image)


@pytest.fixture
def frames(rng):
    return rng.integers(0, 256, (5, 33, 47, 3), dtype=np.uint8)


def test_image_round_trips(tmp_path, rng):
    img = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    for suffix in (".png", ".bmp"):
        p = write_image(tmp_path / f"a{suffix}", img)
        assert np.array_equal(read_image(p), img)
    smooth = np.repeat(np.linspace(0, 255, 30, dtype=np.uint8)[None, :, None], 40, 0).repeat(3, 2)
    for suffix in (".jpg", ".webp"):
        back = read_image(write_image(tmp_path / f"a{suffix}", smooth))
        assert back.shape == smooth.shape and np.abs(back.astype(int) - smooth).mean() < 3


def test_modes_become_rgb(tmp_path):
    gray = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").shape == (16, 16, 3)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (8, 8, 3) and (out[..., 0] == 200).all()
    Image.fromarray((np.arange(256, dtype=np.uint16) * 256).reshape(16, 16)).save(tmp_path / "d.png")
    deep = read_image(tmp_path / "d.png")
    expected = np.rint(np.arange(256) * 256 / 65535 * 255).reshape(16, 16)
    assert deep.shape == (16, 16, 3) and np.array_equal(deep[..., 0], expected)
    Image.fromarray(gray, "L").convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (16, 16, 3)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6                                     # rotate 90 degrees clockwise to display
    img.save(tmp_path / "o.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "o.jpg").shape == (40, 20, 3)


def test_bad_images(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match="directory"):
        read_image(tmp_path)
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(UserError, match="not an image"):
        read_image(tmp_path / "text.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        read_image(tmp_path / "cut.png")
    monkeypatch.setattr(media, "MAX_PIXELS", 100)
    with pytest.raises(UserError, match="pixel limit"):
        read_image(tmp_path / "full.png")
    assert (tmp_path / "full.png").read_bytes() == data  # inputs are never changed


def test_animations(tmp_path, frames):
    gif = write_animation(tmp_path / "m.gif", frames, fps=10)
    with Image.open(gif) as im:
        assert im.n_frames == 5 and im.size == (47, 33)
    mp4 = write_animation(tmp_path / "m.mp4", frames, fps=10)   # odd sizes are padded to even
    reader = iio2.get_reader(str(mp4), format="FFMPEG")
    assert sum(1 for _ in reader) == 5
    reader.close()
    d = write_animation(str(tmp_path / "frames") + "/", frames)
    assert sorted(p.name for p in d.iterdir()) == [f"frame_{i:04d}.png" for i in range(5)]
    assert np.array_equal(read_image(d / "frame_0003.png"), frames[3])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporaries left


def test_output_path_checks(tmp_path, monkeypatch):
    assert check_output_path(tmp_path / "x.png", "image") == tmp_path / "x.png"
    with pytest.raises(UserError, match="is a directory"):
        check_output_path(tmp_path, "image")
    with pytest.raises(UserError, match="does not exist"):
        check_output_path(tmp_path / "no" / "x.png", "image")
    with pytest.raises(UserError, match="must end"):
        check_output_path(tmp_path / "x.tiff", "image")
    with pytest.raises(UserError, match="must end"):
        check_output_path(tmp_path / "x.avi", "animation")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        check_output_path(tmp_path / "full", "animation")
    (tmp_path / "empty").mkdir()
    check_output_path(tmp_path / "empty", "animation")
    monkeypatch.setattr(media.os, "access", lambda path, mode: False)   # as if not writable (we run as root)
    with pytest.raises(UserError, match="not writable"):
        check_output_path(tmp_path / "x.png", "image")


def test_failed_writes_leave_nothing(tmp_path, frames, monkeypatch):
    target = tmp_path / "keep.png"
    target.write_bytes(b"old contents")

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        write_image(target, frames[0])
    with pytest.raises(OSError):
        write_animation(tmp_path / "frames", frames)
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(tmp_path / "new.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


@pytest.mark.parametrize("n,columns", [(1, None), (5, None), (16, None), (9, 9), (7, 3)])
def test_contact_sheet(rng, n, columns):
    tiles = rng.integers(0, 256, (n, 20, 30, 3), dtype=np.uint8)
    sheet = contact_sheet(tiles, columns=columns, labels=[str(i) for i in range(n)])
    cols = columns or min(8, int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / cols))
    assert sheet.dtype == np.uint8 and sheet.shape == (2 + rows * (20 + 14 + 2), 2 + cols * (30 + 2), 3)
    assert np.array_equal(sheet[2:22, 2:32], tiles[0])
