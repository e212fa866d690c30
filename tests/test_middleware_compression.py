"""CompressionMiddleware and GZipMiddleware: negotiation, what is skipped, streams, threads.

The brotli and zstd tests need their packages (the dev extra installs them); they fail
instead of skipping when MICROASGI_REQUIRE_SERVICES=1, as in CI.
"""

from __future__ import annotations

import importlib
import random
import sys
import threading
import zlib
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from microasgi import App, FileResponse, StreamingResponse
from microasgi._encodings import parse_accept_encoding
from microasgi.middleware import CompressionMiddleware, CORSMiddleware, GZipMiddleware, Middleware
from microasgi.middleware._codecs import choose_encoding
from microasgi.types import ASGIApp, Message, Receive, Scope, Send
from tests.helpers import Exchange, MakeClient, http_scope
from tests.services import require

TEXT = b"The quick brown fox jumps over the lazy dog. " * 100  # 4,500 bytes, compressible


def module(name: str) -> Any:
    """The module of a codec, or a skip (a failure in CI) saying how to install it."""
    for candidate in {"br": ["brotli"], "zstd": ["compression.zstd", "backports.zstd"]}[name]:
        try:
            return importlib.import_module(candidate)
        except ImportError:
            continue
    require(False, f"the {name} codec", "pip install -e '.[dev]' (brotli, backports.zstd)")


class Decoder:
    """Decodes a compressed stream piece by piece, as a client would."""

    def __init__(self, encoding: str) -> None:
        if encoding == "gzip":
            stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self.feed: Callable[[bytes], bytes] = stream.decompress
        elif encoding == "br":
            self.feed = module("br").Decompressor().process
        else:
            self.feed = module("zstd").ZstdDecompressor().decompress

    @classmethod
    def decode(cls, encoding: str, data: bytes) -> bytes:
        return cls(encoding).feed(data)


ALL = ["gzip", "br", "zstd"]


def raw_app(
    body: bytes | list[bytes] = TEXT,
    *,
    status: int = 200,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_length: bool = True,
    **start: Any,
) -> ASGIApp:
    """An ASGI app sending `body` (a list: one message per chunk) with `headers`."""
    chunks = body if isinstance(body, list) else [body]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raw = list(headers if headers is not None else [(b"content-type", b"text/plain")])
        if content_length:
            raw.append((b"content-length", str(sum(map(len, chunks))).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw, **start})
        for index, chunk in enumerate(chunks):
            more = index < len(chunks) - 1
            await send({"type": "http.response.body", "body": chunk, "more_body": more})

    return app


async def fetch(app: ASGIApp, accept: str | None = "gzip", method: str = "GET") -> Exchange:
    headers = [(b"host", b"testserver")]
    if accept is not None:
        headers.append((b"accept-encoding", accept.encode("latin-1")))
    return await Exchange().run(app, http_scope(method, headers=headers))


# -- negotiation ---------------------------------------------------------------------

OFFERED = ("zstd", "br", "gzip")


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("gzip", "gzip"),
        ("GZIP", "gzip"),
        ("x-gzip", "gzip"),
        ("gzip, deflate, br, zstd", "zstd"),  # a tie: zstd, then br, then gzip
        ("gzip, br", "br"),
        ("br;q=0.5, gzip", "gzip"),
        ("br;q=0.5, gzip;q=0.8, zstd;q=0.1", "gzip"),
        ("br;Q=1.000, gzip;q=0.999", "br"),
        ("gzip;q=0", None),
        ("gzip;q=0.000, br;q=0", None),
        ("gzip, gzip;q=0", None),  # q=0 anywhere means never
        ("*", "zstd"),
        ("*;q=0.5, gzip", "gzip"),
        ("*, zstd;q=0", "br"),
        ("*;q=0", None),
        ("identity", None),
        ("identity;q=1, gzip;q=0.5", None),
        ("gzip, identity", "gzip"),
        ("deflate, compress", None),
        ("", None),
        ("gzip;q=2", None),
        ("gzip;q=1.5, br", "br"),
        ("gzip;q=abc", None),
        ("gzip;q=0.1234", None),
        ("gzip;q", None),
        ("gzip; q = 0.5 ", "gzip"),
        ("gzip;level=9;q=0.5", "gzip"),
        (";;;,,,", None),
        ("g\x00zip, br", "br"),
    ],
)
def test_choose_encoding(accept: str, chosen: str | None) -> None:
    assert choose_encoding(accept.encode("latin-1"), OFFERED) == chosen


