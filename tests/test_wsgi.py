"""WSGIApp: environ mapping, streamed request bodies, responses, errors, disconnects,
backpressure, threads, PEP 3333 validation, and the other scope types.

Every async test runs on asyncio and on trio. The WSGI apps here never block
without a timeout, so a bug shows up as a failure, not a hang.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
import tracemalloc
import wsgiref.validate
from collections.abc import Iterable, Iterator
from http.cookies import SimpleCookie
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import anyio
import anyio.from_thread
import pytest

from microasgi import App
from microasgi.testclient import TestClient, WebSocketDenied
from microasgi.types import Message
from microasgi.wsgi import ClientDisconnected, WSGIApp, build_environ, default_max_threads
from microasgi.wsgi._environ import ErrorStream, split_path
from tests.helpers import Exchange, MakeClient, body_messages, http_scope, run_app

TEXT = ("Content-Type", "text/plain")


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [TEXT, ("Content-Length", "5")])
    return [b"hello"]


def capture(seen: dict[str, Any]) -> WSGIApplication:
    """A WSGI app that keeps a copy of its environ in `seen` and answers "ok"."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        seen.update(environ)
        start_response("200 OK", [TEXT])
        return [b"ok"]

    return app


class Tracked:
    """A response iterable that records how far it was iterated and whether it was closed."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = iter(chunks)
        self.produced = 0
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = next(self.chunks)
        self.produced += 1
        return chunk

    def close(self) -> None:
        self.closed.set()


def body_messages_sent(ex: Exchange) -> list[Message]:
    return [m for m in ex.sent if m["type"] == "http.response.body"]


def completed(ex: Exchange) -> bool:
    """Whether the response was finished (a body message with more_body False)."""
    return any(not m.get("more_body", False) for m in body_messages_sent(ex))


# -- environ ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_environ_maps_the_scope() -> None:
    seen: dict[str, Any] = {}
    scope = http_scope(
        "POST",
        "/app/items/1",
        root_path="/app",
        query_string=b"a=1&b=%C3%A9",
        headers=[
            (b"host", b"example.com:8080"),
            (b"content-type", b"text/plain"),
            (b"content-length", b"3"),
            (b"accept", b"text/html"),
            (b"accept", b"application/json"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"x-custom-thing", b"caf\xe9"),
        ],
        client=("10.0.0.2", 5555),
        server=("10.0.0.1", 8080),
        scheme="https",
        http_version="2",
    )
    ex = await run_app(WSGIApp(capture(seen)), scope, body_messages(b"abc"))
    assert ex.status == 200
    expected = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "/app",
        "PATH_INFO": "/items/1",
        "QUERY_STRING": "a=1&b=%C3%A9",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "3",
        "HTTP_HOST": "example.com:8080",
        "HTTP_ACCEPT": "text/html, application/json",
        "HTTP_COOKIE": "a=1; b=2",
        "HTTP_X_CUSTOM_THING": "caf\xe9",
        "SERVER_NAME": "10.0.0.1",
        "SERVER_PORT": "8080",
        "REMOTE_ADDR": "10.0.0.2",
        "REMOTE_PORT": "5555",
        "SERVER_PROTOCOL": "HTTP/2",
        "wsgi.url_scheme": "https",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    assert {key: seen.get(key) for key in expected} == expected
    assert "HTTP_CONTENT_TYPE" not in seen and "HTTP_CONTENT_LENGTH" not in seen
    assert seen["asgi.scope"]["path"] == "/app/items/1"
    for key, value in seen.items():  # CGI keys are native strings
        if "." not in key:
            assert type(value) is str, key


@pytest.mark.anyio
async def test_underscore_headers_are_dropped() -> None:
    """X_User and X-User would both be HTTP_X_USER: the underscore form is left out."""
    seen: dict[str, Any] = {}
    headers = [(b"host", b"t"), (b"x-user", b"alice"), (b"x_user", b"mallory")]
    await run_app(WSGIApp(capture(seen)), http_scope(headers=headers))
    assert seen["HTTP_X_USER"] == "alice"


@pytest.mark.anyio
async def test_server_name_from_host_without_server() -> None:
    seen: dict[str, Any] = {}
    await run_app(
        WSGIApp(capture(seen)), http_scope(headers=[(b"host", b"[::1]:9000")], server=None)
    )
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("[::1]", "9000")
    await run_app(
        WSGIApp(capture(seen)),
        http_scope(headers=[(b"host", b"example.org")], server=("/tmp/sock", None), scheme="https"),
    )
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("example.org", "443")


@pytest.mark.parametrize(
    ("root_path", "path", "raw_path", "expected"),
    [
        ("", "/", None, ("", "/")),
        ("/app", "/app", None, ("/app", "")),
        ("/app", "/app/", None, ("/app", "/")),
        ("/app", "/app/x/y", None, ("/app", "/x/y")),
        ("/app/", "/app/x", None, ("/app", "/x")),
        # Not below the root at a segment boundary: passed on whole, so the app
        # answers 404 instead of serving "le".
        ("/app", "/apple", None, ("/app", "/apple")),
        # A server that leaves root_path out of path (older ASGI servers).
        ("/api", "/users", None, ("/api", "/users")),
        # UTF-8 characters become their bytes, as latin-1 characters (PEP 3333).
        ("", "/café", None, ("", "/caf\xc3\xa9")),
        ("/ü", "/ü/x", None, ("/\xc3\xbc", "/x")),
        # raw_path gives the bytes the client sent, even when they are not UTF-8...
        ("", "/caf\ufffd", b"/caf%E9", ("", "/caf\xe9")),
        ("/app", "/app/a b", b"/app/a%20b", ("/app", "/a b")),
        ("/app", "/app/q", b"/app/q?x=1", ("/app", "/q")),
        # ...but only when it agrees with path (say a middleware rewrote path only).
        ("", "/rewritten", b"/original", ("", "/rewritten")),
    ],
)
def test_split_path(
    root_path: str, path: str, raw_path: bytes | None, expected: tuple[str, str]
) -> None:
    scope = http_scope(path=path, root_path=root_path, raw_path=raw_path)
    if raw_path is None:
        del scope["raw_path"]
    assert split_path(scope) == expected


def test_query_string_is_latin1() -> None:
    environ = build_environ(http_scope(query_string=b"q=\xff\xfe"), None, ErrorStream())
    assert environ["QUERY_STRING"] == "q=\xff\xfe"


def test_mounted_app_sees_script_name_and_path_info(make_client: MakeClient) -> None:
    seen: dict[str, Any] = {}
    app = App()
    app.mount("/legacy", WSGIApp(capture(seen)))
    with make_client(app) as client:
        assert client.get("/legacy/a%2Fb/c?x=1").status_code == 200
        assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("/legacy", "/a/b/c")
        assert seen["QUERY_STRING"] == "x=1"
        assert client.get("/legacyx").status_code == 404  # never reaches the WSGI app


def test_errors_stream_logs_lines(caplog: pytest.LogCaptureFixture) -> None:
    stream = ErrorStream()
    with caplog.at_level(logging.ERROR, logger="microasgi.wsgi"):
        stream.write("partial ")
        assert caplog.records == []
        stream.write("line\nTraceback:\n  two lines\nrest")
        stream.writelines(["more", " of it"])
        stream.flush()
        stream.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "partial line\nTraceback:\n  two lines",
        "restmore of it",
    ]
    assert {r.name for r in caplog.records} == {"microasgi.wsgi"}
    with pytest.raises(TypeError):
        stream.write(b"bytes")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_app_output_to_wsgi_errors_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.errors"].write("something odd happened")  # no newline: flushed at the end
        start_response("200 OK", [TEXT])
        return [b""]

    with caplog.at_level(logging.ERROR, logger="microasgi.wsgi"):
        await run_app(WSGIApp(app))
    assert [r.getMessage() for r in caplog.records] == ["something odd happened"]


# -- wsgi.input ---------------------------------------------------------------------------


def input_app(seen: dict[str, Any]) -> WSGIApplication:
    """A WSGI app that reads its body in several ways and keeps what it saw in `seen`."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        seen["kind"] = "file" if hasattr(stream, "fileno") and _has_fileno(stream) else "memory"
        seen["content_length"] = environ.get("CONTENT_LENGTH")
        seen["reads"] = [stream.read(0), stream.read(2), stream.readline(), stream.readline(3)]
        seen["readlines"] = stream.readlines()
        seen["after"] = (stream.read(), stream.read(5), stream.readline())
        start_response("200 OK", [TEXT])
        return [b"ok"]

    return app


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (OSError, ValueError, AttributeError):
        return False
    return True


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("spool_threshold", "kind"), [(1024 * 1024, "memory"), (4, "file"), (0, "file")]
)
async def test_body_reads_in_memory_and_spooled(spool_threshold: int, kind: str) -> None:
    """read(n), readline(), readline(n), readlines() and the end, whether the body
    stayed in memory or went to a temporary file."""
    seen: dict[str, Any] = {}
    chunks = (b"ab", b"cd\nline", b"2\n", b"", b"last\nend")
    headers = [(b"host", b"t"), (b"content-length", b"19")]
    ex = await run_app(
        WSGIApp(input_app(seen), spool_threshold=spool_threshold),
        http_scope("POST", headers=headers),
        body_messages(*chunks),
    )
    assert ex.body == b"ok"
    assert seen["kind"] == kind
    assert seen["content_length"] == "19"
    assert seen["reads"] == [b"", b"ab", b"cd\n", b"lin"]
    assert seen["readlines"] == [b"e2\n", b"last\n", b"end"]
    assert seen["after"] == (b"", b"", b"")


