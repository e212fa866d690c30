"""request.form(): urlencoded and multipart bodies, uploads, limits and malformed input."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from microasgi import App, Request, UploadFile
from microasgi._forms import parse_form
from microasgi._spool import Spool
from tests.helpers import MakeClient, body_messages, http_scope, run_app

BOUNDARY = "----microasgiBoundary7MA4YWxk"


def multipart_body(
    parts: list[tuple[str, bytes] | tuple[str, bytes, str | None, str | None]],
    boundary: str = BOUNDARY,
) -> bytes:
    """Parts are (name, data) for fields or (name, data, filename, content_type) for files."""
    out = b""
    for part in parts:
        name, data = part[0], part[1]
        disposition = f'form-data; name="{name}"'
        headers = ""
        if len(part) == 4:
            filename, content_type = part[2], part[3]
            if filename is not None:
                disposition += f'; filename="{filename}"'
            if content_type is not None:
                headers += f"Content-Type: {content_type}\r\n"
        out += f"--{boundary}\r\n".encode()
        out += f"Content-Disposition: {disposition}\r\n{headers}\r\n".encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


async def describe(value: Any) -> Any:
    if isinstance(value, UploadFile):
        data = await value.read()
        return {
            "filename": value.filename,
            "content_type": value.content_type,
            "size": value.size,
            "data": data.decode("latin-1"),
        }
    return value


def form_app(**app_options: Any) -> App:
    app = App(**app_options)

    @app.post("/form")
    async def form(request: Request) -> dict[str, Any]:
        data = await request.form()
        result: dict[str, Any] = {}
        for key in data:
            result[key] = [await describe(v) for v in data.getlist(key)]
        await data.close()
        return result

    @app.post("/limited")
    async def limited(request: Request) -> dict[str, int]:
        limits = {k: int(v) for k, v in request.query_params.items()}
        data = await request.form(**limits)
        count = len(data.multi_items())
        await data.close()
        return {"count": count}

    return app


# -- urlencoded --------------------------------------------------------------------------


def test_urlencoded_fields(make_client: MakeClient) -> None:
    client = make_client(form_app())
    body = "name=J%C3%B6rg&tag=a&tag=b&blank=&plus=a+b&amp=%26%3D&raw=ü"
    r = client.post(
        "/form",
        content=body.encode("utf-8"),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    assert r.json() == {
        "name": ["Jörg"],
        "tag": ["a", "b"],
        "blank": [""],
        "plus": ["a b"],
        "amp": ["&="],
        "raw": ["ü"],
    }


def test_urlencoded_via_client_data(make_client: MakeClient) -> None:
    client = make_client(form_app())
    r = client.post("/form", data={"user": "Zoë", "ids": ["1", "2"]})
    assert r.json() == {"user": ["Zoë"], "ids": ["1", "2"]}


def test_urlencoded_content_type_with_charset_and_case(make_client: MakeClient) -> None:
    client = make_client(form_app())
    r = client.post(
        "/form",
        content=b"a=1",
        headers={"content-type": "Application/X-WWW-Form-Urlencoded; charset=UTF-8"},
    )
    assert r.status_code == 200
    assert r.json() == {"a": ["1"]}


def test_urlencoded_empty_body(make_client: MakeClient) -> None:
    client = make_client(form_app())
    r = client.post(
        "/form", content=b"", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 200
    assert r.json() == {}


def test_urlencoded_invalid_utf8_is_not_a_500(make_client: MakeClient) -> None:
    client = make_client(form_app())
    r = client.post(
        "/form",
        content=b"a=%ff&b=\xfe",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code in (200, 400)
    if r.status_code == 200:
        assert r.json() == {"a": ["\ufffd"], "b": ["\ufffd"]}


def test_urlencoded_too_many_fields(make_client: MakeClient) -> None:
    client = make_client(form_app())
    ctype = {"content-type": "application/x-www-form-urlencoded"}
    ok = client.post("/limited?max_fields=3", content=b"a=1&b=2&c=3", headers=ctype)
    assert ok.json() == {"count": 3}
    r = client.post("/limited?max_fields=3", content=b"a=1&b=2&c=3&d=4", headers=ctype)
    assert r.status_code == 400


def test_urlencoded_default_field_limit(make_client: MakeClient) -> None:
    client = make_client(form_app())
    ctype = {"content-type": "application/x-www-form-urlencoded"}
    ok = "&".join(f"f{i}=1" for i in range(1000)).encode()
    assert client.post("/limited", content=ok, headers=ctype).json() == {"count": 1000}
    too_many = "&".join(f"f{i}=1" for i in range(1001)).encode()
    assert client.post("/limited", content=too_many, headers=ctype).status_code == 400


def test_urlencoded_over_body_limit(make_client: MakeClient) -> None:
    client = make_client(form_app(max_body_size=20))
    r = client.post("/form", data={"x": "y" * 100})
    assert r.status_code == 413


# -- multipart ---------------------------------------------------------------------------


def test_multipart_fields_and_files(make_client: MakeClient) -> None:
    client = make_client(form_app())
    body = multipart_body(
        [
            ("title", "Hello ✓".encode()),
            ("empty", b""),
            ("doc", b"file contents\r\nwith lines", "notes.txt", "text/plain"),
            ("blob", b"\x00\x01\xff", "data.bin", "application/octet-stream"),
            ("nocontenttype", b"abc", "x.dat", None),
        ]
    )
    r = client.post("/form", content=body, headers={"content-type": MULTIPART})
    assert r.status_code == 200
    data = r.json()
    assert data["title"] == ["Hello ✓"]
    assert data["empty"] == [""]
    assert data["doc"] == [
        {
            "filename": "notes.txt",
            "content_type": "text/plain",
            "size": 25,
            "data": "file contents\r\nwith lines",
        }
    ]
    assert data["blob"] == [
        {
            "filename": "data.bin",
            "content_type": "application/octet-stream",
            "size": 3,
            "data": "\x00\x01\xff",
        }
    ]
    assert data["nocontenttype"][0]["filename"] == "x.dat"
    assert data["nocontenttype"][0]["data"] == "abc"


def test_multipart_via_client_files(make_client: MakeClient) -> None:
    client = make_client(form_app())
    r = client.post(
        "/form",
        data={"field": "value"},
        files={"upload": ("report.csv", b"a,b\n1,2\n", "text/csv")},
    )
    assert r.status_code == 200
    assert r.json() == {
        "field": ["value"],
        "upload": [
            {"filename": "report.csv", "content_type": "text/csv", "size": 8, "data": "a,b\n1,2\n"}
        ],
    }


def test_multipart_repeated_names(make_client: MakeClient) -> None:
    client = make_client(form_app())
    body = multipart_body(
        [
            ("tag", b"one"),
            ("tag", b"two"),
            ("file", b"1", "a.txt", "text/plain"),
            ("file", b"22", "b.txt", "text/plain"),
            ("tag", b"three"),
        ]
    )
    r = client.post("/form", content=body, headers={"content-type": MULTIPART})
    data = r.json()
    assert data["tag"] == ["one", "two", "three"]
    assert [f["filename"] for f in data["file"]] == ["a.txt", "b.txt"]
    assert [f["data"] for f in data["file"]] == ["1", "22"]


def test_multipart_upload_read_and_seek(make_client: MakeClient) -> None:
    app = App()

    @app.post("/up")
    async def up(request: Request) -> dict[str, Any]:
        form = await request.form()
        upload = form["f"]
        assert isinstance(upload, UploadFile)
        first = await upload.read(5)
        rest = await upload.read()
        await upload.seek(0)
        again = await upload.read()
        await upload.seek(6)
        tail = await upload.read()
        await form.close()
        return {
            "first": first.decode(),
            "rest": rest.decode(),
            "again": again.decode(),
            "tail": tail.decode(),
            "size": upload.size,
        }

    body = multipart_body([("f", b"hello world", "h.txt", "text/plain")])
    r = make_client(app).post("/up", content=body, headers={"content-type": MULTIPART})
    assert r.json() == {
        "first": "hello",
        "rest": " world",
        "again": "hello world",
        "tail": "world",
        "size": 11,
    }


def test_multipart_big_file_spooled_to_disk(make_client: MakeClient) -> None:
    app = App()
    payload = os.urandom(1024 * 1024 + 123_457)

    @app.post("/big")
    async def big(request: Request) -> dict[str, Any]:
        form = await request.form()
        upload = form["f"]
        assert isinstance(upload, UploadFile)
        rolled = not isinstance(upload.file, io.BytesIO)  # a temporary file on disk
        data = await upload.read()
        await form.close()
        return {
            "rolled": rolled,
            "size": upload.size,
            "sha": hashlib.sha256(data).hexdigest(),
            "len": len(data),
        }

    body = multipart_body([("f", payload, "big.bin", "application/octet-stream")])
    r = make_client(app).post("/big", content=body, headers={"content-type": MULTIPART})
    assert r.status_code == 200
    assert r.json() == {
        "rolled": True,
        "size": len(payload),
        "sha": hashlib.sha256(payload).hexdigest(),
        "len": len(payload),
    }


def test_multipart_small_file_stays_in_memory(make_client: MakeClient) -> None:
    app = App()

    @app.post("/small")
    async def small(request: Request) -> dict[str, Any]:
        form = await request.form()
        rolled = not isinstance(form["f"].file, io.BytesIO)
        await form.close()
        return {"rolled": rolled}

    body = multipart_body([("f", b"x" * 1000, "s.bin", "application/octet-stream")])
    r = make_client(app).post("/small", content=body, headers={"content-type": MULTIPART})
    assert r.json() == {"rolled": False}


@pytest.mark.anyio
async def test_multipart_in_small_chunks() -> None:
    """A body that arrives a few bytes at a time parses the same as one in one piece."""
    app = form_app()
    body = multipart_body(
        [("a", b"alpha"), ("f", b"file-data" * 50, "f.txt", "text/plain"), ("b", b"beta")]
    )
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]
    scope = http_scope("POST", "/form", headers=[(b"content-type", MULTIPART.encode())])
    ex = await run_app(app, scope, body_messages(*chunks))
    assert ex.status == 200
    data = json.loads(ex.body)
    assert data["a"] == ["alpha"]
    assert data["b"] == ["beta"]
    assert data["f"][0]["data"] == "file-data" * 50
    assert data["f"][0]["size"] == 450


def test_multipart_quoted_boundary(make_client: MakeClient) -> None:
    client = make_client(form_app())
    body = multipart_body([("a", b"1")], boundary="weird:boundary")
    r = client.post(
        "/form",
        content=body,
        headers={"content-type": 'multipart/form-data; boundary="weird:boundary"'},
    )
    assert r.status_code == 200
    assert r.json() == {"a": ["1"]}


def test_multipart_non_ascii_field_name_and_filename(make_client: MakeClient) -> None:
    """Browsers send UTF-8 names and filenames as raw UTF-8 bytes in the part headers."""
    client = make_client(form_app())
    body = multipart_body(
        [("名前", "値".encode()), ("ファイル", b"data", "报告.txt", "text/plain")]
    )
    r = client.post("/form", content=body, headers={"content-type": MULTIPART})
    assert r.status_code == 200
    data = r.json()
    assert data["名前"] == ["値"]
    assert data["ファイル"][0]["filename"] == "报告.txt"
    assert data["ファイル"][0]["data"] == "data"


def test_multipart_latin1_filename(make_client: MakeClient) -> None:
    client = make_client(form_app())
    body = multipart_body([("f", b"x", "résumé.pdf", "application/pdf")])
    r = client.post("/form", content=body, headers={"content-type": MULTIPART})
    assert r.status_code == 200
    assert r.json()["f"][0]["filename"] == "résumé.pdf"


def test_multipart_empty_form(make_client: MakeClient) -> None:
    client = make_client(form_app())
    r = client.post(
        "/form", content=f"--{BOUNDARY}--\r\n".encode(), headers={"content-type": MULTIPART}
    )
    assert r.status_code == 200
    assert r.json() == {}


# -- multipart errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; charset=utf-8"],
)
def test_multipart_missing_boundary_is_400(make_client: MakeClient, content_type: str) -> None:
    client = make_client(form_app())
    body = multipart_body([("a", b"1")])
    r = client.post("/form", content=body, headers={"content-type": content_type})
    assert r.status_code == 400


VALID = multipart_body([("a", b"1"), ("f", b"file", "f.txt", "text/plain")])


@pytest.mark.parametrize(
    "body",
    [
        b"this is not multipart at all",
        b"",
        VALID.replace(BOUNDARY.encode(), b"otherboundary"),
        VALID[: len(VALID) // 2],
        VALID[: -len(f"--{BOUNDARY}--\r\n")],
        VALID.replace(b"Content-Disposition: form-data; ", b"Content-Disposition: attachment; "),
        VALID.replace(b'Content-Disposition: form-data; name="a"', b"X-Nothing: here"),
        VALID.replace(b"Content-Disposition", b"Bad Header Name"),
        VALID.replace(b"\r\n\r\n", b"\r\n", 1),
    ],
    ids=[
        "garbage",
        "empty",
        "wrong-boundary",
        "truncated-half",
        "no-closing-boundary",
        "not-form-data",
        "no-disposition",
        "bad-header",
        "no-blank-line",
    ],
)
def test_malformed_multipart_is_400(
    make_client: MakeClient, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(form_app())
    with caplog.at_level(logging.DEBUG, logger="microasgi"):
        r = client.post("/form", content=body, headers={"content-type": MULTIPART})
    assert r.status_code == 400
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_multipart_non_utf8_field_is_400(make_client: MakeClient) -> None:
    client = make_client(form_app())
    body = multipart_body([("a", b"caf\xe9 \xff")])
    r = client.post("/form", content=body, headers={"content-type": MULTIPART})
    assert r.status_code == 400


def test_multipart_non_utf8_file_is_fine(make_client: MakeClient) -> None:
    client = make_client(form_app())
    body = multipart_body([("f", b"caf\xe9 \xff", "bin", "application/octet-stream")])
    r = client.post("/form", content=body, headers={"content-type": MULTIPART})
    assert r.status_code == 200
    assert r.json()["f"][0]["data"] == "caf\xe9 \xff"


def test_multipart_field_over_max_part_size_is_413(make_client: MakeClient) -> None:
    client = make_client(form_app())
    headers = {"content-type": MULTIPART}
    ok = multipart_body([("a", b"x" * 10)])
    assert client.post("/limited?max_part_size=10", content=ok, headers=headers).status_code == 200
    big = multipart_body([("a", b"x" * 11)])
    r = client.post("/limited?max_part_size=10", content=big, headers=headers)
    assert r.status_code == 413


def test_multipart_default_max_part_size_is_1_mib(make_client: MakeClient) -> None:
    client = make_client(form_app())
    headers = {"content-type": MULTIPART}
    big = multipart_body([("a", b"x" * (1024 * 1024 + 1))])
    assert client.post("/limited", content=big, headers=headers).status_code == 413
    # A file of that size is not a field: the part limit does not apply to it.
    file = multipart_body([("a", b"x" * (1024 * 1024 + 1), "f.bin", "application/octet-stream")])
    assert client.post("/limited", content=file, headers=headers).json() == {"count": 1}


def test_multipart_too_many_files_is_400(make_client: MakeClient) -> None:
    client = make_client(form_app())
    headers = {"content-type": MULTIPART}
    two = multipart_body([("f", b"1", "1.txt", "text/plain"), ("f", b"2", "2.txt", "text/plain")])
    assert client.post("/limited?max_files=2", content=two, headers=headers).json() == {"count": 2}
    assert client.post("/limited?max_files=1", content=two, headers=headers).status_code == 400


def test_multipart_too_many_fields_is_400(make_client: MakeClient) -> None:
    client = make_client(form_app())
    headers = {"content-type": MULTIPART}
    three = multipart_body([("a", b"1"), ("b", b"2"), ("c", b"3")])
    ok = client.post("/limited?max_fields=3", content=three, headers=headers)
    assert ok.json() == {"count": 3}
    r = client.post("/limited?max_fields=2", content=three, headers=headers)
    assert r.status_code == 400


def test_multipart_over_app_body_limit_is_413(make_client: MakeClient) -> None:
    client = make_client(form_app(max_body_size=1000))
    small = multipart_body([("f", b"x" * 100, "f.bin", "application/octet-stream")])
    assert (
        client.post("/form", content=small, headers={"content-type": MULTIPART}).status_code == 200
    )
    big = multipart_body([("f", b"x" * 2000, "f.bin", "application/octet-stream")])
    r = client.post("/form", content=big, headers={"content-type": MULTIPART})
    assert r.status_code == 413


@pytest.mark.anyio
async def test_multipart_over_limit_without_content_length() -> None:
    app = form_app(max_body_size=1000)
    body = multipart_body([("f", b"x" * 5000, "f.bin", "application/octet-stream")])
    chunks = [body[i : i + 500] for i in range(0, len(body), 500)]
    scope = http_scope("POST", "/form", headers=[(b"content-type", MULTIPART.encode())])
    ex = await run_app(app, scope, body_messages(*chunks))
    assert ex.status == 413


def record_finished_files(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every file `Spool.finish()` gives out from now on, in order."""
    finished: list[Any] = []
    original = Spool.finish

    async def finish(self: Spool) -> Any:
        file = await original(self)
        finished.append(file)
        return file

    monkeypatch.setattr(Spool, "finish", finish)
    return finished


