"""The rig through the commands a new user meets first: eval's refusals, and the default engine's cache."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_cli import assert_one_line_error, run_cli
from test_faces import astronaut


@pytest.fixture(scope="module")
def rig_engine(tmp_path_factory):
    from exprengine.engines.build import build_engine
    from exprengine.models.rig import FaceRig
    out = tmp_path_factory.mktemp("rig") / "rig-torch"
    build_engine(FaceRig().eval(), out, "torch", weights_source="test", verify=False)
    return out


def test_eval_of_a_rig_without_photos_is_one_line(rig_engine, capsys):
    code, _, err = run_cli(["eval", rig_engine, "--n", "4"], capsys)
    assert_one_line_error(code, err)
    assert "--photos" in err


def test_eval_photos_without_any_face_is_one_line_and_writes_no_sheets(rig_engine, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(photos / "wall.png")
    sheets = tmp_path / "sheets"
    code, _, err = run_cli(["eval", rig_engine, "--photos", photos, "--photo-sheets", sheets], capsys)
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert len(progress) == 1 and progress[0].startswith("[1/1] wall.png: 0 faces, "), err
    assert_one_line_error(code, "\n".join(line for line in err.splitlines() if line not in progress))
    assert "no face" in err and not sheets.exists()


def test_photo_sheets_that_is_a_file_or_full_says_contact_sheets(rig_engine, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(astronaut()).save(photos / "a.png")
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("keep")
    for where in (taken, full):
        code, _, err = run_cli(["eval", rig_engine, "--photos", photos, "--photo-sheets", where], capsys)
        assert_one_line_error(code, err)
        assert "contact sheets" in err and ".gif" not in err
    assert taken.read_bytes() == b"x" and (full / "keep.txt").read_text() == "keep"


def test_an_unwritable_cache_edits_with_the_rig_in_memory(tmp_path, monkeypatch, capsys):
    """The default engine's cache being a file: one warning, the rig runs eagerly, the edit is made."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("EXPRENGINE_CACHE", str(blocker))
    src, out = tmp_path / "astro.png", tmp_path / "out.png"
    Image.fromarray(astronaut()).save(src)
    code, stdout, err = run_cli(["edit", src, "--preset", "surprise@2", "--out", out], capsys)
    assert code == 0, err
    assert "building the rig engine" not in err and "warning: cannot cache the rig engine" in err
    assert "edited 1" in stdout
    assert (np.asarray(Image.open(out)) != astronaut()).any()
