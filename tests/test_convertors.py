"""Path convertors: built-in ones, mixed segments, custom convertors, template errors."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from microasgi import App, Request, Router
from microasgi._paths import NoMatchFound
from microasgi.convertors import (
    CONVERTORS,
    Convertor,
    FloatConvertor,
    IntConvertor,
    UUIDConvertor,
    register_convertor,
)
from microasgi.routing import Mount

# -- a small app with one route per convertor --------------------------------------------


def convertor_app() -> App:
    app = App()

    @app.get("/str/{value}", name="str")
    async def as_str(value: str) -> Any:
        return {"value": value, "type": type(value).__name__}

    @app.get("/int/{value:int}", name="int")
    async def as_int(value: int) -> Any:
        return {"value": value, "type": type(value).__name__}

    @app.get("/float/{value:float}", name="float")
    async def as_float(value: float) -> Any:
        return {"value": value, "type": type(value).__name__}

    @app.get("/uuid/{value:uuid}", name="uuid")
    async def as_uuid(value: uuid.UUID) -> Any:
        return {"value": str(value), "type": type(value).__name__}

    @app.get("/files/{value:path}", name="path")
    async def as_path(value: str) -> Any:
        return {"value": value, "type": type(value).__name__}

    return app


# -- str ------------------------------------------------------------------------------


def test_str_matches_one_segment(make_client: Any) -> None:
    client = make_client(convertor_app())
    r = client.get("/str/hello")
    assert r.status_code == 200
    assert r.json() == {"value": "hello", "type": "str"}
    # Percent-escapes are decoded before matching.
    assert client.get("/str/a%20b").json()["value"] == "a b"
    # Digits stay a string for the default convertor.
    assert client.get("/str/42").json() == {"value": "42", "type": "str"}


def test_str_does_not_match_two_segments(make_client: Any) -> None:
    client = make_client(convertor_app())
    assert client.get("/str/a/b").status_code == 404


def test_str_does_not_match_empty_segment(make_client: Any) -> None:
    client = make_client(convertor_app())
    r = client.get("/str/", follow_redirects=False)
    assert r.status_code == 404
    assert "location" not in r.headers


# -- int ------------------------------------------------------------------------------


@pytest.mark.parametrize(("segment", "value"), [("0", 0), ("42", 42), ("007", 7)])
def test_int_matches_ascii_digits(make_client: Any, segment: str, value: int) -> None:
    r = make_client(convertor_app()).get(f"/int/{segment}")
    assert r.status_code == 200
    assert r.json() == {"value": value, "type": "int"}


@pytest.mark.parametrize(
    "segment",
    ["-1", "+1", "1_000", "\u0663", "%201", "1%20", "1.0", "0x10", "abc", "\uff11"],
    ids=["minus", "plus", "underscore", "arabic", "leading-space", "trailing-space", "float",
         "hex", "letters", "fullwidth"],
)  # fmt: skip
def test_int_rejects_everything_but_ascii_digits(make_client: Any, segment: str) -> None:
    r = make_client(convertor_app()).get(f"/int/{segment}", follow_redirects=False)
    assert r.status_code == 404


def test_int_convertor_unit() -> None:
    conv = IntConvertor()
    assert conv.convert("12") == 12
    for bad in ["-1", "+1", "1_000", "\u0663", " 1", "", "\u00b2"]:
        with pytest.raises(ValueError):
            conv.convert(bad)
    assert conv.to_string(12) == "12"
    with pytest.raises(ValueError):
        conv.to_string(-1)


# -- float ----------------------------------------------------------------------------


@pytest.mark.parametrize(("segment", "value"), [("3", 3.0), ("3.25", 3.25), ("0.5", 0.5)])
def test_float_matches(make_client: Any, segment: str, value: float) -> None:
    r = make_client(convertor_app()).get(f"/float/{segment}")
    assert r.status_code == 200
    assert r.json() == {"value": value, "type": "float"}


@pytest.mark.parametrize(
    "segment",
    ["3.", ".5", "1e5", "nan", "inf", "-1.5", "+1.5", "1_0.5", "\u0663.5", "1.2.3", "%201.5"],
)
def test_float_rejects(make_client: Any, segment: str) -> None:
    r = make_client(convertor_app()).get(f"/float/{segment}", follow_redirects=False)
    assert r.status_code == 404


@pytest.mark.parametrize("value", [0.0, 0.5, 3.25, 1234567.125, 1e16, 1e20, 1e-7])
def test_float_to_string_round_trips(value: float) -> None:
    """What url_path_for writes for a float must match the route it was built for."""
    conv = FloatConvertor()
    assert conv.convert(conv.to_string(value)) == value


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_float_to_string_refuses_unmatchable_values(value: float) -> None:
    with pytest.raises(ValueError):
        FloatConvertor().to_string(value)


# -- uuid -----------------------------------------------------------------------------

UID = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")


@pytest.mark.parametrize(
    "text", [str(UID), str(UID).upper(), "12345678-9ABC-def0-1234-56789abcDEF0"]
)
def test_uuid_matches_canonical_form_any_case(make_client: Any, text: str) -> None:
    r = make_client(convertor_app()).get(f"/uuid/{text}")
    assert r.status_code == 200
    assert r.json() == {"value": str(UID), "type": "UUID"}


@pytest.mark.parametrize(
    "text",
    [
        UID.hex,  # no dashes
        "{" + str(UID) + "}",
        "urn:uuid:" + str(UID),
        str(UID)[:-1],
        str(UID) + "0",
        "1234567g-9abc-def0-1234-56789abcdef0",
        "123456789-abc-def0-1234-56789abcdef0",  # dash in the wrong place
        # 36 characters with dashes in place, but not 32 hex digits:
        "1234567_-9abc-def0-1234-56789abcdef0",
        "+2345678-9abc-def0-1234-56789abcdef0",
        "%202345678-9abc-def0-1234-56789abcdef0",
    ],
    ids=["nodash", "braces", "urn", "short", "long", "nonhex", "misplaced-dash",
         "underscore", "plus", "space"],
)  # fmt: skip
def test_uuid_rejects_non_canonical(make_client: Any, text: str) -> None:
    r = make_client(convertor_app()).get(f"/uuid/{text}", follow_redirects=False)
    assert r.status_code == 404


def test_uuid_convertor_unit() -> None:
    conv = UUIDConvertor()
    assert conv.convert(str(UID).upper()) == UID
    assert conv.to_string(UID) == str(UID)
    bad_values = [UID.hex, "1234567_-9abc-def0-1234-56789abcdef0", " 2345678-9abc-def0-1234-56789a"]
    for bad in bad_values:
        with pytest.raises(ValueError):
            conv.convert(bad)


# -- path -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "value"),
    [
        ("/files/a", "a"),
        ("/files/a/b/c.txt", "a/b/c.txt"),
        ("/files/a/b/", "a/b/"),
        ("/files/", ""),
    ],
)
def test_path_matches_the_rest(make_client: Any, url: str, value: str) -> None:
    r = make_client(convertor_app()).get(url, follow_redirects=False)
    assert r.status_code == 200
    assert r.json() == {"value": value, "type": "str"}


def test_path_without_the_trailing_slash_redirects_to_the_empty_path(make_client: Any) -> None:
    r = make_client(convertor_app()).get("/files", follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == "/files/"


def test_path_after_static_prefix_and_params(make_client: Any) -> None:
    app = App()

    @app.get("/repo/{owner}/{name}/blob/{rest:path}")
    async def blob(owner: str, name: str, rest: str) -> Any:
        return [owner, name, rest]

    client = make_client(app)
    assert client.get("/repo/me/proj/blob/src/main.py").json() == ["me", "proj", "src/main.py"]
    assert client.get("/repo/me/proj/tree/src").status_code == 404


@pytest.mark.parametrize(
    "path",
    ["/a/{p:path}/b", "/a/x{p:path}", "/a/{p:path}.txt", "/{p:path}/{q}", "/a/{p:path}{q}"],
)
def test_path_only_allowed_as_whole_last_segment(path: str) -> None:
    app = App()
    with pytest.raises(ValueError):

        @app.get(path)
        async def endpoint(request: Request) -> None: ...


def test_path_not_allowed_in_a_mount() -> None:
    with pytest.raises(ValueError):
        App().mount("/m/{p:path}", Router())
    with pytest.raises(ValueError):
        Mount("/m/{p:path}", Router())


# -- mixed segments -------------------------------------------------------------------


def mixed_app() -> App:
    app = App()

    @app.get("/files/{name}.{ext}", name="file")
    async def file(name: str, ext: str) -> Any:
        return {"name": name, "ext": ext}

    @app.get("/v{major:int}.{minor:int}/info", name="version")
    async def version(major: int, minor: int) -> Any:
        return {"major": major, "minor": minor}

    return app


def test_mixed_segment(make_client: Any) -> None:
    client = make_client(mixed_app())
    assert client.get("/files/report.pdf").json() == {"name": "report", "ext": "pdf"}
    parts = client.get("/files/archive.tar.gz").json()
    assert parts["name"] + "." + parts["ext"] == "archive.tar.gz"
    assert client.get("/files/noext", follow_redirects=False).status_code == 404
    assert client.get("/files/.pdf", follow_redirects=False).status_code == 404
    assert client.get("/files/report.", follow_redirects=False).status_code == 404


def test_mixed_segment_with_typed_params(make_client: Any) -> None:
    client = make_client(mixed_app())
    assert client.get("/v1.12/info").json() == {"major": 1, "minor": 12}
    assert client.get("/v1.x/info").status_code == 404
    assert client.get("/v-1.2/info").status_code == 404
    assert client.get("/w1.2/info").status_code == 404


def test_mixed_segment_url_path_for() -> None:
    app = mixed_app()
    assert app.url_path_for("file", name="report", ext="pdf") == "/files/report.pdf"
    assert app.url_path_for("version", major=2, minor=0) == "/v2.0/info"


def test_mixed_segment_static_and_parameter_routes_coexist(make_client: Any) -> None:
    app = mixed_app()

    @app.get("/files/{anything}")
    async def anything(anything: str) -> str:
        return "plain:" + anything

    client = make_client(app)
    assert client.get("/files/noext").text == "plain:noext"
    assert client.get("/files/a.b").json() == {"name": "a", "ext": "b"}


# -- custom convertors ----------------------------------------------------------------


class HexConvertor(Convertor):
    regex = "[0-9a-f]+"

    def convert(self, value: str) -> int:
        if not value or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(value)
        return int(value, 16)

    def to_string(self, value: Any) -> str:
        return format(int(value), "x")


class EvenConvertor(Convertor):
    def convert(self, value: str) -> int:
        number = int(value)
        if number % 2:
            raise ValueError(value)
        return number

    def to_string(self, value: Any) -> str:
        return str(value)


register_convertor("test_hex", HexConvertor())
register_convertor("test_even", EvenConvertor())


def test_custom_convertor_registered() -> None:
    assert isinstance(CONVERTORS["test_hex"], HexConvertor)


def test_custom_convertor_matches_and_converts(make_client: Any) -> None:
    app = App()

    @app.get("/colour/{value:test_hex}", name="colour")
    async def colour(value: int) -> Any:
        return {"value": value}

    client = make_client(app)
    assert client.get("/colour/ff").json() == {"value": 255}
    assert client.get("/colour/zz").status_code == 404
    assert app.url_path_for("colour", value=255) == "/colour/ff"


def test_custom_convertor_value_error_backtracks(make_client: Any) -> None:
    app = App()

    @app.get("/n/{n:test_even}")
    async def even(n: int) -> str:
        return f"even {n}"

    @app.get("/n/{s}")
    async def other(s: str) -> str:
        return f"other {s}"

    client = make_client(app)
    assert client.get("/n/4").text == "even 4"
    assert client.get("/n/3").text == "other 3"
    assert client.get("/n/x").text == "other x"


def test_custom_convertor_in_mixed_segment(make_client: Any) -> None:
    app = App()

    @app.get("/c/#{rgb:test_hex}.png", name="swatch")
    async def swatch(rgb: int) -> Any:
        return {"rgb": rgb}

    client = make_client(app)
    assert client.get("/c/%23ff.png").json() == {"rgb": 255}
    assert client.get("/c/%23zz.png").status_code == 404
    assert app.url_path_for("swatch", rgb=16) == "/c/#10.png"


def test_custom_convertor_in_mount(make_client: Any) -> None:
    async def echo_params(scope: Any, receive: Any, send: Any) -> None:
        body = repr(sorted(scope["path_params"].items())).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    app = App()
    shard = Router()
    shard.add_route("/items/{item:test_even}", lambda item: None, name="item")
    app.mount("/shard/{shard:test_hex}", shard, name="shard")
    app.mount("/raw/{shard:test_hex}", echo_params, name="raw")
    assert app.url_path_for("shard:item", shard=26, item=4) == "/shard/1a/items/4"
    assert app.url_path_for("raw", shard=255, path="x") == "/raw/ff/x"
    client = make_client(app)
    r = client.get("/raw/1a/anything")
    assert r.status_code == 200
    assert r.text == "[('shard', 26)]"
    assert client.get("/raw/zz/anything").status_code == 404


def test_register_convertor_rejects_bad_name() -> None:
    with pytest.raises(ValueError):
        register_convertor("not a name", HexConvertor())


# -- template errors at registration --------------------------------------------------


def test_unknown_convertor_raises_value_error() -> None:
    app = App()
    with pytest.raises(ValueError, match="nosuch"):

        @app.get("/x/{value:nosuch}")
        async def endpoint(value: str) -> None: ...

    with pytest.raises(ValueError):
        app.mount("/m/{value:nosuch}", Router())
    assert app.routes == []


@pytest.mark.parametrize("path", ["/a/{x}/{x}", "/a/{x}.{x}", "/a/{x:int}/b/{x:str}"])
def test_duplicate_parameter_raises_value_error(path: str) -> None:
    app = App()
    with pytest.raises(ValueError, match="x"):

        @app.get(path)
        async def endpoint(x: str) -> None: ...


@pytest.mark.parametrize("path", ["", "users", "users/{id}", "{id}"])
def test_path_must_start_with_slash(path: str) -> None:
    app = App()
    with pytest.raises(ValueError):
        app.get(path)(lambda: None)
    with pytest.raises(ValueError):
        app.websocket(path)(lambda ws: None)
    router = Router()
    with pytest.raises(ValueError):
        router.get(path)(lambda: None)


def test_mount_path_must_start_with_slash() -> None:
    with pytest.raises(ValueError):
        App().mount("api", Router())


@pytest.mark.parametrize("path", ["/a/{x", "/a/x}", "/a/{1x}", "/a/{x-y}", "/a/{}"])
def test_malformed_parameters_raise_value_error(path: str) -> None:
    with pytest.raises(ValueError):
        App().get(path)(lambda: None)


def test_url_path_for_with_each_convertor() -> None:
    app = convertor_app()
    assert app.url_path_for("str", value="abc") == "/str/abc"
    assert app.url_path_for("int", value=7) == "/int/7"
    assert app.url_path_for("float", value=3.25) == "/float/3.25"
    assert app.url_path_for("uuid", value=UID) == f"/uuid/{UID}"
    assert app.url_path_for("path", value="a/b/c.txt") == "/files/a/b/c.txt"
    assert app.url_path_for("path", value="") == "/files/"


def test_url_path_for_float_matches_its_route(make_client: Any) -> None:
    app = convertor_app()
    client = make_client(app)
    for value in (2.0, 0.125, 1e20):
        url = app.url_path_for("float", value=value)
        r = client.get(url, follow_redirects=False)
        assert r.status_code == 200, url
        assert r.json()["value"] == value


def test_url_path_for_refuses_values_that_cannot_match() -> None:
    app = convertor_app()
    with pytest.raises((ValueError, NoMatchFound)):
        app.url_path_for("int", value=-3)
    with pytest.raises((ValueError, NoMatchFound)):
        app.url_path_for("str", value="a/b")
    with pytest.raises((ValueError, NoMatchFound)):
        app.url_path_for("str", value="")


def test_float_too_long_to_be_finite_does_not_match(make_client: Any) -> None:
    app = App()

    @app.get("/f/{value:float}")
    async def f(value: float) -> dict[str, float]:
        return {"value": value}

    assert make_client(app).get("/f/" + "1" * 400).status_code == 404


def test_url_path_for_percent_encodes_values() -> None:
    app = App()

    @app.get("/hello/{name}")
    async def hello(name: str) -> str:
        return name

    @app.get("/files/{rest:path}")
    async def files(rest: str) -> str:
        return rest

    assert app.url_path_for("hello", name="a b#c?") == "/hello/a%20b%23c%3F"
    with pytest.raises(ValueError):  # the server would decode %2F and not route it here
        app.url_path_for("hello", name="a/b")
    assert app.url_path_for("files", rest="dir/a b.txt") == "/files/dir/a%20b.txt"


def test_url_for_round_trips_through_the_router(make_client: Any) -> None:
    app = App()

    @app.get("/hello/{name}")
    async def hello(request: Request, name: str) -> dict[str, str]:
        return {"name": name, "url": str(request.url_for("hello", name="é ?"))}

    client = make_client(app)
    url = client.get("/hello/x").json()["url"]
    assert url == "http://testserver/hello/%C3%A9%20%3F"
    assert client.get(url).json()["name"] == "é ?"


class BrokenConvertor(Convertor):
    """A convertor with a bug: it raises something other than ValueError."""

    def convert(self, value: str) -> int:
        if value == "boom":
            raise TypeError("convertor bug")
        return len(value)


register_convertor("test_broken", BrokenConvertor())


@pytest.mark.parametrize("kind", ["app", "app-with-middleware", "router"])
def test_a_convertor_that_raises_a_bug_is_answered_500(
    kind: str, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a ValueError (no match) but a bug in the convertor: answered like an
    endpoint's error, before anything is sent, whatever serves the router (it
    used to reach the App as an error after the response had started)."""
    from microasgi.middleware import Middleware
    from microasgi.testclient import WebSocketDenied
    from tests.helpers import AddHeader

    target: Any
    if kind == "router":
        target = Router()
    else:
        target = App(middleware=[Middleware(AddHeader)] if kind != "app" else [])

    @target.get("/n/{value:test_broken}")
    async def length(value: int) -> dict[str, int]:
        return {"value": value}

    @target.websocket("/ws/{value:test_broken}")
    async def socket(ws: Any, value: int) -> None:
        await ws.accept()

    client = make_client(target, raise_server_exceptions=False)
    assert client.get("/n/abc").json() == {"value": 3}
    response = client.get("/n/boom")
    assert response.status_code == 500
    assert any("convertor bug" in str(r.exc_info and r.exc_info[1]) for r in caplog.records)
    with pytest.raises(WebSocketDenied) as info:
        client.websocket_connect("/ws/boom", timeout=5)
    assert info.value.status_code == 500  # denied with the error's status
