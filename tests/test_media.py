"""Image/animation IO: safe reads, atomic writes, clear one-line errors, contact sheets."""
from __future__ import annotations

import errno
import io
import os
import stat
import struct
import zlib

import imageio.v2 as iio2
import numpy as np
import pytest
from PIL import Image

from exprengine import media
from exprengine.errors import UserError
from exprengine.files import atomic_directory, atomic_output
from exprengine.media import check_output_path, contact_sheet, output_kind, read_image, write_animation, write_image


@pytest.fixture
def frames():
    return np.random.default_rng(0).integers(0, 256, (5, 33, 47, 3), dtype=np.uint8)


def smooth_image(h=40, w=30):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)


def png_bytes(width, height, payload=b""):
    """A syntactically valid PNG header claiming any size (IHDR + one IDAT + IEND)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(payload))
            + chunk(b"IEND", b""))


def leftovers(directory):
    """Temporary files or folders an atomic write could have left behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def one_sentence(err: pytest.ExceptionInfo, path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


# --- reading ---------------------------------------------------------------------------------
def test_image_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    before = img.copy()
    for suffix in (".png", ".bmp", ".PNG"):
        p = write_image(tmp_path / f"a{suffix}", img)
        assert p == tmp_path / f"a{suffix}"
        back = read_image(p)
        assert back.dtype == np.uint8 and np.array_equal(back, img)
    assert np.array_equal(img, before)                          # the array is not modified
    smooth = smooth_image()
    for suffix in (".jpg", ".jpeg", ".webp", ".JPG"):
        back = read_image(write_image(tmp_path / f"s{suffix}", smooth))
        assert back.shape == smooth.shape and np.abs(back.astype(int) - smooth).mean() < 3
    with Image.open(tmp_path / "s.jpg") as im:
        assert im.format == "JPEG"
    with Image.open(tmp_path / "s.webp") as im:
        assert im.format == "WEBP"
    assert leftovers(tmp_path) == []


def test_modes_become_rgb(tmp_path):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (16, 16, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[:4, :, 3] = 200, 10, 255  # half the image fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")                        # alpha is dropped, not composited
    assert out.shape == (8, 8, 3) and (out[..., 0] == 200).all() and (out[..., 1] == 10).all()

    Image.fromarray(gray, "L").convert("LA").save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png")[..., 1], gray)

    Image.fromarray((np.arange(256, dtype=np.uint16) * 256).reshape(16, 16)).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode.startswith("I")                          # really a 16-bit file
    deep = read_image(tmp_path / "d.png")
    expected = np.rint(np.arange(256) * 256 / 65535 * 255).reshape(16, 16)
    assert deep.shape == (16, 16, 3) and np.array_equal(deep[..., 0], expected)

    palette = Image.fromarray(smooth_image(), "RGB").convert("P")
    palette.save(tmp_path / "p.png")
    assert np.array_equal(read_image(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))

    Image.fromarray(gray > 127).save(tmp_path / "bw.png")       # 1-bit
    assert set(np.unique(read_image(tmp_path / "bw.png"))) == {0, 255}

    Image.fromarray(smooth_image(), "RGB").convert("CMYK").save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "c.jpg").shape == (40, 30, 3)


@pytest.mark.parametrize("orientation,shape", [(1, (20, 40, 3)), (3, (20, 40, 3)), (6, (40, 20, 3)),
                                               (8, (40, 20, 3))])
def test_exif_orientation_is_applied(tmp_path, orientation, shape):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:8, :8] = 255                                        # a white block in the stored top-left
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    out = read_image(tmp_path / "o.jpg")
    assert out.shape == shape
    corner = {1: (0, 0), 3: (-1, -1), 6: (0, -1), 8: (-1, 0)}[orientation]   # where it is displayed
    assert out[corner[0], corner[1]].min() > 200
    assert out.mean() < 60                                      # and only there


def test_missing_directory_fifo_and_non_images(tmp_path):
    with pytest.raises(UserError, match="does not exist") as e:
        read_image(tmp_path / "missing.png")
    one_sentence(e, tmp_path / "missing.png")
    with pytest.raises(UserError, match="is a directory") as e:
        read_image(tmp_path)
    one_sentence(e, tmp_path)
    os.mkfifo(tmp_path / "pipe.png")                            # must not block waiting for a writer
    with pytest.raises(UserError, match="not a regular file"):
        read_image(tmp_path / "pipe.png")
    for name, data in [("text.png", b"hello, not an image"), ("empty.png", b""),
                       ("ps.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"),
                       ("zero-width.png", png_bytes(0, 10))]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match="not an image this program can read") as e:
            read_image(tmp_path / name)
        one_sentence(e, tmp_path / name)


