"""FileResponse: a file from disk, with validators, preconditions and byte ranges."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Mapping
from email.utils import formatdate

import anyio
import anyio.to_thread

from microasgi.background import BackgroundTask
from microasgi.responses._base import Response
from microasgi.responses._fileio import (
    NotAFileError,
    OpenedFile,
    chunk_sizes,
    open_file,
    read_chunks,
    stat_file,
)
from microasgi.responses._filetypes import content_disposition, guess_media_type
from microasgi.responses._ranges import (
    NOT_MODIFIED,
    PRECONDITION_FAILED,
    etag_for,
    evaluate_preconditions,
    if_range_allows,
    parse_http_date,
    parse_range,
)
from microasgi.responses._stream import sent, until_disconnect
from microasgi.types import Receive, Scope, Send

__all__ = [
    "CHUNK_SIZE",
    "MAX_RANGES",
    "PRECONDITION_HEADERS",
    "FileResponse",
    "offers_pathsend",
]

logger = logging.getLogger("microasgi")

CHUNK_SIZE = 64 * 1024
MAX_RANGES = 100
#: chunks read per trip to a worker thread (a trip costs more than reading 64 KiB)
READ_AHEAD = 4

# -- the response ----------------------------------------------------------------------------


def _last_modified(mtime: float) -> tuple[int, bytes] | None:
    """The Last-Modified time for a modification time: whole seconds, and as a header.

    Never later than now: a file dated in the future (a clock that was wrong,
    an archive unpacked with its times) is sent as modified now, as RFC 9110
    section 8.8.2.1 requires. None for a time no HTTP-date can express
    (before the year 1).
    """
    seconds = min(int(mtime), int(time.time()))
    try:
        return seconds, formatdate(seconds, usegmt=True).encode()
    except (ValueError, OverflowError, OSError):
        return None


PRECONDITION_HEADERS = {
    b"range": "range",
    b"if-range": "if_range",
    b"if-match": "if_match",
    b"if-none-match": "if_none_match",
    b"if-modified-since": "if_modified_since",
    b"if-unmodified-since": "if_unmodified_since",
}

#: Representation metadata, left out of 304, 412 and 416 answers (RFC 9110 section 15.4.5).
_REPRESENTATION_HEADERS = frozenset(
    {
        b"content-type",
        b"content-length",
        b"content-encoding",
        b"content-language",
        b"content-range",
        b"content-disposition",
        b"accept-ranges",
    }
)

Piece = bytes | tuple[int, int]  # literal bytes, or a span of the file (end exclusive)


def _request_headers(scope: Scope) -> dict[str, str]:
    """The Range and conditional headers of the request, by argument name."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = PRECONDITION_HEADERS.get(name)
        if key is not None:
            text = value.decode("latin-1")
            # A repeated field is one list (a repeated Range becomes invalid, so ignored).
            found[key] = f"{found[key]}, {text}" if key in found else text
    return found


def _without_representation(
    headers: list[tuple[bytes, bytes]], drop_last_modified: bool
) -> list[tuple[bytes, bytes]]:
    return [
        (name, value)
        for name, value in headers
        if name not in _REPRESENTATION_HEADERS
        and not (drop_last_modified and name == b"last-modified")
    ]


