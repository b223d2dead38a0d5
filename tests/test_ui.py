"""`exprengine ui`'s server, through its HTTP API (FastAPI's TestClient): uploads, faces found once,
previews by one engine call, downloads with the bytes `exprengine edit` / `exprengine age` write,
the CLI's warnings, morphs and ages, and every bad input as one sentence with a 4xx status."""
from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut, coffee
from test_cli import run_cli

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from exprengine.aus import AU_NAMES, AUs  # noqa: E402
from exprengine.errors import UserError  # noqa: E402
from exprengine.ui import server as ui_server  # noqa: E402
from exprengine.ui import state as ui_state  # noqa: E402
from exprengine.ui.server import create_app  # noqa: E402
from exprengine.ui.state import Workbench  # noqa: E402


LOCAL = "http://127.0.0.1"          # the address the page is served at (other Host headers are refused)


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def aus(**values) -> list[float]:
    """17 intensities in AU_NAMES order from AU12=1.5-style keywords."""
    return [float(values.get(name, 0.0)) for name in AU_NAMES]


@pytest.fixture(scope="module")
def rig():
    from exprengine.default_engines import default_rig
    return default_rig()


@pytest.fixture(scope="module")
def bench(rig):
    b = Workbench(rig)
    yield b
    b.close()


@pytest.fixture(scope="module")
def client(bench):
    with TestClient(create_app(bench), raise_server_exceptions=False, base_url=LOCAL) as c:
        yield c


@pytest.fixture(scope="module")
def astro(client):
    """(the astronaut photo's PNG bytes, its session JSON)."""
    data = png_bytes(astronaut())
    r = client.post("/api/photo", files={"file": ("astronaut.png", data, "image/png")})
    assert r.status_code == 200, r.text
    return data, r.json()


@pytest.fixture(scope="module")
def pair(client):
    """(two astronauts side by side, PNG bytes; the session JSON)."""
    a = astronaut()
    data = png_bytes(np.concatenate([a, a[:, ::-1]], axis=1))
    r = client.post("/api/photo", files={"file": ("pair.png", data, "image/png")})
    assert r.status_code == 200, r.text
    return data, r.json()


def assert_one_sentence(r, status: int, *words: str):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert "\n" not in error and "Traceback" not in error and error.strip() == error and error, error
    for w in words:
        assert w in error, error
    return error


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_info_lists_the_17_aus_by_region_the_presets_and_no_age_engine(client):
    info = client.get("/api/info").json()
    names = [a["name"] for r in info["regions"] for a in r["aus"]]
    assert sorted(names) == sorted(AU_NAMES) and len(names) == 17
    assert {r["name"] for r in info["regions"]} == {"Brows", "Eyes", "Cheeks and nose", "Mouth", "Chin and jaw"}
    assert next(a for r in info["regions"] for a in r["aus"] if a["name"] == "AU12")["action"] == "lip corner puller"
    assert list(info["presets"]) == ["natural", "happiness", "sadness", "surprise", "fear", "anger", "disgust",
                                     "contempt"]
    assert info["presets"]["happiness"] == ["AU06", "AU12"]
    assert info["cap"] == 2.0 and info["age"] is False and info["engine"] == "rig"