def test_truncated_images(tmp_path):
    img = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for suffix in (".png", ".jpg", ".gif"):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format={".png": "PNG", ".jpg": "JPEG", ".gif": "GIF"}[suffix])
        data = buf.getvalue()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(UserError, match="truncated or corrupt") as e:
            read_image(cut)
        one_sentence(e, cut)
        assert cut.read_bytes() == data[: len(data) // 2]      # inputs are never changed


def test_pixel_limit(tmp_path, monkeypatch):
    # A header claiming 100000 x 100000 (Pillow's own bomb check fires) and one just over
    # MAX_PIXELS but under Pillow's limit (ours fires): neither is decoded.
    for name, side in [("bomb.png", 100_000), ("big.png", 8200)]:
        (tmp_path / name).write_bytes(png_bytes(side, side))
        with pytest.raises(UserError, match="larger than the limit") as e:
            read_image(tmp_path / name)
        one_sentence(e, tmp_path / name)
    Image.fromarray(smooth_image(64, 64)).save(tmp_path / "normal.png")
    data = (tmp_path / "normal.png").read_bytes()
    assert read_image(tmp_path / "normal.png").shape == (64, 64, 3)
    monkeypatch.setattr(media, "MAX_PIXELS", 64 * 64 - 1)
    with pytest.raises(UserError, match="larger than the limit"):
        read_image(tmp_path / "normal.png")
    monkeypatch.setattr(media, "MAX_PIXELS", 64 * 64)
    assert read_image(tmp_path / "normal.png").shape == (64, 64, 3)
    assert (tmp_path / "normal.png").read_bytes() == data


def test_read_leaves_input_bytes_and_pillow_limit_alone(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth_image()).save(tmp_path / "o.jpg", exif=exif.tobytes())
    data, mtime = (tmp_path / "o.jpg").read_bytes(), (tmp_path / "o.jpg").stat().st_mtime_ns
    limit = Image.MAX_IMAGE_PIXELS
    read_image(tmp_path / "o.jpg")
    assert (tmp_path / "o.jpg").read_bytes() == data and (tmp_path / "o.jpg").stat().st_mtime_ns == mtime
    assert Image.MAX_IMAGE_PIXELS == limit                      # no global state changed


# --- output paths ----------------------------------------------------------------------------
def test_output_kinds():
    assert media.IMAGE_SUFFIXES == (".png", ".jpg", ".jpeg", ".webp", ".bmp")
    assert media.ANIMATION_SUFFIXES == (".gif", ".mp4")
    assert output_kind("a/b.PNG") == "image" and output_kind("m.gif") == "animation"
    assert output_kind("frames/") == "frames" and output_kind("frames") == "frames"
    assert output_kind("x.avi") is None


def test_output_path_checks(tmp_path):
    assert check_output_path(tmp_path / "x.png", "image") == tmp_path / "x.png"
    assert check_output_path(str(tmp_path / "x.JPEG"), "image") == tmp_path / "x.JPEG"
    (tmp_path / "old.png").write_bytes(b"x")
    assert check_output_path(tmp_path / "old.png", "image") == tmp_path / "old.png"   # overwriting is fine
    for path in (tmp_path / "m.gif", tmp_path / "m.MP4", tmp_path / "frames", str(tmp_path / "frames") + "/"):
        assert check_output_path(path, "animation") == tmp_path / os.path.basename(os.fspath(path).rstrip("/"))
    (tmp_path / "empty").mkdir()
    assert check_output_path(tmp_path / "empty", "animation") == tmp_path / "empty"
    (tmp_path / "frames.d").mkdir()                             # an existing empty dotted directory
    assert check_output_path(tmp_path / "frames.d", "animation") == tmp_path / "frames.d"

    bad = [
        (tmp_path, "image", "is a directory"),
        (str(tmp_path / "x.png") + "/", "image", "names a directory"),
        (tmp_path / "no" / "x.png", "image", "does not exist"),
        (tmp_path / "old.png" / "x.png", "image", "is not a directory"),
        (tmp_path / "x.tiff", "image", r"must end in one of \.png, \.jpg, \.jpeg, \.webp, \.bmp"),
        (tmp_path / "x", "image", "must end in one of"),
        (tmp_path / "x.gif", "image", "must end in one of"),
        (tmp_path / "x.avi", "animation", r"must end in \.gif or \.mp4, or name a directory"),
        (tmp_path / "x.png", "animation", "must end in .gif or .mp4"),
        (tmp_path / "no" / "m.gif", "animation", "does not exist"),
        (str(tmp_path / "new.d") + "/", "animation", "has a suffix"),
        ("", "image", "empty"),
    ]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f.png").write_bytes(b"x")
    (tmp_path / "plain").write_bytes(b"x")
    bad += [(tmp_path / "full", "animation", "not empty"),
            (str(tmp_path / "full") + "/", "animation", "not empty"),
            (tmp_path / "plain", "animation", "exists and is not a directory")]
    for path, kind, message in bad:
        with pytest.raises(UserError, match=message) as e:
            check_output_path(path, kind)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError):
        check_output_path(tmp_path / "x.png", "video")
    # a directory output's missing parents are created when it is written
    assert check_output_path(tmp_path / "no" / "frames", "animation") == tmp_path / "no" / "frames"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "frames.d", "full", "old.png", "plain"]