@pytest.mark.anyio
async def test_spooled_body_holds_little_memory_and_is_removed() -> None:
    """Past spool_threshold the body goes to a temporary file in batches: what stays in
    memory is bounded by the threshold, and the file is closed after the request."""
    files: list[Any] = []
    digest: list[str] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        files.append(stream)
        sha = hashlib.sha256()
        for piece in iter(lambda: stream.read(65536), b""):
            sha.update(piece)
        digest.append(sha.hexdigest())
        start_response("200 OK", [TEXT])
        return [b"ok"]

    chunk = bytes(range(256)) * 256  # 64 KiB
    messages = body_messages(*[chunk] * 64)  # 4 MiB
    headers = [(b"host", b"t"), (b"transfer-encoding", b"chunked")]
    tracemalloc.start()
    try:
        ex = await run_app(
            WSGIApp(app, spool_threshold=256 * 1024, max_body_size=None),
            http_scope("POST", headers=headers),
            messages,
            timeout=20,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ex.body == b"ok"
    assert digest == [hashlib.sha256(chunk * 64).hexdigest()]
    assert files[0].closed  # and so removed: a TemporaryFile has no name on disk
    # The adapter holds at most the threshold plus a chunk in memory, not the 4 MiB.
    assert peak < 1024 * 1024, peak


@pytest.mark.anyio
async def test_chunked_body_without_content_length() -> None:
    """wsgi.input_terminated: read() to the end is safe without a Content-Length."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        lines = list(environ["wsgi.input"])
        start_response("200 OK", [TEXT])
        return [b"|".join(lines)]

    headers = [(b"host", b"t"), (b"transfer-encoding", b"chunked")]
    ex = await run_app(
        WSGIApp(app), http_scope("POST", headers=headers), body_messages(b"a\nb", b"", b"\nc")
    )
    assert ex.body == b"a\n|b\n|c"


@pytest.mark.anyio
async def test_request_body_clamped_to_content_length() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        data = environ["wsgi.input"].read()
        start_response("200 OK", [TEXT])
        return [data]

    headers = [(b"host", b"t"), (b"content-length", b"5")]
    ex = await run_app(
        WSGIApp(app), http_scope("POST", headers=headers), body_messages(b"hel", b"lo world", b"!")
    )
    assert ex.body == b"hello"
    assert completed(ex)


# -- the response ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_hello() -> None:
    ex = await run_app(WSGIApp(hello))
    assert ex.status == 200
    assert ex.headers == [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    assert ex.body == b"hello"
    assert ex.events == ["start", "body", "body-end"]


@pytest.mark.anyio
async def test_headers_wait_for_the_first_nonempty_chunk_then_chunks_stream() -> None:
    ex = Exchange()
    sent_when: list[list[str]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])

        def body() -> Iterator[bytes]:
            yield b""
            sent_when.append(list(ex.events))  # nothing sent for an empty chunk
            yield b"one"
            sent_when.append(list(ex.events))  # "one" went out before "two" was made
            yield b"two"

        return body()

    await ex.run(WSGIApp(app))
    assert sent_when == [[], ["start", "body"]]
    assert ex.body == b"onetwo"
    assert ex.events == ["start", "body", "body", "body-end"]


@pytest.mark.anyio
async def test_empty_body_sends_headers_at_the_end() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("204 No Content", [])
        return []

    ex = await run_app(WSGIApp(app))
    assert ex.status == 204
    assert ex.events == ["start", "body-end"]


@pytest.mark.anyio
async def test_write_callable() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [TEXT])
        write(b"a")
        write(b"")
        write(b"b")
        return [b"c"]

    ex = await run_app(WSGIApp(app))
    assert ex.body == b"abc"
    assert ex.events == ["start", "body", "body", "body", "body-end"]


@pytest.mark.anyio
async def test_close_is_called_after_success() -> None:
    body = Tracked([b"a", b"b"])

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])
        return body

    ex = await run_app(WSGIApp(app))
    assert ex.body == b"ab"
    assert body.closed.is_set()


@pytest.mark.anyio
async def test_close_is_called_after_an_error(caplog: pytest.LogCaptureFixture) -> None:
    body = Tracked([b"a"])

    def fail() -> Iterator[bytes]:
        raise RuntimeError("boom")
        yield b""  # pragma: no cover

    body.chunks = fail()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])
        return body

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        ex = await run_app(WSGIApp(app))
    assert ex.status == 500
    assert body.closed.is_set()


@pytest.mark.anyio
async def test_exc_info_before_headers_replaces_the_response() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT, ("X-Partial", "yes")])
        try:
            raise ValueError("template failed")
        except ValueError:
            start_response("503 Service Unavailable", [TEXT], sys.exc_info())
        return [b"sorry"]

    ex = await run_app(WSGIApp(app))
    assert ex.status == 503
    assert ex.header(b"x-partial") is None
    assert ex.body == b"sorry"
    assert completed(ex)


@pytest.mark.anyio
async def test_exc_info_after_headers_is_reraised(caplog: pytest.LogCaptureFixture) -> None:
    reraised: list[BaseException] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])

        def body() -> Iterator[bytes]:
            yield b"partial"
            try:
                raise ValueError("late failure")
            except ValueError as exc:
                try:
                    start_response("500 Internal Server Error", [TEXT], sys.exc_info())
                except ValueError as again:
                    reraised.append(again)
                    assert again is exc
                    raise

        return body()

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        ex = await run_app(WSGIApp(app))
    assert len(reraised) == 1
    assert ex.status == 200
    assert ex.body == b"partial"
    assert not completed(ex)  # the server ends the connection: the body is visibly cut off
    assert "after the response started" in caplog.text


@pytest.mark.anyio
async def test_error_before_headers_gives_500(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])
        raise RuntimeError("database down")

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        ex = await run_app(WSGIApp(app))
    assert ex.status == 500
    assert ex.body == b"Internal Server Error"
    assert completed(ex)
    [record] = [r for r in caplog.records if r.name == "microasgi"]
    assert record.exc_info is not None and "database down" in str(record.exc_info[1])


@pytest.mark.anyio
async def test_error_after_headers_ends_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    body = Tracked([])

    def chunks() -> Iterator[bytes]:
        yield b"first"
        raise RuntimeError("mid-stream")

    body.chunks = chunks()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])
        return body

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        ex = await run_app(WSGIApp(app))
    assert (ex.status, ex.body) == (200, b"first")
    assert not completed(ex)
    assert body.closed.is_set()
    assert "mid-stream" in caplog.text


def test_error_after_headers_through_test_client(make_client: MakeClient) -> None:
    """A client sees a cut-off response as an error, not as a complete body."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])
        yield b"first"
        raise RuntimeError("mid-stream")

    with make_client(WSGIApp(app)) as client, pytest.raises(Exception, match="before its end"):
        client.get("/")


@pytest.mark.anyio
async def test_more_body_than_content_length_is_clamped(caplog: pytest.LogCaptureFixture) -> None:
    body = Tracked([b"abcdef", b"never produced"])

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT, ("Content-Length", "3")])
        return body

    with caplog.at_level(logging.WARNING, logger="microasgi"):
        ex = await run_app(WSGIApp(app))
    assert ex.body == b"abc"
    assert completed(ex)
    assert body.produced == 1  # iteration stops once Content-Length is reached
    assert body.closed.is_set()
    assert "more than its Content-Length" in caplog.text


