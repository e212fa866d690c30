"""Form bodies: application/x-www-form-urlencoded and multipart/form-data.

Multipart is parsed as it streams in (package `multipart`); files go to
spooled temporary files (memory first, disk past 1 MiB, written from a worker
thread), so an upload never has to fit in memory. Malformed input answers
400, limits answer 413, and partly written files are closed on any error.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
import multipart

from microasgi.datastructures import FormData, Headers, UploadFile
from microasgi.exceptions import HTTPException

__all__ = ["parse_form"]

SPOOL_MAX_SIZE = 1024 * 1024


async def parse_form(
    content_type_header: str,
    stream: Callable[[], AsyncIterator[bytes]],
    body: Callable[[], Awaitable[bytes]],
    *,
    max_files: int,
    max_fields: int,
    max_part_size: int,
) -> FormData:
    """Parse a form body, read with `stream()` (multipart) or `body()` (urlencoded)."""
    content_type, options = multipart.parse_options_header(content_type_header)
    if content_type == "application/x-www-form-urlencoded":
        return await _parse_urlencoded(await body(), max_fields)
    if content_type == "multipart/form-data":
        boundary = options.get("boundary")
        if not boundary:
            raise HTTPException(400, "multipart/form-data without a boundary")
        return await _parse_multipart(stream(), boundary, max_files, max_fields, max_part_size)
    raise HTTPException(
        415, "Expected a form body (application/x-www-form-urlencoded or multipart/form-data)"
    )


async def _parse_urlencoded(body: bytes, max_fields: int) -> FormData:
    try:
        items = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields, errors="strict"
        )
    except UnicodeDecodeError:
        raise HTTPException(400, "Form body is not valid UTF-8") from None
    except ValueError:
        raise HTTPException(400, f"Too many form fields (the limit is {max_fields})") from None
    return FormData(items)


class _Part:
    __slots__ = ("data", "file", "headers", "name", "upload")

    def __init__(self, segment: multipart.MultipartSegment) -> None:
        self.name = segment.name or ""
        # The parser decoded part headers as UTF-8 (what browsers send): keep them so.
        raw = [(k.lower().encode("utf-8"), v.encode("utf-8")) for k, v in segment.headerlist]
        self.headers = Headers(raw=raw)
        self.data = bytearray()
        self.upload: UploadFile | None = None
        if segment.filename is not None:
            # Closed by FormData.close() (or on a parse error), not here.
            file: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_SIZE)  # noqa: SIM115
            self.upload = UploadFile(file, filename=segment.filename, size=0, headers=self.headers)


async def _write(upload: UploadFile, chunk: bytes) -> None:
    file: Any = upload.file
    if getattr(file, "_rolled", True) or file.tell() + len(chunk) > SPOOL_MAX_SIZE:
        await anyio.to_thread.run_sync(file.write, chunk)  # on disk (or about to be)
    else:
        file.write(chunk)
    upload.size = (upload.size or 0) + len(chunk)


async def _parse_multipart(
    chunks: AsyncIterator[bytes], boundary: str, max_files: int, max_fields: int, max_part_size: int
) -> FormData:
    items: list[tuple[str, Any]] = []
    files = fields = 0
    part: _Part | None = None
    try:
        parser = multipart.PushMultipartParser(
            boundary, max_segment_count=max_files + max_fields + 1, strict=True
        )
        async for chunk in chunks:
            for event in parser.parse(chunk):
                if isinstance(event, multipart.MultipartSegment):
                    part = _Part(event)
                    if part.upload is not None:
                        files += 1
                        if files > max_files:
                            raise HTTPException(400, f"Too many files (the limit is {max_files})")
                        items.append((part.name, part.upload))
                    else:
                        fields += 1
                        if fields > max_fields:
                            raise HTTPException(
                                400, f"Too many form fields (the limit is {max_fields})"
                            )
                elif event is None:
                    assert part is not None
                    if part.upload is not None:
                        await anyio.to_thread.run_sync(part.upload.file.seek, 0)
                    else:
                        items.append((part.name, _decode(part)))
                    part = None
                else:
                    assert part is not None
                    if part.upload is not None:
                        await _write(part.upload, event)
                    else:
                        part.data += event
                        if len(part.data) > max_part_size:
                            raise HTTPException(
                                413,
                                f"Form field {part.name!r} is larger than {max_part_size} bytes",
                            )
        parser.close()
    except multipart.MultipartError as exc:
        await FormData(items).close()
        raise HTTPException(400, f"Malformed multipart body: {exc}") from None
    except BaseException:
        await FormData(items).close()
        raise
    return FormData(items)


def _decode(part: _Part) -> str:
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, f"Form field {part.name!r} is not valid UTF-8") from None
