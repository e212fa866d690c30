"""URL, Headers, MutableHeaders, QueryParams, State, ImmutableMultiDict, FormData, UploadFile."""

from __future__ import annotations

import io
from typing import Any

import pytest

from microasgi.datastructures import (
    URL,
    FormData,
    Headers,
    ImmutableMultiDict,
    MutableHeaders,
    QueryParams,
    State,
    UploadFile,
)

# -- URL -------------------------------------------------------------------------------


def scope(**parts: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "http",
        "scheme": "http",
        "path": "/",
        "query_string": b"",
        "headers": [],
        "server": ("testserver", 80),
    }
    base.update(parts)
    return base


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ({"headers": [(b"host", b"example.com")], "path": "/a/b"}, "http://example.com/a/b"),
        (
            {"headers": [(b"host", b"example.com:8080")], "query_string": b"x=1&y=2"},
            "http://example.com:8080/?x=1&y=2",
        ),
        ({"server": ("example.org", 80)}, "http://example.org/"),
        ({"server": ("example.org", 8080)}, "http://example.org:8080/"),
        ({"scheme": "https", "server": ("example.org", 443)}, "https://example.org/"),
        ({"scheme": "https", "server": ("example.org", 80)}, "https://example.org:80/"),
        ({"scheme": "http", "server": ("example.org", 443)}, "http://example.org:443/"),
        ({"scheme": "ws", "server": ("example.org", 80), "path": "/ws"}, "ws://example.org/ws"),
        ({"scheme": "wss", "server": ("example.org", 443), "path": "/ws"}, "wss://example.org/ws"),
        ({"server": ("::1", 8000)}, "http://[::1]:8000/"),
        ({"server": ("::1", 80)}, "http://[::1]/"),
        ({"server": ("2001:db8::5", 443), "scheme": "https"}, "https://[2001:db8::5]/"),
        ({"server": ("127.0.0.1", 5000), "path": "/x"}, "http://127.0.0.1:5000/x"),
        ({"headers": [(b"host", b"[::1]:9000")]}, "http://[::1]:9000/"),
        ({"server": ("unix.sock", None)}, "http://unix.sock/"),
    ],
)
def test_url_from_scope(parts: dict[str, Any], expected: str) -> None:
    url = URL.from_scope(scope(**parts))
    assert str(url) == expected


def test_url_from_scope_parts() -> None:
    url = URL.from_scope(
        scope(
            scheme="https",
            path="/items/42",
            query_string=b"q=a%20b&n=1",
            headers=[(b"host", b"api.example.com:8443")],
        )
    )
    assert url.scheme == "https"
    assert url.netloc == "api.example.com:8443"
    assert url.path == "/items/42"
    assert url.query == "q=a%20b&n=1"
    assert url.hostname == "api.example.com"
    assert url.port == 8443


def test_url_from_scope_host_header_beats_server() -> None:
    url = URL.from_scope(scope(headers=[(b"host", b"front.example")], server=("10.0.0.1", 8000)))
    assert url.netloc == "front.example"


def test_url_from_scope_path_quoted() -> None:
    url = URL.from_scope(scope(path="/a b/café"))
    assert url.path == "/a%20b/caf%C3%A9"


def test_url_from_scope_literal_percent_encoded() -> None:
    """scope["path"] is already decoded: a "%" in it is a literal one and must be escaped."""
    assert URL.from_scope(scope(path="/100%")).path == "/100%25"
    assert URL.from_scope(scope(path="/a%2Fb")).path == "/a%252Fb"


@pytest.mark.parametrize(
    ("netloc", "hostname", "port"),
    [
        ("example.com", "example.com", None),
        ("example.com:8080", "example.com", 8080),
        ("[::1]:8000", "::1", 8000),
        ("[::1]", "::1", None),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
        ("user:pw@example.com:21", "example.com", 21),
        ("user@example.com", "example.com", None),
        ("127.0.0.1:80", "127.0.0.1", 80),
    ],
)
def test_url_hostname_and_port(netloc: str, hostname: str, port: int | None) -> None:
    url = URL("http", netloc, "/")
    assert url.hostname == hostname
    assert url.port == port


def test_url_replace() -> None:
    url = URL("http", "example.com", "/a", "x=1")
    other = url.replace(scheme="https", path="/b")
    assert str(other) == "https://example.com/b?x=1"
    assert str(url) == "http://example.com/a?x=1"  # unchanged
    assert str(url.replace(query="")) == "http://example.com/a"
    assert str(url.replace(netloc="other:81")) == "http://other:81/a?x=1"
    assert str(url.replace(fragment="top")) == "http://example.com/a?x=1#top"