def test_output_must_not_be_an_input_or_special_file(tmp_path):
    (tmp_path / "face.png").write_bytes(b"x")
    os.link(tmp_path / "face.png", tmp_path / "same.png")
    for out in ("face.png", "same.png"):
        with pytest.raises(UserError, match="is the input"):
            check_output_path(tmp_path / out, "image", inputs=[tmp_path / "face.png"])
    assert check_output_path(tmp_path / "new.png", "image", inputs=[tmp_path / "face.png"])
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(UserError, match="not a regular file"):
        check_output_path(tmp_path / "pipe.png", "image")


def test_unwritable_parent(tmp_path, monkeypatch):
    calls = []

    def no_write(path, mode):
        calls.append((os.fspath(path), mode))
        return False

    monkeypatch.setattr(media.os, "access", no_write)           # works as root, unlike chmod
    for path, kind in [(tmp_path / "x.png", "image"), (tmp_path / "m.gif", "animation"),
                       (tmp_path / "frames", "animation")]:
        with pytest.raises(UserError, match="is not writable") as e:
            check_output_path(path, kind)
        one_sentence(e, tmp_path)
    assert all(p == os.fspath(tmp_path) and m & os.W_OK for p, m in calls)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root bypasses file permissions")
def test_unwritable_parent_for_real(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(UserError, match="not writable"):
            check_output_path(locked / "x.png", "image")
        with pytest.raises(UserError, match="cannot write"), atomic_output(locked / "x.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        locked.chmod(0o755)


def test_writers_check_paths_and_arguments_first(tmp_path, frames):
    with pytest.raises(UserError, match="does not exist"):
        write_image(tmp_path / "no" / "x.png", frames[0])
    with pytest.raises(UserError, match="must end in"):
        write_image(tmp_path / "x.tiff", frames[0])
    with pytest.raises(UserError, match="must end in"):
        write_animation(tmp_path / "x.avi", frames)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("keep")
    with pytest.raises(UserError, match="not empty"):
        write_animation(tmp_path / "full", frames)
    for fps in (0, -1, float("nan"), float("inf"), "fast"):
        with pytest.raises(UserError, match="frame rate"):
            write_animation(tmp_path / "m.gif", frames, fps=fps)
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.png", frames[0].astype(np.float32))
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.png", frames)
    with pytest.raises(ValueError):
        write_animation(tmp_path / "m.gif", frames[:0])
    assert (tmp_path / "full" / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


# --- animations ------------------------------------------------------------------------------
def test_gif(tmp_path, frames):
    gif = write_animation(tmp_path / "m.gif", frames, fps=10)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 5 and im.size == (47, 33)
        assert im.info.get("loop") == 0 and im.info["duration"] == 100
    once = write_animation(tmp_path / "once.GIF", frames, fps=4, loop=False)
    with Image.open(once) as im:
        assert im.n_frames == 5 and "loop" not in im.info and im.info["duration"] == 250
    smooth = np.stack([np.roll(smooth_image(32, 32), 3 * i, axis=1) for i in range(4)])
    back = iio2.mimread(write_animation(tmp_path / "s.gif", smooth))
    assert len(back) == 4 and np.abs(np.asarray(back)[..., :3].astype(int) - smooth).mean() < 8
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("size", [(33, 47), (128, 128), (1, 1)])
def test_mp4(tmp_path, size):
    h, w = size
    clip = np.stack([np.full((h, w, 3), 20 * i, np.uint8) for i in range(6)])
    mp4 = write_animation(tmp_path / "m.mp4", clip, fps=12)
    reader = iio2.get_reader(str(mp4), format="FFMPEG")
    try:
        meta = reader.get_meta_data()
        back = [f for f in reader]
    finally:
        reader.close()
    assert len(back) == 6
    assert meta["size"] == (w + w % 2, h + h % 2) and abs(meta["fps"] - 12) < 0.01  # odd sizes padded
    assert np.abs(back[3][:h, :w].astype(int) - 60).max() <= 3
    assert leftovers(tmp_path) == []


def test_frames_directory(tmp_path, frames):
    for name in ("trailing/", "plain"):
        d = write_animation(os.fspath(tmp_path / name.rstrip("/")) + ("/" if name.endswith("/") else ""), frames)
        assert d == tmp_path / name.rstrip("/") and d.is_dir()
        assert sorted(p.name for p in d.iterdir()) == [f"frame_{i:04d}.png" for i in range(5)]
        assert all(np.array_equal(read_image(d / f"frame_{i:04d}.png"), frames[i]) for i in range(5))
    (tmp_path / "empty").mkdir()                                # an existing empty dir is replaced
    write_animation(tmp_path / "empty", frames[:2])
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["frame_0000.png", "frame_0001.png"]
    many = np.zeros((10001, 2, 2, 3), np.uint8)
    d = write_animation(tmp_path / "many", many)
    names = sorted(p.name for p in d.iterdir())
    assert names[0] == "frame_00000.png" and names[-1] == "frame_10000.png" and len(names) == 10001
    assert leftovers(tmp_path) == []


# --- atomicity -------------------------------------------------------------------------------
def test_failed_image_write_leaves_old_target(tmp_path, frames, monkeypatch):
    target = tmp_path / "keep.png"
    target.write_bytes(b"old contents")

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:                                 # a partial file, then the failure
            f.write(b"\x89PNG partial")
        raise OSError("encoder exploded")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    for name in ("keep.png", "new.jpg"):
        with pytest.raises(OSError, match="encoder exploded"):
            write_image(tmp_path / name, frames[0])
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_failed_animation_writes_leave_nothing(tmp_path, frames, monkeypatch):
    (tmp_path / "m.gif").write_bytes(b"old gif")
    (tmp_path / "m.mp4").write_bytes(b"old mp4")
    (tmp_path / "empty").mkdir()
    real_save, saved = Image.Image.save, []

    def save_then_fail(self, fp, *args, **kwargs):               # dies after two frames / on GIF encode
        if len(saved) == 2 or kwargs.get("format") == "GIF":
            real_save(self, fp, *args, **kwargs)
            raise KeyboardInterrupt
        saved.append(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_fail)
    for target in ("m.gif", "frames", "empty"):
        saved.clear()
        with pytest.raises(KeyboardInterrupt):
            write_animation(tmp_path / target, frames)
    monkeypatch.setattr(Image.Image, "save", real_save)

    real_get_writer = iio2.get_writer

    def failing_get_writer(*args, **kwargs):                     # ffmpeg has started writing the file
        writer = real_get_writer(*args, **kwargs)
        real_append, count = writer.append_data, [0]

        def append(frame):
            count[0] += 1
            if count[0] == 3:
                raise RuntimeError("encoder died")
            real_append(frame)
        writer.append_data = append
        return writer

    monkeypatch.setattr(iio2, "get_writer", failing_get_writer)
    with pytest.raises(RuntimeError, match="encoder died"):
        write_animation(tmp_path / "m.mp4", frames)
    assert (tmp_path / "m.gif").read_bytes() == b"old gif"
    assert (tmp_path / "m.mp4").read_bytes() == b"old mp4"
    assert list((tmp_path / "empty").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "m.gif", "m.mp4"]


def test_atomic_output(tmp_path):
    with atomic_output(tmp_path / "new.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.exists()
        tmp.write_bytes(b"data")
        assert not (tmp_path / "new.bin").exists()               # nothing visible until success
    assert (tmp_path / "new.bin").read_bytes() == b"data"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o666 & ~umask

    (tmp_path / "new.bin").chmod(0o600)                          # replacing keeps the permissions
    with atomic_output(tmp_path / "new.bin") as tmp:
        tmp.write_bytes(b"data 2")
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o600

    for exc in (KeyboardInterrupt, ValueError):
        with pytest.raises(exc), atomic_output(tmp_path / "new.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise exc
    with pytest.raises(UserError, match="cannot write .*No space left"):  # a full disk is one line
        with atomic_output(tmp_path / "new.bin") as tmp:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert (tmp_path / "new.bin").read_bytes() == b"data 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.bin"]

    with pytest.raises(UserError, match="cannot write"), atomic_output(tmp_path / "missing" / "x.bin"):
        pass
    with atomic_output(tmp_path / ("n" * 250 + ".png")) as tmp:  # long names still fit NAME_MAX
        tmp.write_bytes(b"x")
    assert (tmp_path / ("n" * 250 + ".png")).exists()


def test_atomic_directory(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        assert tmp.parent == tmp_path and tmp.is_dir() and not target.exists()
        (tmp / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"

    with pytest.raises(KeyboardInterrupt):                       # failure: old contents untouched
        with atomic_directory(target) as tmp:
            (tmp / "b.txt").write_text("partial")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]

    with atomic_directory(target) as tmp:                        # success: replaced as a whole
        (tmp / "c.txt").write_text("newer")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]

    real_replace, calls = os.replace, []

    def second_replace_fails(src, dst):                           # the swap itself fails: roll back
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(media.os, "replace", second_replace_fails)
    with pytest.raises(UserError, match="cannot write"), atomic_directory(target) as tmp:
        (tmp / "d.txt").write_text("lost")
    monkeypatch.setattr(media.os, "replace", real_replace)
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert leftovers(tmp_path) == []

    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="a file of that name exists"), atomic_directory(tmp_path / "file"):
        pytest.fail("the body must not run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]


# --- contact sheets --------------------------------------------------------------------------
@pytest.mark.parametrize("n,columns,expected_cols", [(1, None, 1), (4, None, 2), (5, None, 3), (16, None, 4),
                                                     (70, None, 8), (9, 9, 9), (7, 3, 3), (3, 10, 3)])
@pytest.mark.parametrize("with_labels", [False, True])
def test_contact_sheet_layout(n, columns, expected_cols, with_labels):
    tiles = np.random.default_rng(n).integers(0, 256, (n, 20, 30, 3), dtype=np.uint8)
    labels = [str(i) for i in range(n)] if with_labels else None
    sheet = contact_sheet(tiles, columns=columns, labels=labels, pad=2)
    rows = -(-n // expected_cols)
    strip = media._label_height(media.ImageFont.load_default()) if with_labels else 0
    assert sheet.dtype == np.uint8 and sheet.shape == (2 + rows * (20 + strip + 2), 2 + expected_cols * 32, 3)
    last_r, last_c = divmod(n - 1, expected_cols)
    y, x = 2 + last_r * (22 + strip), 2 + last_c * 32
    assert np.array_equal(sheet[2:22, 2:32], tiles[0]) and np.array_equal(sheet[y:y + 20, x:x + 30], tiles[-1])
    assert (sheet[:2] == 255).all() and (sheet[:, :2] == 255).all()              # white padding


def test_contact_sheet_labels_are_drawn_inside_their_strip():
    tiles = np.zeros((3, 24, 40, 3), np.uint8)
    labels = ["1/3", "a label far too long for its tile", ""]
    sheet = contact_sheet(tiles, columns=3, labels=labels, pad=4)
    strip = media._label_height(media.ImageFont.load_default())
    assert strip >= 10                                           # room for legible text
    band = sheet[4 + 24:4 + 24 + strip]
    for c in range(3):
        cell = band[:, 4 + c * 44:4 + c * 44 + 40]
        assert (cell < 128).any() == bool(labels[c])             # dark text where there is a label
        assert (band[:, c * 44:c * 44 + 4] == 255).all()        # gaps between tiles stay white
    assert (sheet[-4:] == 255).all()


def test_contact_sheet_rejects_bad_arguments():
    tiles = np.zeros((4, 8, 8, 3), np.uint8)
    for kwargs in ({"columns": 0}, {"labels": ["a"]}, {"pad": -1}):
        with pytest.raises(ValueError):
            contact_sheet(tiles, **kwargs)
    for bad in (tiles[:0], tiles[0], tiles.astype(np.float32)):
        with pytest.raises(ValueError):
            contact_sheet(bad)
    assert contact_sheet(tiles, pad=0).shape == (16, 16, 3)
