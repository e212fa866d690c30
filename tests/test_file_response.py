"""FileResponse: media types, Content-Disposition, validators, preconditions, ranges,
HEAD, pathsend, chunked reads off the event loop, files that change while they are sent,
clients that leave."""

from __future__ import annotations

import errno
import logging
import mimetypes
import os
import re
import threading
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio
import pytest

from microasgi import App, BackgroundTask, FileResponse
from microasgi.responses import _file, _fileio
from microasgi.responses._filetypes import content_disposition, guess_media_type
from microasgi.responses._ranges import etag_for, parse_http_date
from microasgi.types import Message
from tests.helpers import Exchange, MakeClient, http_scope

CONTENT = bytes(range(256)) * 4  # 1,024 bytes, every offset recognisable


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(CONTENT)
    # A modification time well in the past, so that dates compare as strong validators.
    os.utime(path, (1_700_000_000, 1_700_000_000))
    return path


def scope(method: str = "GET", **headers: str) -> dict[str, Any]:
    raw = [(b"host", b"testserver")]
    raw += [(k.replace("_", "-").encode(), v.encode("latin-1")) for k, v in headers.items()]
    return http_scope(method, "/", headers=raw)


async def run(response: FileResponse, scope_: dict[str, Any] | None = None) -> Exchange:
    return await Exchange().run(response, scope_ if scope_ is not None else scope())


def multipart_parts(ex: Exchange) -> list[tuple[dict[str, str], bytes]]:
    content_type = (ex.header(b"content-type") or b"").decode()
    match = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", content_type)
    assert match, content_type
    boundary = match.group(1).encode()
    body = ex.body
    assert body.endswith(b"--" + boundary + b"--\r\n")
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n")
        head, _, payload = chunk[2:-2].partition(b"\r\n\r\n")
        headers = dict(line.decode().split(": ", 1) for line in head.split(b"\r\n"))
        parts.append((headers, payload))
    return parts


# -- media types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("app.js", "text/javascript"),
        ("module.mjs", "text/javascript"),
        ("style.css", "text/css"),
        ("index.html", "text/html"),
        ("data.json", "application/json"),
        ("icon.svg", "image/svg+xml"),
        ("lib.wasm", "application/wasm"),
        ("photo.webp", "image/webp"),
        ("photo.avif", "image/avif"),
        ("font.woff2", "font/woff2"),
        ("APP.JS", "text/javascript"),
        ("backup.tar.gz", "application/gzip"),
        ("archive.zip", "application/zip"),
    ],
)
def test_core_types_come_from_our_table_whatever_the_os_says(
    monkeypatch: pytest.MonkeyPatch, name: str, media_type: str
) -> None:
    # A machine whose registry gets things wrong (as Windows registries have for .js).
    monkeypatch.setattr(mimetypes, "guess_type", lambda *a, **k: ("text/plain", None))
    assert guess_media_type(name) == media_type


def test_other_types_come_from_mimetypes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert guess_media_type("doc.odt") == "application/vnd.oasis.opendocument.text"
    monkeypatch.setattr(mimetypes, "guess_type", lambda *a, **k: ("application/x-made-up", None))
    assert guess_media_type("thing.unknownsuffix") == "application/x-made-up"


def test_unknown_and_encoded_names_are_octet_stream() -> None:
    assert guess_media_type("README") == "application/octet-stream"
    assert guess_media_type("file.nosuchsuffix") == "application/octet-stream"
    assert guess_media_type("table.csv.bz2") == "application/x-bzip2"


@pytest.mark.anyio
async def test_content_type_from_filename_then_path(tmp_path: Path) -> None:
    path = tmp_path / "script.js"
    path.write_text("alert(1)")
    ex = await run(FileResponse(path))
    assert ex.header(b"content-type") == b"text/javascript; charset=utf-8"
    ex = await run(FileResponse(path, filename="report.pdf"))
    assert ex.header(b"content-type") == b"application/pdf"
    ex = await run(FileResponse(path, media_type="application/x-custom"))
    assert ex.header(b"content-type") == b"application/x-custom"