def test_url_include_query_params() -> None:
    url = URL("http", "example.com", "/search", "q=old&page=1&tag=a&tag=b")
    new = url.include_query_params(q="new value", size=20)
    assert new.query == "page=1&tag=a&tag=b&q=new+value&size=20"
    assert url.query == "q=old&page=1&tag=a&tag=b"
    assert str(URL("http", "h", "/").include_query_params(a=1)) == "http://h/?a=1"


def test_url_include_query_params_keeps_blank_values() -> None:
    url = URL("http", "h", "/", "empty=&x=1")
    assert url.include_query_params(x=2).query == "empty=&x=2"


def test_url_str_without_scheme_is_path() -> None:
    assert str(URL(path="/only/path", query="a=1")) == "/only/path?a=1"


def test_url_equality_and_hash() -> None:
    a = URL("http", "h", "/p", "q=1")
    b = URL("http", "h", "/p", "q=1")
    assert a == b
    assert a == "http://h/p?q=1"
    assert a != URL("http", "h", "/p")
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert "http://h/p?q=1" in repr(a)


# -- Headers -------------------------------------------------------------------------


def test_headers_from_mapping() -> None:
    headers = Headers({"Content-Type": "text/plain", "X-One": "1"})
    assert headers["content-type"] == "text/plain"
    assert headers["CONTENT-TYPE"] == "text/plain"
    assert headers.raw == [(b"content-type", b"text/plain"), (b"x-one", b"1")]


def test_headers_from_raw_multi_valued() -> None:
    raw = [(b"accept", b"a"), (b"Set-Cookie", b"x=1"), (b"set-cookie", b"y=2")]
    headers = Headers(raw=raw)
    assert headers.getlist("set-cookie") == ["x=1", "y=2"]
    assert headers.getlist("SET-COOKIE") == ["x=1", "y=2"]
    assert headers["set-cookie"] == "x=1"
    assert headers.getlist("missing") == []
    assert headers.get("missing") is None
    assert headers.get("missing", "d") == "d"
    assert "Accept" in headers
    assert "nope" not in headers
    assert 1 not in headers  # type: ignore[comparison-overlap]
    # Iteration yields every raw header, repeats included, in order (Starlette's semantics).
    assert len(headers) == 3
    assert list(headers) == headers.keys() == ["accept", "Set-Cookie", "set-cookie"]
    assert headers.values() == ["a", "x=1", "y=2"]
    assert headers.items() == [("accept", "a"), ("Set-Cookie", "x=1"), ("set-cookie", "y=2")]
    assert headers.multi_items() == headers.items()
    with pytest.raises(KeyError):
        headers["missing"]


def test_headers_getlist_returns_a_copy() -> None:
    headers = Headers(raw=[(b"a", b"1")])
    headers.getlist("a").append("2")
    assert headers.getlist("a") == ["1"]


def test_headers_latin1_bytes() -> None:
    headers = Headers(raw=[(b"x-bin", b"\xff\xfe caf\xe9")])
    assert headers["x-bin"] == "\xff\xfe café"


def test_headers_from_scope_and_equality() -> None:
    raw = [(b"a", b"1"), (b"b", b"2")]
    one = Headers.from_scope({"headers": raw})
    two = Headers(raw=list(reversed(raw)))
    assert one == two
    assert one != Headers(raw=[(b"a", b"1")])
    assert Headers() == Headers(raw=[])
    assert "Headers(" in repr(one)


# -- MutableHeaders ------------------------------------------------------------------


def test_mutable_headers_set_replaces_every_value() -> None:
    raw = [(b"x", b"1"), (b"y", b"keep"), (b"x", b"2")]
    headers = MutableHeaders(raw=raw)
    assert headers.getlist("x") == ["1", "2"]
    headers["X"] = "3"
    assert headers.getlist("x") == ["3"]
    assert raw == [(b"y", b"keep"), (b"x", b"3")]  # writes go through to the raw list


def test_mutable_headers_append() -> None:
    headers = MutableHeaders(raw=[])
    headers.append("Set-Cookie", "a=1")
    headers.append("set-cookie", "b=2")
    assert headers.getlist("set-cookie") == ["a=1", "b=2"]
    assert headers.raw == [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]


def test_mutable_headers_delete() -> None:
    headers = MutableHeaders(raw=[(b"x", b"1"), (b"x", b"2"), (b"y", b"3")])
    del headers["X"]
    assert "x" not in headers
    assert headers.raw == [(b"y", b"3")]
    del headers["not-there"]  # deleting an absent header is not an error
    assert headers.raw == [(b"y", b"3")]


def test_mutable_headers_setdefault() -> None:
    headers = MutableHeaders(raw=[(b"x", b"1")])
    assert headers.setdefault("X", "other") == "1"
    assert headers.getlist("x") == ["1"]
    assert headers.setdefault("y", "2") == "2"
    assert headers["y"] == "2"


