"""Video IO: probing, reading, atomic writing with audio, and one clear error per bad file."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import wave
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from exprengine.errors import UserError
from exprengine.video import io as vio
from exprengine.video.io import (
    MAX_VIDEO_PIXELS,
    VideoInfo,
    VideoReader,
    VideoWriter,
    probe_video,
)


# --- helpers ---------------------------------------------------------------------------------
def moving_frames(n: int, h: int, w: int) -> list[np.ndarray]:
    """Smooth gradients with a soft-edged square moving across: every frame differs."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for i in range(n):
        cx, cy = 8 + i * (w - 16) / max(n - 1, 1), h / 2
        square = 1 / (1 + np.exp(np.maximum(np.abs(x - cx), np.abs(y - cy)) - 6))   # soft edges
        r = 40 + 150 * x / (w - 1) + 60 * square
        g = 50 + 120 * y / (h - 1) + 60 * square
        b = 140 - 60 * x / (w - 1) + 20 * np.sin(i / 3) + 60 * square
        frames.append(np.clip(np.stack([r, g, b], -1), 0, 255).round().astype(np.uint8))
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps="25/1", **kwargs) -> Path:
    h, w = frames[0].shape[:2]
    with VideoWriter(path, w, h, fps_rational=fps, **kwargs) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def ffmpeg(*args, check: bool = True) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *map(str, args)],
                   check=check, stdin=subprocess.DEVNULL)


def write_wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * 440 * t) * 12000).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def leftovers(directory: Path) -> list[str]:
    """Temporary files an atomic write could have left behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def one_sentence(err: pytest.ExceptionInfo, path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def mp4_boxes(data: bytes) -> dict[str, tuple[int, int]]:
    """Top-level MP4 boxes: name -> (offset, size)."""
    out, i = {}, 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        out.setdefault(kind.decode("latin1"), (i, size))
        if size < 8:
            break
        i += size
    return out


def live_children() -> set[int]:
    """Child processes of this one that have not exited (zombies excluded)."""
    me, found = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Shared read-only inputs: a silent mp4, the same with a sound track, a WAV."""
    d = tmp_path_factory.mktemp("clips")
    frames = moving_frames(20, 48, 64)
    silent = write_video(d / "silent.mp4", frames, fps="30000/1001")
    wav = write_wav(d / "tone.wav", 1.0)
    sound = d / "sound.mp4"
    ffmpeg("-i", silent, "-i", wav, "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", sound)
    return {"frames": frames, "silent": silent, "sound": sound, "wav": wav}


# --- round trips -----------------------------------------------------------------------------
@pytest.mark.parametrize("h, w, fps, suffix", [
    (48, 64, "30000/1001", ".mp4"),
    (47, 63, "25/1", ".mkv"),           # odd size: written as yuv444p, size kept exactly
    (64, 96, "24000/1001", ".mov"),
    (33, 50, "12/1", ".MP4"),
])
def test_round_trip_keeps_count_rate_size_and_pixels(tmp_path, h, w, fps, suffix):
    frames = moving_frames(12, h, w)
    before = [f.copy() for f in frames]
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=fps)
    assert all(np.array_equal(a, b) for a, b in zip(frames, before))     # inputs untouched
    info = probe_video(path)
    rate = Fraction(fps)
    assert info == VideoInfo(path=path, width=w, height=h, fps=float(rate),
                             fps_rational=f"{rate.numerator}/{rate.denominator}",
                             frames=12, duration=pytest.approx(float(12 / rate)), has_audio=False)
    with VideoReader(path) as reader:
        assert reader.info == info and len(reader) == 12
        back = list(reader)
    assert len(back) == 12
    for got, want in zip(back, frames):
        assert got.dtype == np.uint8 and got.shape == (h, w, 3) and got.flags.writeable
        assert np.abs(got.astype(int) - want).mean() < 3
    assert not np.array_equal(back[0], back[-1])
    assert leftovers(tmp_path) == []


