"""The files example (download page, static site) behind a real uvicorn, spoken to with
httpx (streaming) and raw sockets; FileResponse against files that change mid-download;
pathsend through a real granian."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from examples.files.app import HERE as EXAMPLE
from microasgi import App, FileResponse
from tests.services import ROOT, ServerProcess, free_port, wait_for_port

pytestmark = pytest.mark.integration
uvicorn = pytest.importorskip("uvicorn")

BIG = 8 * 1024 * 1024 + 123
ODD_NAME = 'naïve "quoted" name.txt'


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("downloads")
    for item in (EXAMPLE / "downloads").iterdir():
        shutil.copy2(item, directory / item.name)
    (directory / "big.bin").write_bytes(os.urandom(BIG))
    (directory / ODD_NAME).write_bytes(b"odd")
    return directory


@pytest.fixture(scope="module")
def server(downloads: Path) -> Iterator[ServerProcess]:
    env = {"MICROASGI_FILES_DOWNLOADS": str(downloads)}
    with ServerProcess("examples.files:app", free_port(), env=env) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=10) as client:
        yield client


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- downloads --------------------------------------------------------------------------------


def test_download_page(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert 'href="/downloads/big.bin"' in page.text
    assert "naïve &quot;quoted&quot; name.txt" in page.text


def test_streamed_download(client: httpx.Client, downloads: Path) -> None:
    expected = (downloads / "big.bin").read_bytes()
    chunks = []
    with client.stream("GET", "/downloads/big.bin") as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(BIG)
        assert response.headers["accept-ranges"] == "bytes"
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-disposition"] == 'attachment; filename="big.bin"'
        chunks = list(response.iter_raw())
    assert len(chunks) > 1
    assert sha(b"".join(chunks)) == sha(expected)


def test_resumed_download(client: httpx.Client, downloads: Path) -> None:
    expected = (downloads / "big.bin").read_bytes()
    got = bytearray()
    with client.stream("GET", "/downloads/big.bin") as response:
        etag = response.headers["etag"]
        for chunk in response.iter_raw():
            got += chunk
            if len(got) >= 3 * 1024 * 1024:
                break  # the connection breaks off
    resumed = client.get(
        "/downloads/big.bin", headers={"range": f"bytes={len(got)}-", "if-range": etag}
    )
    assert resumed.status_code == 206
    assert resumed.headers["content-range"] == f"bytes {len(got)}-{BIG - 1}/{BIG}"
    assert sha(bytes(got) + resumed.content) == sha(expected)
    # The file changed meanwhile (as If-Range would tell): the whole file again.
    stale = client.get("/downloads/notes.txt", headers={"range": "bytes=5-", "if-range": '"stale"'})
    assert stale.status_code == 200


def test_multiple_ranges(client: httpx.Client, downloads: Path) -> None:
    expected = (downloads / "big.bin").read_bytes()
    response = client.get("/downloads/big.bin", headers={"range": "bytes=0-99,5000000-5000099,-10"})
    assert response.status_code == 206
    boundary = re.fullmatch(
        r"multipart/byteranges; boundary=(\w+)", response.headers["content-type"]
    )
    assert boundary is not None
    assert int(response.headers["content-length"]) == len(response.content)
    parts = response.content.split(b"--" + boundary.group(1).encode())[1:-1]
    payloads = [part[2:-2].partition(b"\r\n\r\n")[2] for part in parts]
    assert payloads == [expected[:100], expected[5_000_000:5_000_100], expected[-10:]]


@pytest.mark.parametrize(
    ("range_header", "status"),
    [("bytes=999999999-", 416), ("bytes=abc", 200), ("lines=1-2", 200), ("bytes=5-1", 200)],
)
def test_unsatisfiable_and_ignored_ranges(
    client: httpx.Client, range_header: str, status: int
) -> None:
    response = client.get("/downloads/notes.txt", headers={"range": range_header})
    assert response.status_code == status
    if status == 416:
        size = (EXAMPLE / "downloads" / "notes.txt").stat().st_size
        assert response.headers["content-range"] == f"bytes */{size}"


def test_conditional_download(client: httpx.Client) -> None:
    first = client.get("/downloads/notes.txt")
    again = client.get("/downloads/notes.txt", headers={"if-none-match": first.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")
    again = client.get(
        "/downloads/notes.txt", headers={"if-modified-since": first.headers["last-modified"]}
    )
    assert again.status_code == 304
    assert client.get("/downloads/notes.txt", headers={"if-match": '"x"'}).status_code == 412


def test_head(client: httpx.Client) -> None:
    response = client.head("/downloads/big.bin")
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-length"] == str(BIG)


def test_names_on_the_wire(server: ServerProcess) -> None:
    quoted = "/downloads/na%C3%AFve%20%22quoted%22%20name.txt"
    status, headers, body = raw_request(server.port, quoted)
    assert status == 200 and body == b"odd"
    assert headers["content-disposition"] == (
        'attachment; filename="naive _quoted_ name.txt"; '
        "filename*=UTF-8''na%C3%AFve%20%22quoted%22%20name.txt"
    )
    assert (raw_request(server.port, "/downloads/nope.txt"))[0] == 404


# -- the static site --------------------------------------------------------------------------


def test_static_site(client: httpx.Client) -> None:
    redirect = client.get("/site", follow_redirects=False)
    assert (redirect.status_code, redirect.headers["location"]) == (307, "/site/")
    index = client.get("/site/")
    assert "A static site" in index.text
    assert index.headers["cache-control"] == "no-cache"
    about = client.get("/site/about", follow_redirects=True)
    assert str(about.url).endswith("/site/about/") and "About" in about.text
    missing = client.get("/site/nope.html")
    assert missing.status_code == 404 and "site's own" in missing.text
    logo = client.get("/site/assets/logo.5d41402a.svg")
    assert logo.headers["content-type"] == "image/svg+xml"
    assert logo.headers["cache-control"] == "public, max-age=31536000, immutable"
    revalidated = client.get(
        "/site/style.css", headers={"if-none-match": client.get("/site/style.css").headers["etag"]}
    )
    assert revalidated.status_code == 304


def test_precompressed_script(client: httpx.Client) -> None:
    source = (EXAMPLE / "site" / "app.js").read_bytes()
    gz = client.get("/site/app.js", headers={"accept-encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip"
    assert gz.headers["content-type"] == "text/javascript; charset=utf-8"
    assert gz.headers["vary"] == "Accept-Encoding"
    assert gz.content == source  # httpx decoded it
    assert int(gz.headers["content-length"]) == (EXAMPLE / "site" / "app.js.gz").stat().st_size
    br = client.get("/site/app.js", headers={"accept-encoding": "gzip, deflate, br"})
    assert br.headers["content-encoding"] == "br"  # preferred on a tie
    assert br.content == source
    plain = client.get("/site/app.js", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"
    assert plain.content == source
    assert len({plain.headers["etag"], gz.headers["etag"], br.headers["etag"]}) == 3


def raw_request(port: int, target: bytes | str) -> tuple[int, dict[str, str], bytes]:
    """One request with exactly this target, as no client library would send it."""
    if isinstance(target, str):
        target = target.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    pairs = (line.split(": ", 1) for line in lines[1:])
    headers = {name.lower(): value for name, value in pairs}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "target",
    [
        "/site/../app.py",
        "/site/%2e%2e/app.py",
        "/site/%2E%2E/%2E%2E/files/app.py",
        "/site/..%2fapp.py",
        "/site/..%5capp.py",
        "/site/%00",
        "/site//etc/passwd",
        "/site/about/../../app.py",
        "/downloads/..%2f..%2fapp.py",
        "/downloads/%2e%2e",
    ],
)
def test_traversal_over_the_wire(server: ServerProcess, target: str) -> None:
    status, _, body = raw_request(server.port, target)
    assert status == 404, (target, status)
    assert b"create_app" not in body and b"import" not in body


# -- files that change while they are sent (a real uvicorn, in a thread) ----------------------


@pytest.fixture
def changing(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "changing.bin"
    app = App()

    @app.get("/file")
    async def file() -> FileResponse:
        return FileResponse(path)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port)
    try:
        yield f"http://127.0.0.1:{port}/file", path
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_file_that_grows_is_sent_at_its_announced_length(changing: tuple[str, Path]) -> None:
    url, path = changing
    size = 16 * 1024 * 1024
    with open(path, "wb") as file:
        file.truncate(size)
    got = 0
    with httpx.stream("GET", url, timeout=10) as response:
        assert response.headers["content-length"] == str(size)
        for chunk in response.iter_raw():
            if got == 0:
                with open(path, "ab") as file:
                    file.write(b"\xff" * 5_000_000)
            got += len(chunk)
            assert b"\xff" not in chunk
    assert got == size


def test_a_file_that_shrinks_ends_the_response_short(
    changing: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    url, path = changing
    size = 64 * 1024 * 1024  # larger than what the socket buffers hold
    with open(path, "wb") as file:
        file.truncate(size)
    got = 0
    with caplog.at_level(logging.WARNING, logger="microasgi"):
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream("GET", url, timeout=10) as response,
        ):
            for chunk in response.iter_raw():
                if got == 0:
                    os.truncate(path, 1024 * 1024)
                got += len(chunk)
        deadline = time.monotonic() + 5
        while "shrank" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert got < size
    assert "shrank" in caplog.text


# -- pathsend, through a real granian -----------------------------------------------------------


def test_pathsend_with_granian(tmp_path: Path) -> None:
    granian = shutil.which("granian", path=os.path.dirname(sys.executable))
    if granian is None:
        pytest.fail("granian is not installed: pip install -e '.[dev]'")
    data = os.urandom(3 * 1024 * 1024 + 7)
    (tmp_path / "file.bin").write_bytes(data)
    port = free_port()
    process = subprocess.Popen(
        [granian, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "tests.pathsend_app:app"],
        cwd=ROOT,
        env={**os.environ, "PATHSEND_DIR": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=20)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            whole = client.get("/file")
            assert (whole.status_code, sha(whole.content)) == (200, sha(data))
            static = client.get("/static/file.bin")
            assert (static.status_code, sha(static.content)) == (200, sha(data))
            part = client.get("/file", headers={"range": "bytes=10-19"})
            assert (part.status_code, part.content) == (206, data[10:20])
            log = client.get("/log").json()
        assert log == [
            ["/file", ["http.response.start", "http.response.pathsend"]],
            ["/static/file.bin", ["http.response.start", "http.response.pathsend"]],
            ["/file", ["http.response.start", "http.response.body"]],
        ]
    finally:
        process.terminate()
        process.wait(10)