# -- Content-Disposition -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", 'attachment; filename="report.pdf"'),
        (
            "résumé.pdf",
            "attachment; filename=\"resume.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf",
        ),
        (
            "文件.txt",
            "attachment; filename=\"__.txt\"; filename*=UTF-8''%E6%96%87%E4%BB%B6.txt",
        ),
        (
            'say "hi".txt',
            "attachment; filename=\"say _hi_.txt\"; filename*=UTF-8''say%20%22hi%22.txt",
        ),
        (
            "back\\slash.txt",
            "attachment; filename=\"back_slash.txt\"; filename*=UTF-8''back%5Cslash.txt",
        ),
        ("evil\r\nSet-Cookie: a=b.txt", 'attachment; filename="evilSet-Cookie: a=b.txt"'),
        ("tab\there\x00.txt", 'attachment; filename="tabhere.txt"'),
        ("100%.txt", "attachment; filename=\"100_.txt\"; filename*=UTF-8''100%25.txt"),
        ("ﬁle.txt", "attachment; filename=\"file.txt\"; filename*=UTF-8''%EF%AC%81le.txt"),
    ],
)
def test_content_disposition(filename: str, expected: str) -> None:
    value = content_disposition(filename)
    assert value == expected
    assert "\r" not in value and "\n" not in value
    value.encode("ascii")  # always ASCII


def test_content_disposition_type() -> None:
    assert content_disposition("a.txt", "inline") == 'inline; filename="a.txt"'
    with pytest.raises(ValueError):
        content_disposition("a.txt", "inline; x=y")


@pytest.mark.anyio
async def test_filename_header(data_file: Path) -> None:
    ex = await run(FileResponse(data_file, filename="naïve.bin"))
    assert ex.header(b"content-disposition") == (
        b"attachment; filename=\"naive.bin\"; filename*=UTF-8''na%C3%AFve.bin"
    )
    ex = await run(FileResponse(data_file))
    assert ex.header(b"content-disposition") is None


def test_status_code_must_be_passed_by_keyword(data_file: Path) -> None:
    with pytest.raises(TypeError, match="status_code by keyword"):
        FileResponse(data_file, 200)  # type: ignore[arg-type]


# -- plain responses, validators, HEAD ----------------------------------------------------


@pytest.mark.anyio
async def test_whole_file(data_file: Path) -> None:
    ex = await run(FileResponse(data_file))
    assert ex.status == 200
    assert ex.body == CONTENT
    assert ex.header(b"content-length") == b"1024"
    assert ex.header(b"accept-ranges") == b"bytes"
    assert ex.header(b"last-modified") == formatdate(1_700_000_000, usegmt=True).encode()
    etag = ex.header(b"etag")
    assert etag is not None and etag.startswith(b'"') and etag.endswith(b'"')


@pytest.mark.anyio
async def test_etag_changes_with_the_file(data_file: Path) -> None:
    first = (await run(FileResponse(data_file))).header(b"etag")
    data_file.write_bytes(CONTENT[:-1])  # noqa: ASYNC240 - a test setting the scene
    assert (await run(FileResponse(data_file))).header(b"etag") != first


@pytest.mark.anyio
async def test_head_sends_headers_only_and_reads_nothing(
    data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_file, "open_file", _forbidden)
    ex = await run(FileResponse(data_file), scope("HEAD"))
    assert ex.status == 200
    assert ex.header(b"content-length") == b"1024"
    assert ex.body == b""


def _forbidden(*args: Any) -> Any:
    raise AssertionError("the file was opened")


@pytest.mark.anyio
async def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    ex = await run(FileResponse(path))
    assert (ex.status, ex.body, ex.header(b"content-length")) == (200, b"", b"0")
    ex = await run(FileResponse(path), scope(range="bytes=0-10"))
    assert (ex.status, ex.body) == (200, b"")  # nothing to give in ranges: sent whole


@pytest.mark.anyio
async def test_missing_file_and_directory_raise(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="does not exist"):
        await run(FileResponse(tmp_path / "nope"))
    with pytest.raises(RuntimeError, match="not a regular file"):
        await run(FileResponse(tmp_path))


