"""`exprengine demo` end to end (small settings: the real demo's defaults are only slower)."""
import json

from PIL import Image

from exprengine.aus import PRESETS
from exprengine.cli import main


def test_demo_writes_everything_and_says_random_init(tmp_path, capsys):
    out = tmp_path / "exprengine-demo"
    args = ["demo", "--out", str(out), "--model", "convnext2", "--frames", "4", "--repeats", "1"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "RANDOMLY INITIALISED" in stdout and "| batch |" in stdout
    assert "RANDOMLY INITIALISED" in (out / "README.txt").read_text()
    for name in PRESETS:
        assert Image.open(out / "edits" / f"{name}.png").size == (128, 128)
    with Image.open(out / "morph.gif") as gif:
        assert gif.n_frames == 4 + 2                     # forward and back (bounce)
    assert Image.open(out / "presets.png").size[0] > 9 * 128
    assert (out / "morph_sheet.png").exists() and (out / "engine" / "engine.json").exists()
    summary = json.loads((out / "demo.json").read_text())
    assert summary["random_init"] is True and summary["verification"]["max_rel_error"] < 1e-4
    assert [r["batch"] for r in summary["timing_ms"]] == [1, 4]
    assert "onnxruntime speed-up" in (out / "timing.md").read_text()
    assert main(args) == 0                               # an earlier demo folder is replaced
    capsys.readouterr()


def test_demo_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["demo", "--out", str(tmp_path), "--model", "convnext2", "--frames", "2", "--repeats", "1"]) == 2
    assert "not an earlier demo" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep"
