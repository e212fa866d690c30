"""CompressionMiddleware (gzip, brotli, zstd) and GZipMiddleware (gzip only)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import anyio
import anyio.lowlevel
import anyio.to_thread

from microasgi.middleware._codecs import (
    CODEC_NAMES,
    Codec,
    Encoder,
    UnavailableCodec,
    choose_encoding,
    get_codec,
)
from microasgi.middleware._headers import (
    RawHeaders,
    collect_headers,
    get_header,
    split_tokens,
    with_headers,
    with_vary,
)
from microasgi.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_EXCLUDED_CONTENT_TYPES", "CompressionMiddleware", "GZipMiddleware"]

#: Media types left alone by default: compressed already, or a stream of events
#: that some proxies and clients only handle unencoded.
DEFAULT_EXCLUDED_CONTENT_TYPES = (
    "application/gzip",
    "application/grpc",
    "application/x-gzip",
    "application/zip",
    "application/zstd",
    "audio/*",
    "font/woff",
    "font/woff2",
    "image/avif",
    "image/gif",
    "image/jpeg",
    "image/png",
    "image/webp",
    "text/event-stream",
    "video/*",
)

_LIMITER: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("compression")
_FILE_CHUNK = 64 * 1024
# The response headers that decide whether a body may be compressed at all.
_DECIDING = frozenset({b"content-encoding", b"cache-control", b"content-type"})
# An extension whose file would reach the client as it is: not offered to the app when
# the body is to be compressed (pathsend is, and the middleware reads its file).
_ZEROCOPY = "http.response.zerocopy"


def _limiter() -> anyio.CapacityLimiter:
    """Worker threads compressing at once (per event loop): as many as there are cores,
    taken from anyio's pool but never more than this, so compression cannot crowd out
    sync endpoints."""
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
        _LIMITER.set(limiter)
        return limiter


def _media_types(patterns: Sequence[str]) -> frozenset[str]:
    return frozenset(p.partition(";")[0].strip().lower() for p in patterns)


def _weak(etag: bytes) -> bytes:
    """A strong ETag made weak: the compressed bytes are not the identity bytes
    (RFC 9110 section 8.8.3), but they are the same representation."""
    etag = etag.strip()
    return etag if etag.startswith(b"W/") else b"W/" + etag


# What one response is doing (see _Response).
_PASS, _HOLD, _STREAM = 0, 1, 2


class CompressionMiddleware:
    """Compress response bodies with the coding the client weighs most.

    The coding is chosen from Accept-Encoding with its q-values (``q=0``
    means never; names without case; ties go to zstd, then br, then gzip)
    among `encodings` (by default every one available: gzip always, br with
    the ``brotli`` package, zstd on Python 3.14+ or with ``backports.zstd``).
    Asking for one that is not installed is a ValueError.

    Left alone: responses under `minimum_size` bytes (by Content-Length;
    a response without one is a stream and always compressed), HEAD, 206,
    304 and other bodiless statuses, responses with a Content-Encoding,
    ``Cache-Control: no-transform``, `exclude_content_types` (``type/*``
    patterns allowed; text/event-stream among the defaults), and pathsend
    responses with a Content-Length. A 304 gets the Vary and weak ETag the
    full response would have, a 206 the Vary. A compressed response gets Content-Encoding, ``Vary:
    Accept-Encoding``, a weak ETag, no Accept-Ranges, and the new
    Content-Length (none for a stream). A stream is compressed chunk by
    chunk with a flush after each, and its headers leave at once. A chunk of
    `thread_minimum_size` bytes or more is compressed in a worker thread.
    """

    def __init__(
        self,
        app: ASGIApp,
        minimum_size: int = 500,
        *,
        encodings: Sequence[str] | None = None,
        gzip_level: int = 6,
        brotli_quality: int = 4,
        zstd_level: int = 3,
        exclude_content_types: Sequence[str] = DEFAULT_EXCLUDED_CONTENT_TYPES,
        thread_minimum_size: int = 128 * 1024,
    ) -> None:
        self.app = app
        self.minimum_size = minimum_size
        self.thread_minimum_size = thread_minimum_size
        self.exclude_content_types = _media_types(exclude_content_types)
        levels = {"gzip": gzip_level, "br": brotli_quality, "zstd": zstd_level}
        codecs: dict[str, Codec] = {}
        wanted = CODEC_NAMES if encodings is None else tuple(e.lower() for e in encodings)
        for name in wanted:
            if name not in levels:
                raise ValueError(
                    f"unknown content coding {name!r}; choose among {', '.join(CODEC_NAMES)}"
                )
            try:
                codecs[name] = get_codec(name, levels[name])
            except UnavailableCodec:
                if encodings is not None:
                    raise  # asked for by name: say what to install
        self.codecs = codecs
        self.encodings = tuple(name for name in CODEC_NAMES if name in codecs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        accept = get_header(scope["headers"], b"accept-encoding")
        name = choose_encoding(accept, self.encodings) if accept else None
        codec = self.codecs[name] if name is not None else None
        extensions = scope.get("extensions")
        if codec is not None and extensions and _ZEROCOPY in extensions:
            offered = {key: value for key, value in extensions.items() if key != _ZEROCOPY}
            scope = {**scope, "extensions": offered}
        response = _Response(self, send, codec)
        await self.app(scope, receive, response)
        if response.state == _HOLD:
            # The app started a response and ended (its error already answered by a
            # guard that saw the start go by) without its body: the start is still
            # here, so nothing reached the client, and a 500 can be answered further out.
            raise RuntimeError("the app returned without sending the body of its response")

    def compressible(self, status: int, headers: RawHeaders) -> bool:
        """Whether a response with this status and these headers may be compressed."""
        if status < 200 or status in (204, 206, 304):
            return False
        return self.may_encode(headers)

    def may_encode(self, headers: RawHeaders) -> bool:
        """Whether content with these headers may be compressed (whatever the status).

        Every field line counts: ``Cache-Control: public`` then
        ``Cache-Control: no-transform`` is one list (RFC 9110 section 5.3).
        """
        found = collect_headers(headers, _DECIDING)
        for value in found.get(b"content-encoding", ()):
            if any(coding.lower() != "identity" for coding in split_tokens(value)):
                return False
        if b"no-transform" in b",".join(found.get(b"cache-control", ())).lower():
            return False
        content_types = found.get(b"content-type")
        if content_types:
            media = content_types[0].decode("latin-1").partition(";")[0].strip().lower()
            excluded = self.exclude_content_types
            if media in excluded or media.partition("/")[0] + "/*" in excluded:
                return False
            if media.startswith("application/grpc+") and "application/grpc" in excluded:
                return False
        return True

    async def run(self, function: Callable[[bytes], bytes], data: bytes) -> bytes:
        """`function(data)`, in a worker thread when `data` is large."""
        if len(data) < self.thread_minimum_size:
            return function(data)
        return await anyio.to_thread.run_sync(function, data, limiter=_limiter())


class _Response:
    """The `send` of one response: decides at the start, then compresses each body."""

    __slots__ = ("codec", "encoder", "middleware", "send", "start", "state")

    def __init__(self, middleware: CompressionMiddleware, send: Send, codec: Codec | None) -> None:
        self.middleware = middleware
        self.send = send
        self.codec = codec
        self.state = _PASS
        self.start: Message | None = None
        self.encoder: Encoder | None = None

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self.on_start(message)
        elif self.state == _PASS:
            await self.send(message)
        elif kind == "http.response.body":
            await self.on_body(message)
        elif self.state == _HOLD:
            # A pathsend (the server sends the file itself) or another message that is
            # not a body to compress: the held start goes first, as it is.
            assert self.start is not None
            self.state = _PASS
            await self.send(self.start)
            await self.send(message)
        elif kind == "http.response.pathsend":
            await self.on_pathsend(message)
        else:
            await self.send(message)

    async def on_start(self, message: Message) -> None:
        headers = list(message.get("headers") or ())
        middleware = self.middleware
        if message["status"] in (206, 304):
            await self.send(self.like_full_response(message, headers))
            return
        length = get_header(headers, b"content-length")
        if length is not None and length.isdigit() and int(length[:18]) < middleware.minimum_size:
            await self.send(message)  # too small to be worth it, whatever the client takes
            return
        if not middleware.compressible(message["status"], headers):
            await self.send(message)
            return
        headers = with_vary(headers, ("Accept-Encoding",))
        if self.codec is None:
            await self.send({**message, "headers": headers})
            return
        self.start = {**message, "headers": headers}
        if length is not None:
            self.state = _HOLD  # the body follows at once: wait for it, to give its length
        else:
            await self.start_stream()

    def like_full_response(self, message: Message, headers: RawHeaders) -> Message:
        """A 304 or 206 with the Vary the full response would have had (RFC 9110
        sections 15.4.5, 15.3.7), and a 304 with its ETag too, so caches can match them
        with what they keep. A 206 is of the identity bytes: its ETag stays strong."""
        if not self.middleware.may_encode(headers):
            return message
        replace: dict[bytes, bytes | None] = {}
        etag = get_header(headers, b"etag")
        if etag is not None and self.codec is not None and message["status"] == 304:
            replace[b"etag"] = _weak(etag)
        headers = with_vary(with_headers(headers, replace), ("Accept-Encoding",))
        return {**message, "headers": headers}

    async def start_stream(self) -> None:
        assert self.start is not None and self.codec is not None
        self.state = _STREAM
        self.encoder = self.codec.encoder()
        await self.send(self.encoded_start(None))

    def encoded_start(self, length: int | None) -> Message:
        assert self.start is not None and self.codec is not None
        headers = self.start["headers"]
        etag = get_header(headers, b"etag")
        replace = {
            b"content-encoding": self.codec.name.encode(),
            b"content-length": None if length is None else str(length).encode(),
            b"accept-ranges": None,  # ranges would be of the identity bytes
        }
        if etag is not None:
            replace[b"etag"] = _weak(etag)
        return {**self.start, "headers": with_headers(headers, replace)}

    async def on_body(self, message: Message) -> None:
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self.state == _HOLD:
            assert self.start is not None and self.codec is not None
            if more:
                await self.start_stream()  # a body in parts after all: stream it
            else:
                self.state = _PASS
                compressed = await self.middleware.run(self.codec.compress, body)
                if len(compressed) >= len(body):  # incompressible: send it as it is
                    await self.send(self.start)
                    await self.send(message)
                    return
                await self.send(self.encoded_start(len(compressed)))
                await self.send({**message, "body": compressed})
                return
        assert self.encoder is not None
        if more:
            data = await self.middleware.run(self.encoder.chunk, body) if body else b""
        else:
            self.state = _PASS
            data = await self.middleware.run(self.encoder.finish, body)
        await self.send({**message, "body": data})

    async def on_pathsend(self, message: Message) -> None:
        # Headers saying a coding are out already: compress the file ourselves.
        async with await anyio.open_file(message["path"], "rb") as file:
            while chunk := await file.read(_FILE_CHUNK):
                await self.on_body({"type": "http.response.body", "body": chunk, "more_body": True})
        await self.on_body({"type": "http.response.body", "body": b""})


class GZipMiddleware(CompressionMiddleware):
    """CompressionMiddleware with gzip only, under Starlette's name and options."""

    def __init__(
        self,
        app: ASGIApp,
        minimum_size: int = 500,
        compresslevel: int = 9,
        thread_minimum_size: int = 128 * 1024,
        *,
        exclude_content_types: Sequence[str] = DEFAULT_EXCLUDED_CONTENT_TYPES,
    ) -> None:
        super().__init__(
            app,
            minimum_size,
            encodings=("gzip",),
            gzip_level=compresslevel,
            exclude_content_types=exclude_content_types,
            thread_minimum_size=thread_minimum_size,
        )
