"""The server matrix, HTTP: microasgi's features under every server and protocol of
tests/servers.py (uvicorn h11/httptools, hypercorn asyncio/trio over HTTP/1.1, h2c
and HTTP/2 over TLS, granian over HTTP/1.1 and h2c), spoken to with httpx."""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.eventstream import Event, EventStreamParser
from tests.server_app import FILE_DATA, MAX_BODY, MiB
from tests.servers import (
    HYPERCORN_H2_KEYERROR,
    SERVERS,
    TARGETS,
    RawH2,
    Server,
    ServerPool,
    Target,
    fresh_server,
    known_bug,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=TARGETS, ids=lambda t: t.id)
def target(request: pytest.FixtureRequest) -> Target:
    target: Target = request.param
    return target


@pytest.fixture
def server(server_pool: ServerPool, target: Target, request: pytest.FixtureRequest) -> Server:
    return server_pool.get(target.server, request.node.nodeid)


@pytest.fixture
def client(server: Server, target: Target) -> Iterator[httpx.Client]:
    with server.client(target.protocol) as c:
        yield c


def check_protocol(response: httpx.Response, target: Target) -> None:
    assert response.http_version == ("HTTP/2" if target.http2 else "HTTP/1.1")


def wait_for(probe: Callable[[], Any], what: str, timeout: float = 10) -> Any:
    """Poll `probe` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)
    return result


def seen(client: httpx.Client, event: list[Any]) -> bool:
    return event in client.get("/events").json()


def test_json_lifespan_state_and_background_task(client: httpx.Client, target: Target) -> None:
    response = client.get("/json")
    check_protocol(response, target)
    data = response.json()
    assert data["greeting"] == "hello from lifespan"
    assert data["http_version"] == ("2" if target.http2 else "1.1")
    assert data["scheme"] == ("https" if target.protocol == "h2" else "http")
    wait_for(lambda: client.get("/json").json()["ticks"] > 1, "the @app.background_task ticks")


def test_routing_answers(client: httpx.Client, server: Server, target: Target) -> None:
    item = client.get("/items/12").json()
    assert item == {"n": 12, "url": f"{server.url(target.protocol)}/items/13"}
    assert client.get("/items/abc").status_code == 404
    not_allowed = client.delete("/json")
    assert not_allowed.status_code == 405
    assert "GET" in not_allowed.headers["allow"]
    head = client.head("/json")
    assert (head.status_code, head.content) == (200, b"")
    redirect = client.get("/where/?a=1", follow_redirects=False)
    assert (redirect.status_code, redirect.headers["location"]) == (307, "/where?a=1")


def test_query_headers_and_cookies(client: httpx.Client, server: Server, target: Target) -> None:
    headers = [("x-multi", "one"), ("x-multi", "two"), ("cookie", "flavour=oat")]
    data = client.get("/where", params=[("m", "1"), ("m", "2")], headers=headers).json()
    assert data["path"] == "/where"
    assert data["query"] == "m=1&m=2"
    assert data["url"] == f"{server.url(target.protocol)}/where?m=1&m=2"
    assert data["multi"] == ["1", "2"]
    assert data["headers"] == ["one", "two"]
    assert data["cookie"] == "oat"
    response = client.get("/cookie")
    assert sorted(response.headers.get_list("set-cookie")) == [
        "flavour=oat; HttpOnly; Path=/; SameSite=lax",
        "size=big; Path=/; SameSite=lax",
    ]


def test_error_is_a_500_without_traceback(client: httpx.Client) -> None:
    response = client.get("/boom")
    assert (response.status_code, response.text) == (500, "Internal Server Error")


def test_upload_echoes_back(client: httpx.Client) -> None:
    payload = hashlib.sha256(b"seed").digest() * (2 * MiB // 32)
    response = client.post("/echo", content=payload)
    assert response.status_code == 200
    assert response.content == payload


def test_streamed_upload_echoes_back(client: httpx.Client, target: Target) -> None:
    """HTTP/1.1: chunked transfer coding; HTTP/2: DATA frames without a length."""
    chunks = [bytes([i]) * 65536 for i in range(24)]
    request = client.build_request("POST", "/echo", content=iter(chunks))
    assert "content-length" not in request.headers
    response = client.send(request)
    assert response.content == b"".join(chunks)


@pytest.mark.parametrize("size", [256_000, 2_900_000], ids=["in-memory", "on-disk"])
def test_multipart_upload(client: httpx.Client, size: int) -> None:
    """A file under 1 MiB stays in memory; a larger one goes to disk (the app's limit is 3 MiB)."""
    data = random.Random(size).randbytes(size)
    response = client.post(
        "/upload",
        data={"title": "a report", "tags": "x"},
        files={"report": ("report.bin", data, "application/octet-stream")},
    )
    assert response.json() == {
        "fields": {"title": "a report", "tags": "x"},
        "files": {"report": ["report.bin", len(data), hashlib.sha256(data).hexdigest()]},
    }


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_body_over_the_limit_gets_413_and_the_connection_lives_on(
    request: pytest.FixtureRequest,
    server_pool: ServerPool,
    server: Server,
    target: Target,
    declared: bool,
) -> None:
    """413 without reading the rest of the body; the client may keep sending (over
    HTTP/2 a bare client that stops once answered, as RFC 9113 says, since httpx's
    HTTP/2 client does not), and the connection still serves the next request."""
    known_bug(
        request, target.server.startswith("hypercorn") and target.http2, HYPERCORN_H2_KEYERROR
    )
    body = b"y" * (MAX_BODY + 65536)
    if not target.http2:
        # A bare socket that stops sending to read the answer: a client that sends on
        # may see the server's close reset the connection before it reads the 413.
        assert h1_post_status(server.port, body, declared) == 413
        with server.client(target.protocol) as client:
            assert client.get("/json").status_code == 200
        return
    h2 = RawH2(server, target.protocol)
    try:
        stream = h2.request("POST", "/echo", body=True, length=len(body) if declared else None)
        h2.send_body(stream, body)
        assert h2.wait(stream)["status"] == 413
        assert h2.wait(h2.request("GET", "/json"))["status"] == 200, "the connection died"
    finally:
        h2.close()
        if target.server.startswith("hypercorn"):
            server_pool.restart(target.server)  # the trio worker dies of the KeyError


def h1_post_status(port: int, body: bytes, declared: bool) -> int:
    """POST /echo on a socket: a first part of `body` (all of it past the limit when
    it is chunked), then the status line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = b"POST /echo HTTP/1.1\r\nHost: t\r\n"
        if declared:
            sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body[:65536])
        else:
            sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
            with contextlib.suppress(OSError):  # the server may close once it answered
                for start in range(0, len(body), 65536):
                    piece = body[start : start + 65536]
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(65536)
            assert data, f"closed without an answer: {answer!r}"
            answer += data
    return int(answer.split(b" ", 2)[1])


def test_streaming_arrives_chunk_by_chunk(
    client: httpx.Client, server: Server, target: Target
) -> None:
    with server.client(target.protocol) as releaser, client.stream("GET", "/chunks") as response:
        assert response.status_code == 200
        if not target.http2:
            assert response.headers["transfer-encoding"] == "chunked"
        received = b""
        parts = response.iter_raw()
        for i in range(3):
            while not received.endswith(b"chunk-%d;" % i):
                received += next(parts)
            assert releaser.get("/release").text == "released"
        assert received + b"".join(parts) == b"chunk-0;chunk-1;chunk-2;"


def test_a_client_leaving_a_stream_stops_it(server: Server, target: Target) -> None:
    tag = f"endless-{target.tag}"
    with server.client(target.protocol) as client, client.stream("GET", f"/endless/{tag}") as r:
        assert len(next(r.iter_raw())) > 0
    with server.client(target.protocol) as client:
        wait_for(lambda: seen(client, ["endless closed", tag]), "the app saw the disconnect")


def test_background_tasks_run_after_the_response(client: httpx.Client, target: Target) -> None:
    tag = f"bg-{target.tag}"
    response = client.get(f"/background/{tag}")
    assert response.text == "queued"
    wait_for(lambda: seen(client, ["background", tag]), "the background task ran")


def test_files_ranges_and_static(client: httpx.Client) -> None:
    whole = client.get("/file")
    assert whole.status_code == 200
    assert whole.content == FILE_DATA
    part = client.get("/file", headers={"range": "bytes=10-19"})
    assert (part.status_code, part.content) == (206, FILE_DATA[10:20])
    assert part.headers["content-range"] == f"bytes 10-19/{len(FILE_DATA)}"
    cached = client.get("/file", headers={"if-none-match": whole.headers["etag"]})
    assert (cached.status_code, cached.content) == (304, b"")
    static = client.get("/static/hello.txt")
    assert static.text == "hello from a static file\n"
    assert client.get("/static/missing.txt").status_code == 404


def read_events(response: httpx.Response, count: int) -> list[Event]:
    parser = EventStreamParser()
    for chunk in response.iter_text():
        parser.feed(chunk)
        if len(parser.events) >= count:
            return parser.events[:count]
    raise AssertionError(f"the stream ended after {parser.events!r}")


def test_server_sent_events_resume_and_disconnect(server: Server, target: Target) -> None:
    tag = f"sse-{target.tag}"
    with server.client(target.protocol) as client:
        with client.stream("GET", f"/sse/{tag}") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = read_events(response, 3)
        assert [(e.last_event_id, e.data) for e in events] == [
            (str(i), f'{{"n":{i}}}') for i in (1, 2, 3)
        ]
    with server.client(target.protocol) as client:
        wait_for(lambda: seen(client, ["sse closed", tag]), "the event stream saw the disconnect")
        with client.stream("GET", f"/sse/{tag}2", headers={"last-event-id": "3"}) as response:
            events = read_events(response, 3)
        assert [e.last_event_id for e in events] == ["4", "5", "6"]


def test_wsgi_mount(client: httpx.Client) -> None:
    response = client.get("/wsgi/page")
    assert response.text == "GET /wsgi /page 0"
    assert response.headers["set-cookie"] == "wsgi=yes"  # sent with a leading space
    posted = client.post("/wsgi/form", content=b"a=1&b=2")
    assert posted.text == "POST /wsgi /form 7"


def test_wsgi_stream_abandoned_by_the_client_is_closed(server: Server, target: Target) -> None:
    tag = f"wsgi-{target.tag}"
    with (
        server.client(target.protocol) as client,
        client.stream("GET", f"/wsgi/endless?{tag}") as r,
    ):
        assert len(next(r.iter_raw())) > 0
    with server.client(target.protocol) as client:
        wait_for(lambda: seen(client, ["wsgi closed", tag]), "the WSGI iterable was closed")


@pytest.mark.parametrize("server_id", list(SERVERS))
def test_lifespan_starts_and_shuts_down(
    server_pool: ServerPool, server_id: str, tmp_path: Path
) -> None:
    record = tmp_path / "lifespan.txt"
    env = {"SERVER_APP_LIFESPAN_FILE": str(record)}
    with fresh_server(server_id, server_pool.cert, **env) as server:
        assert record.read_text() == "startup\n"
        server.stop()
    assert record.read_text() == "startup\nshutdown\n"