@pytest.mark.anyio
async def test_less_body_than_content_length_ends_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT, ("Content-Length", "10")])
        return [b"abc"]

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        ex = await run_app(WSGIApp(app))
    assert ex.body == b"abc"
    assert not completed(ex)
    assert "fewer than its Content-Length" in caplog.text


@pytest.mark.anyio
async def test_head_and_no_content_responses_send_no_body() -> None:
    ex = await run_app(WSGIApp(hello), http_scope("HEAD"))
    assert ex.header(b"content-length") == b"5"
    assert (ex.body, completed(ex)) == (b"", True)

    def not_modified(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("304 Not Modified", [("ETag", '"x"')])
        return [b"should not be sent"]

    ex = await run_app(WSGIApp(not_modified))
    assert (ex.status, ex.body, completed(ex)) == (304, b"", True)


def misbehaving(kind: str) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        if kind == "no start_response":
            return [b"body"]
        if kind == "bad status":
            start_response("OK", [TEXT])
        elif kind == "bad header name":
            start_response("200 OK", [("Bad Name", "x")])
        elif kind == "header injection":
            start_response("200 OK", [("X-A", "1\r\nSet-Cookie: evil=1")])
        elif kind == "bytes header":
            start_response("200 OK", [(b"X-A", b"1")])
        elif kind == "start_response twice":
            start_response("200 OK", [TEXT])
            start_response("200 OK", [TEXT])
        elif kind == "str chunk":
            start_response("200 OK", [TEXT])
            return ["text"]
        elif kind == "bytes returned":
            start_response("200 OK", [TEXT])
            return b"body"
        elif kind == "non latin-1 header":
            start_response("200 OK", [("X-A", "snow ☃")])
        return [b"body"]

    return app


@pytest.mark.anyio
@pytest.mark.parametrize(
    "kind",
    [
        "no start_response",
        "bad status",
        "bad header name",
        "header injection",
        "bytes header",
        "start_response twice",
        "str chunk",
        "bytes returned",
        "non latin-1 header",
    ],
)
async def test_protocol_errors_give_500(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        ex = await run_app(WSGIApp(misbehaving(kind)))
    assert ex.status == 500
    assert b"evil" not in b"".join(v for _, v in ex.headers)
    assert "WSGI app error" in caplog.text


def test_header_values_lose_surrounding_whitespace(make_client: MakeClient) -> None:
    """RFC 9110 OWS: Django writes Set-Cookie as SimpleCookie's output(header=""), with a
    leading space, which h11 (uvicorn without httptools) refuses to send at all."""
    cookie: SimpleCookie = SimpleCookie()
    cookie["sessionid"] = "abc"
    cookie["sessionid"]["path"] = "/"
    django_style = cookie["sessionid"].output(header="")
    assert django_style.startswith(" ")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        headers = [
            TEXT,
            ("Set-Cookie", django_style),
            ("X-Tabs", "\t a \t b\t "),
            ("X-Empty", "   "),
            ("X-Latin", "caf\xe9\xa0"),  # obs-text is kept, NBSP included
        ]
        start_response("200 OK", headers)
        return [b"ok"]

    with make_client(WSGIApp(app)) as client:
        response = client.get("/")
    raw = dict(response.headers.raw)
    assert raw[b"set-cookie"] == b"sessionid=abc; Path=/"
    assert raw[b"x-tabs"] == b"a \t b"
    assert raw[b"x-empty"] == b""
    assert raw[b"x-latin"] == b"caf\xe9\xa0"
    assert response.cookies["sessionid"] == "abc"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("1\r\nSet-Cookie: evil=1", "CR, LF or NUL"),
        ("a\nb", "CR, LF or NUL"),
        ("a\rb", "CR, LF or NUL"),
        ("a\x00b", "CR, LF or NUL"),
        ("a\x0bb", "a control character"),
        ("a\x7f", "a control character"),
    ],
)
async def test_header_values_with_line_breaks_or_controls_are_refused(
    value: str, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("X-A", value)])
        return [b"body"]

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        ex = await run_app(WSGIApp(app))
    assert ex.status == 500
    assert [name for name, _ in ex.headers if name == b"x-a"] == []
    assert f"the WSGI header 'X-A' has {said} in its value" in caplog.text


