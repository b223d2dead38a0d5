"""`exprengine ui` in a real headless browser: Debian's chromium (/usr/bin/chromium) driven by
Playwright (its own browsers are never downloaded). Load the astronaut photo, move a slider and
see the preview change, a preset with its intensity, the conflict warning, a morph, the camera
(Chromium's fake camera), a bad file; the downloaded photo is the bytes `exprengine edit` writes.

With EXPRENGINE_UI_SCREENSHOTS=DIR, `test_screenshots` writes the README's pictures there
(ui.png, ui_morph.png); without it, that test is skipped.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut
from test_cli import run_cli

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[test]')")

#: As the machine notes say Chromium runs headless here (no sandbox as root, no network chatter),
#: plus a fake camera that needs no permission prompt.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
TIMEOUT_MS = 60_000

# the preview as the page shows it: its pixels read back through a canvas
PIXELS = """() => { const img = document.getElementById('preview');
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  return Array.from(g.getImageData(0, 0, c.width, c.height).data); }"""


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("ui") / "astronaut.png"
    Image.fromarray(astronaut()).save(p)
    return p


@pytest.fixture(scope="module")
def url():
    from exprengine.default_engines import default_rig
    from exprengine.ui.server import create_app, serving
    from exprengine.ui.state import Workbench
    bench = Workbench(default_rig())
    with serving(create_app(bench)) as address:
        yield address
    bench.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    yield page
    context.close()
    assert not errors, errors                          # no uncaught script error


def previews(page) -> int:
    return int(page.get_attribute("body", "data-previews") or 0)


def wait_preview(page, count: int) -> None:
    page.wait_for_function(f"Number(document.body.dataset.previews || 0) >= {count}")


def load(page, photo: Path) -> None:
    page.set_input_files("#file", str(photo))
    wait_preview(page, 1)


def download(page, tmp_path: Path) -> tuple[Path, str]:
    with page.expect_download() as d:
        page.click("#download")
    out = tmp_path / d.value.suggested_filename
    d.value.save_as(out)
    page.wait_for_selector("#command-row:not([hidden])")
    return out, page.inner_text("#command")


def cli_output(command: str, photo: Path, out: Path, capsys) -> bytes:
    """Run the page's command line (`exprengine edit ...`) on `photo`, writing `out`."""
    args = shlex.split(command)[1:]
    assert args[1] == photo.name and args[-2] == "--out", command
    args[1], args[-1] = photo, out
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    return out.read_bytes()


def test_a_slider_changes_the_preview_and_the_download_is_exprengine_edits_bytes(page, photo, tmp_path, capsys):
    load(page, photo)
    assert page.inner_text("#status") == "astronaut.png: 512x512, 1 face found"
    assert page.locator(".box").count() == 1 and page.inner_text(".box") == "#0"
    assert "--face N numbers them: most confident first" in page.inner_text("#faces")
    before = np.array(page.evaluate(PIXELS))
    page.locator("#AU12").fill("1.5")                  # input, then change: the slider's release
    wait_preview(page, 2)
    after = np.array(page.evaluate(PIXELS))
    assert before.shape == after.shape == (512 * 512 * 4,)
    assert np.abs(after.astype(int) - before).mean() > 0.05          # the preview changed
    assert page.inner_text("#AU12-value") == "1.50"
    assert float(page.get_attribute("body", "data-latency")) > 0     # slider release -> image shown, measured
    assert page.inner_text("#latency").isdigit()
    out, command = download(page, tmp_path)
    assert command == "exprengine edit astronaut.png --au AU12=1.5 --out astronaut_edited.png"
    assert out.name == "astronaut_edited.png"
    assert out.read_bytes() == cli_output(command, photo, tmp_path / "cli.png", capsys)   # identical bytes
    assert page.inner_text("#summary").startswith("found 1 face, edited 1")


