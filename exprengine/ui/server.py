"""The web page's server: a FastAPI app over a `state.Workbench`, and `serve` to run it.

    app = create_app(Workbench(engine))                      # the page at /, its API under /api
    serve(app, "127.0.0.1", 7860, ready=print)               # blocks; `ready` gets the URL

Routes (JSON in and out unless said; every error is {"error": one sentence} with status 4xx,
or 500 for a bug, never a traceback):

    GET  /                         the page (static/index.html; static/app.js, static/style.css)
    GET  /api/info                 the controls: AUs by region, presets, conflicts, cap, age engine
    POST /api/warnings             {aus} -> {warnings}: the CLI's sentences for these settings
    POST /api/photo                multipart `file` -> the session: size and faces found (413: too
                                   large a file; 422: not an image, too many pixels, no face)
    GET  /api/photo/{sid}/original the unedited photo as a display-size JPEG
    POST /api/preview              {session, aus, face, age} -> image/jpeg at display size; headers
                                   X-Warnings (JSON list), X-Server-Ms
    POST /api/download             {session, aus, face, age, format} -> the full-resolution file
                                   (attachment); headers X-Summary, X-Command (JSON strings)
    POST /api/morph                {session, aus, preset, intensity, frames, schedule, face}
                                   -> {id, frames, face}: `face`, the face morphed (with "all", the
                                   most confident one)
    POST /api/traverse             {session, face, frames} -> {id, frames, face} (with an age engine)
    GET  /api/animation/{sid}/{id}.{gif|mp4}  a rendered morph or traversal (attachment)

File names are the user's own: a download is named after the uploaded file's stem, sent as
RFC 6266's `filename` (ASCII, other characters replaced) and RFC 5987's `filename*` (UTF-8).

The server binds to 127.0.0.1 unless told otherwise. Against DNS rebinding, a request whose Host
header names another host than the bound one or localhost is refused (400; with a wildcard
address, 0.0.0.0 or ::, any Host is accepted), and against cross-site requests a POST whose
Origin header is not the page's own origin (403).
"""
from __future__ import annotations

import errno
import json
import logging
import shutil
import socket
import threading
import urllib.parse
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from exprengine.errors import UserError
from exprengine.ui.state import MAX_UPLOAD_BYTES, Workbench, display_name

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: Host names every server answers to, whatever address it is bound to.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
#: Addresses that listen on every interface: any Host header is accepted there.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
log = logging.getLogger("exprengine.ui")


class TooLarge(UserError):
    """An upload over `state.MAX_UPLOAD_BYTES` (HTTP 413)."""


class NotOpen(UserError):
    """A session or animation the server no longer keeps (HTTP 404)."""