class RefusingServer(Exchange):
    """A server whose send() raises on http.response.start, as uvicorn's h11 backend does
    for a header value it will not write (h11.LocalProtocolError)."""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            raise ValueError("Illegal header value")
        await super().send(message)


@pytest.mark.anyio
@pytest.mark.parametrize("mounted", [False, True], ids=["alone", "mounted"])
@pytest.mark.parametrize("chunks", [[b"body"], []], ids=["with-body", "empty-body"])
async def test_a_refused_response_start_is_logged_as_such(
    mounted: bool, chunks: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    body = Tracked(chunks)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])
        return body

    wsgi = WSGIApp(app)
    served: Any = wsgi
    if mounted:
        served = App()
        served.mount("/w", wsgi)
    with caplog.at_level(logging.DEBUG, logger="microasgi"):
        ex = await RefusingServer().run(served, http_scope("GET", "/w/" if mounted else "/"))
    assert ex.sent == []
    assert body.closed.is_set()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].getMessage().startswith("WSGI response failed to start")
    assert errors[0].exc_info is not None and "Illegal header value" in str(errors[0].exc_info[1])
    assert "after the response started" not in caplog.text


# -- client disconnects ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_disconnect_mid_body_means_no_app_call_and_no_answer() -> None:
    calls: list[str] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls.append(environ["wsgi.input"].read())  # pragma: no cover - the bug
        start_response("200 OK", [TEXT])  # pragma: no cover
        return [b"half a body"]  # pragma: no cover

    messages = [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.disconnect"},
    ]
    headers = [(b"host", b"t"), (b"content-length", b"100")]
    ex = await run_app(WSGIApp(app), http_scope("POST", headers=headers), messages)
    assert calls == []  # the app cannot mistake half a body for a whole one
    assert ex.sent == []


