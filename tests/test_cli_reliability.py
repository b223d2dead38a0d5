"""Issue 13's kinds of fault, through the command line: inputs and engines never overwritten,
every argument checked before any work, one line and exit 2 for every bad input, outputs that
appear together or not at all, SIGTERM as clean as Ctrl-C."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import assert_one_line_error, run_cli


def _digest(root: Path) -> dict[str, str]:
    """Every file under root -> its sha256 (to prove nothing was changed or added)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def engine(engine_factory, tmp_path_factory):
    src = engine_factory("convnext2", "onnxruntime")
    dst = tmp_path_factory.mktemp("cli-rel") / "engine"
    shutil.copytree(src, dst)                       # a private copy: tests try to overwrite it
    return dst


@pytest.fixture
def work(tmp_path, face):
    Image.fromarray(face).save(tmp_path / "face.png")
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(tmp_path / "noface.png")
    return tmp_path


def _refused(args, capsys, root: Path, message: str | None = None):
    before = _digest(root)
    code, out, err = run_cli(args, capsys)
    assert_one_line_error(code, err)
    if message:
        assert message in err, err
    assert _digest(root) == before, "a refused command changed or added files"
    return err


# --- 2. inputs and engines are never overwritten ------------------------------------------
@pytest.mark.parametrize("args", [
    ["edit", "face.png", "--preset", "happiness", "--out", "face.png"],
    ["edit", "face.png", "--crop", "--preset", "happiness", "--out", "face.png"],
    ["edit", "face.png", "--crop", "--preset", "happiness", "--out", "o.png", "--attention", "face.png"],
    ["edit", "face.png", "--crop", "--preset", "happiness", "--out", "o.png", "--attention", "o.png"],
    ["edit", "face.png", "--preset", "happiness", "--out", "hard.png"],          # a hard link to the input
    ["edit", "face.png", "--preset", "happiness", "--out", "soft.png"],          # a symbolic link to it
    ["morph", "face.png", "--to", "surprise", "--frames", "2", "--out", "m.gif", "--sheet", "face.png"],
    ["morph", "m_sheet.png", "--to", "surprise", "--frames", "2", "--out", "m.gif"],   # default sheet = input
])
def test_an_output_that_is_an_input_is_refused(args, work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    os.link("face.png", "hard.png")
    os.symlink("face.png", "soft.png")
    shutil.copy("face.png", "m_sheet.png")
    _refused(args, capsys, work)


def test_outputs_inside_the_engine_are_refused(engine, work, capsys):
    for args in (["eval", engine, "--n", "2", "--json", engine / "engine.json"],
                 ["eval", engine, "--n", "2", "--sheet", engine / "sheet.png"],
                 ["edit", work / "face.png", "--crop", "--engine", engine, "--preset", "happiness",
                  "--out", engine / "o.png"],
                 ["build", "--model", "convnext2", "--out", work, "--checkpoint", work / "face.png"]):
        before = _digest(engine)
        _refused(args, capsys, work)
        assert _digest(engine) == before


# --- 3. every argument is validated before any work ---------------------------------------
def test_a_bad_engine_is_refused_even_when_no_face_is_found(work, capsys, tmp_path):
    truncated = tmp_path / "truncated"
    (truncated).mkdir()
    (truncated / "engine.json").write_text('{"format": "exprengine-engine", "format_ver')
    for bad in (tmp_path / "no" / "such" / "engine", work / "face.png", truncated):
        _refused(["edit", work / "noface.png", "--engine", bad, "--preset", "happiness", "--out", work / "o.png"],
                 capsys, work)
        assert not (work / "o.png").exists()


@pytest.mark.parametrize("spec", ["happiness@-1", "surprise@-3", "natural@99", "happiness@5.5", "fear@nan",
                                  "anger@" + "9" * 400])
def test_preset_intensities_are_range_checked_before_they_combine(spec, work, capsys):
    _refused(["edit", work / "face.png", "--crop", "--preset", spec, "--out", work / "o.png"], capsys, work)


def test_eval_refuses_a_missing_report_directory_before_evaluating(engine, work, capsys):
    t = time.perf_counter()
    _refused(["eval", engine, "--json", work / "missing" / "r.json"], capsys, work, "does not exist")
    assert time.perf_counter() - t < 20          # not after evaluating 200 edits


# --- 5. exit 2 with one line for every bad input ------------------------------------------
@pytest.mark.parametrize("args", [
    ["compare", "--dims", "a,b,c", "--out", "cmp"],
    ["compare", "--dims", "8,8", "--out", "cmp"],
    ["train", "--dims", "0,0,0", "--out", "run"],
    ["train", "--dims", "-8,16,32", "--out", "run"],
    ["train", "--dims", "8,16,99999999", "--out", "run"],
    ["train", "--out", "face.png"],                       # an existing file
    ["train", "--batch", "1000000000", "--out", "run"],
    ["train", "--data", "synthetic:-1", "--out", "run"],
    ["train", "--data", "synthetic:1:99999999999999999999999", "--out", "run"],
    ["train", "--image-size", "17", "--out", "run"],
    ["train", "--image-size", "256", "--out", "run"],    # synthetic faces are 128x128
    ["synth", "--seed", "-5", "--n", "2", "--out", "run"],
    ["build", "--model", "convnext2", "--seed", "99999999999999999999999", "--out", "run"],
    ["compare", "--batch", "100000000000", "--out", "cmp"],
    ["edit", "face.png", "--crop", "--preset", "happiness", "--max-intensity", "7", "--out", "o.png"],
    ["edit", "face.png", "--crop", "--preset", "happiness", "--out", "x" * 300 + ".png"],
])
def test_bad_numbers_and_names_are_one_line(args, work, capsys, monkeypatch):
    monkeypatch.chdir(work)
    _refused(args, capsys, work)
    assert not (work / "cmp").exists() and not (work / "run").exists()


# --- 6. outputs of one command appear together or not at all -------------------------------
def test_edit_leaves_neither_output_when_the_second_fails(work, capsys, monkeypatch):
    import exprengine.media as media
    real = media.write_image

    def failing(path, image):
        if Path(path).name == "att.png":
            raise media.UserError(f"cannot write {path}: No space left on device")
        return real(path, image)
    monkeypatch.setattr(media, "write_image", failing)
    code, _, err = run_cli(["edit", work / "face.png", "--crop", "--preset", "happiness", "--out", work / "e.png",
                            "--attention", work / "att.png"], capsys)
    assert code == 2 and "No space" in err
    assert sorted(p.name for p in work.iterdir()) == ["face.png", "noface.png"]


def test_morph_leaves_neither_the_animation_nor_the_sheet_when_one_fails(work, capsys, monkeypatch):
    import exprengine.media as media
    real = media.write_image

    def failing(path, image):
        raise media.UserError(f"cannot write {path}: disk quota exceeded")
    monkeypatch.setattr(media, "write_image", failing)
    code, _, err = run_cli(["morph", work / "face.png", "--to", "surprise", "--frames", "2",
                            "--out", work / "m.gif"], capsys)
    assert code == 2
    assert sorted(p.name for p in work.iterdir()) == ["face.png", "noface.png"]
    monkeypatch.setattr(media, "write_image", real)
    code, out, err = run_cli(["morph", work / "face.png", "--to", "surprise", "--frames", "2",   # no --engine:
                              "--out", work / "m.gif"], capsys)                              # the shipped model
    assert code == 0, err
    assert (work / "m.gif").is_file() and (work / "m_sheet.png").is_file()


def test_build_creates_missing_parents(tmp_path, capsys):
    out = tmp_path / "engines" / "deep" / "cx2"
    code, _, err = run_cli(["build", "--model", "convnext2", "--backend", "torch", "--out", out, "--no-verify"], capsys)
    assert code == 0, err
    assert (out / "engine.json").is_file()


def test_sigterm_during_build_leaves_nothing_behind(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "exprengine", "build", "--model", "ganimation",
                             "--out", str(tmp_path / "eng")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.endswith(".part") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    assert any(p.name.endswith(".part") for p in tmp_path.iterdir()), "the build never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "terminated" in err
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_wrapped_by_a_library_is_still_an_interrupt(monkeypatch, capsys):
    """torch.export re-raises SIGTERM's KeyboardInterrupt as TorchExportError: still exit 143."""
    import exprengine.cli.edit as cli
    import exprengine.console as console

    def wrapped(*args, **kwargs):
        try:
            raise console._Terminated(signal.SIGTERM)
        except KeyboardInterrupt as e:
            raise RuntimeError("Failed to export the model with torch.export") from e
    monkeypatch.setattr(cli, "aus_from_options", wrapped)
    code, _, err = run_cli(["edit", "x.png", "--preset", "happiness", "--out", "o.png"], capsys)
    assert code == 128 + signal.SIGTERM and "terminated" in err and "internal error" not in err


def test_eval_checks_the_real_data_and_inception_weights_before_evaluating(engine, work, capsys):
    (work / "inception.pth").write_bytes(b"not a torch file")
    (work / "real").mkdir()
    t = time.perf_counter()
    _refused(["eval", engine, "--real", work / "real", "--inception", work / "inception.pth"], capsys, work)
    assert time.perf_counter() - t < 20
