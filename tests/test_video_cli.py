"""`exprengine video`: frame count, rate, size and audio kept; held, morphed and keyframed
expressions; bad input and interruption leave no output."""
from __future__ import annotations

import json
import math
import struct
import wave
import warnings

import pytest
from test_cli import assert_one_line_error, run_cli

from exprengine.demo import moving_face_frames
from exprengine.video.io import VideoWriter, probe_video

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
W, H, N = 400, 300, 8


def tone(path, seconds: float = 1.0, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(seconds * rate))))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """8 frames at 10 fps of a real face sliding right, with a sound track."""
    d = tmp_path_factory.mktemp("clip")
    tone(d / "tone.wav")
    path = d / "clip.mp4"
    with VideoWriter(path, W, H, "10/1", audio_from=d / "tone.wav") as w:
        for f in moving_face_frames(N, H, W, side=280, top=10, x0=10, x1=10 + 10 * (N - 1)):
            w.write(f)
    return path


def test_holds_the_expression_and_keeps_count_rate_size_and_audio(clip, tmp_path, capsys):
    before = clip.read_bytes()
    out = tmp_path / "out.mp4"
    code, stdout, err = run_cli(["video", clip, "--preset", "happiness@2", "--out", out, "--detect-scale", "1",
                                 "--reproducible"], capsys)
    assert code == 0, err
    src, res = probe_video(clip), probe_video(out)
    assert (res.frames, res.width, res.height, res.fps_rational) == (N, W, H, src.fps_rational) == (N, W, H, "10/1")
    assert res.has_audio and "1 audio track kept" in stdout
    assert clip.read_bytes() == before
    code, stdout, err = run_cli(["video", clip, "--preset", "happiness", "--out", tmp_path / "quiet.mp4",
                                 "--no-audio", "--detect-scale", "1"], capsys)
    assert code == 0, err
    assert not probe_video(tmp_path / "quiet.mp4").has_audio


def test_morph_and_timeline(clip, tmp_path, capsys):
    code, _, err = run_cli(["video", clip, "--from", "natural", "--preset", "surprise@1.5", "--schedule", "ease-in-out",
                            "--out", tmp_path / "morph.mp4", "--detect-scale", "1"], capsys)
    assert code == 0, err
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([{"t": 0, "expression": "natural"}, {"frame": 7, "expression": "sadness"}]))
    code, _, err = run_cli(["video", clip, "--timeline", keys, "--out", tmp_path / "k.mp4"], capsys)
    assert_one_line_error(code, err)                                  # mixes t and frame
    keys.write_text(json.dumps([{"t": 0, "expression": "natural"}, {"t": 0.7, "expression": "sadness"}]))
    code, _, err = run_cli(["video", clip, "--timeline", keys, "--out", tmp_path / "k.mp4", "--detect-scale", "1"],
                           capsys)
    assert code == 0, err and probe_video(tmp_path / "k.mp4").frames == N
    code, _, err = run_cli(["video", clip, "--timeline", keys, "--preset", "happiness", "--out", tmp_path / "x.mp4"],
                           capsys)
    assert_one_line_error(code, err)
    assert "--timeline" in err


def test_bad_videos_leave_no_output(clip, tmp_path, capsys):
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(clip.read_bytes()[: len(clip.read_bytes()) // 2])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    audio_only = tmp_path / "tone.wav"
    tone(audio_only)
    for source in (truncated, empty, text, audio_only, tmp_path, tmp_path / "missing.mp4"):
        out = tmp_path / "o.mp4"
        code, _, err = run_cli(["video", source, "--preset", "happiness", "--out", out], capsys)
        assert_one_line_error(code, err)
        assert not out.exists(), source
    code, _, err = run_cli(["video", clip, "--preset", "happiness", "--out", clip], capsys)   # would overwrite
    assert_one_line_error(code, err)
    assert probe_video(clip).frames == N


def test_interruption_leaves_no_file(clip, tmp_path, capsys, monkeypatch):
    from exprengine.video.stream import StreamEditor
    real = StreamEditor.process

    def interrupted(self, frames):
        for i, f in enumerate(real(self, frames)):
            if i == 3:
                raise KeyboardInterrupt
            yield f

    monkeypatch.setattr(StreamEditor, "process", interrupted)
    out = tmp_path / "o.mp4"
    out.write_bytes(b"an older file")
    code, _, err = run_cli(["video", clip, "--preset", "happiness", "--out", out, "--detect-scale", "1"], capsys)
    assert code == 130 and "interrupted" in err
    assert out.read_bytes() == b"an older file" and sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]


# --- media keep what they were: range, times, every audio track ----------------------------------
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import imageio_ffmpeg  # noqa: E402
import numpy as np  # noqa: E402

from exprengine.video.io import VideoReader  # noqa: E402


def ffmpeg(*args) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *map(str, args)],
                   check=True, stdin=subprocess.DEVNULL)


