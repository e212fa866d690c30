"""Where Starlette's FileResponse and StaticFiles are right, ours answer the same, so a
Starlette user can switch; where ours differ on purpose (docs/files.md lists each
difference and why), the difference is pinned down here too."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from microasgi import FileResponse
from microasgi.staticfiles import StaticFiles
from tests.helpers import Exchange, http_scope

starlette_responses = pytest.importorskip("starlette.responses")
starlette_staticfiles = pytest.importorskip("starlette.staticfiles")

CONTENT = bytes(range(256)) * 8  # 2,048 bytes


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "report.txt"
    path.write_bytes(CONTENT)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    return path


def scope(method: str = "GET", path: str = "/", **headers: str) -> dict[str, Any]:
    raw = [(b"host", b"testserver")]
    raw += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return http_scope(method, path, headers=raw)


async def both(ours: Any, theirs: Any, request: dict[str, Any]) -> tuple[Exchange, Exchange]:
    mine = await Exchange().run(ours, dict(request))
    other = await Exchange().run(theirs, dict(request))
    return mine, other


def parts(ex: Exchange) -> list[tuple[bytes, bytes]]:
    """(Content-Range, payload) of each part of a multipart/byteranges body."""
    boundary = re.search(rb"boundary=(\S+)", ex.header(b"content-type") or b"")
    assert boundary is not None
    found = []
    for chunk in ex.body.split(b"--" + boundary.group(1))[1:-1]:
        head, _, payload = chunk.strip(b"\r\n").partition(b"\r\n\r\n")
        content_range = re.search(rb"Content-Range: (.+)", head, re.IGNORECASE)
        assert content_range is not None
        found.append((content_range.group(1).strip(), payload))
    return found


SAME_HEADERS = (b"content-type", b"content-length", b"accept-ranges", b"content-range")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "request_headers",
    [
        {},
        {"range": "bytes=0-99"},
        {"range": "bytes=2000-"},
        {"range": "bytes=-48"},
        {"range": "bytes=0-99999"},
        {"range": "bytes=5000-6000"},  # unsatisfiable: 416 in both
        {"range": "bytes=0-9, 20-29"},  # several: multipart in both
        {"range": "bytes=0-49, 20-99"},  # overlapping: merged in both
    ],
)
async def test_file_response_matches_starlette(
    data_file: Path, request_headers: dict[str, str]
) -> None:
    mine, other = await both(
        FileResponse(data_file, filename="report.txt"),
        starlette_responses.FileResponse(data_file, filename="report.txt"),
        scope(**request_headers),
    )
    assert mine.status == other.status
    if mine.status == 206 and (mine.header(b"content-type") or b"").startswith(b"multipart/"):
        assert parts(mine) == parts(other)
        return
    assert mine.body == other.body
    assert mine.header(b"content-range") == other.header(b"content-range")
    if mine.status == 416:
        return  # Starlette labels its empty 416 body text/plain; ours has no body to label
    for name in SAME_HEADERS:
        assert mine.header(name) == other.header(name), name
    assert mine.header(b"content-disposition") == other.header(b"content-disposition")


@pytest.mark.anyio
async def test_head_matches_starlette(data_file: Path) -> None:
    mine, other = await both(
        FileResponse(data_file), starlette_responses.FileResponse(data_file), scope("HEAD")
    )
    assert (mine.status, mine.body) == (other.status, other.body) == (200, b"")
    for name in SAME_HEADERS:
        assert mine.header(name) == other.header(name)


# -- deliberate differences ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_difference_malformed_range_is_ignored_not_400(data_file: Path) -> None:
    # RFC 9110 section 14.2: a server MAY ignore the Range header; a 400 breaks downloads
    # from clients that send something odd. Starlette answers 400.
    mine, other = await both(
        FileResponse(data_file),
        starlette_responses.FileResponse(data_file),
        scope(range="bytes=abc"),
    )
    assert (mine.status, mine.body) == (200, CONTENT)
    assert other.status == 400


@pytest.mark.anyio
async def test_difference_non_ascii_filename_has_an_ascii_fallback(data_file: Path) -> None:
    mine, other = await both(
        FileResponse(data_file, filename="résumé.txt"),
        starlette_responses.FileResponse(data_file, filename="résumé.txt"),
        scope(),
    )
    assert mine.header(b"content-disposition") == (
        b"attachment; filename=\"resume.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"
    )
    assert other.header(b"content-disposition") == (
        b"attachment; filename*=utf-8''r%C3%A9sum%C3%A9.txt"
    )


@pytest.mark.anyio
async def test_difference_file_response_answers_preconditions_itself(data_file: Path) -> None:
    mine = await Exchange().run(FileResponse(data_file), scope())
    etag = (mine.header(b"etag") or b"").decode()
    mine, other = await both(
        FileResponse(data_file),
        starlette_responses.FileResponse(data_file),
        scope(if_none_match=etag),
    )
    assert mine.status == 304
    assert other.status == 200  # Starlette's StaticFiles does it, its FileResponse does not


# -- StaticFiles -----------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "docs" / "index.html").write_text("<h1>docs</h1>")
    (root / "404.html").write_text("<h1>not found</h1>")
    (root / "app.css").write_text("body{}")
    return root


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/app.css"),
        ("HEAD", "/app.css"),
        ("GET", "/"),
        ("GET", "/docs/"),
        ("GET", "/missing.html"),
        ("GET", "/docs"),  # a redirect in both (the Location differs: see below)
    ],
)
async def test_static_files_match_starlette(site: Path, method: str, path: str) -> None:
    mine, other = await both(
        StaticFiles(directory=site, html=True),
        starlette_staticfiles.StaticFiles(directory=site, html=True),
        scope(method, path),
    )
    assert mine.status == other.status
    if mine.status in (200, 404) and method == "GET":
        assert mine.body == other.body
        assert mine.header(b"content-type") == other.header(b"content-type")


@pytest.mark.anyio
async def test_static_files_405_matches_starlette(site: Path) -> None:
    mine = await Exchange().run(StaticFiles(directory=site), scope("POST", "/app.css"))
    assert (mine.status, mine.header(b"allow")) == (405, b"GET, HEAD")
    # Starlette raises its HTTPException for its own app to answer: same status and Allow.
    with pytest.raises(Exception) as raised:
        await Exchange().run(
            starlette_staticfiles.StaticFiles(directory=site), scope("POST", "/app.css")
        )
    assert raised.value.status_code == 405  # type: ignore[attr-defined]
    assert raised.value.headers == {"Allow": "GET, HEAD"}  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_static_files_precondition_matches_starlette(site: Path) -> None:
    mine = await Exchange().run(StaticFiles(directory=site), scope("GET", "/app.css"))
    theirs = await Exchange().run(
        starlette_staticfiles.StaticFiles(directory=site), scope("GET", "/app.css")
    )
    for app, ex in ((StaticFiles(directory=site), mine), (None, theirs)):
        etag = (ex.header(b"etag") or b"").decode()
        target = app or starlette_staticfiles.StaticFiles(directory=site)
        again = await Exchange().run(target, scope("GET", "/app.css", if_none_match=etag))
        assert again.status == 304


@pytest.mark.anyio
async def test_difference_redirect_location_is_path_absolute(site: Path) -> None:
    # Starlette builds an absolute URL from the Host header; ours is a path, so a
    # forged Host cannot send the client elsewhere.
    request = scope("GET", "/docs", host="evil.example")
    request["headers"] = [(b"host", b"evil.example")]
    mine, other = await both(
        StaticFiles(directory=site, html=True),
        starlette_staticfiles.StaticFiles(directory=site, html=True),
        request,
    )
    assert mine.header(b"location") == b"/docs/"
    assert other.header(b"location") == b"http://evil.example/docs/"