class LeavingClient(Exchange):
    """A client that goes away after `after` body chunks.

    Later sends are dropped silently, as uvicorn does, or raise OSError, as
    ASGI 2.4 allows; `late` counts them.
    """

    def __init__(self, after: int, *, raise_on_send: bool) -> None:
        super().__init__()
        self.after = after
        self.raise_on_send = raise_on_send
        self.late = 0

    async def send(self, message: Message) -> None:
        if self.done.is_set():
            self.late += 1
            if self.raise_on_send:
                raise OSError("client gone")
            return
        await super().send(message)
        if len(body_messages_sent(self)) >= self.after:
            self.done.set()  # receive() now says http.disconnect


@pytest.mark.anyio
@pytest.mark.parametrize("raise_on_send", [False, True], ids=["silent-send", "oserror-send"])
async def test_disconnect_mid_response_stops_iteration_and_closes(raise_on_send: bool) -> None:
    def endless() -> Iterator[bytes]:
        for _ in range(5000):  # a bound, so a broken adapter fails instead of hanging
            time.sleep(0.001)
            yield b"tick\n"

    body = Tracked(endless())

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])
        return body

    ex = LeavingClient(after=3, raise_on_send=raise_on_send)
    await ex.run(WSGIApp(app))
    assert body.closed.is_set()
    assert body.produced < 20, body.produced
    assert ex.late <= 3
    assert not completed(ex)


