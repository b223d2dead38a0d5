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
    assert res.has_audio and "audio kept" in stdout
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
