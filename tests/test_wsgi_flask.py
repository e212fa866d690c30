"""Flask under microasgi: the same requests through Flask's own test client and through
a microasgi App that mounts the Flask app at /flask must get the same answers.

Also the examples/wsgi_mount example, and (marked integration) Flask behind a real
uvicorn, where a client that leaves must stop the WSGI app.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import flask
import httpx
import pytest

from microasgi import App
from microasgi.wsgi import WSGIApp
from tests.helpers import MakeClient, free_port

IGNORED_HEADERS = {"date", "server"}


def make_flask_app() -> Any:
    app = flask.Flask("compare")
    request = flask.request

    @app.get("/")
    def index() -> str:
        return "hello from flask"

    @app.get("/where/<name>")
    def where(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "path": request.path,
            "script_root": request.script_root,
            "url": request.url,
            "url_for": flask.url_for("where", name="x"),
            "args": request.args.to_dict(flat=False),
            "remote_addr_given": request.remote_addr is not None,
        }

    @app.post("/form")
    def form() -> dict[str, Any]:
        return {"form": request.form.to_dict(flat=False), "type": request.mimetype}

    @app.post("/upload")
    def upload() -> dict[str, Any]:
        files = {}
        for field, storage in request.files.items():
            data = storage.read()
            files[field] = {
                "filename": storage.filename,
                "content_type": storage.content_type,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        return {"files": files, "fields": request.form.to_dict()}

    @app.post("/echo")
    def echo() -> Any:
        return flask.Response(request.get_data(), mimetype="application/octet-stream")

    @app.get("/set-cookie")
    def set_cookie() -> Any:
        response = flask.make_response("cookies set")
        response.set_cookie("theme", "dark", httponly=True, samesite="Lax")
        response.set_cookie("lang", "en", path="/flask", max_age=3600)
        return response

    @app.get("/cookies")
    def cookies() -> dict[str, str]:
        return dict(request.cookies)

    @app.get("/redirect")
    def redirect() -> Any:
        return flask.redirect(flask.url_for("index"))

    @app.get("/stream")
    def stream() -> Any:
        def lines() -> Iterator[str]:
            for n in range(5):
                yield f"line {n}\n"

        return flask.Response(lines(), mimetype="text/plain")

    @app.post("/only-post")
    def only_post() -> str:
        return "posted"

    @app.get("/headers")
    def headers() -> dict[str, Any]:
        return {
            "custom": request.headers.getlist("X-Custom"),
            "agent": request.headers.get("User-Agent", "").startswith(("python", "Werkzeug")),
        }

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("flask view failed")

    return app


@pytest.fixture
def flask_app() -> Any:
    return make_flask_app()


@pytest.fixture
def both(flask_app: Any, make_client: MakeClient) -> Iterator[tuple[Any, Any]]:
    """(Flask's test client with SCRIPT_NAME=/flask, a TestClient of an App mounting it there)."""
    app = App()
    app.mount("/flask", WSGIApp(flask_app))

    @app.get("/native")
    async def native() -> str:
        return "native route"

    with make_client(app, follow_redirects=False) as client:
        yield flask_app.test_client(), client


def flask_request(client: Any, method: str, path: str, **options: Any) -> Any:
    return client.open(path, method=method, base_url="http://testserver/flask", **options)


def assert_same(theirs: Any, ours: httpx.Response) -> None:
    """Status, headers (but Date and Server) in order, and body."""
    their_headers = [(k.lower(), v) for k, v in theirs.headers if k.lower() not in IGNORED_HEADERS]
    our_headers = [
        (k.decode().lower(), v.decode("latin-1"))
        for k, v in ours.headers.raw
        if k.decode().lower() not in IGNORED_HEADERS
    ]
    assert ours.status_code == theirs.status_code
    assert our_headers == their_headers
    assert ours.content == theirs.get_data()


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/where/alice?a=1&a=2&b=%C3%A9",
        "/where/caf%C3%A9",
        "/where/a%20b",
        "/missing",
        "/only-post",
        "/boom",
    ],
)
def test_get_requests_match(both: tuple[Any, Any], path: str) -> None:
    theirs_client, ours_client = both
    assert_same(flask_request(theirs_client, "GET", path), ours_client.get("/flask" + path))


