"""`exprengine demo` end to end (small settings: the real demo's defaults are only slower)."""
import json

from PIL import Image

from exprengine.aus import PRESETS
from exprengine.cli import main


def test_demo_with_the_default_model_writes_everything_and_measures_the_regions(tmp_path, capsys):
    out = tmp_path / "exprengine-demo"
    args = ["demo", "--out", str(out), "--frames", "4", "--repeats", "1"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "synthetic face world only" in stdout and "| batch |" in stdout and "| happiness |" in stdout
    assert "RANDOMLY" not in stdout
    for name in PRESETS:
        assert Image.open(out / "edits" / f"{name}.png").size == (128, 128)
        assert Image.open(out / "edits_photo" / f"{name}.png").size == (128, 128)
    with Image.open(out / "morph.gif") as gif:
        assert gif.n_frames == 4 + 2                     # forward and back (bounce)
    assert Image.open(out / "presets.png").size[0] > 9 * 128
    assert (out / "presets_photo.png").exists() and (out / "morph_sheet.png").exists()
    assert (out / "engine" / "engine.json").exists() and "| surprise |" in (out / "regions.md").read_text()
    summary = json.loads((out / "demo.json").read_text())
    assert summary["random_init"] is False and summary["verification"]["max_rel_error"] < 1e-4
    regions = summary["regions"]
    assert set(regions) == {n for n, p in PRESETS.items() if p.aus}
    for name, r in regions.items():                       # the trained model edits where the preset acts
        assert r["in_region"] > 0.5 and r["region_change"] > 0.2, (name, r)
        assert r["psnr"] > r["psnr_no_edit"], (name, r)   # closer to the renderer's true face than the input
    for name in ("surprise", "fear", "disgust"):          # the strong edits on this face are plainly visible
        assert regions[name]["region_change"] > 1.0 and regions[name]["psnr"] > regions[name]["psnr_no_edit"] + 2
    assert [r["batch"] for r in summary["timing_ms"]] == [1, 4]
    assert "onnxruntime speed-up" in (out / "timing.md").read_text()
    faces = summary["faces"]                             # the whole-photo and video pipeline on real pixels
    assert faces["photo_faces"] == 1 and faces["photo_pixels_changed"] > 0 and faces["photo_pixels_changed_outside"] == 0
    from exprengine.video.io import probe_video
    assert probe_video(out / "video.mp4").frames == faces["video"]["frames"] == 60
    assert (out / "faces_photo.png").exists()
    assert main(args) == 0                               # an earlier demo folder is replaced
    capsys.readouterr()


def test_demo_of_an_architecture_says_random_init(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), "--model", "convnext2", "--frames", "2", "--repeats", "1"]) == 0
    assert "RANDOMLY INITIALISED" in capsys.readouterr().out
    assert "RANDOMLY INITIALISED" in (out / "README.txt").read_text()
    assert json.loads((out / "demo.json").read_text())["random_init"] is True


def test_demo_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["demo", "--out", str(tmp_path), "--model", "convnext2", "--frames", "2", "--repeats", "1"]) == 2
    assert "not an earlier demo" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep"
