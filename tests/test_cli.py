"""The `exprengine` command: happy paths, and every bad input as one line + exit status 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exprengine.cli import main


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("exprengine: error: ")
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def cli_engine(engine_factory):
    return engine_factory("convnext2", "onnxruntime")


@pytest.fixture
def face_png(tmp_path, face):
    p = tmp_path / "face.png"
    Image.fromarray(face).resize((150, 150)).save(p)
    return p


def test_edit_preset_and_aus(cli_engine, face_png, tmp_path, capsys):
    before = face_png.read_bytes()
    out = tmp_path / "happy.png"
    code, stdout, err = run_cli(["edit", face_png, "--crop", "--engine", cli_engine, "--preset", "happiness@1.5",
                                 "--out", out], capsys)
    assert code == 0, err
    assert np.asarray(Image.open(out)).shape == (128, 128, 3)
    out2, att = tmp_path / "smile.jpg", tmp_path / "att.png"
    code, _, err = run_cli(["edit", face_png, "--crop", "--engine", cli_engine, "--au", "AU12=1.8", "--au", "25=0.6",
                            "--out", out2, "--attention", att], capsys)
    assert code == 0, err and out2.exists() and att.exists()
    assert face_png.read_bytes() == before                 # input untouched


def test_morph_outputs(cli_engine, face_png, tmp_path, capsys):
    gif = tmp_path / "surprise.gif"
    code, _, err = run_cli(["morph", face_png, "--engine", cli_engine, "--to", "surprise", "--frames", 6,
                            "--out", gif], capsys)
    assert code == 0, err
    with Image.open(gif) as im:
        assert im.n_frames == 6
    assert (tmp_path / "surprise_sheet.png").exists()
    frames_dir = tmp_path / "frames"
    code, _, err = run_cli(["morph", face_png, "--engine", cli_engine, "--from", "sadness", "--to",
                            "happiness@1.5,AU25=0.5", "--frames", 5, "--schedule", "ease-in-out",
                            "--out", str(frames_dir) + "/", "--sheet", "none"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in frames_dir.iterdir()) == [f"frame_{i:04d}.png" for i in range(5)]
    mp4 = tmp_path / "m.mp4"
    code, _, err = run_cli(["morph", face_png, "--engine", cli_engine, "--to", "anger", "--frames", 4,
                            "--bounce", "--out", mp4], capsys)
    assert code == 0, err and mp4.stat().st_size > 0


def test_info_and_reference_commands(cli_engine, capsys):
    code, out, _ = run_cli(["info", cli_engine], capsys)
    assert code == 0 and "convnext2" in out and "onnxruntime" in out and "verified" in out
    code, out, _ = run_cli(["presets"], capsys)
    assert code == 0 and "AU16" in out and "AU23 + AU25" in out
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0 and "convnext2-ln" in out and "tensorrt" in out
    for cmd in ([], ["build"], ["edit"], ["morph"], ["demo"]):
        code, out, _ = run_cli([*cmd, "--help"], capsys)
        assert code == 0 and "Usage" in out
    code, out, _ = run_cli(["edit", "--help"], capsys)
    assert "exprengine edit face.png" in out                # examples in --help


def test_build_and_reuse(tmp_path, capsys):
    out = tmp_path / "engines" / "cx2"
    out.parent.mkdir()
    code, stdout, err = run_cli(["build", "--model", "convnext2", "--backend", "torch", "--out", out], capsys)
    assert code == 0, err
    assert "randomly initialised" in err and "max relative error" in stdout
    code, _, err = run_cli(["build", "--model", "convnext2", "--backend", "torch", "--seed", 1, "--out", out], capsys)
    assert code == 0, err                                   # an engine is replaced by a new one


BAD_INPUTS = {
    "missing image": (["edit", "{tmp}/nope.png", "--engine", "{engine}", "--preset", "happiness", "--out", "{tmp}/o.png"], "does not exist"),
    "unreadable image": (["edit", "{tmp}/notimage.png", "--engine", "{engine}", "--preset", "happiness", "--out", "{tmp}/o.png"], "not an image"),
    "truncated image": (["edit", "{tmp}/truncated.png", "--engine", "{engine}", "--preset", "happiness", "--out", "{tmp}/o.png"], "truncated"),
    "image is a directory": (["edit", "{tmp}", "--engine", "{engine}", "--preset", "happiness", "--out", "{tmp}/o.png"], "directory"),
    "bad AU spec": (["edit", "{face}", "--engine", "{engine}", "--au", "AU12:1.5", "--out", "{tmp}/o.png"], "AU"),
    "unknown AU": (["edit", "{face}", "--engine", "{engine}", "--au", "AU16=1", "--out", "{tmp}/o.png"], "AU16"),
    "unknown preset": (["edit", "{face}", "--engine", "{engine}", "--preset", "joy", "--out", "{tmp}/o.png"], "unknown preset"),
    "out of range": (["edit", "{face}", "--engine", "{engine}", "--au", "AU12=7", "--out", "{tmp}/o.png"], "outside"),
    "negative": (["edit", "{face}", "--engine", "{engine}", "--au", "AU12=-1", "--out", "{tmp}/o.png"], "outside"),
    "above cap, error policy": (["edit", "{face}", "--engine", "{engine}", "--au", "AU12=3", "--above-max", "error", "--out", "{tmp}/o.png"], "cap"),
    "conflict, strict": (["edit", "{face}", "--engine", "{engine}", "--au", "AU23=1", "--au", "AU25=1", "--strict", "--out", "{tmp}/o.png"], "conflict"),
    "no expression": (["edit", "{face}", "--engine", "{engine}", "--out", "{tmp}/o.png"], "expression"),
    "missing engine": (["edit", "{face}", "--engine", "{tmp}/no-engine", "--preset", "happiness", "--out", "{tmp}/o.png"], "does not exist"),
    "corrupt engine": (["edit", "{face}", "--engine", "{tmp}/corrupt", "--preset", "happiness", "--out", "{tmp}/o.png"], "corrupt"),
    "output is a directory": (["edit", "{face}", "--engine", "{engine}", "--preset", "happiness", "--out", "{tmp}"], "directory"),
    "output parent missing": (["edit", "{face}", "--engine", "{engine}", "--preset", "happiness", "--out", "{tmp}/no/such/o.png"], "does not exist"),
    "output suffix": (["edit", "{face}", "--engine", "{engine}", "--preset", "happiness", "--out", "{tmp}/o.txt"], "must end"),
    "morph output non-empty dir": (["morph", "{face}", "--engine", "{engine}", "--to", "surprise", "--out", "{tmp}/full"], "not empty"),
    "morph bad target": (["morph", "{face}", "--engine", "{engine}", "--to", "surprise@lots", "--out", "{tmp}/m.gif"], "number"),
    "morph zero frames": (["morph", "{face}", "--engine", "{engine}", "--to", "surprise", "--frames", "0", "--out", "{tmp}/m.gif"], "frames"),
    "unknown option": (["edit", "{face}", "--engine", "{engine}", "--presett", "happiness", "--out", "{tmp}/o.png"], "presett"),
    "build unknown model": (["build", "--model", "resnet50", "--backend", "torch", "--out", "{tmp}/e"], "unknown model"),
    "build tensorrt": (["build", "--model", "convnext2", "--backend", "tensorrt", "--out", "{tmp}/e"], "tensorrt"),
    "build over a file": (["build", "--model", "convnext2", "--backend", "torch", "--out", "{face}"], "not a directory"),
    "build missing checkpoint": (["build", "--model", "ganimation", "--checkpoint", "{tmp}/30_net_gen.pth", "--backend", "torch", "--out", "{tmp}/e"], "does not exist"),
    "info on a file": (["info", "{face}"], "not a directory"),
    "build for a missing GPU": (["build", "--model", "convnext2", "--backend", "aoti", "--device", "cuda", "--out", "{tmp}/e"], "cuda"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(case, cli_engine, face_png, tmp_path, capsys):
    (tmp_path / "notimage.png").write_text("this is not a PNG")
    (tmp_path / "truncated.png").write_bytes(face_png.read_bytes()[:400])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "engine.json").write_text("{ not json")
    args, expected = BAD_INPUTS[case]
    args = [a.format(tmp=tmp_path, engine=cli_engine, face=face_png) for a in args]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = run_cli(args, capsys)
    assert_one_line_error(code, err)
    assert expected.lower() in err.lower(), err
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before                              # no partial output, inputs unchanged


def test_warnings_are_one_line_each(cli_engine, face_png, tmp_path, capsys):
    code, _, err = run_cli(["edit", face_png, "--engine", cli_engine, "--au", "AU12=3", "--au", "AU23=1",
                            "--au", "AU25=1", "--out", tmp_path / "o.png"], capsys)
    assert code == 0
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "cap" in warnings[0] + warnings[1]


def test_console_script_exit_code(tmp_path):
    """The installed entry point: exit status 2, one line, no traceback."""
    exe = Path(sys.executable).with_name("exprengine")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "exprengine.cli"]
    r = subprocess.run(cmd + ["info", str(tmp_path / "missing")], capture_output=True, text=True,
                       env={**os.environ, "EXPRENGINE_DEBUG": ""})
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