@pytest.mark.anyio
@pytest.mark.parametrize("body", [b"", b"form=data"], ids=["no-body", "unread-body"])
async def test_http2_client_leaving_a_stream_stops_the_app(body: bytes) -> None:
    """HTTP/2 servers (hypercorn, granian) send no Content-Length-less "no body" hint and
    ignore sends once the stream is gone: only the http.disconnect that follows the body
    tells the adapter, so it must read on after the body even if the app never does."""

    def endless() -> Iterator[bytes]:
        for _ in range(5000):  # a bound, so a broken adapter fails instead of hanging
            time.sleep(0.001)
            yield b"tick\n"

    stream = Tracked(endless())

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])  # streams at once, never reads wsgi.input
        return stream

    ex = LeavingClient(after=3, raise_on_send=False)
    ex.messages = body_messages(body) if body else body_messages()
    scope = http_scope("POST" if body else "GET", http_version="2", headers=[(b"host", b"t")])
    await ex.run(WSGIApp(app), scope)
    assert stream.closed.is_set()
    assert stream.produced < 20, stream.produced
    assert not completed(ex)


@pytest.mark.anyio
async def test_write_raises_client_disconnected_once_the_client_left() -> None:
    raised: list[BaseException] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [TEXT])
        try:
            for _ in range(5000):
                write(b"tick\n")
                time.sleep(0.001)
        except OSError as exc:
            raised.append(exc)
        return []

    await LeavingClient(after=3, raise_on_send=False).run(WSGIApp(app))
    assert len(raised) == 1
    assert isinstance(raised[0], ClientDisconnected)