@pytest.mark.anyio
async def test_user_headers_win_but_not_content_length(data_file: Path) -> None:
    response = FileResponse(
        data_file,
        headers={"etag": '"mine"', "cache-control": "no-cache", "content-length": "5"},
    )
    ex = await run(response, scope(if_none_match='"mine"'))
    assert ex.status == 304
    assert ex.header(b"etag") == b'"mine"'
    assert ex.header(b"cache-control") == b"no-cache"
    ex = await run(
        FileResponse(data_file, headers={"content-length": "5"}),
    )
    assert ex.header(b"content-length") == b"1024"


@pytest.mark.anyio
async def test_stat_result_headers_are_set_at_once(data_file: Path) -> None:
    response = FileResponse(data_file, stat_result=os.stat(data_file))
    assert response.headers["etag"].startswith('"')
    assert response.headers["last-modified"].endswith("GMT")
    ex = await run(response)
    assert ex.body == CONTENT


@pytest.mark.anyio
async def test_a_modification_time_in_the_future_is_sent_as_now(tmp_path: Path) -> None:
    # RFC 9110 section 8.8.2.1: Last-Modified is never later than the response's own date.
    path = tmp_path / "unpacked.bin"
    path.write_bytes(CONTENT)
    ahead = time.time() + 365 * 86400
    os.utime(path, (ahead, ahead))
    before = int(time.time())
    ex = await run(FileResponse(path))
    sent = parse_http_date((ex.header(b"last-modified") or b"").decode())
    assert sent is not None and before <= sent <= time.time()
    # The future date itself is no validator: If-Range with it gives the whole file.
    future = formatdate(int(ahead), usegmt=True)
    ex = await run(FileResponse(path), scope(range="bytes=0-9", if_range=future))
    assert (ex.status, ex.body) == (200, CONTENT)


@pytest.mark.anyio
async def test_a_modification_time_no_http_date_can_express(data_file: Path) -> None:
    # Some file systems (btrfs) keep 64-bit times: year 0 or 30000 must not be a 500.
    real = os.stat(data_file)
    for mtime in (-(10**14), 10**12):
        times = (int(mtime), real.st_ctime, real.st_atime, float(mtime), real.st_ctime)
        nanoseconds = (real.st_atime_ns, mtime * 10**9, real.st_ctime_ns)
        fake = os.stat_result((*real[:8], *times, *nanoseconds))
        ex = await run(FileResponse(data_file, stat_result=fake), scope("HEAD"))
        assert ex.status == 200
        if mtime < 0:
            assert ex.header(b"last-modified") is None
        assert ex.header(b"etag") is not None


@pytest.mark.anyio
async def test_a_stale_stat_result_does_not_label_the_new_content(tmp_path: Path) -> None:
    path = tmp_path / "report.bin"
    path.write_bytes(b"version one: 0123456789")
    os.utime(path, (1_600_000_000, 1_600_000_000))
    old = os.stat(path)
    old_etag = FileResponse(path, stat_result=old).headers["etag"]
    path.write_bytes(b"VERSION TWO: abcdefghij")  # changed after the stat was taken
    os.utime(path, (1_700_000_000, 1_700_000_000))
    # A client resuming its copy of version one must not get bytes of version two.
    resume = scope(range="bytes=13-", if_range=old_etag)
    ex = await run(FileResponse(path, stat_result=old), resume)
    assert (ex.status, ex.body) == (200, b"VERSION TWO: abcdefghij")
    assert ex.header(b"etag") == etag_for(1_700_000_000 * 10**9, 23).encode()
    assert ex.header(b"last-modified") == formatdate(1_700_000_000, usegmt=True).encode()
    ex = await run(FileResponse(path, stat_result=old), scope(if_none_match=old_etag))
    assert ex.status == 200
    # Validators of the user's own are theirs: kept whatever the stat says.
    mine = FileResponse(path, stat_result=old, headers={"etag": '"mine"'})
    assert (await run(mine, scope(if_none_match='"mine"'))).status == 304


# -- preconditions ----------------------------------------------------------------------------


async def _etag(path: Path) -> str:
    etag = (await run(FileResponse(path), scope("HEAD"))).header(b"etag")
    assert etag is not None
    return etag.decode()


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_if_none_match_gives_304(data_file: Path, method: str) -> None:
    etag = await _etag(data_file)
    for value in (etag, "W/" + etag, f'"other", {etag}', "*"):
        response = FileResponse(data_file, headers={"cache-control": "max-age=60"})
        ex = await run(response, scope(method, if_none_match=value))
        assert ex.status == 304, value
        assert ex.body == b""
        assert ex.header(b"etag") == etag.encode()
        assert ex.header(b"cache-control") == b"max-age=60"
        for name in (b"content-length", b"content-type", b"last-modified", b"accept-ranges"):
            assert ex.header(name) is None, name


