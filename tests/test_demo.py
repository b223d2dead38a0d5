"""`exprengine demo` end to end (small settings: the real demo's defaults are only slower)."""
import json

from PIL import Image

import numpy as np

from exprengine.aus import PRESETS
from exprengine.cli import main
from exprengine.demo import PHOTO_PANEL, SHEET_SCALE, photo_panels, run_demo
from exprengine.media import GIF_DITHER_SPREAD


def test_demo_with_the_default_model_writes_everything_and_measures_the_regions(tmp_path, capsys):
    out = tmp_path / "exprengine-demo"
    args = ["demo", "--out", str(out), "--frames", "4", "--repeats", "1"]
    run_demo(out, frames=4, repeats=1, progress=True)
    captured = capsys.readouterr()
    stdout = captured.out
    for bar in ("convnext6 -> onnxruntime", "video:", "timing:"):          # every long step shows progress
        assert bar in captured.err, bar
    assert "synthetic face world only" in stdout and "| batch |" in stdout and "| happiness |" in stdout
    assert "RANDOMLY" not in stdout
    photo_tiles = {}
    for name in PRESETS:
        assert Image.open(out / "edits" / f"{name}.png").size == (128, 128)
        photo_tiles[name] = np.asarray(Image.open(out / "edits_photo" / f"{name}.png").convert("RGB")).astype(int)
        assert photo_tiles[name].shape[0] == photo_tiles[name].shape[1] > 128      # the face's square at full size
    # the rig on the real photo: "natural" changes nothing, every other preset changes the face visibly
    from skimage import data
    from helpers import rig_face_region
    rows, cols = rig_face_region(data.astronaut())      # near the demo's square (its mesh may differ by a pixel)
    side, photo = photo_tiles["natural"].shape[0], data.astronaut().astype(int)
    found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
             if np.array_equal(photo_tiles["natural"], photo[rows.start + dy:rows.start + dy + side,
                                                           cols.start + dx:cols.start + dx + side])]
    assert found, "natural@2 is the photo's own pixels"
    original = photo[rows.start + found[0][0]:rows.start + found[0][0] + side,
                     cols.start + found[0][1]:cols.start + found[0][1] + side]
    for name in PRESETS:
        if name != "natural":
            changed = np.abs(photo_tiles[name] - original).max(axis=2) > 24
            assert changed.sum() > 300, (name, int(changed.sum()))
    assert "targets" in (out / "photo_eval.md").read_text()
    with Image.open(out / "morph.gif") as gif:
        assert gif.n_frames == 4 + 2                     # forward and back (bounce)
        assert gif.size == (128 * SHEET_SCALE,) * 2
        shown = []
        for i in range(4):
            gif.seek(i)
            shown.append(np.asarray(gif.convert("RGB")).astype(int))
    side = 128 * SHEET_SCALE                             # the GIF against the sheet's exact frames
    sheet = np.asarray(Image.open(out / "morph_sheet.png").convert("RGB")).astype(int)
    tiles = [sheet[2:2 + side, 2 + i * (side + 2):2 + i * (side + 2) + side] for i in range(2)]
    for tile, frame in zip(tiles, shown):
        error = np.abs(frame - tile).max(axis=2)
        bright = tile.min(axis=2) > 170                  # the eye whites (they turned green)
        assert bright.sum() > 50 and error[bright].max() <= 16 + GIF_DITHER_SPREAD / 2 and error.max() <= 24
    still = np.all(tiles[0] == tiles[1], axis=2)         # unchanged pixels stay unchanged in the GIF
    assert still.mean() > 0.5 and np.array_equal(shown[0][still], shown[1][still])
    assert Image.open(out / "presets.png").size[0] > 9 * 128 * SHEET_SCALE
    w, h = Image.open(out / "faces_photo.png").size       # large enough to judge: 512-pixel panels
    assert w >= 3 * PHOTO_PANEL and h >= 2 * PHOTO_PANEL and PHOTO_PANEL >= 512
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
    assert summary["photo_eval"]["faces"] == 1 and summary["photo_eval"]["outside_change_pixels"] == 0
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


def test_photo_panels_show_the_whole_photo_the_face_enlarged_and_the_change():
    photo = np.zeros((300, 400, 3), np.uint8)
    edited = photo.copy()
    edited[100:110, 200:210] = 5                         # a faint change inside the face
    panels = photo_panels(photo, edited, (80, 180, 60), side=512)
    assert panels.shape == (6, 512, 512, 3)
    assert panels[2].max() == 5 * 8                      # the change, amplified 8x
    assert (panels[5] > 0).mean() > 4 * (panels[2] > 0).mean()   # the face's square is enlarged