def test_uploads_closed_when_parse_fails(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished upload (in memory) and one half written to disk are both closed."""
    seen: list[Any] = []
    original = tempfile.TemporaryFile

    def tracking(*args: Any, **kwargs: Any) -> Any:
        file = original(*args, **kwargs)
        seen.append(file)
        return file

    monkeypatch.setattr(tempfile, "TemporaryFile", tracking)
    finished = record_finished_files(monkeypatch)
    app = App()

    @app.post("/up")
    async def up(request: Request) -> str:
        await request.form(max_part_size=5)
        return "unreachable"

    # The field over max_part_size fails the parse; the body then ends inside a file part.
    small = multipart_body([("f", b"file", "f.txt", "text/plain"), ("big", b"x" * 50)])
    r = make_client(app).post("/up", content=small, headers={"content-type": MULTIPART})
    assert r.status_code == 413
    assert len(finished) == 1  # "f", in memory
    assert finished[0].closed
    big = multipart_body([("f", b"file", "f.txt", "text/plain")])
    big = big.removesuffix(f"--{BOUNDARY}--\r\n".encode())  # no closing delimiter
    big += b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="g"; '
    big += b'filename="g.bin"\r\n\r\n' + b"x" * (3 * 1024 * 1024)
    r = make_client(app).post("/up", content=big, headers={"content-type": MULTIPART})
    assert r.status_code == 400
    assert len(finished) == 2  # "f" again; "g" never finished
    assert finished[1].closed
    assert len(seen) == 1  # "g" went to disk
    assert seen[0].closed


@pytest.mark.anyio
async def test_uploads_closed_when_parsing_is_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancelled parse (a shutdown, a timeout around the handler) still closes every file:
    the one finished on disk and the one half written."""
    finished = record_finished_files(monkeypatch)
    spools: list[Spool] = []
    original_init = Spool.__init__

    def init(self: Spool, *args: Any) -> None:
        original_init(self, *args)
        spools.append(self)

    monkeypatch.setattr(Spool, "__init__", init)
    first = multipart_body([("f", b"x" * (3 * 1024 * 1024), "f.bin", "application/octet-stream")])
    first = first.removesuffix(f"--{BOUNDARY}--\r\n".encode())
    second = b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="g"; '
    second += b'filename="g.bin"\r\n\r\n' + b"y" * (1536 * 1024)  # on disk too

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(first), 65536):
            yield first[start : start + 65536]
        yield second
        await anyio.sleep_forever()  # the rest never comes

    with anyio.move_on_after(1) as scope:
        await parse_form(MULTIPART, chunks(), max_files=10, max_fields=10, max_part_size=1000)
    assert scope.cancelled_caught
    assert len(finished) == 1
    assert not isinstance(finished[0], io.BytesIO)  # on disk
    assert finished[0].closed
    assert len(spools) == 2
    assert spools[1]._file is not None
    assert spools[1]._file.closed