def test_choose_among_what_is_offered() -> None:
    assert choose_encoding(b"zstd, br, gzip;q=0.1", ("gzip",)) == "gzip"
    assert choose_encoding(b"zstd, br", ("gzip",)) is None


def test_huge_accept_encoding_lists() -> None:
    items = ", ".join(f"x-coding-{i};q=0.{i % 999:03d}" for i in range(5000)) + ", br;q=0.1"
    assert choose_encoding(items.encode(), OFFERED) == "br"
    assert choose_encoding(b"gzip;q=0," * 10_000, OFFERED) is None
    assert parse_accept_encoding("," * 50_000) == {}


# -- what is compressed ----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ALL)
async def test_a_body_is_compressed_with_the_chosen_coding(encoding: str) -> None:
    Decoder(encoding)  # skip (or fail in CI) when the codec is missing
    headers = [
        (b"content-type", b"text/plain"),
        (b"etag", b'"v1"'),
        (b"accept-ranges", b"bytes"),
        (b"vary", b"Cookie"),
    ]
    ex = await fetch(CompressionMiddleware(raw_app(headers=headers)), accept=encoding)
    assert ex.header(b"content-encoding") == encoding.encode()
    assert Decoder.decode(encoding, ex.body) == TEXT
    assert ex.header(b"content-length") == str(len(ex.body)).encode()
    assert len(ex.body) < len(TEXT) / 5
    assert ex.header(b"etag") == b'W/"v1"'  # RFC 9110: a strong validator of other bytes
    assert ex.header(b"accept-ranges") is None
    assert ex.header(b"vary") == b"Cookie, Accept-Encoding"


@pytest.mark.anyio
async def test_a_weak_etag_stays_as_it_is() -> None:
    headers = [(b"content-type", b"text/plain"), (b"etag", b'W/"v1"')]
    ex = await fetch(CompressionMiddleware(raw_app(headers=headers)))
    assert ex.header(b"etag") == b'W/"v1"'


@pytest.mark.anyio
async def test_identity_chosen_adds_vary_and_keeps_the_body() -> None:
    ex = await fetch(CompressionMiddleware(raw_app()), accept="gzip;q=0")
    assert ex.body == TEXT
    assert ex.header(b"content-encoding") is None
    assert ex.header(b"vary") == b"Accept-Encoding"
    assert ex.header(b"content-length") == str(len(TEXT)).encode()
    ex = await fetch(CompressionMiddleware(raw_app()), accept=None)
    assert ex.body == TEXT and ex.header(b"vary") == b"Accept-Encoding"


@pytest.mark.anyio
async def test_below_minimum_size_is_left_alone() -> None:
    ex = await fetch(CompressionMiddleware(raw_app(b"x" * 499), minimum_size=500))
    assert ex.body == b"x" * 499
    assert ex.header(b"content-encoding") is None
    assert ex.header(b"vary") is None  # small whatever the client takes
    ex = await fetch(CompressionMiddleware(raw_app(b"x" * 500), minimum_size=500))
    assert ex.header(b"content-encoding") == b"gzip"