def luma(path) -> np.ndarray:
    """Every frame's Y plane, as stored (no range conversion), [frames, H, W] uint8."""
    info = probe_video(path)
    with VideoReader(path) as r:
        return np.stack([f.y.copy() for f in r.iter_yuv()]).reshape(info.frames, info.height, info.width)


def stream_starts(path) -> list[float]:
    """Each stream's start time in seconds, as ffmpeg reports it (0 when it does not say)."""
    err = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                         capture_output=True, text=True).stderr
    return [float(m.group(1)) if (m := re.search(r", start (\d+\.\d+)", line)) else 0.0
            for line in err.splitlines() if re.match(r"\s*Stream #0:\d", line)]


def test_full_range_video_keeps_its_range_and_values(tmp_path, capsys):
    src = tmp_path / "full.mp4"          # no face: every pixel is "outside the faces"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=96x64:r=10:d=0.6,format=yuv420p,geq=lum='8+X':cb=128:cr=128,setparams=range=pc",
           "-c:v", "libx264", "-crf", "0", src)
    assert probe_video(src).color.full_range
    out = tmp_path / "out.mp4"
    code, said, err = run_cli(["video", src, "--preset", "happiness", "--out", out], capsys)
    assert code == 0, err
    assert said.strip().endswith("detector runs; no face found in any frame, so none is edited"), said
    res = probe_video(out)
    assert res.color.full_range and res.frames == probe_video(src).frames
    a, b = luma(src).astype(int), luma(out).astype(int)
    assert a[:, :, 0].max() == 8 and np.abs(b - a).max() <= 2 and np.abs(b - a).mean() < 0.5   # 8 stays 8, not 16


def test_anamorphic_video_keeps_its_pixel_aspect_ratio(tmp_path, capsys):
    """A video of non-square pixels (SAR 16:15, as DV/PAL) stays so: its shape on screen is kept."""
    src = tmp_path / "pal.mp4"           # no face: the frames pass through, the tags are the point
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=96x64:r=10:d=0.4", "-vf", "setsar=16/15", "-pix_fmt", "yuv420p",
           "-c:v", "libx264", src)
    assert probe_video(src).sar == "16:15"
    out = tmp_path / "out.mp4"
    code, _, err = run_cli(["video", src, "--preset", "happiness", "--out", out], capsys)
    assert code == 0, err
    assert probe_video(out).sar == "16:15"
    with pytest.raises(ValueError):
        VideoWriter(tmp_path / "x.mp4", 8, 8, "10/1", sar="0:1")


def test_ten_bit_and_hdr_video_are_refused_up_front(tmp_path, capsys):
    hlg = tmp_path / "hlg.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x48:r=10:d=0.3", "-vf",
           "setparams=color_primaries=bt2020:color_trc=arib-std-b67:colorspace=bt2020nc",
           "-pix_fmt", "yuv420p10le", "-c:v", "libx264", hlg)
    out = tmp_path / "o.mp4"
    code, _, err = run_cli(["video", hlg, "--preset", "happiness", "--out", out], capsys)
    assert_one_line_error(code, err)
    assert "10-bit" in err and not out.exists()


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory):
    """2.0 s: 10 frames at 0.1 s then 30 at 1/30 s, a tone from 0 s and a second from 0.48 s."""
    d = tmp_path_factory.mktemp("vfr")
    path = d / "vfr.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x48:r=30:d=2", "-f", "lavfi", "-i", "sine=f=440:d=2",
           "-itsoffset", "0.48", "-f", "lavfi", "-i", "sine=f=880:d=1.52",
           "-filter_complex", "[0:v]select='lt(n,30)*not(mod(n,3))+gte(n,30)',settb=1/1000,"
                              "setpts='if(lt(N,10),N*0.1,1+(N-10)/30)/TB'[v]",
           "-map", "[v]", "-map", "1:a", "-map", "2:a", "-fps_mode", "passthrough", "-enc_time_base:v", "1/1000",
           "-c:v", "libx264", "-c:a", "aac", path)
    return path