def test_head_matches(both: tuple[Any, Any]) -> None:
    theirs_client, ours_client = both
    ours = ours_client.head("/flask/")
    assert_same(flask_request(theirs_client, "HEAD", "/"), ours)
    assert ours.content == b"" and ours.headers["content-length"] == "16"


def test_form_post_matches(both: tuple[Any, Any]) -> None:
    theirs_client, ours_client = both
    fields = {"name": "Zoë", "tags": ["a", "b"]}
    theirs = flask_request(theirs_client, "POST", "/form", data=fields)
    ours = ours_client.post("/flask/form", data=fields)
    assert_same(theirs, ours)
    assert ours.json()["form"] == {"name": ["Zoë"], "tags": ["a", "b"]}


@pytest.mark.parametrize("size", [0, 1000, 3 * 1024 * 1024 + 17])
def test_file_upload_matches(both: tuple[Any, Any], size: int) -> None:
    theirs_client, ours_client = both
    content = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    theirs = flask_request(
        theirs_client,
        "POST",
        "/upload",
        data={"note": "q3", "file": (io.BytesIO(content), "report.csv", "text/csv")},
    )
    ours = ours_client.post(
        "/flask/upload", data={"note": "q3"}, files={"file": ("report.csv", content, "text/csv")}
    )
    assert_same(theirs, ours)
    assert ours.json()["files"]["file"]["size"] == size


def test_raw_body_matches(both: tuple[Any, Any]) -> None:
    theirs_client, ours_client = both
    payload = b"\x00\x01binary\xff" * 1000
    assert_same(
        flask_request(theirs_client, "POST", "/echo", data=payload),
        ours_client.post("/flask/echo", content=payload),
    )


def test_cookies_match(both: tuple[Any, Any]) -> None:
    theirs_client, ours_client = both
    theirs = flask_request(theirs_client, "GET", "/set-cookie")
    ours = ours_client.get("/flask/set-cookie")
    assert_same(theirs, ours)
    assert len(ours.headers.get_list("set-cookie")) == 2
    cookie = {"Cookie": "theme=dark; lang=en"}
    theirs = flask_request(theirs_client, "GET", "/cookies", headers=cookie)
    ours = ours_client.get("/flask/cookies", headers=cookie)
    assert_same(theirs, ours)
    assert ours.json() == {"theme": "dark", "lang": "en"}


def test_redirect_matches(both: tuple[Any, Any]) -> None:
    theirs_client, ours_client = both
    theirs = flask_request(theirs_client, "GET", "/redirect")
    ours = ours_client.get("/flask/redirect")
    assert_same(theirs, ours)
    assert ours.status_code == 302
    assert ours.headers["location"] == "/flask/"


def test_repeated_headers_match(both: tuple[Any, Any]) -> None:
    theirs_client, ours_client = both
    headers = [("X-Custom", "one"), ("X-Custom", "two")]
    theirs = flask_request(theirs_client, "GET", "/headers", headers=headers)
    ours = ours_client.get("/flask/headers", headers=headers)
    assert_same(theirs, ours)
    assert ours.json()["custom"] == ["one, two"]


def test_streamed_response_matches_and_streams(both: tuple[Any, Any]) -> None:
    theirs_client, ours_client = both
    theirs = flask_request(theirs_client, "GET", "/stream")
    assert_same(theirs, ours_client.get("/flask/stream"))
    with ours_client.stream("GET", "/flask/stream") as response:
        chunks = list(response.iter_raw())
    assert chunks == [f"line {n}\n".encode() for n in range(5)]  # one chunk per yield
    assert "content-length" not in response.headers


def test_native_routes_live_next_to_flask(both: tuple[Any, Any]) -> None:
    _, ours_client = both
    assert ours_client.get("/native").text == "native route"
    assert ours_client.get("/flask/").text == "hello from flask"
    assert ours_client.get("/flaskx").status_code == 404