def test_mutable_headers_update() -> None:
    headers = MutableHeaders(raw=[(b"a", b"1"), (b"a", b"1b"), (b"b", b"2")])
    headers.update({"A": "new", "c": "3"})
    assert headers.getlist("a") == ["new"]
    assert headers["b"] == "2"
    assert headers["c"] == "3"


def test_mutable_headers_add_vary_header() -> None:
    headers = MutableHeaders(raw=[])
    headers.add_vary_header("Accept-Encoding")
    assert headers["vary"] == "Accept-Encoding"
    headers.add_vary_header("Origin")
    assert headers["vary"] == "Accept-Encoding, Origin"
    assert headers.getlist("vary") == ["Accept-Encoding, Origin"]


def test_add_vary_header_keeps_every_existing_value() -> None:
    headers = MutableHeaders(raw=[(b"vary", b"Accept"), (b"vary", b"Cookie")])
    headers.add_vary_header("Origin")
    values = ", ".join(headers.getlist("vary"))
    assert [v.strip() for v in values.split(",")] == ["Accept", "Cookie", "Origin"]


def test_mutable_headers_from_mapping() -> None:
    headers = MutableHeaders({"A": "1"})
    headers["b"] = "2"
    assert dict(headers.items()) == {"a": "1", "b": "2"}


@pytest.mark.parametrize("value", ["a\r\nb", "a\nb", "a\rb"])
def test_mutable_headers_reject_crlf(value: str) -> None:
    headers = MutableHeaders(raw=[])
    with pytest.raises(ValueError):
        headers["x"] = value
    with pytest.raises(ValueError):
        headers.append("x", value)
    with pytest.raises(ValueError):
        headers.setdefault("x", value)
    with pytest.raises(ValueError):
        headers.update({"x": value})
    with pytest.raises(ValueError):
        headers[f"x{value}"] = "v"
    assert headers.raw == []


# -- QueryParams -----------------------------------------------------------------------


def test_query_params_from_str() -> None:
    params = QueryParams("a=1&b=2&a=3&empty=&plus=x+y&pct=%C3%A9%26")
    assert params.getlist("a") == ["1", "3"]
    assert params["a"] == "3"
    assert params["b"] == "2"
    assert params["empty"] == ""
    assert params["plus"] == "x y"
    assert params["pct"] == "é&"
    assert list(params) == ["a", "b", "empty", "plus", "pct"]
    assert len(params) == 5
    assert params.multi_items()[:3] == [("a", "1"), ("b", "2"), ("a", "3")]


def test_query_params_from_bytes_and_list() -> None:
    assert QueryParams(b"x=1&x=2").getlist("x") == ["1", "2"]
    params = QueryParams([("k", "v"), ("k", "w")])
    assert params.getlist("k") == ["v", "w"]
    assert QueryParams("") == QueryParams(b"")
    assert len(QueryParams("")) == 0


def test_query_params_str_roundtrip() -> None:
    params = QueryParams("a=1&a=2&b=x+y&c=%26%3D")
    assert str(params) == "a=1&a=2&b=x+y&c=%26%3D"
    assert QueryParams(str(params)) == params
    assert str(QueryParams([("é", "ü ")])) == "%C3%A9=%C3%BC+"


@pytest.mark.parametrize(
    ("raw", "key", "value"),
    [
        (b"q=%ff", "q", "\ufffd"),
        (b"q=\xff", "q", "\ufffd"),
        (b"q=ok\xfe\xffend", "q", "ok\ufffd\ufffdend"),
        (b"%ff=v", "\ufffd", "v"),
        (b"q=%C3%A9", "q", "é"),
        (b"q=\xc3\xa9", "q", "é"),
    ],
)
def test_query_params_invalid_utf8_replaced(raw: bytes, key: str, value: str) -> None:
    params = QueryParams(raw)
    assert params[key] == value


def test_query_params_oddities() -> None:
    params = QueryParams("&&a&=x&b==c")
    assert params.get("a") == ""
    assert params.get("b") == "=c"


def test_multidict_equality_ignores_order() -> None:
    assert QueryParams("a=1&b=2") == QueryParams("b=2&a=1")
    assert QueryParams("a=1&a=2") != QueryParams("a=1")


# -- ImmutableMultiDict, FormData ------------------------------------------------------


def test_immutable_multidict() -> None:
    d = ImmutableMultiDict([("a", 1), ("b", 2), ("a", 3)])
    assert d["a"] == 3
    assert d.getlist("a") == [1, 3]
    assert d.getlist("zz") == []
    assert d.get("zz", "default") == "default"
    assert list(d) == ["a", "b"]
    assert len(d) == 2
    assert "b" in d
    assert d.multi_items() == [("a", 1), ("b", 2), ("a", 3)]
    assert dict(d) == {"a": 3, "b": 2}
    with pytest.raises(KeyError):
        d["zz"]
    with pytest.raises(TypeError):
        d["a"] = 5  # type: ignore[index]
    assert "ImmutableMultiDict(" in repr(d)