def test_reader_can_iterate_twice_and_names_ntsc_rates(clips):
    with VideoReader(clips["silent"]) as reader:
        assert reader.info.fps_rational == "30000/1001" and reader.info.fps == pytest.approx(29.97, abs=1e-3)
        first = [f.mean() for f in reader]
        second = [f.mean() for f in reader]
    assert first == second and len(first) == 20


def test_rotation_metadata_is_applied(tmp_path, clips):
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", clips["silent"], "-c", "copy", rotated)
    info = probe_video(rotated)
    assert (info.width, info.height, info.frames) == (48, 64, 20)
    with VideoReader(rotated) as reader:
        frame = next(iter(reader))
    assert frame.shape == (64, 48, 3)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to list child processes")
def test_reader_stops_ffmpeg_when_the_caller_stops_early(clips):
    before = live_children()
    with VideoReader(clips["silent"]) as reader:
        for i, _ in enumerate(reader):
            if i == 2:
                break
        assert live_children() - before == set()
        frames = iter(reader)
        next(frames)
        assert live_children() - before                     # ffmpeg running (blocked on the pipe)...
        reader.close()                                      # ...until close()
        assert live_children() - before == set()
        with pytest.raises(ValueError):
            iter(reader)
    with pytest.raises(KeyboardInterrupt), VideoReader(clips["silent"]) as reader:
        for _ in reader:
            raise KeyboardInterrupt
    assert live_children() - before == set()


# --- audio -----------------------------------------------------------------------------------
def test_audio_is_carried_over(tmp_path, clips):
    source = probe_video(clips["sound"])
    assert source.has_audio and source.frames == 20
    with VideoReader(clips["sound"]) as reader:
        assert sum(1 for _ in reader) == 20
    frames = clips["frames"]
    for suffix in (".mp4", ".mkv", ".mov"):
        out = write_video(tmp_path / f"with_audio{suffix}", frames, fps=source.fps_rational,
                          audio_from=clips["sound"])
        info = probe_video(out)
        assert info.has_audio and info.frames == 20 and info.fps_rational == "30000/1001"
    # A plain audio file works too; one second of sound is cut to the 0.8 s of video.
    out = write_video(tmp_path / "from_wav.mp4", frames, fps="25/1", audio_from=clips["wav"])
    assert probe_video(out).has_audio and probe_video(out).duration == pytest.approx(0.8)
    # No audio source, or one without audio: no audio.
    assert not probe_video(write_video(tmp_path / "none.mp4", frames)).has_audio
    assert not probe_video(write_video(tmp_path / "silent_src.mp4", frames, audio_from=clips["silent"])).has_audio
    assert leftovers(tmp_path) == []


def test_short_audio_is_padded_to_the_video(tmp_path, clips):
    short = write_wav(tmp_path / "short.wav", 0.2)
    out = write_video(tmp_path / "padded.mkv", clips["frames"], fps="25/1", audio_from=short)
    info = probe_video(out)
    assert info.has_audio and info.frames == 20


# --- atomic writes ---------------------------------------------------------------------------
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("with_audio", [False, True])
def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, clips, error, with_audio):
    frames = clips["frames"]
    audio = {"audio_from": clips["sound"]} if with_audio else {}
    target = tmp_path / "out.mp4"
    with pytest.raises(error), VideoWriter(target, 64, 48, fps_rational="25/1", **audio) as writer:
        for frame in frames[:5]:
            writer.write(frame)
        raise error()
    assert list(tmp_path.iterdir()) == []
    write_video(target, frames[:3])
    old = target.read_bytes()
    with pytest.raises(error), VideoWriter(target, 64, 48, fps_rational="25/1", **audio) as writer:
        for frame in frames:
            writer.write(frame)
        raise error()
    assert target.read_bytes() == old and leftovers(tmp_path) == []


