"""The frame-by-frame pipeline (StreamEditor), expression timelines, and box smoothing on a
moving real face."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from test_faces import ShiftEngine

from exprengine import demo
from exprengine.aus import AUs
from exprengine.errors import UserError
from exprengine.faces.detect import FaceDetector
from exprengine.faces.tracking import FaceTracker, box_state
from exprengine.video import timeline as tl
from exprengine.video.stream import StreamEditor

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


def moving_face_frames(n: int = 12, step: float = 3.0) -> list[np.ndarray]:
    """A real face (the astronaut, 440 px) sliding right by `step` pixels a frame over a grey
    640x480 frame."""
    return list(demo.moving_face_frames(n, 480, 640, side=440, top=20, x0=20, x1=20 + step * (n - 1)))


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def test_every_frame_is_edited_in_order_and_nothing_outside_the_face_changes(detector):
    frames = moving_face_frames()
    editor = StreamEditor(ShiftEngine(), "happiness", detector, detect_every=3, detect_async=False,
                          mask="shape", colour_match=False)
    out = list(editor.process(iter(frames)))
    assert len(out) == len(frames) and editor.stats.frames == len(frames)
    assert editor.stats.detections == 4                                  # frames 0, 3, 6, 9
    for f, o in zip(frames, out):
        changed = np.any(o != f, axis=2)
        ys, xs = np.nonzero(changed)
        assert changed.sum() > 1000                                      # the face was edited
        assert ys.min() > 60 and ys.max() < 240 and xs.min() > 150 and xs.max() < 350   # ... and only the face
    summary = editor.stats.summary()
    assert summary["frames"] == 12 and summary["edit_ms_median"] is not None and summary["fps"] > 0
    assert summary["face_frames"] == 12


def test_yuv_frames_are_edited_in_their_own_planes(detector):
    from exprengine.video.yuv import YUVFrame
    frames = moving_face_frames(4)
    yuv = [YUVFrame.from_rgb(f) for f in frames]
    before = [y.data.copy() for y in yuv]
    editor = StreamEditor(ShiftEngine(), "happiness", detector, detect_async=False, mask="shape", colour_match=False,
                          in_place=True)
    out = list(editor.process(yuv))
    assert all(o is y for o, y in zip(out, yuv))                      # pasted in place: no frame copies
    for o, b, f in zip(out, before, frames):
        changed = (o.data[:480 * 640] != b[:480 * 640]).reshape(480, 640)
        ys, xs = np.nonzero(changed)
        assert changed.sum() > 1000 and ys.min() > 60 and ys.max() < 240 and xs.min() > 150 and xs.max() < 350
        red = o.to_rgb()[..., 0].astype(int) - YUVFrame(b, 480, 640).to_rgb()[..., 0]
        cy, cx = int(ys.mean()), int(xs.mean())
        assert red[cy - 3:cy + 3, cx - 3:cx + 3].mean() < -25          # the red channel went down ~40 there
    copies = StreamEditor(ShiftEngine(), "happiness", detector, detect_async=False, mask="shape")
    fresh = [YUVFrame.from_rgb(f) for f in frames[:2]]
    kept = [y.data.copy() for y in fresh]
    list(copies.process(fresh))
    assert all(np.array_equal(y.data, k) for y, k in zip(fresh, kept))  # not in place: inputs untouched


def test_background_detection_never_blocks_and_same_results_inline(detector):
    frames = moving_face_frames(8)
    with StreamEditor(ShiftEngine(), "happiness", detector, detect_every=2, mask="shape",
                      colour_match=False) as editor:
        out = list(editor.process(frames))
        assert len(out) == 8 and all(np.any(o != f) for o, f in zip(out, frames))
        single = editor.edit_frame(frames[-1])                          # one frame in, one out
        assert single.shape == frames[-1].shape and np.any(single != frames[-1])


def test_frames_without_faces_pass_through_and_a_size_change_is_an_error(detector):
    blank = [np.full((120, 160, 3), 200, np.uint8) for _ in range(3)]
    editor = StreamEditor(ShiftEngine(), "happiness", detector, detect_async=False)
    out = list(editor.process(blank))
    assert all(np.array_equal(o, b) for o, b in zip(out, blank))
    frames = blank + [np.zeros((100, 160, 3), np.uint8)]
    with pytest.raises(UserError, match="frame 3 is .* started with"):
        list(StreamEditor(ShiftEngine(), "happiness", detector, detect_async=False).process(frames))
    with pytest.raises(UserError, match="uint8"):
        list(StreamEditor(ShiftEngine(), "happiness", detector).process([np.zeros((8, 8, 3), np.float32)]))


def test_the_expression_follows_the_timeline(detector):
    seen = []

    class Recording(ShiftEngine):
        def edit_detailed(self, faces, aus, attention=True):
            seen.append(np.array(aus))
            return super().edit_detailed(faces, aus, attention)

    frames = moving_face_frames(5)
    plan = tl.morph(AUs.parse("natural"), AUs.parse("happiness@2"), len(frames))
    list(StreamEditor(Recording(), plan, detector, detect_async=False).process(frames))
    au12 = [a.reshape(-1, 17)[0, 8] for a in seen]
    assert au12 == pytest.approx([0, 0.5, 1.0, 1.5, 2.0])


def test_smoothing_reduces_box_jitter_on_a_moving_face(detector):
    frames = moving_face_frames(24, step=1.5)
    tracker = FaceTracker(min_cutoff=1.0, beta=0.05)
    raw, smooth = [], []
    for i, f in enumerate(frames):
        found = detector.detect(f, 0.5)
        assert len(found) == 1
        tracker.update(found)
        tracker.step(i / 30)
        raw.append(box_state(found[0]))
        smooth.append(tracker.tracks[0].smoothed.copy())
    raw, smooth = np.array(raw)[4:], np.array(smooth)[4:]
    jitter = lambda a: np.abs(np.diff(a, n=2, axis=0)).mean()          # noqa: E731 -- frame-to-frame shake
    assert jitter(smooth) < 0.5 * jitter(raw), (jitter(smooth), jitter(raw))
    truth_x = 20 + 1.5 * np.arange(4, 24) + 220                         # the face's true horizontal path
    assert np.abs((smooth[:, 0] - truth_x) - np.median(smooth[:, 0] - truth_x)).max() < 6   # follows it


def test_keyframes_from_json_and_csv(tmp_path):
    j = tmp_path / "keys.json"
    j.write_text(json.dumps([{"t": 0, "expression": "natural"}, {"t": 2, "AU12": 2.0, "25": 1.0}]))
    k = tl.Keyframes.read(j)
    assert k(0, 1.0)[8] == pytest.approx(1.0) and k(0, 5.0)[14] == pytest.approx(1.0) and k(0, -1)[8] == 0
    c = tmp_path / "keys.csv"
    c.write_text("frame,AU01_r,expression\n0,1.0,\n10,0,surprise@1\n")
    k = tl.Keyframes.read(c)
    surprise = AUs.parse("surprise@1").values
    assert k.in_frames and k(5, 99.0)[0] == pytest.approx(0.5)              # the AU column wins over the preset
    assert k(5, 99.0)[15] == pytest.approx(0.5 * surprise[15]) and surprise[15] > 0


@pytest.mark.parametrize("content, message", [
    ("[{\"t\": 0, \"AU16\": 1}]", "unknown column"),
    ("[{\"t\": 0, \"AU12\": 7}]", "outside 0..5"),
    ("[{\"t\": 0}, {\"frame\": 3}]", "mix of frame"),
    ("[{\"t\": 1}, {\"t\": 1}]", "same time"),
    ("[{\"AU12\": 1}]", "no time"),
    ("[{\"t\": -1}]", ">= 0"),
    ("[]", "no keyframes"),
    ("{\"t\": ", "not valid JSON"),
    ("[{\"t\": 0, \"expression\": \"grumpy\"}]", "grumpy"),
])
def test_bad_timelines_are_one_sentence_errors(tmp_path, content, message):
    p = tmp_path / "keys.json"
    p.write_text(content)
    with pytest.raises(UserError, match=message):
        tl.Keyframes.read(p)
    with pytest.raises(UserError, match="directory"):
        tl.Keyframes.read(tmp_path)
    with pytest.raises(UserError, match="json or .csv"):
        tl.Keyframes.read(tmp_path / "keys.txt") if (tmp_path / "keys.txt").write_text("x") else None