@pytest.mark.anyio
async def test_an_incompressible_body_is_sent_as_it_is() -> None:
    noisy = random.Random(1).randbytes(5000)  # random bytes do not compress
    ex = await fetch(CompressionMiddleware(raw_app(noisy)))
    assert ex.body == noisy
    assert ex.header(b"content-encoding") is None
    assert ex.header(b"vary") == b"Accept-Encoding"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "status", "extra"),
    [
        ([(b"content-type", b"text/plain"), (b"content-encoding", b"br")], 200, {}),
        ([(b"content-type", b"text/plain"), (b"cache-control", b"public, No-Transform")], 200, {}),
        ([(b"content-type", b"text/event-stream")], 200, {}),
        ([(b"content-type", b"image/png")], 200, {}),
        ([(b"content-type", b"video/mp4")], 200, {}),
        ([(b"content-type", b"application/grpc+proto")], 200, {}),
    ],
)
async def test_responses_that_are_left_alone(
    headers: list[tuple[bytes, bytes]], status: int, extra: dict[str, Any]
) -> None:
    ex = await fetch(CompressionMiddleware(raw_app(headers=headers, status=status, **extra)))
    assert ex.body == TEXT
    assert ex.headers == [*headers, (b"content-length", str(len(TEXT)).encode())]


@pytest.mark.anyio
async def test_head_is_left_alone() -> None:
    ex = await fetch(CompressionMiddleware(raw_app()), method="HEAD")
    assert ex.header(b"content-encoding") is None and ex.header(b"vary") is None


@pytest.mark.anyio
async def test_excluded_content_types_can_be_chosen() -> None:
    app = raw_app(headers=[(b"content-type", b"text/event-stream; charset=utf-8")])
    ex = await fetch(CompressionMiddleware(app, exclude_content_types=["image/*"]))
    assert ex.header(b"content-encoding") == b"gzip"
    app = raw_app(headers=[(b"content-type", b"text/csv")])
    ex = await fetch(CompressionMiddleware(app, exclude_content_types=["text/*"]))
    assert ex.header(b"content-encoding") is None


# -- streams ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ALL)
async def test_a_stream_is_compressed_chunk_by_chunk_with_headers_first(encoding: str) -> None:
    decoder = Decoder(encoding)
    log: list[str] = []
    received: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        log.append("start sent")
        for i in range(3):
            await send({"type": "http.response.body", "body": b"part %d;" % i, "more_body": True})
            # Out and decodable before the next one is even made: nothing is held back.
            assert received[i:] == [b"part %d;" % i]
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    class Client(Exchange):
        async def send(self, message: Message) -> None:
            await super().send(message)
            if message["type"] == "http.response.start":
                log.append("start received")
            elif message["type"] == "http.response.body" and message.get("more_body"):
                received.append(decoder.feed(message["body"]))

    scope = http_scope(headers=[(b"host", b"x"), (b"accept-encoding", encoding.encode())])
    client = await Client().run(CompressionMiddleware(app, minimum_size=10_000), scope)
    assert log == ["start received", "start sent"]  # out before the app went on
    assert received == [b"part 0;", b"part 1;", b"part 2;"]
    assert client.header(b"content-encoding") == encoding.encode()
    assert client.header(b"content-length") is None
    assert Decoder.decode(encoding, client.body) == b"part 0;part 1;part 2;"


@pytest.mark.anyio
async def test_stream_headers_leave_before_the_first_chunk_exists() -> None:
    started = anyio.Event()
    release = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await release.wait()  # no body yet: the start must be out already
        await send({"type": "http.response.body", "body": TEXT})

    class Client(Exchange):
        async def send(self, message: Message) -> None:
            await super().send(message)
            if message["type"] == "http.response.start":
                started.set()

    client = Client()
    scope = http_scope(headers=[(b"host", b"x"), (b"accept-encoding", b"gzip")])
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.run, CompressionMiddleware(app), scope)
        with anyio.fail_after(5):
            await started.wait()
        assert client.header(b"content-encoding") == b"gzip"
        release.set()
    assert Decoder.decode("gzip", client.body) == TEXT