@pytest.mark.anyio
async def test_uploads_closed_when_the_endpoint_is_cancelled() -> None:
    """An endpoint cancelled after it parsed its form (a shutdown, a timeout around it)."""
    kept: list[UploadFile] = []
    app = App()

    @app.post("/up")
    async def up(request: Request) -> str:
        form = await request.form()
        upload = form["f"]
        assert isinstance(upload, UploadFile)
        kept.append(upload)
        await anyio.sleep_forever()
        return "unreachable"

    body = multipart_body([("f", b"z" * (2 * 1024 * 1024), "f.bin", "application/octet-stream")])
    scope = http_scope("POST", "/up", headers=[(b"content-type", MULTIPART.encode())])
    with anyio.move_on_after(1):
        await run_app(app, scope, body_messages(body))
    assert len(kept) == 1
    assert kept[0].file.closed


# -- other content types -------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "text/plain", "multipart/mixed; boundary=x", "form"],
)
def test_non_form_content_type_is_415(make_client: MakeClient, content_type: str | None) -> None:
    client = make_client(form_app())
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/form", content=b'{"a": 1}', headers=headers)
    assert r.status_code == 415


def test_form_twice_returns_same_object(make_client: MakeClient) -> None:
    app = App()

    @app.post("/twice")
    async def twice(request: Request) -> dict[str, Any]:
        first = await request.form()
        second = await request.form()
        return {"same": first is second, "a": second["a"]}

    client = make_client(app)
    assert client.post("/twice", data={"a": "1"}).json() == {"same": True, "a": "1"}
    body = multipart_body([("a", b"2"), ("f", b"x", "f.txt", "text/plain")])
    r = client.post("/twice", content=body, headers={"content-type": MULTIPART})
    assert r.json() == {"same": True, "a": "2"}