# -- the example --------------------------------------------------------------------------


def test_example_app(make_client: MakeClient) -> None:
    from examples.wsgi_mount import app

    with make_client(app, follow_redirects=False) as client:
        assert client.get("/api/health").json() == {"status": "ok", "served_by": "microasgi"}
        assert "/legacy/" in client.get("/").text
        page = client.get("/legacy/")
        assert page.status_code == 200
        assert "SCRIPT_NAME is '/legacy'" in page.text
        assert client.get("/legacy/old-home").headers["location"] == "/legacy/"
        assert app.url_path_for("legacy", path="old-home") == "/legacy/old-home"
        content = b"0123456789abcdef" * 10_000
        result = client.post("/legacy/upload", files={"file": ("data.bin", content)}).json()
        assert result == {
            "filename": "data.bin",
            "size": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }


# -- behind a real uvicorn ------------------------------------------------------------------


class Probe:
    """WSGI apps that report, from their threads, what happened to them."""

    def __init__(self) -> None:
        self.stream_closed = threading.Event()
        self.chunks_made = 0
        self.upload_calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/endless":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return self.endless()
        self.upload_calls += 1
        while environ["wsgi.input"].read(65536):
            pass
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read it all"]

    def endless(self) -> Iterator[bytes]:
        try:
            for _ in range(3000):  # about 30 s at most: a bound, not a hang
                self.chunks_made += 1
                yield b"tick\n" * 100
                time.sleep(0.01)
        finally:
            self.stream_closed.set()


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during startup"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "uvicorn did not shut down"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Probe]]:
    from examples.wsgi_mount import app as example

    probe = Probe()
    app = App()
    app.mount("/probe", WSGIApp(probe))
    app.mount("", example)
    with serve(app) as base_url:
        yield base_url, probe


@pytest.mark.integration
def test_uvicorn_serves_flask_with_streaming(served: tuple[str, Probe]) -> None:
    base_url, _ = served
    with httpx.Client(base_url=base_url, timeout=10) as client:
        assert client.get("/api/health").json()["status"] == "ok"
        assert "'/legacy'" in client.get("/legacy/").text
        start = time.monotonic()
        with client.stream("GET", "/legacy/countdown") as response:
            lines = response.iter_lines()
            assert next(lines) == "5..."
            first_after = time.monotonic() - start
            rest = list(lines)
        assert rest == ["4...", "3...", "2...", "1...", "liftoff"]
        assert first_after < 0.6 < time.monotonic() - start  # streamed, not buffered
        content = bytes(range(256)) * (8 * 1024 * 1024 // 256)
        result = client.post("/legacy/upload", files={"file": ("big.bin", content)}).json()
        assert result["size"] == len(content)
        assert result["sha256"] == hashlib.sha256(content).hexdigest()


@pytest.mark.integration
def test_uvicorn_client_leaving_mid_response_stops_the_app(served: tuple[str, Probe]) -> None:
    """uvicorn drops sends after a disconnect silently: only watching receive() notices."""
    base_url, probe = served
    with (
        httpx.Client(base_url=base_url, timeout=10) as client,
        client.stream("GET", "/probe/endless") as response,
    ):
        chunks = response.iter_raw()
        next(chunks)
        next(chunks)
    assert probe.stream_closed.wait(5), "the generator was not closed after the client left"
    made = probe.chunks_made
    time.sleep(0.2)
    assert probe.chunks_made == made  # and it is not iterated any more


@pytest.mark.integration
def test_uvicorn_client_leaving_mid_upload_never_reaches_the_app(
    served: tuple[str, Probe],
) -> None:
    """The body is read before the app gets a thread: half an upload never reaches it."""
    base_url, probe = served
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /probe/upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n"
            + b"x" * 200_000
        )
        time.sleep(0.2)
    with httpx.Client(base_url=base_url, timeout=10) as client:
        whole = client.post("/probe/upload", content=b"x" * 1_000_000)
    assert whole.text == "read it all"
    assert probe.upload_calls == 1  # the whole upload only