@pytest.mark.anyio
async def test_a_body_in_parts_with_content_length_is_streamed() -> None:
    ex = await fetch(CompressionMiddleware(raw_app([TEXT[:2000], TEXT[2000:]])))
    assert ex.header(b"content-length") is None
    assert ex.header(b"content-encoding") == b"gzip"
    assert Decoder.decode("gzip", ex.body) == TEXT


def test_streaming_response_through_the_client(make_client: MakeClient) -> None:
    app = App(middleware=[Middleware(CompressionMiddleware)])

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> Any:
            for i in range(50):
                yield f"line {i}\n"

        return StreamingResponse(parts(), media_type="text/plain")

    response = make_client(app).get("/stream", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.text == "".join(f"line {i}\n" for i in range(50))  # httpx decodes it


@pytest.mark.anyio
async def test_trailers_pass_through() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain")]
        await send(
            {"type": "http.response.start", "status": 200, "headers": headers, "trailers": True}
        )
        await send({"type": "http.response.body", "body": TEXT})
        await send({"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]})

    ex = await fetch(CompressionMiddleware(app))
    assert ex.sent[-1] == {"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]}
    assert Decoder.decode("gzip", ex.sent[1]["body"]) == TEXT


# -- pathsend --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pathsend_with_content_length_is_left_to_the_server(tmp_path: Any) -> None:
    path = tmp_path / "file.txt"
    path.write_bytes(TEXT)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(TEXT)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": str(path)})

    ex = await fetch(CompressionMiddleware(app))
    assert ex.header(b"content-encoding") is None
    assert ex.sent[1] == {"type": "http.response.pathsend", "path": str(path)}


@pytest.mark.anyio
async def test_pathsend_after_a_compressed_start_is_compressed_here(tmp_path: Any) -> None:
    path = tmp_path / "file.txt"
    path.write_bytes(TEXT * 40)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(path)})

    ex = await fetch(CompressionMiddleware(app))
    assert ex.header(b"content-encoding") == b"gzip"
    assert all(m["type"] == "http.response.body" for m in ex.sent[1:])
    assert Decoder.decode("gzip", ex.body) == TEXT * 40


# -- threads, codecs, options ----------------------------------------------------------


@pytest.mark.anyio
async def test_large_bodies_are_compressed_off_the_event_loop() -> None:
    loop_thread = threading.current_thread()
    threads: list[threading.Thread] = []
    middleware = CompressionMiddleware(raw_app(TEXT * 10), thread_minimum_size=len(TEXT) * 10)
    codec = middleware.codecs["gzip"]
    original = codec.compress

    def recording(data: bytes) -> bytes:
        threads.append(threading.current_thread())
        return original(data)

    codec.compress = recording
    await fetch(middleware)
    middleware.app = raw_app(TEXT)
    await fetch(middleware)
    assert threads[0] is not loop_thread
    assert threads[1] is loop_thread


def test_an_unavailable_codec_asked_for_by_name_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "brotli", None)  # import brotli -> ImportError
    with pytest.raises(ValueError, match=r"microasgi\[brotli\]"):
        CompressionMiddleware(App(), encodings=["br"])
    assert "br" not in CompressionMiddleware(App()).encodings  # by default: left out


def test_unknown_coding_is_an_error() -> None:
    with pytest.raises(ValueError, match="deflate"):
        CompressionMiddleware(App(), encodings=["deflate"])


def test_every_codec_is_offered_when_installed() -> None:
    module("br")
    module("zstd")
    assert CompressionMiddleware(App()).encodings == ("zstd", "br", "gzip")


@pytest.mark.anyio
async def test_gzip_middleware_only_speaks_gzip() -> None:
    middleware = GZipMiddleware(raw_app(), compresslevel=1)
    assert middleware.encodings == ("gzip",)
    ex = await fetch(middleware, accept="zstd, br, gzip;q=0.1")
    assert ex.header(b"content-encoding") == b"gzip"
    assert zlib.decompress(ex.body, 16 + zlib.MAX_WBITS) == TEXT
    ex = await fetch(middleware, accept="zstd, br")
    assert ex.header(b"content-encoding") is None


def test_websocket_passes_through(make_client: MakeClient) -> None:
    app = App(middleware=[Middleware(CompressionMiddleware)])

    @app.websocket("/ws")
    async def ws(websocket: Any) -> None:
        await websocket.accept()
        await websocket.send_text("x" * 5000)
        await websocket.close()

    with make_client(app).websocket_connect("/ws", headers={"Accept-Encoding": "gzip"}) as s:
        assert s.receive_text() == "x" * 5000


# -- review fixes ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        # RFC 9110 section 5.3: several field lines are one comma-separated list.
        [(b"cache-control", b"public"), (b"cache-control", b"no-transform")],
        [(b"content-encoding", b"identity"), (b"content-encoding", b"br")],
    ],
)
async def test_every_field_line_counts(headers: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"text/plain"), *headers]
    ex = await fetch(CompressionMiddleware(raw_app(headers=headers)))
    assert ex.body == TEXT
    assert ex.headers == [*headers, (b"content-length", str(len(TEXT)).encode())]