def test_body_after_form_is_available_for_urlencoded(make_client: MakeClient) -> None:
    app = App()

    @app.post("/both")
    async def both(request: Request) -> dict[str, Any]:
        form = await request.form()
        body = await request.body()
        return {"a": form["a"], "body": body.decode()}

    r = make_client(app).post("/both", data={"a": "1"})
    assert r.json() == {"a": "1", "body": "a=1"}


def test_request_close_closes_uploads(make_client: MakeClient) -> None:
    app = App()
    files: list[Any] = []

    @app.post("/close")
    async def close(request: Request) -> str:
        form = await request.form()
        files.append(form["f"].file)
        await request.close()
        return "closed"

    body = multipart_body([("f", b"x", "f.txt", "text/plain")])
    r = make_client(app).post("/close", content=body, headers={"content-type": MULTIPART})
    assert r.text == "closed"
    assert files and files[0].closed


def test_urlencoded_invalid_utf8_is_400(make_client: MakeClient) -> None:
    client = make_client(form_app())
    for body in (b"a=%ff%fe", b"a=\xff"):
        r = client.post(
            "/form", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 400
        assert "UTF-8" in r.text


def test_uploaded_files_are_closed_after_the_response(make_client: MakeClient) -> None:
    app = App()
    kept: list[UploadFile] = []

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, bool]:
        form = await request.form()
        file = form["f"]
        assert isinstance(file, UploadFile)
        kept.append(file)
        return {"open": not file.file.closed}

    r = make_client(app).post("/upload", files={"f": ("a.txt", b"data", "text/plain")})
    assert r.json() == {"open": True}
    assert kept[0].file.closed