def test_a_preset_at_an_intensity_sets_its_aus_and_downloads_as_the_cli_does(page, photo, tmp_path, capsys):
    load(page, photo)
    page.locator("#intensity").fill("1.5")
    page.click("button[data-preset='happiness']")
    wait_preview(page, 2)
    assert page.inner_text("#AU06-value") == page.inner_text("#AU12-value") == "1.50"
    assert page.inner_text("#AU01-value") == "0.00"
    assert "active" in page.get_attribute("button[data-preset='happiness']", "class")
    page.locator("#intensity").fill("0.5")             # the intensity re-applies the chosen preset
    wait_preview(page, 3)
    assert page.inner_text("#AU12-value") == "0.50"
    page.locator("#format").select_option("jpeg")
    out, command = download(page, tmp_path)
    assert command == "exprengine edit astronaut.png --au AU06=0.5 --au AU12=0.5 --out astronaut_edited.jpg"
    assert out.read_bytes() == cli_output(command, photo, tmp_path / "cli.jpg", capsys)
    # an AU moved: no preset is active, and the intensity scales every AU as set (AU01=1 at 0.5)
    page.locator("#AU01").fill("1")
    wait_preview(page, 4)
    assert "active" not in page.get_attribute("button[data-preset='happiness']", "class")
    page.locator("#intensity").fill("1")
    wait_preview(page, 5)
    assert [page.inner_text(f"#{au}-value") for au in ("AU01", "AU06", "AU12", "AU04")] == ["2.00", "1.00", "1.00",
                                                                                             "0.00"]
    assert page.locator("#AU01").input_value() == "2"


def test_the_command_keeps_an_ordinary_file_name_and_goes_when_the_settings_change(page, photo, tmp_path, capsys):
    named = tmp_path / "my photo (1) é's.png"
    named.write_bytes(photo.read_bytes())
    load(page, named)
    page.locator("#AU12").fill("1")
    wait_preview(page, 2)
    out, command = download(page, tmp_path)
    assert out.name == "my photo (1) é's_edited.png"
    assert command == ("exprengine edit 'my photo (1) é'\"'\"'s.png' --au AU12=1 "
                       "--out 'my photo (1) é'\"'\"'s_edited.png'")
    assert out.read_bytes() == cli_output(command, named, tmp_path / "cli.png", capsys)
    assert page.inner_text("#status") == "downloaded my photo (1) é's_edited.png"
    page.locator("#AU12").fill("1.5")                  # the command said no longer describes the settings
    wait_preview(page, 3)
    assert page.locator("#command-row").is_hidden() and page.inner_text("#summary") == ""
    assert page.inner_text("#status") == "my photo (1) é's.png: 512x512, 1 face found"

def test_conflicting_aus_show_the_clis_warning_beside_the_sliders(page, photo):
    load(page, photo)
    assert page.inner_text("#warnings") == "none"
    page.locator("#AU23").fill("1")
    page.locator("#AU25").fill("1")
    page.wait_for_function("document.getElementById('warnings').innerText.includes('conflict')")
    assert page.inner_text("#warnings") == ("AU23 and AU25 conflict (lip tightener presses the lips together while "
                                            "lips part opens them); the mouth or eyes may break")


def test_a_morph_renders_and_shows_as_an_animation(page, photo):
    load(page, photo)
    assert page.get_attribute("#morph-frames", "min") == "2"           # as the server's limits
    page.locator("#morph-frames").fill("")
    page.click("#morph")
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message") == "frames is empty; give a whole number from 2 to 96"
    page.locator("#morph-frames").fill("6")
    page.locator("#morph-to").select_option("surprise")
    page.click("#morph")
    page.wait_for_selector("#morph-out:not([hidden])")
    size = page.evaluate("() => [document.getElementById('morph-img').naturalWidth, "
                         "document.getElementById('morph-img').naturalHeight]")
    assert size == [256, 256]
    assert page.get_attribute("#morph-gif", "href").endswith(".gif")
    assert page.get_attribute("#morph-mp4", "href").endswith(".mp4")
    assert "morph: 6 frames" in page.inner_text("#status")
    assert page.locator("#message").is_hidden()                         # the error went with the success
    assert page.inner_text("#morph-face") == ""                          # one face: nothing to say which
    page.locator("#morph-frames").fill("1")                               # a failed morph hides the last one
    page.click("#morph")
    page.wait_for_selector("#message:not([hidden])")
    assert page.locator("#morph-out").is_hidden()