@pytest.mark.anyio
async def test_if_none_match_with_thousands_of_tags(data_file: Path) -> None:
    etag = await _etag(data_file)
    many = ", ".join(f'"tag-{i}"' for i in range(5000))
    assert (await run(FileResponse(data_file), scope(if_none_match=many))).status == 200
    with_ours = many + ", " + etag
    assert (await run(FileResponse(data_file), scope(if_none_match=with_ours))).status == 304


@pytest.mark.anyio
async def test_if_modified_since(data_file: Path) -> None:
    same = formatdate(1_700_000_000, usegmt=True)
    before = formatdate(1_600_000_000, usegmt=True)
    assert (await run(FileResponse(data_file), scope(if_modified_since=same))).status == 304
    ex = await run(FileResponse(data_file), scope(if_modified_since=before))
    assert (ex.status, ex.body) == (200, CONTENT)
    ex = await run(FileResponse(data_file), scope(if_modified_since="not a date"))
    assert ex.status == 200
    # If-None-Match decides when both are present.
    ex = await run(FileResponse(data_file), scope(if_modified_since=same, if_none_match='"x"'))
    assert ex.status == 200


@pytest.mark.anyio
async def test_if_match_and_if_unmodified_since_give_412(data_file: Path) -> None:
    etag = await _etag(data_file)
    ex = await run(FileResponse(data_file), scope(if_match='"other"'))
    assert (ex.status, ex.body, ex.header(b"content-length")) == (412, b"", b"0")
    assert (await run(FileResponse(data_file), scope(if_match=etag))).status == 200
    assert (await run(FileResponse(data_file), scope(if_match="W/" + etag))).status == 412
    earlier = formatdate(1_600_000_000, usegmt=True)
    ex = await run(FileResponse(data_file), scope(if_unmodified_since=earlier))
    assert ex.status == 412
    later = formatdate(1_800_000_000, usegmt=True)
    assert (await run(FileResponse(data_file), scope(if_unmodified_since=later))).status == 200


@pytest.mark.anyio
async def test_preconditions_only_for_200_get_and_head(data_file: Path) -> None:
    etag = await _etag(data_file)
    ex = await run(FileResponse(data_file, status_code=404), scope(if_none_match=etag))
    assert (ex.status, ex.body) == (404, CONTENT)
    assert ex.header(b"accept-ranges") is None
    ex = await run(FileResponse(data_file), scope("POST", if_none_match=etag))
    assert ex.status == 200


# -- ranges -------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-9", 0, 10), ("bytes=1000-", 1000, 1024), ("bytes=-24", 1000, 1024)],
)
async def test_single_range(data_file: Path, header: str, start: int, end: int) -> None:
    ex = await run(FileResponse(data_file), scope(range=header))
    assert ex.status == 206
    assert ex.body == CONTENT[start:end]
    assert ex.header(b"content-range") == f"bytes {start}-{end - 1}/1024".encode()
    assert ex.header(b"content-length") == str(end - start).encode()


@pytest.mark.anyio
async def test_several_ranges_are_multipart(data_file: Path) -> None:
    ex = await run(FileResponse(data_file), scope(range="bytes=0-9, 100-109, -5"))
    assert ex.status == 206
    assert ex.header(b"content-length") == str(len(ex.body)).encode()
    parts = multipart_parts(ex)
    assert [(h["Content-Range"], body) for h, body in parts] == [
        ("bytes 0-9/1024", CONTENT[0:10]),
        ("bytes 100-109/1024", CONTENT[100:110]),
        ("bytes 1019-1023/1024", CONTENT[1019:]),
    ]
    assert all(h["Content-Type"] == "application/octet-stream" for h, _ in parts)


