"""--timeline files as people have them: OpenFace's own CSV, and every malformed file a one-line
UserError (huge numbers, huge CSV fields, undecodable text, deeply nested JSON)."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from exprengine.aus import AU_NAMES, AUWarning
from exprengine.errors import UserError
from exprengine.video import timeline as tl

R = [f"{a}_r" for a in AU_NAMES]
C = [f"{a}_c" for a in AU_NAMES[:-1]] + ["AU28_c", "AU45_c"]


def openface_video_csv(path, rows, spaces=True):
    """A FeatureExtraction CSV as OpenFace 2.0 writes it: `frame, face_id, timestamp, confidence,
    success`, gaze, pose, 68 2-D landmarks, AUxx_r then AUxx_c; headers padded with a space.
    rows: (frame, face_id, timestamp, confidence, success, 17 intensities)."""
    header = (["frame", "face_id", "timestamp", "confidence", "success",
               "gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_angle_x", "gaze_angle_y",
               "pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
              + [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)] + ["p_scale"] + R + C)
    sep = ", " if spaces else ","
    lines = [sep.join(header)]
    for frame, face, ts, conf, ok, aus in rows:
        lines.append(sep.join([str(frame), str(face), f"{ts:.3f}", f"{conf:.2f}", str(ok)]
                              + ["0.1"] * 5 + ["12.5", "-3.1", "410.2", "0.05", "-0.02", "0.01"]
                              + [f"{200 + i:.1f}" for i in range(136)] + ["1.02"]
                              + [f"{v:.2f}" for v in aus] + ["1"] * len(C)))
    path.write_text("\n".join(lines) + "\n")
    return path


def ramp(n):
    return np.full(17, 0.5 * n)


def test_openface_feature_extraction_csv_is_a_timeline(tmp_path):
    fps = 25
    rows = [(n, 0, (n - 1) / fps, 0.98, 0 if n == 3 else 1, ramp(n)) for n in range(1, 6)]
    p = openface_video_csv(tmp_path / "actor.csv", rows)
    with pytest.warns(AUWarning, match="skipped 1 rows OpenFace marks failed"):
        k = tl.Keyframes.read(p)
    assert not k.in_frames                                  # timestamps, in seconds
    np.testing.assert_allclose(k.times, [0, 0.04, 0.12, 0.16])
    np.testing.assert_allclose(k(0, 0.0), ramp(1))
    np.testing.assert_allclose(k(1, 0.04), ramp(2))
    np.testing.assert_allclose(k(2, 0.08), ramp(3), atol=1e-6)          # failed frame: interpolated 1.0 .. 2.0
    np.testing.assert_allclose(k(9, 1.0), ramp(5))                       # held after the last
    # OpenFace 2.2 headers have no spaces; same timeline, AUxx_c and landmark columns ignored
    q = openface_video_csv(tmp_path / "nospace.csv", rows, spaces=False)
    with pytest.warns(AUWarning):
        np.testing.assert_allclose(tl.Keyframes.read(q).values, k.values)


def test_openface_image_folder_csv_counts_frames_from_one(tmp_path):
    """-fdir output has timestamp 0 on every row: frame n (1-based) drives our frame index n - 1."""
    rows = [(n, 0, 0.0, 0.95, 1, ramp(n)) for n in range(1, 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # nothing skipped: nothing to say
        k = tl.Keyframes.read(openface_video_csv(tmp_path / "imgs.csv", rows))
    assert k.in_frames
    np.testing.assert_allclose(k.times, [0, 1, 2])
    np.testing.assert_allclose(k(2, 123.0), ramp(3))


def test_openface_several_faces_follow_the_most_tracked_and_low_confidence_is_skipped(tmp_path):
    rows = []
    for n in range(1, 5):
        rows.append((n, 0, (n - 1) / 10, 0.9, 1, ramp(1)) if n < 3 else (n, 0, (n - 1) / 10, 0.3, 0, ramp(1)))
        rows.append((n, 1, (n - 1) / 10, 0.9 if n != 2 else 0.05, 1, ramp(n)))
    p = openface_video_csv(tmp_path / "multi.csv", rows)
    with pytest.warns(AUWarning) as caught:
        k = tl.Keyframes.read(p)
    message = str(caught[0].message)
    assert "followed face_id 1" in message and "1 fitted with confidence below 0.725" in message
    np.testing.assert_allclose(k.times, [0, 0.2, 0.3])
    np.testing.assert_allclose(k(0, 0.3), ramp(4))


HUGE = "9" * 400


@pytest.mark.parametrize("name, content", [
    ("t_digits.csv", f"t,AU12\n{HUGE},1\n"),
    ("au_digits.csv", f"t,AU12\n0,{HUGE}\n"),
    ("t_digits.json", f'[{{"t": {HUGE}, "AU12": 1}}]'),
    ("au_digits.json", f'[{{"t": 0, "AU12": {HUGE}}}]'),
    ("frame_digits.json", f'[{{"frame": {HUGE}}}]'),
    ("int_5000.json", '[{"t": ' + "9" * 5000 + "}]"),
    ("key_digits.json", '[{"t": 0, "AU' + "1" * 5000 + '": 1}]'),
    ("deep.json", "[" * 100_000 + "]" * 100_000),
    ("field.csv", "t,expression\n0,\"" + "a" * 140_000 + "\"\n"),
    ("openface_field.csv", "frame, face_id, timestamp, success\n1,0,\"" + "1" * 140_000 + "\",1\n"),
    ("latin1.csv", "t,expression\n0,n\xe4tural\n".encode("latin-1")),
    ("openface_t.csv", None),
])
def test_bad_timeline_files_are_one_sentence_user_errors(tmp_path, name, content):
    p = tmp_path / name
    if content is None:
        rows = [(1, 0, 0.0, 0.9, 1, ramp(1)), (2, 0, 0.04, 0.9, 1, ramp(2))]
        openface_video_csv(p, rows)
        p.write_text(p.read_text().replace("0.040", HUGE))
    elif isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    with pytest.raises(UserError) as e:
        tl.Keyframes.read(p)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400, str(e.value)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import imageio_ffmpeg
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=10:duration=0.5", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


@pytest.mark.parametrize("content", [
    "t,AU12\n0,1\n1," + HUGE + "\n",
    "t,expression\n0,\"" + "a" * 140_000 + "\"\n",
    '[{"t": ' + HUGE + "}]",
])
def test_cli_video_with_a_bad_timeline_exits_2_with_one_line(tiny_clip, tmp_path, content):
    bad = tmp_path / ("bad.json" if content.startswith("[") else "bad.csv")
    bad.write_text(content)
    out = tmp_path / "o.mp4"
    run = subprocess.run([sys.executable, "-m", "exprengine", "video", str(tiny_clip), "--timeline", str(bad),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("exprengine: error: "), run.stderr
    assert not out.exists()


def test_cli_video_warns_when_keyframes_run_past_the_end(tiny_clip, tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text('[{"t": 0, "expression": "natural"}, {"t": 30, "expression": "happiness"}]')
    out = tmp_path / "o.mp4"
    run = subprocess.run([sys.executable, "-m", "exprengine", "video", str(tiny_clip), "--timeline", str(keys),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "keyframes run to 30 s" in run.stderr and "not reached" in run.stderr
    assert out.is_file()