@pytest.mark.anyio
async def test_cancelled_request_stops_and_closes_the_app() -> None:
    """A server that cancels the request (say, at shutdown): the app stops at its next chunk."""

    def endless() -> Iterator[bytes]:
        for _ in range(5000):
            time.sleep(0.001)
            yield b"tick\n"

    body = Tracked(endless())

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [TEXT])
        return body

    ex = Exchange()
    start = time.monotonic()
    with anyio.move_on_after(0.1):
        await ex.run(WSGIApp(app))
    assert time.monotonic() - start < 1
    assert body.closed.is_set()
    assert body.produced < 500
    assert not completed(ex)


@pytest.mark.anyio
async def test_disconnect_while_the_app_works_means_no_response() -> None:
    """The client leaves after sending its body, before the app answers."""
    ex = Exchange(body_messages(b"data"))
    body = Tracked([b"result"])

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.input"].read()
        anyio.from_thread.run_sync(ex.done.set)  # the client goes away while the app is busy
        deadline = time.monotonic() + 5
        while ex.receive_calls < 2 and time.monotonic() < deadline:
            time.sleep(0.005)  # until the adapter has heard of it
        time.sleep(0.05)
        start_response("200 OK", [TEXT])
        return body

    headers = [(b"host", b"t"), (b"content-length", b"4")]
    await ex.run(WSGIApp(app), http_scope("POST", headers=headers))
    assert ex.sent == []
    assert body.closed.is_set()
    assert body.produced == 0


# -- backpressure and threads -----------------------------------------------------------------


@pytest.mark.anyio
async def test_slow_client_holds_the_app_back() -> None:
    """While the client is not taking data, the WSGI app is not asked for more."""

    class SlowClient(Exchange):
        def __init__(self) -> None:
            super().__init__()
            self.gate = anyio.Event()

        async def send(self, message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("more_body"):
                await self.gate.wait()
            await super().send(message)

    body = Tracked(b"x" * 65536 for _ in range(100))

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return body

    ex = SlowClient()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ex.run, WSGIApp(app))
        await anyio.sleep(0.3)
        assert body.produced == 1  # one chunk in flight, nothing piling up
        ex.gate.set()
    assert len(ex.body) == 100 * 65536
    assert completed(ex)