def create_app(bench: Workbench, host: str = DEFAULT_HOST):
    """The FastAPI app serving the page and its API (see the module docstring) over `bench`, to be
    bound to `host` (requests naming another host than it or localhost are refused, 400; POSTs
    from another origin, 403). The app closes `bench` (its uploads) when it shuts down."""
    allowed = None if host.strip("[]") in WILDCARD_HOSTS else {h.lower() for h in (*LOCAL_HOSTS, host.strip("[]"))}

    @asynccontextmanager
    async def lifespan(app):
        yield
        bench.close()

    app = FastAPI(title="exprengine", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.bench = bench

    @app.exception_handler(UserError)
    async def user_error(request: Request, e: UserError):
        status = 413 if isinstance(e, TooLarge) else 404 if isinstance(e, NotOpen) else 422
        return JSONResponse({"error": _plain(str(e))}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError):
        what = "a photo file in the form field `file`" if request.url.path == "/api/photo" else "a JSON object"
        return JSONResponse({"error": _plain(f"the request must carry {what}")}, status_code=422)

    @app.middleware("http")
    async def no_tracebacks(request: Request, call_next):
        try:
            return await call_next(request)
        except Exception as e:  # noqa: BLE001 -- a bug: one line to the page, the log keeps the rest
            log.exception("error in %s %s", request.method, request.url.path)
            line = str(e).splitlines()[0] if str(e).strip() else ""
            return JSONResponse({"error": f"internal error ({type(e).__name__}{': ' + line if line else ''})"},
                                status_code=500)

    @app.middleware("http")
    async def same_host_and_origin(request: Request, call_next):
        said = request.headers.get("host")
        if said is not None and allowed is not None and _hostname(said) not in allowed:
            names = sorted(allowed)
            return JSONResponse({"error": f"this server answers only requests to {', '.join(names[:-1])} or "
                                          f"{names[-1]}, not to {said} (a defence against DNS rebinding)"},
                                status_code=400)
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin is not None and \
                not _same_origin(origin, said):
            return JSONResponse({"error": f"requests from another page ({origin}) are refused: only this page "
                                          "may change its photos"}, status_code=403)
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info():
        return bench.info()

    @app.post("/api/warnings")
    def check(body: dict[str, Any]):
        _, said = bench.target(body.get("aus"))
        return {"warnings": said}

    @app.post("/api/photo")
    def upload(file: UploadFile = File(...)):
        name = display_name(file.filename)
        sid, path = bench.new_place(name)
        try:
            _save(file, path, name)
            session = bench.open(sid, path, name)
        except BaseException:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise
        return session.describe()

    @app.get("/api/photo/{sid}/original")
    def original(sid: str):
        return Response(bench.original(_session(sid)), media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.post("/api/preview")
    def preview(body: dict[str, Any]):
        session, target, said, select, years = _settings(body)
        data, ms = bench.preview(session, target, select, years)
        return Response(data, media_type="image/jpeg",
                        headers={"X-Warnings": json.dumps(said), "X-Server-Ms": f"{ms:.1f}", "Cache-Control": "no-store"})

    @app.post("/api/download")
    def download(body: dict[str, Any]):
        session, target, _, select, years = _settings(body)
        data, name, summary, command = bench.download(session, target, select, years, body.get("format", "png"))
        return Response(data, media_type=_media_type(name), headers={
            "Content-Disposition": attachment(name), "X-Summary": json.dumps(summary),
            "X-Command": json.dumps(command), "Cache-Control": "no-store"})

    @app.post("/api/morph")
    def morph(body: dict[str, Any]):
        session, source, _, select, _ = _settings(body)
        aid, frames, face = bench.morph(session, source, str(body.get("preset", "")),
                                        _float(body.get("intensity", 1.0)), body.get("frames", 24),
                                        str(body.get("schedule", "ease-in-out")), select)
        return {"id": aid, "frames": frames, "face": face}

    @app.post("/api/traverse")
    def traverse(body: dict[str, Any]):
        session = _session(body.get("session"))
        aid, frames, face = bench.traverse(session, bench.select(session, body.get("face", "all")),
                                           body.get("frames", 25))
        return {"id": aid, "frames": frames, "face": face}

    @app.get("/api/animation/{sid}/{name}")
    def animation(sid: str, name: str):
        aid, _, kind = name.rpartition(".")
        try:
            data, filename = bench.animation(_session(sid), aid, kind)
        except UserError as e:
            raise NotOpen(str(e)) from None
        return Response(data, media_type="image/gif" if kind == "gif" else "video/mp4",
                        headers={"Content-Disposition": attachment(filename)})

    def _session(sid):
        try:
            return bench.session(str(sid))
        except UserError as e:
            raise NotOpen(str(e)) from None

    def _settings(body: dict):
        session = _session(body.get("session"))
        target, said = bench.target(body.get("aus"))
        return session, target, said, bench.select(session, body.get("face", "all")), bench.age_years(body.get("age"))

    return app


def _save(file, path: Path, name: str) -> None:
    """Copy an upload (the user's file `name`) to `path`; TooLarge past MAX_UPLOAD_BYTES (the
    partial file is removed by the caller)."""
    size = 0
    with open(path, "wb") as out:
        while chunk := file.file.read(1 << 20):
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                raise TooLarge(f"{name} is larger than the upload limit of {MAX_UPLOAD_BYTES // 2**20} MB")
            out.write(chunk)
    if size == 0:
        raise UserError(f"{name} is empty (0 bytes), not an image")


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"`intensity` must be a number, not {value!r}") from None


def attachment(name: str) -> str:
    """A Content-Disposition header value for a download named `name`: `filename` with what HTTP
    headers cannot carry (characters outside printable ASCII, quotes, backslashes) replaced by `_`,
    and, when that changed it, RFC 5987's `filename*` with the name in UTF-8, which browsers prefer."""
    plain = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name)
    if plain == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


def _hostname(host: str) -> str:
    """The host of a Host header, without its port or IPv6 brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _same_origin(origin: str, host: str | None) -> bool:
    """Whether an Origin header names the page served under the Host header `host`."""
    parts = urllib.parse.urlsplit(origin)
    return host is not None and parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


def _plain(message: str) -> str:
    """A library sentence for the page: its quoted argument names without the backquotes."""
    return message.replace("`", "")


def _media_type(name: str) -> str:
    return {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}.get(Path(name).suffix, "application/octet-stream")


def bind(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """A listening TCP socket on `host`:`port` (port 0: any free port). UserError when the port is in
    use or cannot be bound, or when `host` is not an address of this computer."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if isinstance(e, socket.gaierror) or e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EINVAL):
            raise UserError(f"cannot listen on `host` {host}: it is not a valid address of this computer "
                            f"({e.strerror or e}); give one of its own, such as 127.0.0.1") from None
        raise UserError(f"cannot listen on `host` {host} `port` {port} ({e.strerror or e}); choose another `port`") from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    """http://host:port/ of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(app, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, ready=None, log_level: str = "warning") -> None:
    """Serve `app` with uvicorn on `host`:`port` until interrupted (Ctrl-C or SIGTERM: uvicorn
    finishes the requests in flight, then the signal goes on to the caller). `ready(url)` is
    called once the socket listens. UserError when the port cannot be bound."""
    import uvicorn
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5))
    if ready is not None:
        ready(url_of(sock))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def serving(app, host: str = DEFAULT_HOST, port: int = 0):
    """Serve `app` with uvicorn in a background thread while the `with` block runs -> its URL
    (port 0: any free port); the server is stopped when the block ends. For tests, benchmarks
    and notebooks; the command line uses `serve`."""
    import uvicorn
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            threading.Event().wait(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