def test_variable_frame_rate_and_every_audio_track_are_kept_in_time(vfr_clip, tmp_path, capsys):
    src = probe_video(vfr_clip)
    assert src.frames == 40 and not src.constant_rate and src.audio_tracks == 2
    out = tmp_path / "out.mkv"
    code, stdout, err = run_cli(["video", vfr_clip, "--preset", "happiness", "--out", out], capsys)
    assert code == 0, err
    assert "2 audio tracks kept" in stdout and "variable rate" in stdout
    res = probe_video(out)
    assert res.frames == 40 and res.audio_tracks == 2
    assert max(abs(a - b) for a, b in zip(res.pts, src.pts)) <= 0.001              # each frame at its time
    assert res.end == pytest.approx(src.end, abs=0.001)
    in_starts, out_starts = stream_starts(vfr_clip), stream_starts(out)
    assert out_starts == pytest.approx(in_starts, abs=0.03) and in_starts[2] == pytest.approx(0.48, abs=0.03)
    out2 = tmp_path / "out.mp4"
    code, stdout, err = run_cli(["video", vfr_clip, "--preset", "happiness", "--out", out2], capsys)
    assert code == 0, err
    res = probe_video(out2)
    assert max(abs(a - b) for a, b in zip(res.pts, src.pts)) <= 0.001 and res.audio_tracks == 2


def test_late_audio_does_not_lengthen_the_video(tmp_path, capsys):
    src = tmp_path / "late.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x48:r=10:d=2", "-itsoffset", "0.48", "-f", "lavfi",
           "-i", "sine=f=440:d=1.52", "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-c:a", "aac", src)
    out = tmp_path / "out.mp4"
    code, stdout, err = run_cli(["video", src, "--preset", "happiness", "--out", out], capsys)
    assert code == 0, err and "1 audio track kept" in stdout
    def length(p):
        return float(re.search(r"Duration: (\d+):(\d+):([\d.]+)", subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(p)], capture_output=True, text=True).stderr
        ).group(3))
    assert length(out) == pytest.approx(length(src), abs=0.05) and length(out) < 2.1
    assert stream_starts(out)[1] == pytest.approx(stream_starts(src)[1], abs=0.03)


def test_every_argument_is_checked_before_any_work(clip, tmp_path, capsys, monkeypatch):
    import exprengine.video.io as vio
    probed = []
    monkeypatch.setattr(vio, "probe_video", lambda *a, **k: probed.append(a) or pytest.fail("probed"))
    (tmp_path / "notengine.png").write_bytes(b"\x89PNG not really")
    noengine = tmp_path / "noengine"
    noengine.mkdir()
    cases = [["--out", tmp_path / "missing" / "o.mp4"], ["--out", tmp_path / "o.avi"],
             ["--out", tmp_path / "o.mp4", "--encoder-preset", "turbo"],
             ["--out", tmp_path / "o.mp4", "--engine", tmp_path / "no" / "such"],
             ["--out", tmp_path / "o.mp4", "--engine", tmp_path / "notengine.png"],
             ["--out", tmp_path / "o.mp4", "--engine", noengine],
             ["--out", clip], ["--out", clip, "--no-audio"]]
    before = clip.read_bytes()
    for extra in cases:
        code, _, err = run_cli(["video", clip, "--preset", "happiness", *extra], capsys)
        assert_one_line_error(code, err)
    assert probed == [] and clip.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noengine", "notengine.png"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_leave_nothing_behind(tmp_path, sig):
    d = tmp_path / "work"
    d.mkdir()
    src = d / "long.mp4"
    from test_video_cli import tone as make_tone
    make_tone(tmp_path / "t.wav", seconds=8.0)
    with VideoWriter(src, W, H, "10/1", audio_from=tmp_path / "t.wav") as w:
        for f in moving_face_frames(80, H, W, side=280, top=10, x0=10, x1=100):
            w.write(f)
    before = sorted(p.name for p in d.iterdir())
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "exprengine", "video", str(src), "--preset", "happiness",
                             "--out", str(d / "out.mp4"), "--detect-scale", "1", "--reproducible"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.mp4") for p in d.iterdir()):    # the writer has started
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and b"Traceback" not in err, err
    assert sorted(p.name for p in d.iterdir()) == before


# --- the library call behind the command: edit_video, expression_plan -----------------------------
@pytest.fixture(scope="module")
def rig():
    from exprengine.default_engines import default_rig
    return default_rig()