@pytest.mark.anyio
async def test_overlapping_and_adjacent_ranges_are_coalesced(data_file: Path) -> None:
    ex = await run(FileResponse(data_file), scope(range="bytes=0-9,5-19,20-29"))
    assert ex.status == 206
    assert ex.header(b"content-range") == b"bytes 0-29/1024"
    assert ex.body == CONTENT[:30]
    # The same whole file asked for 100 times is sent once.
    ex = await run(FileResponse(data_file), scope(range="bytes=" + ",".join(["0-"] * 100)))
    assert (ex.status, len(ex.body)) == (206, 1024)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "header",
    [
        "bytes=5-1",
        "bytes=abc",
        "bytes=0-1,x",
        "items=0-10",
        "bytes",
        "bytes=1-2-3",
        "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 10_000, 2)),  # 5,000 ranges
    ],
)
async def test_ignored_ranges_give_the_whole_file(data_file: Path, header: str) -> None:
    ex = await run(FileResponse(data_file), scope(range=header))
    assert (ex.status, ex.body) == (200, CONTENT)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "header", ["bytes=-0", "bytes=1024-", "bytes=5000-6000", "bytes=99999999999999999999999-"]
)
async def test_unsatisfiable_range_is_416(data_file: Path, header: str) -> None:
    ex = await run(FileResponse(data_file), scope(range=header))
    assert ex.status == 416
    assert ex.header(b"content-range") == b"bytes */1024"
    assert ex.body == b""


@pytest.mark.anyio
async def test_huge_last_position_is_clipped(data_file: Path) -> None:
    ex = await run(FileResponse(data_file), scope(range="bytes=1000-" + "9" * 40))
    assert (ex.status, ex.body) == (206, CONTENT[1000:])


@pytest.mark.anyio
async def test_max_ranges_setting(data_file: Path) -> None:
    header = "bytes=0-0,2-2,4-4"
    ex = await run(FileResponse(data_file, max_ranges=2), scope(range=header))
    assert ex.status == 200
    ex = await run(FileResponse(data_file, max_ranges=3), scope(range=header))
    assert ex.status == 206


@pytest.mark.anyio
async def test_if_range(data_file: Path) -> None:
    etag = await _etag(data_file)
    date = formatdate(1_700_000_000, usegmt=True)
    for value, status in [
        (etag, 206),
        ('"stale"', 200),
        ("W/" + etag, 200),
        (date, 206),
        (formatdate(1_700_000_001, usegmt=True), 200),
        ("garbage", 200),
    ]:
        ex = await run(FileResponse(data_file), scope(range="bytes=0-9", if_range=value))
        assert ex.status == status, value
        assert ex.body == (CONTENT[:10] if status == 206 else CONTENT)


@pytest.mark.anyio
async def test_if_range_date_of_a_file_changed_within_the_second(tmp_path: Path) -> None:
    path = tmp_path / "fresh.bin"
    path.write_bytes(CONTENT)
    # Modified "now" (a little ahead, so that a slow test run cannot age it past a
    # second): its date is not a strong validator.
    ahead = time.time() + 30
    os.utime(path, (ahead, ahead))
    response = FileResponse(path)
    date = formatdate(int(path.stat().st_mtime), usegmt=True)
    ex = await run(response, scope(range="bytes=0-9", if_range=date))
    assert ex.status == 200


@pytest.mark.anyio
async def test_range_is_for_get_only(data_file: Path) -> None:
    ex = await run(FileResponse(data_file), scope("HEAD", range="bytes=0-9"))
    assert (ex.status, ex.header(b"content-length")) == (200, b"1024")


@pytest.mark.anyio
async def test_range_needs_a_200(data_file: Path) -> None:
    ex = await run(FileResponse(data_file, status_code=404), scope(range="bytes=0-9"))
    assert (ex.status, ex.body) == (404, CONTENT)


@pytest.mark.anyio
async def test_304_before_ranges(data_file: Path) -> None:
    etag = await _etag(data_file)
    ex = await run(FileResponse(data_file), scope(range="bytes=0-9", if_none_match=etag))
    assert ex.status == 304


# -- chunks, threads, pathsend ------------------------------------------------------------------