def test_uploaded_files_are_closed_when_the_endpoint_raises(make_client: MakeClient) -> None:
    app = App()
    kept: list[Any] = []

    @app.post("/upload")
    async def upload(request: Request) -> None:
        form = await request.form()
        kept.append(form["f"].file)
        raise RuntimeError("after parsing")

    body = multipart_body([("f", b"data", "f.txt", "text/plain")])
    client = make_client(app, raise_server_exceptions=False)
    r = client.post("/upload", content=body, headers={"content-type": MULTIPART})
    assert r.status_code == 500
    assert kept and kept[0].closed


def test_exception_handler_can_read_the_form_the_endpoint_parsed(make_client: MakeClient) -> None:
    app = App()

    @app.post("/upload")
    async def upload(request: Request) -> None:
        await request.form()
        raise ValueError("rejected")

    @app.exception_handler(ValueError)
    async def rejected(request: Request, exc: ValueError) -> dict[str, Any]:
        form = await request.form()  # the same parsed form: the body is long gone
        return {"fields": sorted(form.keys()), "error": str(exc)}

    body = multipart_body([("a", b"1", None, None), ("f", b"x", "f.txt", "text/plain")])
    r = make_client(app).post("/upload", content=body, headers={"content-type": MULTIPART})
    assert r.json() == {"fields": ["a", "f"], "error": "rejected"}


@pytest.mark.anyio
async def test_large_uploads_go_to_disk_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio.to_thread

    from microasgi import _forms

    trips = 0
    real_run_sync = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await real_run_sync(func, *args, **kwargs)

    monkeypatch.setattr(_forms.anyio.to_thread, "run_sync", counting)
    data = os.urandom(3 * 1024 * 1024 + 12345)
    body = multipart_body([("f", data, "big.bin", "application/octet-stream"), ("x", b"1")])
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    app = App()

    @app.post("/up")
    async def up(request: Request) -> dict[str, Any]:
        form = await request.form()
        upload = form["f"]
        content = await upload.read()
        return {"sha": hashlib.sha256(content).hexdigest(), "size": upload.size, "x": form["x"]}

    scope = http_scope("POST", "/up", headers=[(b"content-type", MULTIPART.encode())])
    exchange = await run_app(app, scope, body_messages(*chunks))
    reply = json.loads(exchange.body)
    assert reply == {"sha": hashlib.sha256(data).hexdigest(), "size": len(data), "x": "1"}
    # One trip per MiB written (plus the last batch with the rewind, the read and the
    # close), not one per 64 KiB chunk (50 of them here).
    assert trips <= 3 + 1 + 3, trips