def test_write_without_frames_or_with_bad_frames_fails_cleanly(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(UserError) as err, VideoWriter(target, 64, 48, fps_rational=25):
        pass
    assert "no frames" in one_sentence(err, target)
    good = moving_frames(1, 48, 64)[0]
    bad = {"size": good[:-1], "dtype": good.astype(np.float32), "gray": good[:, :, 0],
           "rgba": np.dstack([good, good[:, :, :1]]), "list": good.tolist()}
    for what, frame in bad.items():
        with pytest.raises(UserError) as err, VideoWriter(target, 64, 48, fps_rational=25) as writer:
            writer.write(good)
            writer.write(frame)
        msg = one_sentence(err, target)
        assert "frame 1" in msg and "(48, 64, 3)" in msg, what
    assert list(tmp_path.iterdir()) == []


def test_write_outside_the_with_block_is_refused(tmp_path):
    writer = VideoWriter(tmp_path / "out.mp4", 64, 48, fps_rational=25)
    frame = moving_frames(1, 48, 64)[0]
    with pytest.raises(ValueError, match="not open"):
        writer.write(frame)
    with writer:
        writer.write(frame)
    with pytest.raises(ValueError, match="not open"):
        writer.write(frame)
    with pytest.raises(ValueError):
        writer.__enter__()
    assert probe_video(tmp_path / "out.mp4").frames == 1


def test_an_incomplete_encode_is_not_renamed_into_place(tmp_path, monkeypatch):
    real = vio._scan

    def short_scan(*args, **kwargs):
        scan = real(*args, **kwargs)
        scan.frames -= 1                                    # as if ffmpeg had lost a frame
        return scan

    monkeypatch.setattr(vio, "_scan", short_scan)
    target = tmp_path / "out.mp4"
    with pytest.raises(UserError) as err:
        write_video(target, moving_frames(4, 48, 64))
    assert "did not produce a complete video" in one_sentence(err, target)
    assert list(tmp_path.iterdir()) == []


# --- bad output paths and options ------------------------------------------------------------
def test_output_path_checks(tmp_path, clips):
    source = tmp_path / "input.mp4"
    shutil.copy(clips["sound"], source)
    original = source.read_bytes()
    (tmp_path / "adir").mkdir()
    cases = {
        source: "is the input file",                                      # never overwrite the input
        tmp_path / "out.avi": "must end in .mp4, .mov or .mkv",
        tmp_path / "out.gif": "must end in .mp4, .mov or .mkv",
        tmp_path / "out": "must end in .mp4, .mov or .mkv",
        tmp_path / "missing" / "out.mp4": "does not exist",
        tmp_path / "adir": "is a directory",
    }
    for out, expected in cases.items():
        with pytest.raises(UserError) as err:
            VideoWriter(out, 64, 48, fps_rational="25/1", audio_from=source)
        assert expected in one_sentence(err, out)
    with pytest.raises(UserError, match="is the input file"):
        VideoWriter(source, 64, 48, fps_rational="25/1", inputs=[source])
    link = tmp_path / "link.mp4"
    os.link(source, link)
    with pytest.raises(UserError, match="is the input file"):
        VideoWriter(link, 64, 48, fps_rational="25/1", audio_from=source)
    assert source.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "input.mp4", "link.mp4"]


def test_option_checks(tmp_path):
    out = tmp_path / "out.mp4"
    for fps in (0, -25, "abc", "1/0", float("nan"), float("inf"), None):
        with pytest.raises(UserError, match="frame rate"):
            VideoWriter(out, 64, 48, fps_rational=fps)
    with pytest.raises(UserError, match="preset"):
        VideoWriter(out, 64, 48, fps_rational=25, preset="quick")
    with pytest.raises(UserError, match="larger than the limit"):
        VideoWriter(out, 8192, 4321, fps_rational=25)
    with pytest.raises(UserError, match="does not exist"):
        VideoWriter(out, 64, 48, fps_rational=25, audio_from=tmp_path / "nope.wav")
    (tmp_path / "notes.txt").write_text("not audio")
    with pytest.raises(UserError, match="not a file this program can read"):
        VideoWriter(out, 64, 48, fps_rational=25, audio_from=tmp_path / "notes.txt")
    for size in ((0, 48), (64, -1), (64.0, 48), (True, 48)):
        with pytest.raises(ValueError):
            VideoWriter(out, *size, fps_rational=25)
    assert VideoWriter(out, 64, 48, fps_rational=29.97).fps == Fraction(2997, 100)
    assert VideoWriter(out, 64, 48, fps_rational=Fraction(30000, 1001)).fps == Fraction(30000, 1001)
    assert list(tmp_path.iterdir()) == [tmp_path / "notes.txt"]