@pytest.mark.anyio
async def test_reads_in_chunks_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.bin"
    payload = os.urandom(200_000)
    path.write_bytes(payload)
    loop_thread = threading.get_ident()
    reads: list[tuple[int, int]] = []
    original = _fileio.read_at

    def recording(fd: int, offset: int, size: int) -> bytes:
        assert threading.get_ident() != loop_thread
        reads.append((offset, size))
        return original(fd, offset, size)

    monkeypatch.setattr(_fileio, "read_at", recording)
    ex = await run(FileResponse(path))
    assert ex.body == payload
    chunk = 64 * 1024
    assert reads == [
        (0, chunk),
        (chunk, chunk),
        (2 * chunk, chunk),
        (3 * chunk, 200_000 - 3 * chunk),
    ]
    bodies = [m for m in ex.sent if m["type"] == "http.response.body"]
    assert [m.get("more_body", False) for m in bodies] == [True, True, True, False]
    reads.clear()
    ex = await run(FileResponse(path, chunk_size=100_000))
    assert ex.body == payload and len(reads) == 2


@pytest.mark.anyio
async def test_small_file_read_whole_in_one_thread_trip(
    data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = []
    original = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(func.__name__)
        return await original(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    ex = await run(FileResponse(data_file))
    assert ex.body == CONTENT
    assert trips == ["open_file"]
    assert [m["type"] for m in ex.sent] == ["http.response.start", "http.response.body"]


PATHSEND = {"http.response.pathsend": {}}


@pytest.mark.anyio
async def test_pathsend_when_offered(data_file: Path) -> None:
    ex = await run(FileResponse(data_file), {**scope(), "extensions": PATHSEND})
    assert [m["type"] for m in ex.sent] == ["http.response.start", "http.response.pathsend"]
    assert ex.sent[1]["path"] == str(data_file)  # tmp_path is already resolved
    assert ex.header(b"content-length") == b"1024"


@pytest.mark.anyio
async def test_pathsend_path_is_absolute(data_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(data_file.parent)
    response = FileResponse("data.bin")
    monkeypatch.chdir("/")
    ex = await run(response, {**scope(), "extensions": PATHSEND})
    assert ex.sent[1]["path"] == str(data_file)


@pytest.mark.anyio
async def test_no_pathsend_for_ranges_head_and_304(data_file: Path) -> None:
    etag = await _etag(data_file)
    for request in (
        scope(range="bytes=0-9"),
        scope("HEAD"),
        scope(if_none_match=etag),
        scope(if_none_match='"other"'),
    ):
        ex = await run(FileResponse(data_file), {**request, "extensions": PATHSEND})
        assert "http.response.pathsend" not in [m["type"] for m in ex.sent]
    ex = await run(FileResponse(data_file, status_code=404), {**scope(), "extensions": PATHSEND})
    assert "http.response.pathsend" not in [m["type"] for m in ex.sent]


# -- files that change, clients that leave ------------------------------------------------------


class ChangeAfterFirstChunk(Exchange):
    """Runs `change` once the first body chunk has been sent."""

    def __init__(self, change: Any) -> None:
        super().__init__()
        self.change = change

    async def send(self, message: Message) -> None:
        await super().send(message)
        if message["type"] == "http.response.body" and self.change is not None:
            change, self.change = self.change, None
            change()


@pytest.mark.anyio
async def test_a_growing_file_is_cut_at_the_announced_length(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    path.write_bytes(b"a" * 10_000)

    def grow() -> None:
        with open(path, "ab") as file:
            file.write(b"b" * 50_000)

    ex = await ChangeAfterFirstChunk(grow).run(FileResponse(path, chunk_size=1000), scope())
    assert ex.header(b"content-length") == b"10000"
    assert ex.body == b"a" * 10_000
    assert ex.sent[-1]["more_body"] is False


@pytest.mark.anyio
async def test_a_shrinking_file_ends_the_response_short_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log.txt"
    path.write_bytes(b"a" * 10_000)

    def shrink() -> None:
        with open(path, "r+b") as file:
            file.truncate(2_500)

    background_ran = []
    response = FileResponse(
        path, chunk_size=1000, background=BackgroundTask(background_ran.append, 1)
    )
    with caplog.at_level(logging.WARNING, logger="microasgi"):
        ex = await ChangeAfterFirstChunk(shrink).run(response, scope())
    assert ex.header(b"content-length") == b"10000"
    # What was read before the truncation (a few chunks are read ahead), then nothing.
    assert 1_000 <= len(ex.body) < 10_000 and ex.body == b"a" * len(ex.body)
    assert all(m.get("more_body", False) for m in ex.sent[1:])  # never marked complete
    assert "shrank" in caplog.text
    assert background_ran == []


@pytest.mark.anyio
async def test_a_shrinking_file_in_a_multipart_response(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 5_000)

    def shrink() -> None:
        os.truncate(path, 1_000)

    ex = await ChangeAfterFirstChunk(shrink).run(
        FileResponse(path, chunk_size=500), scope(range="bytes=0-9,4000-4999")
    )
    assert ex.status == 206
    assert len(ex.body) < int(ex.header(b"content-length") or 0)
    assert all(m.get("more_body", False) for m in ex.sent[1:])


@pytest.mark.anyio
async def test_a_read_error_ends_the_response_short_and_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "on-a-failing-disk.bin"
    path.write_bytes(b"r" * 10_000)
    original = _file.read_chunks
    calls = []

    def failing(fd: int, offset: int, sizes: list[int]) -> list[bytes]:
        calls.append(offset)
        if len(calls) > 1:
            raise OSError(errno.EIO, "Input/output error")
        return original(fd, offset, sizes)

    monkeypatch.setattr(_file, "read_chunks", failing)
    ran = []
    response = FileResponse(path, chunk_size=1000, background=BackgroundTask(ran.append, 1))
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        ex = await run(response)
    assert ex.body == b"r" * 4000  # the first trip's four chunks, then nothing
    assert all(m.get("more_body", False) for m in ex.sent[1:])  # never marked complete
    assert "Reading" in caplog.text and "Input/output error" in caplog.text
    assert ran == []


class LeavesAfterFirstChunk(Exchange):
    async def send(self, message: Message) -> None:
        await super().send(message)
        if message["type"] == "http.response.body":
            self.done.set()  # the client is gone: receive() says http.disconnect


@pytest.mark.anyio
async def test_client_leaving_stops_the_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"z" * 1_000_000)
    reads = []
    original = _fileio.read_at

    def recording(fd: int, offset: int, size: int) -> bytes:
        reads.append(offset)
        return original(fd, offset, size)

    monkeypatch.setattr(_fileio, "read_at", recording)
    background_ran = []
    response = FileResponse(
        path, chunk_size=1000, background=BackgroundTask(background_ran.append, 1)
    )
    await LeavesAfterFirstChunk().run(response, scope())
    assert len(reads) < 50  # of 1,000 chunks
    assert background_ran == []


@pytest.mark.anyio
async def test_send_raising_oserror_ends_quietly(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"z" * 100_000)

    class Gone(Exchange):
        async def send(self, message: Message) -> None:
            if message["type"] == "http.response.body":
                raise OSError("client gone")
            await super().send(message)

    await Gone().run(FileResponse(path, chunk_size=1000), scope())


@pytest.mark.anyio
async def test_file_descriptor_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"z" * 300_000)
    before = len(os.listdir("/proc/self/fd"))
    for request in (scope(), scope(range="bytes=0-9,100-200"), scope("HEAD")):
        await run(FileResponse(path), request)
    await LeavesAfterFirstChunk().run(FileResponse(path, chunk_size=1000), scope())
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.anyio
async def test_background_runs_after_a_complete_response(data_file: Path) -> None:
    ran = []
    await run(FileResponse(data_file, background=BackgroundTask(ran.append, "done")))
    await run(
        FileResponse(data_file, background=BackgroundTask(ran.append, "304")),
        scope(if_none_match="*"),
    )
    assert ran == ["done", "304"]


# -- through an app ----------------------------------------------------------------------------


def test_file_response_from_an_endpoint(make_client: MakeClient, data_file: Path) -> None:
    app = App()

    @app.get("/download")
    async def download() -> FileResponse:
        return FileResponse(data_file, filename="data.bin")

    client = make_client(app)
    response = client.get("/download")
    assert response.status_code == 200
    assert response.content == CONTENT
    response = client.get("/download", headers={"range": "bytes=10-19"})
    assert (response.status_code, response.content) == (206, CONTENT[10:20])
    etag = response.headers["etag"]
    assert client.get("/download", headers={"if-none-match": etag}).status_code == 304