@pytest.mark.anyio
async def test_fifty_slow_requests_run_concurrently() -> None:
    """50 requests to an app that takes 0.2 s each finish together, not one after another."""

    def slow(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        time.sleep(0.2)
        start_response("200 OK", [TEXT])
        return [b"done"]

    app = WSGIApp(slow, max_threads=50)
    results: list[Exchange] = []

    async def one() -> None:
        results.append(await run_app(app, timeout=10))

    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(one)
    elapsed = time.monotonic() - start
    assert [ex.body for ex in results] == [b"done"] * 50
    assert elapsed < 2.0, f"50 x 0.2 s took {elapsed:.2f} s: requests were serialised"


@pytest.mark.anyio
async def test_max_threads_bounds_concurrency() -> None:
    active = peak = 0
    lock = threading.Lock()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        start_response("200 OK", [TEXT])
        return [b""]

    wsgi = WSGIApp(app, max_threads=3)
    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(run_app, wsgi)
    assert peak == 3


def test_max_threads_default_and_validation() -> None:
    assert WSGIApp(hello).max_threads == default_max_threads()
    assert 5 <= default_max_threads() <= 32
    with pytest.raises(ValueError):
        WSGIApp(hello, max_threads=0)


@pytest.mark.anyio
async def test_app_runs_in_one_worker_thread_with_the_callers_context() -> None:
    """Call, iteration and close() share one thread (thread-locals hold), not the loop's."""
    threads: list[int] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            threads.append(threading.get_ident())
            yield b"x"
            threads.append(threading.get_ident())

        def close(self) -> None:
            threads.append(threading.get_ident())

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        threads.append(threading.get_ident())
        start_response("200 OK", [TEXT])
        return Body()

    await run_app(WSGIApp(app))
    assert len(threads) == 4 and len(set(threads)) == 1
    assert threads[0] != threading.get_ident()


def test_one_app_served_by_asyncio_then_trio() -> None:
    wsgi = WSGIApp(hello, max_threads=2)
    for backend in ("asyncio", "trio"):
        ex = anyio.run(run_app, wsgi, backend=backend)
        assert ex.body == b"hello"


# -- PEP 3333 conformance (wsgiref.validate) ---------------------------------------------------


def validated_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Exercises much of PEP 3333 while wsgiref.validate watches."""
    path = environ["PATH_INFO"]
    body = environ["wsgi.input"]
    if path == "/read":
        first = body.readline()
        rest = body.readlines()
        start_response("200 OK", [TEXT])
        return [first, *rest]
    if path == "/read-sized":
        parts = []
        while part := body.read(3):
            parts.append(part)
        start_response("200 OK", [TEXT])
        return [b"|".join(parts)]
    if path == "/write":
        write = start_response("200 OK", [TEXT])
        write(b"written ")
        environ["wsgi.errors"].write("a note for the log\n")
        environ["wsgi.errors"].flush()
        return iter([b"and ", b"returned"])
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/error":
        try:
            start_response("200 OK", [TEXT])
            raise KeyError("missing")
        except KeyError:
            start_response("500 Internal Server Error", [TEXT], sys.exc_info())
            return [b"handled"]

    def generated() -> Iterator[bytes]:
        yield b""
        yield f"{environ['REQUEST_METHOD']} {environ['SCRIPT_NAME']}|{path}".encode("latin-1")

    start_response("200 OK", [TEXT])
    return generated()


@pytest.mark.anyio
@pytest.mark.filterwarnings("error")  # a WSGIWarning fails the app, so the test
@pytest.mark.parametrize(
    ("method", "path", "body", "status", "expected"),
    [
        ("GET", "/app/", b"", 200, b"GET /app|/"),
        ("GET", "/app", b"", 200, b"GET /app|"),
        ("DELETE", "/app/x/y", b"", 200, b"DELETE /app|/x/y"),
        ("HEAD", "/app/x", b"", 200, b""),
        ("POST", "/app/read", b"one\ntwo\nthree", 200, b"one\ntwo\nthree"),
        ("POST", "/app/read-sized", b"abcdefgh", 200, b"abc|def|gh"),
        ("GET", "/app/write", b"", 200, b"written and returned"),
        ("GET", "/app/empty", b"", 204, b""),
        ("GET", "/app/error", b"", 500, b"handled"),
    ],
)
async def test_wsgiref_validator_is_satisfied(
    method: str,
    path: str,
    body: bytes,
    status: int,
    expected: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = [(b"host", b"testserver")]
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    app = WSGIApp(wsgiref.validate.validator(validated_app))
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        ex = await run_app(
            app,
            http_scope(method, path, headers=headers, root_path="/app"),
            body_messages(*[body[i : i + 2] for i in range(0, len(body), 2)]),
        )
    assert [r for r in caplog.records if r.name == "microasgi"] == []
    assert (ex.status, ex.body) == (status, expected)
    assert completed(ex)


# -- other scope types ---------------------------------------------------------------------


def test_websocket_is_refused(anyio_backend: str) -> None:
    with (
        TestClient(WSGIApp(hello), backend=anyio_backend) as client,
        pytest.raises(WebSocketDenied),
    ):
        client.websocket_connect("/ws")


@pytest.mark.anyio
async def test_lifespan_is_answered() -> None:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    replies: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        replies.append(message)

    with anyio.fail_after(5):
        await WSGIApp(hello)({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in replies] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


@pytest.mark.anyio
async def test_unknown_scope_type_is_refused() -> None:
    async def receive() -> Message:
        raise AssertionError  # pragma: no cover

    async def send(message: Message) -> None:
        raise AssertionError  # pragma: no cover

    with pytest.raises(ValueError, match="webtransport"):
        await WSGIApp(hello)({"type": "webtransport"}, receive, send)


def test_repr() -> None:
    assert repr(WSGIApp(hello, max_threads=7)).endswith("max_threads=7)")