class FileResponse(Response):
    """The file at `path`, read in chunks in worker threads.

    - Content-Type from the name (`filename`, else `path`): a built-in table of
      the web's core types first, then `mimetypes`, else octet-stream.
    - `filename` adds ``Content-Disposition`` (`content_disposition_type`,
      ``attachment`` by default) with an ASCII ``filename`` and, for other
      names, ``filename*`` (RFC 6266).
    - A strong ETag (modification time in ns and size) and Last-Modified; for
      a 200 to a GET or HEAD, the preconditions of RFC 9110 section 13
      (304 Not Modified, 412 Precondition Failed) and byte ranges (206, several
      ranges as multipart/byteranges, 416 with ``Content-Range: bytes */size``),
      at most `max_ranges` of them (more, or a malformed Range: the whole file).
    - Never more bytes than the Content-Length sent: a file that grows while it
      is sent is cut at that length; one that shrinks ends the response short
      (logged as a warning), so the client sees an incomplete body.
    - HEAD sends the headers only. A whole-file 200 goes out with the ASGI
      ``http.response.pathsend`` extension when the server offers it.

    `stat_result` (an `os.stat_result` of the file) saves a stat when the file
    is sent through pathsend or for HEAD; otherwise the open file's own fstat
    is used, for the validators too if the file changed since `stat_result`.
    """

    chunk_size = CHUNK_SIZE
    max_ranges = MAX_RANGES
    # Set by StaticFiles, which opens the file in the same trip to a thread as its lookup.
    _opened: OpenedFile | None = None

    def __init__(
        self,
        path: str | os.PathLike[str],
        filename: str | None = None,
        media_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        status_code: int = 200,
        background: BackgroundTask | None = None,
        stat_result: os.stat_result | None = None,
        content_disposition_type: str = "attachment",
        chunk_size: int | None = None,
        max_ranges: int | None = None,
    ) -> None:
        if filename is not None and not isinstance(filename, str):
            raise TypeError(
                "FileResponse(path, filename=None, media_type=None, headers=None, *, "
                "status_code=200, ...): filename must be a str; pass status_code by keyword"
            )
        self.path = path
        # pathsend wants an absolute path; made now, as later the working directory may differ
        self._absolute_path = os.path.abspath(os.fspath(path))
        self.filename = filename
        self.status_code = status_code
        self.background = background
        self.stat_result = stat_result
        if chunk_size is not None:
            if chunk_size < 1:
                raise ValueError("chunk_size must be at least 1")
            self.chunk_size = chunk_size
        if max_ranges is not None:
            if max_ranges < 1:
                raise ValueError("max_ranges must be at least 1")
            self.max_ranges = max_ranges
        if media_type is None:
            media_type = guess_media_type(filename if filename is not None else os.fspath(path))
        self._set_media_type(media_type)
        self.body = b""
        raw = [item for item in self._init_headers(headers, None) if item[0] != b"content-length"]
        names = {name for name, _ in raw}
        if status_code == 200 and b"accept-ranges" not in names:
            raw.append((b"accept-ranges", b"bytes"))
        if filename is not None and b"content-disposition" not in names:
            disposition = content_disposition(filename, content_disposition_type)
            raw.append((b"content-disposition", disposition.encode("latin-1")))
        self.raw_headers = raw
        # The ETag and Last-Modified added for `stat_result`: replaced when the file
        # turns out to have changed by the time it is opened.
        self._validators: tuple[tuple[bytes, bytes], ...] = ()
        if stat_result is not None:
            given = len(raw)
            self._headers_for(stat_result, into=raw)
            self._validators = tuple(raw[given:])

    def _headers_for(
        self, st: os.stat_result, into: list[tuple[bytes, bytes]] | None = None
    ) -> tuple[list[tuple[bytes, bytes]], str | None, int | None]:
        """The headers with ETag and Last-Modified for `st` added (unless set by the user).

        Returns them with the ETag and the Last-Modified time in seconds that
        the preconditions compare with.
        """
        headers = list(self.raw_headers) if into is None else into
        etag = last_modified_text = None
        for name, value in headers:
            if name == b"etag":
                etag = value.decode("latin-1")
            elif name == b"last-modified":
                last_modified_text = value.decode("latin-1")
        if etag is None:
            etag = etag_for(st.st_mtime_ns, st.st_size)
            headers.append((b"etag", etag.encode("latin-1")))
        if last_modified_text is not None:
            return headers, etag, parse_http_date(last_modified_text)
        found = _last_modified(st.st_mtime)
        if found is None:
            return headers, etag, None
        headers.append((b"last-modified", found[1]))
        return headers, etag, found[0]

    def _headers_without_stale(self, st: os.stat_result) -> list[tuple[bytes, bytes]]:
        """A copy of the headers, less the validators of `stat_result` if `st` differs.

        A `stat_result` taken before the file changed would otherwise label the
        new content with the old ETag, and an If-Range with that tag would
        splice new bytes into the client's old copy.
        """
        headers = list(self.raw_headers)
        given = self.stat_result
        if (
            self._validators
            and given is not None
            and st is not given
            and (st.st_mtime_ns, st.st_size) != (given.st_mtime_ns, given.st_size)
        ):
            stale = self._validators
            headers = [item for item in headers if not any(item is old for old in stale)]
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method")
        conditions = (
            _request_headers(scope) if self.status_code == 200 and method in ("GET", "HEAD") else {}
        )
        opened, self._opened = self._opened, None
        if opened is not None:
            st = opened.stat
        elif method == "HEAD" and self.stat_result is not None:
            st = self.stat_result
        else:
            got = await self._open(scope, conditions)
            if isinstance(got, OpenedFile):
                opened, st = got, got.stat
            else:
                st = got
        try:
            completed = await self._respond(scope, receive, send, conditions, opened, st)
        finally:
            if opened is not None:
                opened.close()
        if completed and self.background is not None:
            await self.background()

    async def _open(self, scope: Scope, conditions: dict[str, str]) -> OpenedFile | os.stat_result:
        """The file opened (and for a plain GET of a small file, read), or only its stat."""
        method = scope.get("method")
        path = self._absolute_path
        plain_get = method == "GET" and not conditions
        stat_only = method == "HEAD" or (
            plain_get and self.status_code == 200 and offers_pathsend(scope)
        )
        try:
            if stat_only:
                if self.stat_result is not None:
                    return self.stat_result
                return await anyio.to_thread.run_sync(stat_file, path)
            prefetch = self.chunk_size if plain_get else 0
            return await anyio.to_thread.run_sync(open_file, path, prefetch)
        except FileNotFoundError:
            raise RuntimeError(f"File at path {path} does not exist.") from None
        except NotAFileError:
            raise RuntimeError(f"File at path {path} is not a regular file.") from None

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        conditions: dict[str, str],
        opened: OpenedFile | None,
        st: os.stat_result,
    ) -> bool:
        """Send the response; True once it is complete."""
        method = scope.get("method")
        headers, etag, last_modified = self._headers_for(st, self._headers_without_stale(st))
        # A small file was read already: if it shrank between fstat and read, what
        # was read is the file (nothing has been announced yet).
        size = len(opened.data) if opened is not None and opened.data is not None else st.st_size
        status = self.status_code
        spans: list[Piece] = [(0, size)]
        if conditions:
            now = time.time()
            outcome = evaluate_preconditions(
                if_match=conditions.get("if_match"),
                if_none_match=conditions.get("if_none_match"),
                if_modified_since=conditions.get("if_modified_since"),
                if_unmodified_since=conditions.get("if_unmodified_since"),
                etag=etag,
                last_modified=last_modified,
                now=now,
            )
            if outcome is not None:
                drop_last_modified = outcome == NOT_MODIFIED and etag is not None
                short = _without_representation(headers, drop_last_modified)
                if outcome == PRECONDITION_FAILED:
                    short.append((b"content-length", b"0"))
                await _send_empty(send, outcome, short)
                return True
            range_header = conditions.get("range")
            if_range = conditions.get("if_range")
            if (
                range_header is not None
                and method == "GET"  # RFC 9110 section 14.2: Range is defined for GET only
                and size > 0  # an empty file has no ranges to give: it is sent whole
                and (if_range is None or if_range_allows(if_range, etag, last_modified, now))
            ):
                ranges = parse_range(range_header, size, self.max_ranges)
                if ranges == []:
                    short = _without_representation(headers, False)
                    short.append((b"content-range", f"bytes */{size}".encode()))
                    short.append((b"content-length", b"0"))
                    await _send_empty(send, 416, short)
                    return True
                if ranges:
                    status, spans, size = _ranged(headers, ranges, size)
        headers.append((b"content-length", str(size).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if method == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return True
        if opened is None:  # a whole file, through the server's pathsend
            await send({"type": "http.response.pathsend", "path": self._absolute_path})
            return True
        if opened.data is not None:  # prefetched: a plain GET, so the whole file
            await send({"type": "http.response.body", "body": opened.data})
            return True
        return await _send_pieces(opened, spans, size, self.chunk_size, send, receive)


def offers_pathsend(scope: Scope) -> bool:
    """Whether the server takes ``http.response.pathsend`` messages."""
    extensions: dict[str, object] | None = scope.get("extensions")
    return extensions is not None and "http.response.pathsend" in extensions


async def _send_empty(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _ranged(
    headers: list[tuple[bytes, bytes]], ranges: list[tuple[int, int]], size: int
) -> tuple[int, list[Piece], int]:
    """Turn the headers into those of a 206; returns the status, the pieces, the length."""
    if len(ranges) == 1:
        start, end = ranges[0]
        headers.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
        return 206, [(start, end)], end - start
    content_type = None
    for index, (name, value) in enumerate(headers):
        if name == b"content-type":
            content_type = value
            del headers[index]
            break
    boundary = secrets.token_hex(16).encode()
    pieces: list[Piece] = []
    length = 0
    part_type = b"Content-Type: " + content_type + b"\r\n" if content_type is not None else b""
    for start, end in ranges:
        head = b"--%s\r\n%sContent-Range: bytes %d-%d/%d\r\n\r\n" % (
            boundary,
            part_type,
            start,
            end - 1,
            size,
        )
        pieces += [head, (start, end), b"\r\n"]
        length += len(head) + (end - start) + 2
    tail = b"--%s--\r\n" % boundary
    pieces.append(tail)
    length += len(tail)
    headers.append((b"content-type", b"multipart/byteranges; boundary=" + boundary))
    return 206, pieces, length


def _log_shrink(path: str, sent: int, announced: int) -> None:
    logger.warning(
        "File %s shrank while it was being sent: %d of %d bytes sent; the response ends short",
        path,
        sent,
        announced,
    )


async def _send_pieces(
    opened: OpenedFile,
    pieces: list[Piece],
    total: int,
    chunk_size: int,
    send: Send,
    receive: Receive,
) -> bool:
    """Send the body; True once complete, False if the file shrank or the client left."""

    async def send_all() -> bool:
        fd = opened.fd
        assert fd is not None
        written = 0
        finished = False
        pending = b""  # literal bytes (multipart headers) to go out with the next chunk
        for piece in pieces:
            if isinstance(piece, bytes):
                pending += piece
                continue
            start, end = piece
            while start < end:
                # Several chunks per trip to a thread: the trip costs more than the read.
                sizes = chunk_sizes(start, end, chunk_size, READ_AHEAD)
                try:
                    chunks = await anyio.to_thread.run_sync(read_chunks, fd, start, sizes)
                except OSError:
                    # Not the client's doing (that OSError comes from send()): say so.
                    logger.exception(
                        "Reading %s failed after %d of %d bytes were sent; the response ends short",
                        opened.path,
                        written,
                        total,
                    )
                    return False
                for wanted, chunk in zip(sizes, chunks, strict=False):
                    if len(chunk) < wanted:
                        _log_shrink(opened.path, written, total)
                        return False
                    start += wanted
                    body = pending + chunk if pending else chunk
                    pending = b""
                    written += len(body)
                    finished = written >= total
                    message = {
                        "type": "http.response.body",
                        "body": body,
                        "more_body": not finished,
                    }
                    if not await sent(send, message):
                        return False
                if len(chunks) < len(sizes):
                    _log_shrink(opened.path, written, total)
                    return False
        if not finished:
            return await sent(send, {"type": "http.response.body", "body": pending})
        return True

    if total <= chunk_size:
        return await send_all()
    return await until_disconnect(receive, send_all)