@pytest.mark.anyio
async def test_a_message_of_another_kind_never_overtakes_the_held_start() -> None:
    # Waiting for the body of a response with a Content-Length, the start is held back;
    # a message the middleware does not compress must not go out before it.
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"4500")],
    }
    other = {"type": "http.response.zerocopy", "file": None, "count": 4500}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)
        await send(other)

    ex = await fetch(CompressionMiddleware(app))
    assert [m["type"] for m in ex.sent] == ["http.response.start", "http.response.zerocopy"]
    assert ex.header(b"content-encoding") is None
    assert ex.header(b"vary") == b"Accept-Encoding"


@pytest.mark.anyio
@pytest.mark.parametrize(("accept", "offered"), [("gzip", False), ("gzip;q=0", True)])
async def test_zerocopy_is_not_offered_when_the_body_will_be_compressed(
    accept: str, offered: bool
) -> None:
    # Its file descriptor would go to the client as it is, into the middle of a gzip stream.
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await raw_app(content_length=False)(scope, receive, send)

    extensions = {"http.response.zerocopy": {}, "http.response.pathsend": {}}
    scope = http_scope(
        headers=[(b"host", b"x"), (b"accept-encoding", accept.encode())], extensions=extensions
    )
    ex = await Exchange().run(CompressionMiddleware(app), scope)
    assert ("http.response.zerocopy" in seen[0]["extensions"]) is offered
    assert "http.response.pathsend" in seen[0]["extensions"]  # handled here either way
    assert scope["extensions"] == extensions  # the server's scope is left as it was
    assert (ex.body if offered else Decoder.decode("gzip", ex.body)) == TEXT