def test_the_page_and_its_files_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>exprengine</title>" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    # nothing fetched from elsewhere: the machine may have no internet
    remote = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import|"""
                        r"""fetch\(\s*["'`](?:https?:)?//""")
    for f in ui_server.STATIC.iterdir():
        assert not remote.search(f.read_text()), f.name


def test_upload_finds_the_face_once_and_a_preview_is_one_engine_call_for_all_faces(client, bench, pair, monkeypatch):
    _, session = pair
    assert [f["editable"] for f in session["faces"]] == [True, True]
    assert (session["width"], session["height"]) == (1024, 512)
    calls = []
    engine = bench.engine
    original = engine.edit_detailed

    def counted(images, *args, **kwargs):
        calls.append(len(images))
        return original(images, *args, **kwargs)
    monkeypatch.setattr(engine, "edit_detailed", counted)
    monkeypatch.setattr(bench.detector, "detect", lambda *a, **k: pytest.fail("detected again for a preview"))
    plain = client.post("/api/preview", json={"session": session["session"], "aus": aus()})
    smile = client.post("/api/preview", json={"session": session["session"], "aus": aus(AU12=1.5), "face": "all"})
    assert plain.status_code == smile.status_code == 200 and smile.headers["content-type"] == "image/jpeg"
    assert calls == [2, 2]                                     # every chosen face, one call each time
    assert float(smile.headers["X-Server-Ms"]) > 0 and json.loads(smile.headers["X-Warnings"]) == []
    a, b = decode(plain.content), decode(smile.content)
    assert a.shape == b.shape == (512, 1024, 3)
    assert np.abs(a - b).mean() > 0.1                          # the smile shows
    one = decode(client.post("/api/preview", json={"session": session["session"], "aus": aus(AU12=1.5),
                                                   "face": 1}).content)
    assert calls[-1] == 1
    halves = np.abs(one - a)[:, :512].mean(), np.abs(one - a)[:, 512:].mean()
    moved = int(session["faces"][1]["left"] >= 512)           # the half where face #1 is
    assert halves[moved] > 0.05 and halves[1 - moved] == 0     # only face #1 moved


def test_download_is_the_bytes_exprengine_edit_writes_and_warnings_are_its_sentences(client, bench, astro, tmp_path,
                                                                                      capsys):
    data, session = astro
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(data)
    settings = {"session": session["session"], "aus": aus(AU12=1.5, AU23=1.0, AU25=0.6, AU45=0.35)}
    said = client.post("/api/warnings", json={"aus": settings["aus"]}).json()["warnings"]
    assert said == ["AU23 and AU25 conflict (lip tightener presses the lips together while lips part opens them); "
                    "the mouth or eyes may break"]
    assert json.loads(client.post("/api/preview", json=settings).headers["X-Warnings"]) == said
    r = client.post("/api/download", json={**settings, "format": "png"})
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == 'attachment; filename="astronaut_edited.png"'
    command = json.loads(r.headers["X-Command"])
    assert command == ("exprengine edit astronaut.png --au AU12=1.5 --au AU23=1 --au AU25=0.6 --au AU45=0.35 "
                       "--out astronaut_edited.png")
    assert json.loads(r.headers["X-Summary"]).startswith("found 1 face, edited 1 (#0 ")
    out = tmp_path / "cli.png"
    args = shlex.split(command)[1:]
    args[1], args[-1] = photo, out
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert out.read_bytes() == r.content                        # identical bytes
    assert [line.removeprefix("warning: ") for line in err.splitlines() if line.startswith("warning:")] == said
    # the preview is that photo (before its JPEG encoding): the paste-back, at full resolution
    full = bench.edited(bench.session(session["session"]), AUs(np.array(settings["aus"], np.float32)), "all")
    assert np.array_equal(full, np.asarray(Image.open(out)))


def test_a_chosen_face_downloads_as_exprengine_edit_face_n(client, pair, tmp_path, capsys):
    data, session = pair
    photo = tmp_path / "pair.png"
    photo.write_bytes(data)
    r = client.post("/api/download", json={"session": session["session"], "aus": aus(AU01=1.5, AU02=1.5, AU26=1),
                                           "face": 1, "format": "jpeg"})
    command = json.loads(r.headers["X-Command"])
    assert command.endswith("--face 1 --out pair_edited.jpg"), command
    out = tmp_path / "pair_edited.jpg"
    args = shlex.split(command)[1:]
    args[1], args[-1] = photo, out
    assert run_cli(args, capsys)[0] == 0
    assert out.read_bytes() == r.content and r.headers["content-type"] == "image/jpeg"


def test_an_ordinary_file_name_is_kept_in_the_command_and_the_download(client, tmp_path, capsys, monkeypatch):
    """Spaces, brackets, an accent and a quote: the command shows the name shell-quoted and runs as
    shown; the download is named after it (RFC 5987's filename* for what a header cannot carry)."""
    name = "my photo (1) é's.png"
    data = png_bytes(astronaut())
    r = client.post("/api/photo", files={"file": (name, data, "image/png")})
    assert r.status_code == 200 and r.json()["name"] == name, r.text
    sid = r.json()["session"]
    d = client.post("/api/download", json={"session": sid, "aus": aus(AU12=1.0), "format": "png"})
    assert d.status_code == 200, d.text
    out_name = "my photo (1) é's_edited.png"
    assert d.headers["content-disposition"] == ("attachment; filename=\"my photo (1) _'s_edited.png\"; "
                                                "filename*=UTF-8''my%20photo%20%281%29%20%C3%A9%27s_edited.png")
    command = json.loads(d.headers["X-Command"])
    assert command == f"exprengine edit {shlex.quote(name)} --au AU12=1 --out {shlex.quote(out_name)}"
    assert json.loads(d.headers["X-Summary"]).startswith("found 1 face, edited 1")
    monkeypatch.chdir(tmp_path)                    # the command as shown, beside the photo
    (tmp_path / name).write_bytes(data)
    code, _, err = run_cli(shlex.split(command)[1:], capsys)
    assert code == 0, err
    assert (tmp_path / out_name).read_bytes() == d.content
    m = client.post("/api/morph", json={"session": sid, "aus": aus(), "preset": "surprise", "frames": 2})
    gif = client.get(f"/api/animation/{sid}/{m.json()['id']}.gif")
    assert gif.headers["content-disposition"].endswith("filename*=UTF-8''my%20photo%20%281%29%20%C3%A9%27s_morph_surprise.gif")
    bad = client.post("/api/photo", files={"file": ("notes é.txt", b"not an image", "text/plain")})
    assert_one_sentence(bad, 422, "notes é.txt is not an image")


def test_a_name_that_starts_with_a_dash_is_not_read_as_an_option(client, tmp_path, capsys, monkeypatch):
    """`-dash.png` would be an option on the command line: the command says `./-dash.png` and runs as shown."""
    data = png_bytes(astronaut())
    r = client.post("/api/photo", files={"file": ("-dash.png", data, "image/png")})
    sid = r.json()["session"]
    d = client.post("/api/download", json={"session": sid, "aus": aus(AU12=1.0), "format": "png"})
    command = json.loads(d.headers["X-Command"])
    assert command == "exprengine edit ./-dash.png --au AU12=1 --out ./-dash_edited.png"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-dash.png").write_bytes(data)
    code, _, err = run_cli(shlex.split(command)[1:], capsys)
    assert code == 0, err
    assert (tmp_path / "-dash_edited.png").read_bytes() == d.content


def test_morph_is_one_engine_call_and_downloads_as_gif_and_mp4(client, bench, astro, monkeypatch):
    _, session = astro
    calls = []
    original = bench.engine.run_frames
    monkeypatch.setattr(bench.engine, "run_frames", lambda *a, **k: calls.append(1) or original(*a, **k))
    r = client.post("/api/morph", json={"session": session["session"], "aus": aus(AU12=1.0), "preset": "surprise",
                                        "intensity": 1.5, "frames": 6, "schedule": "linear"})
    assert r.status_code == 200, r.text
    assert r.json()["frames"] == 6 and calls == [1]
    gif = client.get(f"/api/animation/{session['session']}/{r.json()['id']}.gif")
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
    with Image.open(io.BytesIO(gif.content)) as im:
        assert im.n_frames == 6 and im.size == (256, 256)
    mp4 = client.get(f"/api/animation/{session['session']}/{r.json()['id']}.mp4")
    assert mp4.status_code == 200 and mp4.content[4:8] == b"ftyp"
    assert_one_sentence(client.post("/api/morph", json={"session": session["session"], "aus": aus(),
                                                        "preset": "joy"}), 422, "unknown preset 'joy'")
    assert_one_sentence(client.post("/api/morph", json={"session": session["session"], "aus": aus(),
                                                        "preset": "surprise", "frames": 1000}), 422, "frames")
    assert_one_sentence(client.get(f"/api/animation/{session['session']}/nope.gif"), 404, "render it again")


def test_a_morph_has_2_frames_at_least_says_an_empty_count_and_names_its_face(client, pair):
    """The page's field has min=2; the server agrees (info's min_frames, one sentence for 1 and for none);
    with all faces chosen the answer says which face the morph shows."""
    sid = pair[1]["session"]
    assert client.get("/api/info").json()["min_frames"] == 2
    body = {"session": sid, "aus": aus(), "preset": "surprise"}
    assert_one_sentence(client.post("/api/morph", json={**body, "frames": 1}), 422,
                        "frames must be a whole number from 2 to 96, got 1")
    assert_one_sentence(client.post("/api/morph", json={**body, "frames": None}), 422,
                        "frames is empty; give a whole number from 2 to 96")
    assert client.post("/api/morph", json={**body, "frames": 2}).json()["face"] == 0     # the most confident
    assert client.post("/api/morph", json={**body, "frames": 2, "face": 1}).json()["face"] == 1


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height (one row of data: the size is refused on the header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + \
        chunk(b"IEND", b"")


def test_bad_uploads_are_one_sentence_each(client, monkeypatch):
    def upload(name, data):
        return client.post("/api/photo", files={"file": (name, data, "application/octet-stream")})
    assert_one_sentence(upload("notes.txt", b"not an image at all"), 422, "notes.txt is not an image")
    assert_one_sentence(upload("empty.png", b""), 422, "empty.png is empty")
    assert_one_sentence(upload("huge.png", huge_png(9000, 9000)), 422, "huge.png is larger than the limit of 67,108,864")
    error = assert_one_sentence(upload("coffee.png", png_bytes(coffee())), 422, "no face found in coffee.png")
    assert "/tmp" not in error                                  # the user's file name, not the server's path
    assert_one_sentence(upload("cut.png", png_bytes(astronaut())[:5000]), 422, "cut.png is truncated or corrupt")
    monkeypatch.setattr(ui_server, "MAX_UPLOAD_BYTES", 1000)
    assert_one_sentence(upload("big.png", png_bytes(astronaut())), 413, "big.png is larger than the upload limit")
    assert_one_sentence(client.post("/api/photo", data={"x": "1"}), 422, "form field file")


def test_bad_settings_are_one_sentence_each(client, bench, astro, monkeypatch):
    sid = astro[1]["session"]
    post = client.post
    assert_one_sentence(post("/api/preview", json={"session": sid, "aus": [1.0] * 3}), 422, "aus must be 17")
    assert_one_sentence(post("/api/preview", json={"session": sid, "aus": aus(AU12=7)}), 422,
                        "AU12=7 is outside the OpenFace range 0 to 5")
    assert_one_sentence(post("/api/preview", json={"session": sid, "aus": ["x"] * 17}), 422, "numbers")
    assert_one_sentence(post("/api/preview", json={"session": sid, "aus": aus(), "face": 3}), 422,
                        "only 1 face found")
    assert_one_sentence(post("/api/preview", json={"session": "gone", "aus": aus()}), 404, "load it again")
    error = assert_one_sentence(post("/api/preview", json={"session": sid, "aus": aus(), "age": 60}), 422,
                                "no age engine is loaded")
    assert "(" not in error and "/" not in error
    assert client.get("/api/info").json()["age_note"] == ("No age model is installed: start the page with "
                                                          "--engine-age DIR, an engine built from a LATS generator.")
    assert_one_sentence(post("/api/download", json={"session": sid, "aus": aus(), "format": "tiff"}), 422,
                        "format must be one of png, jpeg, webp")
    assert_one_sentence(post("/api/preview", content=b"{not json", headers={"Content-Type": "application/json"}),
                        422, "JSON object")
    above = post("/api/warnings", json={"aus": aus(AU12=2.5)}).json()["warnings"]
    assert above == ["AU12=2.5 is above the intensity cap 2 (the thesis finds images break above about 2.0)"]
    # a bug is one line too, never a traceback
    monkeypatch.setattr(bench, "preview", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom\nmore")))
    assert assert_one_sentence(post("/api/preview", json={"session": sid, "aus": aus()}), 500) == \
        "internal error (RuntimeError: boom)"


def test_requests_for_another_host_and_posts_from_another_origin_are_refused(client, bench):
    """DNS rebinding (a page of evil.example whose name now points at 127.0.0.1) and cross-site
    POSTs: 400 and 403, one sentence each; the page's own requests pass."""
    assert client.get("/api/info", headers={"Host": "localhost:7860"}).status_code == 200
    assert client.get("/api/info", headers={"Host": "[::1]:7860"}).status_code == 200
    assert_one_sentence(client.get("/api/info", headers={"Host": "evil.example:7860"}), 400,
                        "not to evil.example:7860", "DNS rebinding")
    assert_one_sentence(client.get("/", headers={"Host": "127.0.0.1.evil.example"}), 400)
    warnings = {"aus": aus()}
    assert client.post("/api/warnings", json=warnings, headers={"Origin": LOCAL}).status_code == 200
    assert client.post("/api/warnings", json=warnings).status_code == 200                   # no Origin: not a browser
    assert_one_sentence(client.post("/api/warnings", json=warnings, headers={"Origin": "http://evil.example"}), 403,
                        "http://evil.example")
    assert_one_sentence(client.post("/api/warnings", json=warnings, headers={"Origin": "null"}), 403)
    assert_one_sentence(client.post("/api/warnings", json=warnings, headers={"Origin": "http://127.0.0.1:8000"}), 403)
    # bound to every interface: any host name the network knows this computer by
    with TestClient(create_app(bench, "0.0.0.0"), base_url="http://studio.lan:7860") as lan:
        assert lan.get("/api/info").status_code == 200
        assert lan.post("/api/warnings", json=warnings, headers={"Origin": "http://studio.lan:7860"}).status_code == 200
    with TestClient(create_app(bench, "192.168.1.5"), base_url="http://192.168.1.5:7860") as lan:
        assert lan.get("/api/info").status_code == 200
        assert lan.get("/api/info", headers={"Host": "studio.lan"}).status_code == 400


def test_ages_and_the_lifespan_with_an_age_engine(rig, tmp_path):
    from exprengine.engine import Engine
    from exprengine.faces.age import AgeEditor
    from exprengine.faces.photo import age_photo_file
    from exprengine.models import create_model
    age = Engine.from_generator(create_model("lats-small", seed=0))     # random weights: it changes pixels
    bench = Workbench(rig, age)
    with TestClient(create_app(bench), raise_server_exceptions=False, base_url=LOCAL) as client:
        assert client.get("/api/info").json()["age"] is True
        data = png_bytes(astronaut())
        sid = client.post("/api/photo", files={"file": ("astronaut.png", data, "image/png")}).json()["session"]
        plain = decode(client.post("/api/preview", json={"session": sid, "aus": aus()}).content)
        old = decode(client.post("/api/preview", json={"session": sid, "aus": aus(), "age": 60}).content)
        assert np.abs(old - plain).mean() > 0.1
        r = client.post("/api/download", json={"session": sid, "aus": aus(), "age": 60})
        assert json.loads(r.headers["X-Command"]) == "exprengine age astronaut.png --to 60 --out astronaut_aged.png"
        photo = tmp_path / "astronaut.png"
        photo.write_bytes(data)
        age_photo_file(photo, tmp_path / "lib.png", age, 60, AgeEditor(age, bench.detector))   # what the command runs
        assert (tmp_path / "lib.png").read_bytes() == r.content
        t = client.post("/api/traverse", json={"session": sid, "frames": 3})
        assert t.status_code == 200 and t.json()["frames"] == 3
        with Image.open(io.BytesIO(client.get(f"/api/animation/{sid}/{t.json()['id']}.gif").content)) as im:
            assert im.n_frames == 3
        assert_one_sentence(client.post("/api/preview", json={"session": sid, "aus": aus(), "age": 90}), 422,
                            "age must be between 0 and 70 years, got 90")
    bench.close()


def test_the_server_listens_on_127_0_0_1_by_default_and_refuses_a_port_in_use():
    import inspect
    assert inspect.signature(ui_server.serve).parameters["host"].default == "127.0.0.1"
    from exprengine.cli.ui import ui
    assert next(p for p in ui.params if p.name == "host").default == "127.0.0.1"
    assert inspect.signature(ui_server.bind).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(ui_server.serve).parameters["port"].default == 7860
    sock = ui_server.bind(port=0)            # the default address, any free port
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1"
        with pytest.raises(UserError, match=f"cannot listen on `host` 127.0.0.1 `port` {port}"):
            ui_server.bind("127.0.0.1", port)
    finally:
        sock.close()
    for host in ("999.1.1.1", "192.0.2.1"):          # not an address; not this computer's (TEST-NET-1)
        with pytest.raises(UserError, match=f"cannot listen on `host` {host}: it is not a valid address of "
                                            "this computer") as e:
            ui_server.bind(host, 0)
        assert "`port`" not in str(e.value)


def test_exprengine_ui_prints_its_url_serves_the_page_and_stops_on_sigterm(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "exprengine", "ui", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving the editing page at http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[5]
        with urllib.request.urlopen(url, timeout=30) as page:
            assert b"<title>exprengine</title>" in page.read()
        with urllib.request.urlopen(url + "api/info", timeout=30) as info:
            assert json.load(info)["engine"] == "rig"
        with pytest.raises(urllib.error.HTTPError) as refused:      # DNS rebinding, through uvicorn
            urllib.request.urlopen(urllib.request.Request(url + "api/info", headers={"Host": "evil.example"}),
                                   timeout=30)
        assert refused.value.code == 400
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "warning:" not in err
    assert "/" not in "".join(line for line in err.splitlines() if line.startswith("note:"))    # no paths


def test_exprengine_ui_on_another_host_warns_that_the_network_can_use_it(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "exprengine", "ui", "--host", "0.0.0.0", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving the editing page at http://0.0.0.0:"), line + proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert ("warning: the page has no login and --host 0.0.0.0 makes it reachable from the network: anyone who "
            "can reach this port can use it") in err.splitlines()


def test_static_files_ship_with_the_package():
    import tomllib
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "static/*" in project["tool"]["setuptools"]["package-data"]["exprengine.ui"]
    assert {p.name for p in ui_server.STATIC.iterdir()} >= {"index.html", "app.js", "style.css"}
    assert ui_state.PREVIEW_MAX_SIDE >= 512