def test_edit_video_is_the_commands_pipeline_as_one_call(clip, tmp_path, rig):
    from exprengine.video.edit import edit_video
    from exprengine.video.timeline import expression_plan
    seen = []
    result = edit_video(clip, tmp_path / "lib.mp4", rig, expression_plan("happiness@2", policy=rig.policy),
                        detect_scale=1.0, reproducible=True, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, N) for i in range(1, N + 1)]
    assert (result.frames, result.width, result.height, result.fps_rational, result.constant_rate) == \
        (N, W, H, "10/1", True)
    assert result.audio_tracks == 1 and result.detections >= 1 and result.stats.frames == N
    assert result.summary().startswith(f"wrote {tmp_path / 'lib.mp4'}: {N} frames at 10 fps, {W}x{H}, "
                                       "1 audio track kept; ")
    assert result.stats.face_frames == N and result.summary().endswith(f"; a face in {N} of {N} frames")
    res = probe_video(tmp_path / "lib.mp4")
    assert (res.frames, res.fps_rational, res.has_audio) == (N, "10/1", True)
    with VideoReader(clip) as a, VideoReader(tmp_path / "lib.mp4") as b:
        first_in, first_out = next(iter(a)).astype(int), next(iter(b)).astype(int)
    assert np.abs(first_out - first_in).max() > 24                   # the face was edited
    rgb = edit_video(clip, tmp_path / "rgb.mp4", rig, "happiness@2", detect_scale=1.0, reproducible=True,
                     audio=False, pixel_format="rgb24", progress=False)
    assert rgb.frames == N and rgb.audio_tracks == 0 and not probe_video(tmp_path / "rgb.mp4").has_audio


def test_edit_video_checks_its_arguments_in_its_own_terms_before_decoding(clip, tmp_path, rig, monkeypatch, capsys):
    import exprengine.video.io as vio
    from exprengine.errors import UserError
    from exprengine.video.edit import edit_video
    monkeypatch.setattr(vio, "probe_video", lambda *a, **k: pytest.fail("probed"))
    out = tmp_path / "o.mp4"
    cases = {"detect_every": dict(detect_every=0), "detect_scale": dict(detect_scale=0.0),
             "encoder_preset": dict(encoder_preset="turbo"), "mask": dict(mask="outline"),
             "pixel_format": dict(pixel_format="yuv444p"), "select": dict(select="biggest"),
             "progress": dict(progress="yes")}
    for word, kwargs in cases.items():
        with pytest.raises(UserError, match=word) as e:
            edit_video(clip, out, rig, "happiness", **kwargs)
        assert "--" not in str(e.value) and f"`{word}" in str(e.value), e.value     # API terms, not flags
    for args, word in [((clip, tmp_path / "o.avi", rig, "happiness"), ".mp4"),
                       ((clip, tmp_path / "no" / "o.mp4", rig, "happiness"), "does not exist"),
                       ((clip, clip, rig, "happiness"), str(clip)),
                       ((tmp_path / "missing.mp4", out, rig, "happiness"), "does not exist"),
                       ((clip, out, rig, "nosuchpreset"), "nosuchpreset")]:
        with pytest.raises(UserError, match=re.escape(word)):
            edit_video(*args)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    code, _, err = run_cli(["video", clip, "--preset", "happiness", "--out", out, "--face", "biggest"], capsys)
    assert_one_line_error(code, err)
    assert "--face (the faces to edit)" in err and "`select`" not in err     # the command says its option


def test_expression_plan_holds_morphs_or_follows_keyframes(tmp_path):
    from exprengine.aus import AUPolicy, AUs, AUWarning
    from exprengine.errors import UserError
    from exprengine.video.timeline import expression_plan
    happy, natural = AUs.parse("happiness@1.5"), AUs.parse("natural")
    held = expression_plan("happiness@1.5").timeline(10, 1.0)
    assert np.array_equal(held(0, 0.0), happy.values) and np.array_equal(held(9, 0.9), happy.values)
    morph = expression_plan(happy, start="natural", schedule="ease-in-out").timeline(10, 1.0)
    assert np.allclose(morph(0, 0.0), natural.values) and np.allclose(morph(9, 0.9), happy.values)
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([{"t": 0, "expression": "natural"}, {"t": 3, "expression": "happiness"}]))
    plan = expression_plan(keyframes=str(keys))
    with pytest.warns(AUWarning, match=re.escape(f"{keys}: keyframes run to 3 s but the video ends at 1 s")):
        plan.timeline(10, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        halfway = plan.timeline(40, 4.0)(15, 1.5)                    # within the clip: no warning
    assert np.allclose(halfway, AUs.parse("happiness").values / 2)
    for kwargs, word in [({}, "target"), ({"start": "natural"}, "start"),
                         ({"target": "happiness", "keyframes": str(keys)}, "keyframes"),
                         ({"target": "happiness", "schedule": "bounce"}, "schedule"),
                         ({"target": "AU12=4"}, "AU12")]:
        with pytest.raises(UserError, match=word):
            expression_plan(**kwargs, policy=AUPolicy(strict=True))
