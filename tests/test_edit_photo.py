"""`exprengine edit` on whole photos: faces found and reported, only they change, photos
without faces pass through, photo modes and EXIF orientation kept, bad input refused."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image
from test_cli import assert_one_line_error, run_cli
from helpers import rig_face_region
from test_faces import astronaut

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


@pytest.fixture
def astro_png(tmp_path):
    p = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(p)
    return p


def test_edits_the_face_and_keeps_every_other_pixel(astro_png, tmp_path, capsys):
    before = astro_png.read_bytes()
    out = tmp_path / "out.png"
    code, stdout, err = run_cli(["edit", astro_png, "--preset", "surprise@2", "--out", out, "--mask", "shape"], capsys)
    assert code == 0, err
    assert "found 1 face, edited 1" in stdout
    a, b = np.asarray(Image.open(astro_png)), np.asarray(Image.open(out))
    assert a.shape == b.shape
    changed = np.any(a != b, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 100, changed.sum()                          # the face changed...
    rows, cols = rig_face_region(a)                                    # the rig's square about the face
    assert ys.min() >= rows.start and ys.max() < rows.stop and xs.min() >= cols.start and xs.max() < cols.stop
    assert astro_png.read_bytes() == before


def test_a_photo_without_faces_passes_through_untouched(tmp_path, capsys):
    blank = tmp_path / "wall.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(blank)
    out = tmp_path / "out.jpg"
    code, stdout, err = run_cli(["edit", blank, "--preset", "happiness", "--out", out], capsys)
    assert code == 0 and "no face found" in stdout
    assert out.read_bytes() == blank.read_bytes()
    out.unlink()
    code, stdout, err = run_cli(["edit", blank, "--preset", "happiness", "--out", out, "--require-face"], capsys)
    assert code == 1 and "warning: no face found" in err and "Traceback" not in err
    assert out.read_bytes() == blank.read_bytes()


def test_orientation_grayscale_and_alpha_are_kept(tmp_path, capsys):
    rotated = tmp_path / "phone.jpg"                   # stored sideways, EXIF says turn it upright
    img = Image.fromarray(astronaut()).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6                                   # orientation 6: turn 90 degrees clockwise to view
    img.save(rotated, exif=exif, quality=95)
    out = tmp_path / "upright.png"
    code, stdout, err = run_cli(["edit", rotated, "--preset", "happiness", "--out", out], capsys)
    assert code == 0 and "found 1 face, edited 1" in stdout, (stdout, err)
    assert np.asarray(Image.open(out)).shape == (512, 512, 3)
    gray = tmp_path / "gray.png"
    Image.fromarray(astronaut()).convert("L").save(gray)
    code, stdout, err = run_cli(["edit", gray, "--preset", "happiness", "--out", tmp_path / "g.png"], capsys)
    assert code == 0 and Image.open(tmp_path / "g.png").mode == "L"
    rgba = tmp_path / "rgba.png"
    alpha = np.tile(np.linspace(0, 255, 512, dtype=np.uint8), (512, 1))
    Image.fromarray(np.dstack([astronaut(), alpha])).save(rgba)
    code, stdout, err = run_cli(["edit", rgba, "--preset", "happiness", "--out", tmp_path / "a.png"], capsys)
    result = np.asarray(Image.open(tmp_path / "a.png"))
    assert code == 0 and result.shape == (512, 512, 4) and np.array_equal(result[..., 3], alpha)


def test_bad_photo_inputs(astro_png, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)            # a few KB on disk, 81 M pixels decoded
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(astro_png.read_bytes()[:5000])
    cases = [
        (["edit", bomb, "--preset", "happiness", "--out", tmp_path / "o.png"], "larger than the limit"),
        (["edit", truncated, "--preset", "happiness", "--out", tmp_path / "o.png"], "truncated"),
        (["edit", tmp_path, "--preset", "happiness", "--out", tmp_path / "o.png"], "directory"),
        (["edit", astro_png, "--preset", "happiness", "--face", "3", "--out", tmp_path / "o.png"], "only 1 face found"),
        (["edit", astro_png, "--preset", "happiness", "--attention", tmp_path / "a.png", "--out", tmp_path / "o.png"],
         "--crop"),
        (["edit", astro_png, "--preset", "happiness", "--out", tmp_path / "o.gif"], "o.gif"),
    ]
    for args, message in cases:
        code, _, err = run_cli(args, capsys)
        assert_one_line_error(code, err)
        assert message in err, (message, err)
        assert not (tmp_path / "o.png").exists()