# --- bad inputs ------------------------------------------------------------------------------
def bad_inputs(d: Path, clips) -> dict[str, tuple[Path, str]]:
    """name -> (path, what the error says)"""
    silent = clips["silent"].read_bytes()
    boxes = mp4_boxes(silent)                                   # faststart: ftyp, moov, ..., mdat
    mdat_start, mdat_size = boxes["mdat"]
    assert boxes["moov"][0] < mdat_start
    late = d / "moov_at_end.mp4"                                # index written last
    ffmpeg("-i", clips["silent"], "-c", "copy", late)
    assert mp4_boxes(late.read_bytes())["moov"][0] > mp4_boxes(late.read_bytes())["mdat"][0]
    garbled = bytearray(silent)
    middle = mdat_start + mdat_size // 2
    garbled[middle:middle + 200] = b"\x00" * 200
    mkv = d / "whole.mkv"
    ffmpeg("-i", clips["silent"], "-c", "copy", mkv)
    files = {
        "text.mp4": b"hello, this is not a video\n",
        "empty.mp4": b"",
        "first_half.mp4": silent[:len(silent) // 2],
        "header_only.mp4": silent[:mdat_start + 8],             # header parses, no frame data
        "cut_in_data.mp4": silent[:mdat_start + mdat_size * 3 // 4],
        "last_byte_cut.mp4": silent[:-1],
        "no_index.mp4": late.read_bytes()[:len(late.read_bytes()) // 2],
        "garbled.mp4": bytes(garbled),
        "cut.mkv": mkv.read_bytes()[:len(mkv.read_bytes()) * 2 // 3],
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    late.unlink()
    mkv.unlink()
    (d / "folder.mp4").mkdir()
    audio_only = d / "audio_only.m4a"
    ffmpeg("-i", clips["wav"], "-c:a", "aac", audio_only)
    # A video stream without frames: ffmpeg writes the AVI headers, then complains (exit status
    # not 0) that its encoder never got a frame.
    frameless = d / "frameless.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=25:d=1", "-i", clips["wav"], "-map", "0:v", "-map", "1:a",
           "-c:v", "mpeg4", "-c:a", "pcm_s16le", "-frames:v", "0", frameless, check=False)
    assert frameless.stat().st_size > 0
    from PIL import Image
    Image.fromarray(clips["frames"][0]).save(d / "still.png")
    truncated = "is truncated or corrupt"
    return {
        "missing": (d / "missing.mp4", "does not exist"),
        "directory": (d / "folder.mp4", "is a directory"),
        "text": (d / "text.mp4", "is not a video this program can read"),
        "empty": (d / "empty.mp4", "is empty"),
        "image": (d / "still.png", "is not a video this program can read"),
        "first_half": (d / "first_half.mp4", truncated),
        "header_only": (d / "header_only.mp4", truncated),
        "cut_in_data": (d / "cut_in_data.mp4", truncated),
        "last_byte_cut": (d / "last_byte_cut.mp4", truncated),
        "no_index": (d / "no_index.mp4", truncated),
        "garbled": (d / "garbled.mp4", truncated),
        "cut_mkv": (d / "cut.mkv", truncated),
        "audio_only": (audio_only, "has no video stream"),
        "frameless": (frameless, "contains no video frames"),
    }


def test_bad_inputs_raise_one_clear_sentence_and_stay_unchanged(tmp_path, clips):
    for name, (path, expected) in bad_inputs(tmp_path, clips).items():
        before = path.read_bytes() if path.is_file() else None
        with pytest.raises(UserError) as err:
            probe_video(path)
        assert expected in one_sentence(err, path), name
        with pytest.raises(UserError):
            VideoReader(path)
        assert (path.read_bytes() if path.is_file() else None) == before, name
    assert leftovers(tmp_path) == []


def test_frames_above_the_pixel_limit_are_refused(clips, monkeypatch):
    assert MAX_VIDEO_PIXELS == 8192 * 4320
    monkeypatch.setattr(vio, "MAX_VIDEO_PIXELS", 64 * 48 - 1)
    with pytest.raises(UserError) as err:
        probe_video(clips["silent"])
    assert "64x48" in one_sentence(err, clips["silent"]) and "limit" in str(err.value)
    with pytest.raises(UserError, match="larger than the limit"):
        VideoWriter(clips["silent"].with_name("big.mp4"), 64, 48, fps_rational=25)


def test_a_file_cut_after_probing_raises_instead_of_ending_early(tmp_path, clips):
    path = tmp_path / "shrinking.mp4"
    shutil.copy(clips["silent"], path)
    data = path.read_bytes()
    with VideoReader(path) as reader:
        path.write_bytes(data[:len(data) * 2 // 3])
        got: list[np.ndarray] = []
        with pytest.raises(UserError) as err:
            got.extend(reader)                              # keeps what came before the error
    assert "truncated or corrupt" in one_sentence(err, path)
    assert len(got) < 20


def test_yuv_frames_round_trip_without_rgb_conversion(tmp_path):
    from exprengine.video.yuv import YUVFrame
    frames = moving_frames(6, 48, 64)
    yuv = [YUVFrame.from_rgb(f) for f in frames]
    path = tmp_path / "yuv.mp4"
    with VideoWriter(path, 64, 48, "25/1", pix_fmt_in="yuv420p") as w:
        for f in yuv:
            w.write(f)
        with pytest.raises(UserError, match="YUV"):
            w.write(frames[0])                                   # an RGB frame to a YUV writer
    with VideoReader(path) as r:
        back = list(r.iter_yuv())
    assert len(back) == 6 and all(isinstance(b, YUVFrame) for b in back)
    for a, b in zip(yuv, back):
        assert np.abs(a.y.astype(int) - b.y).mean() < 2.0
    with VideoWriter(tmp_path / "rgb.mp4", 64, 48, "25/1") as w:
        with pytest.raises(UserError, match="rgb24"):
            w.write(yuv[0])                                      # a YUV frame to an RGB writer
        w.write(frames[0])
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", 63, 48, "25/1", pix_fmt_in="yuv420p")


def test_an_encoder_failure_is_one_sentence_and_ffmpeg_prints_nothing(tmp_path, monkeypatch, capfd):
    real = VideoWriter._encoder_command

    def failing(self):                      # ffmpeg refuses to start, as on a full disk it stops
        cmd = real(self)
        return cmd[:-1] + ["-c:v", "no-such-encoder", cmd[-1]]

    monkeypatch.setattr(VideoWriter, "_encoder_command", failing)
    target = tmp_path / "out.mp4"
    with pytest.raises(UserError) as err:
        write_video(target, moving_frames(30, 48, 64))
    assert "ffmpeg" in one_sentence(err, target)
    assert capfd.readouterr().err == "" and list(tmp_path.iterdir()) == []


def test_frames_keep_the_times_given_and_full_range_yuv_keeps_its_values(tmp_path):
    from exprengine.video.io import ColorTags
    from exprengine.video.yuv import YUVFrame
    times = [0.0, 0.1, 0.2, 0.233, 0.266, 0.3, 0.5, 0.7]
    frames = [YUVFrame(np.full(64 * 48 * 3 // 2, 128, np.uint8), 48, 64) for _ in times]
    for i, f in enumerate(frames):
        f.y[:] = 8 + i                                           # near black, full range
    path = tmp_path / "vfr.mkv"
    with VideoWriter(path, 64, 48, "10/1", pix_fmt_in="yuv420p", color=ColorTags(range="pc"), pts=times,
                     end=0.8) as w:
        for f in frames:
            w.write(f)
    info = probe_video(path)
    assert info.color.full_range and not info.constant_rate
    assert info.pts == pytest.approx(times, abs=0.001) and info.end == pytest.approx(0.8, abs=0.001)
    with VideoReader(path) as reader:
        assert [int(np.median(f.y)) for f in reader.iter_yuv()] == [8 + i for i in range(len(times))]