def test_multi_items_is_a_copy() -> None:
    d = ImmutableMultiDict([("a", 1)])
    d.multi_items().append(("b", 2))
    assert d.multi_items() == [("a", 1)]


@pytest.mark.anyio
async def test_form_data_close_closes_uploads() -> None:
    f1, f2 = io.BytesIO(b"1"), io.BytesIO(b"2")
    form = FormData(
        [("field", "v"), ("f", UploadFile(f1, filename="a")), ("f", UploadFile(f2, filename="b"))]
    )
    assert form["field"] == "v"
    assert [u.filename for u in form.getlist("f")] == ["a", "b"]
    await form.close()
    assert f1.closed and f2.closed


# -- UploadFile ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_upload_file() -> None:
    headers = Headers({"Content-Type": "image/png", "Content-Disposition": "form-data"})
    upload = UploadFile(io.BytesIO(), filename="pic.png", size=0, headers=headers)
    assert upload.filename == "pic.png"
    assert upload.content_type == "image/png"
    await upload.write(b"0123456789")
    await upload.seek(0)
    assert await upload.read(4) == b"0123"
    assert await upload.read() == b"456789"
    await upload.seek(2)
    assert await upload.read(3) == b"234"
    assert "pic.png" in repr(upload)
    await upload.close()
    assert upload.file.closed


def test_upload_file_defaults() -> None:
    upload = UploadFile(io.BytesIO(b"x"))
    assert upload.filename is None
    assert upload.size is None
    assert upload.content_type is None
    assert len(upload.headers) == 0


# -- State -----------------------------------------------------------------------------


def test_state() -> None:
    state = State()
    state.user = "alice"
    assert state.user == "alice"
    assert "user" in state
    del state.user
    assert "user" not in state
    with pytest.raises(AttributeError):
        _ = state.user
    with pytest.raises(AttributeError):
        del state.user


def test_state_wraps_dict() -> None:
    backing: dict[str, Any] = {"pool": 1}
    state = State(backing)
    assert state.pool == 1
    state.extra = 2
    assert backing == {"pool": 1, "extra": 2}
    assert "State(" in repr(state)
    assert hasattr(state, "pool")
    assert not hasattr(state, "nothing")


# -- building multi-dicts from what users have at hand ------------------------------------


@pytest.mark.parametrize("cls", [ImmutableMultiDict, FormData, QueryParams])
def test_multi_dicts_from_a_mapping_an_instance_pairs_and_keywords(cls: Any) -> None:
    from_mapping = cls({"a": "1", "b": "2"})
    assert from_mapping.multi_items() == [("a", "1"), ("b", "2")]
    from_pairs = cls([("a", "1"), ("a", "2")])
    copy = cls(from_pairs)
    assert copy.multi_items() == [("a", "1"), ("a", "2")]  # every value survives the copy
    assert copy.getlist("a") == ["1", "2"]
    assert copy == from_pairs
    assert cls(c="3").multi_items() == [("c", "3")]
    assert cls({"a": "1"}, b="2").multi_items() == [("a", "1"), ("b", "2")]


def test_query_params_still_parse_strings_and_bytes() -> None:
    assert QueryParams("a=1&a=2&b=").multi_items() == [("a", "1"), ("a", "2"), ("b", "")]
    assert QueryParams(b"x=%C3%A9").multi_items() == [("x", "é")]
    assert QueryParams(QueryParams("a=1&a=2")).getlist("a") == ["1", "2"]


@pytest.mark.anyio
async def test_upload_file_write_counts_the_size() -> None:
    upload = UploadFile(io.BytesIO(), filename="a.txt", size=0)
    await upload.write(b"hello ")
    await upload.write(b"world")
    assert upload.size == 11
    await upload.seek(0)
    assert await upload.read() == b"hello world"
    unknown = UploadFile(io.BytesIO())  # a size nobody knows stays unknown
    await unknown.write(b"x")
    assert unknown.size is None


def test_upload_file_repr_includes_its_headers() -> None:
    headers = Headers({"content-type": "text/plain"})
    upload = UploadFile(io.BytesIO(), filename="a.txt", size=3, headers=headers)
    assert repr(upload) == (
        "UploadFile(filename='a.txt', size=3, headers=Headers([('content-type', 'text/plain')]))"
    )


def test_exception_and_middleware_reprs() -> None:
    from microasgi import WebSocketException
    from microasgi.middleware import Middleware

    assert (
        repr(WebSocketException(1008, "policy")) == "WebSocketException(code=1008, reason='policy')"
    )

    class Timing:
        pass

    assert repr(Middleware(Timing, 1, "two", limit=3)) == "Middleware(Timing, 1, 'two', limit=3)"
    assert repr(Middleware(Timing)) == "Middleware(Timing)"