def test_a_bad_file_is_a_message_on_the_page(page, photo, tmp_path):
    load(page, photo)
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message") == ("notes.txt is not an image this program can read "
                                           "(use PNG, JPEG, WebP, BMP, GIF or TIFF)")
    assert "Traceback" not in page.content()
    assert page.inner_text("#status") == "astronaut.png: 512x512, 1 face found"      # still the photo edited


def test_a_camera_still_is_sent_as_a_photo(page):
    # Chromium's fake camera shows a test pattern: the still reaches the server as camera.png,
    # which finds no face in it and says so on the page.
    page.click("#camera-start")
    page.wait_for_selector("#camera-shot:not([hidden])")
    page.set_viewport_size({"width": 390, "height": 844})       # a phone: the header, all four buttons, wraps
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.wait_for_function("document.getElementById('camera').videoWidth > 0")
    page.click("#camera-shot")
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message").startswith("no face found in camera.png")


def test_age_controls_are_hidden_without_an_age_engine(page):
    assert page.locator("#age-controls").is_hidden()
    assert page.inner_text("#age-note") == ("No age model is installed: start the page with --engine-age DIR, an "
                                            "engine built from a LATS generator.")


@pytest.fixture(scope="module")
def age_url():
    """The page with an age engine: lats-small with random weights, eager (it changes pixels; no
    age model ships to age real faces)."""
    from exprengine.default_engines import default_rig
    from exprengine.engine import Engine
    from exprengine.models import create_model
    from exprengine.ui.server import create_app, serving
    from exprengine.ui.state import Workbench
    bench = Workbench(default_rig(), Engine.from_generator(create_model("lats-small", seed=0)))
    with serving(create_app(bench)) as address:
        yield address
    bench.close()


def test_the_age_slider_and_the_lifespan_with_an_age_engine(browser, age_url, photo):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(age_url)
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#age-controls").is_visible() and page.locator("#age").is_disabled()
    load(page, photo)
    before = np.array(page.evaluate(PIXELS))
    page.check("#age-on")
    wait_preview(page, 2)
    page.locator("#age").fill("20")
    wait_preview(page, 3)
    assert page.inner_text("#age-value") == "20"
    assert np.abs(np.array(page.evaluate(PIXELS)).astype(int) - before).mean() > 0.05
    page.locator("#traverse-frames").fill("4")
    page.click("#traverse")
    page.wait_for_selector("#traverse-out:not([hidden])")
    assert "lifespan: 4 frames" in page.inner_text("#status")
    assert page.get_attribute("#traverse-mp4", "href").endswith(".mp4")
    page.close()


@pytest.mark.skipif(not os.environ.get("EXPRENGINE_UI_SCREENSHOTS"), reason="EXPRENGINE_UI_SCREENSHOTS=DIR not set")
def test_screenshots(browser, photo, tmp_path):
    """The README's pictures, of `exprengine ui` run as a user runs it (its own process)."""
    import signal
    import subprocess
    import sys
    out = Path(os.environ["EXPRENGINE_UI_SCREENSHOTS"]).resolve()
    proc = subprocess.Popen([sys.executable, "-m", "exprengine", "ui", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    try:
        address = proc.stdout.readline().split()[5]
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(address)
        page.wait_for_selector("body[data-ready='1']")
        screenshots(page, photo, out)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def screenshots(page, photo: Path, out: Path) -> None:
    load(page, photo)
    page.locator("#intensity").fill("1.5")
    page.click("button[data-preset='happiness']")
    wait_preview(page, 2)                              # as a user would: one change after another
    page.locator("#AU01").fill("1")
    wait_preview(page, 3)
    save_screenshot(page, out / "ui.png")
    page.locator("#morph-to").select_option("surprise")
    page.click("#morph")
    page.wait_for_selector("#morph-out:not([hidden])")
    page.locator("#morph-panel").scroll_into_view_if_needed()
    save_screenshot(page, out / "ui_morph.png")


def save_screenshot(page, path: Path) -> None:
    """The page as a 256-colour PNG (a third of the full-colour file's size, for the repository)."""
    import io
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    shot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