@pytest.mark.parametrize(
    "options",
    [
        {"gzip_level": 10},
        {"gzip_level": -2},
        {"brotli_quality": 12},
        {"zstd_level": 23},
    ],
)
def test_levels_are_checked_when_built(options: dict[str, int]) -> None:
    # Not at the first request, as a 500 for every compressed response.
    module("br")
    module("zstd")
    with pytest.raises(ValueError, match="cannot compress at level"):
        CompressionMiddleware(App(), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("gzip;q=0;q=1", None),  # a repeated weight: the lowest, as for a repeated coding
        ("br;q=1;q=0.5, gzip;q=0.8", "gzip"),
    ],
)
def test_a_repeated_weight_counts_at_its_lowest(accept: str, chosen: str | None) -> None:
    assert choose_encoding(accept.encode(), OFFERED) == chosen


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("accept", "etag", "vary"),
    [
        ("gzip", b'W/"a"', b"Accept-Encoding"),  # as the 200 would have said
        ("gzip;q=0", b'"a"', b"Accept-Encoding"),  # the 200 would be identity: strong
        (None, b'"a"', b"Accept-Encoding"),
    ],
)
async def test_not_modified_says_what_the_full_response_would(
    accept: str | None, etag: bytes, vary: bytes
) -> None:
    # RFC 9110 section 15.4.5: a 304 carries the ETag and Vary a 200 would have had.
    async def not_modified(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"etag", b'"a"'), (b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    ex = await fetch(CompressionMiddleware(not_modified), accept=accept)
    assert (ex.status, ex.header(b"etag"), ex.header(b"vary")) == (304, etag, vary)
    assert ex.header(b"content-encoding") is None and ex.body == b""


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        [(b"etag", b'"a"'), (b"content-type", b"image/png")],
        [(b"etag", b'"a"'), (b"cache-control", b"no-transform")],
    ],
)
async def test_not_modified_of_a_response_never_compressed_is_left_alone(
    headers: list[tuple[bytes, bytes]],
) -> None:
    async def not_modified(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    ex = await fetch(CompressionMiddleware(not_modified))
    assert ex.headers == headers


def test_a_response_that_fails_before_its_held_body_is_a_500(make_client: MakeClient) -> None:
    # The start of a response with a Content-Length is held until its body comes. When the
    # body never comes, nothing has reached the client yet: it gets a whole 500 (through the
    # middleware further out), not a 200 start that was never sent and an empty answer.
    app = App(
        middleware=[
            Middleware(CORSMiddleware, allow_origins=["https://a.example"]),
            Middleware(CompressionMiddleware),
        ]
    )

    @app.get("/file")
    async def file() -> StreamingResponse:
        async def chunks() -> Any:
            # An OSError of its own, which the response takes for the client going away.
            raise ConnectionResetError("the upstream went away")
            yield b""  # pragma: no cover

        return StreamingResponse(chunks(), headers={"content-length": "5000"})

    client = make_client(app, raise_server_exceptions=False)
    response = client.get(
        "/file", headers={"Accept-Encoding": "gzip", "Origin": "https://a.example"}
    )
    assert response.status_code == 500
    assert response.headers["access-control-allow-origin"] == "https://a.example"
    assert "content-encoding" not in response.headers


@pytest.mark.anyio
@pytest.mark.parametrize("accept", ["gzip", "gzip;q=0"])
async def test_a_partial_response_says_it_varies_and_keeps_its_bytes(accept: str) -> None:
    # RFC 9110 section 15.3.7: a 206 carries the Vary a 200 would have had. Its ranges are
    # of the identity bytes, so it is not compressed and its ETag stays strong.
    headers = [
        (b"content-type", b"text/plain"),
        (b"etag", b'"a"'),
        (b"content-range", b"bytes 0-4499/9000"),
    ]
    ex = await fetch(CompressionMiddleware(raw_app(headers=headers, status=206)), accept=accept)
    assert ex.body == TEXT
    assert ex.header(b"content-encoding") is None
    assert (ex.header(b"etag"), ex.header(b"vary")) == (b'"a"', b"Accept-Encoding")


def test_file_response_ranges_and_revalidation(make_client: MakeClient, tmp_path: Any) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(TEXT)
    app = App(middleware=[Middleware(CompressionMiddleware)])

    @app.get("/notes")
    async def notes() -> FileResponse:
        return FileResponse(path)

    client = make_client(app)
    gzip = {"Accept-Encoding": "gzip"}
    full = client.get("/notes", headers=gzip)
    assert full.headers["content-encoding"] == "gzip" and full.content == TEXT
    etag = full.headers["etag"]
    assert etag.startswith('W/"')
    again = client.get("/notes", headers={**gzip, "If-None-Match": etag})
    assert again.status_code == 304
    assert (again.headers["etag"], again.headers["vary"]) == (etag, "Accept-Encoding")
    part = client.get("/notes", headers={**gzip, "Range": "bytes=0-9"})
    assert (part.status_code, part.content) == (206, TEXT[:10])
    assert part.headers["vary"] == "Accept-Encoding" and "content-encoding" not in part.headers
    assert part.headers["etag"] == etag[2:]  # the strong one: ranges are of the identity bytes
