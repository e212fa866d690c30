"""SessionMiddleware: the signed cookie, when it is written, forged and broken cookies,
key rotation, expiry and refresh, the 4 KB limit, request.session."""

from __future__ import annotations

import base64
import json
import logging
import time
from http.cookies import SimpleCookie
from typing import Any

import pytest

from microasgi import App, Request, WebSocket
from microasgi.middleware import Middleware, SessionMiddleware
from microasgi.middleware.sessions import SessionSigner
from tests.helpers import MakeClient, http_scope

SECRET = "first-secret-for-the-tests"


def session_app(**options: Any) -> App:
    options.setdefault("secret_key", SECRET)
    app = App(middleware=[Middleware(SessionMiddleware, **options)])

    @app.get("/")
    async def show(request: Request) -> dict[str, Any]:
        return request.session

    @app.post("/set")
    async def set_values(request: Request) -> dict[str, Any]:
        request.session.update(await request.json())
        return request.session

    @app.post("/append")
    async def append(request: Request) -> dict[str, Any]:
        request.session.setdefault("items", []).append(len(request.session.get("items", [])))
        return request.session

    @app.post("/same")
    async def same(request: Request) -> dict[str, Any]:
        for key, value in list(request.session.items()):
            request.session[key] = value  # assigned, but nothing changes
        return request.session

    @app.post("/clear")
    async def clear(request: Request) -> dict[str, Any]:
        request.session.clear()
        return request.session

    @app.post("/bad")
    async def bad(request: Request) -> str:
        request.session["when"] = time  # a module: not JSON
        return "stored?"

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(websocket.scope["session"])
        await websocket.close()

    return app


def set_cookie(response: Any) -> str | None:
    values = response.headers.get_list("set-cookie")
    assert len(values) <= 1
    return values[0] if values else None


def cookie_value(header: str) -> str:
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(header)
    return cookie["session"].value


def signed(session: Any, *, secret: str = SECRET, issued: float | None = None) -> str:
    text = json.dumps(session, separators=(",", ":"))  # as the middleware writes it
    payload = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
    return SessionSigner([secret]).sign(payload, int(time.time() if issued is None else issued))


def test_session_round_trip_and_cookie_attributes(make_client: MakeClient) -> None:
    client = make_client(session_app())
    response = client.post("/set", json={"user": "ada", "n": 1})
    header = set_cookie(response)
    assert header is not None
    assert header.startswith("session=")
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert attributes == {"path", "httponly", "samesite", "max-age"}
    # Written as Starlette writes them (attribute names are not case-sensitive).
    assert "; path=/; Max-Age=1209600; httponly; samesite=lax" in header
    assert "Cookie" in response.headers["vary"]
    response = client.get("/")
    assert response.json() == {"user": "ada", "n": 1}
    assert set_cookie(response) is None  # unchanged: not written again
    assert "Cookie" in response.headers["vary"]


def test_all_the_cookie_options(make_client: MakeClient) -> None:
    app = session_app(
        session_cookie="sid",
        max_age=None,
        path="/app",
        same_site="none",
        https_only=True,
        domain="example.com",
        partitioned=True,
    )
    header = set_cookie(make_client(app).post("/set", json={"a": 1}))
    assert header is not None and header.startswith("sid=")
    assert "Max-Age" not in header
    for part in ("path=/app", "domain=example.com", "samesite=none", "secure", "partitioned"):
        assert part in header.split("; ")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"secret_key": ""}, "empty"),
        ({"secret_key": []}, "at least one"),
        ({"same_site": "none"}, "https_only"),
        ({"partitioned": True}, "https_only"),
        ({"same_site": "sideways"}, "same_site"),
        ({"session_cookie": "a b"}, "cookie name"),
        ({"domain": "a.com; secure"}, "domain"),
        ({"path": "/\r\nx"}, "path"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionMiddleware(App(), **{"secret_key": SECRET, **options})


def test_nothing_is_written_for_an_untouched_empty_session(make_client: MakeClient) -> None:
    response = make_client(session_app()).get("/")
    assert response.json() == {}
    assert set_cookie(response) is None
    assert "vary" not in response.headers


def test_written_only_when_changed_including_nested_values(make_client: MakeClient) -> None:
    client = make_client(session_app())
    client.post("/set", json={"user": "ada"})
    assert set_cookie(client.post("/same")) is None
    first = set_cookie(client.post("/append"))
    assert first is not None
    second = set_cookie(client.post("/append"))  # a list changed in place
    assert second is not None
    assert client.get("/").json() == {"user": "ada", "items": [0, 1]}


def test_an_emptied_session_clears_the_cookie(make_client: MakeClient) -> None:
    client = make_client(session_app())
    client.post("/set", json={"user": "ada"})
    header = set_cookie(client.post("/clear"))
    assert header is not None
    assert header.startswith("session=;") and "Max-Age=0" in header and "1970" in header
    assert client.get("/").json() == {}
    assert set_cookie(client.post("/clear")) is None  # nothing to clear any more


def forged_cookies() -> list[str]:
    good = signed({"user": "ada"})
    payload, issued, signature = good.split(".")
    admin = base64.urlsafe_b64encode(b'{"user":"admin"}').rstrip(b"=").decode()
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    return [
        f"{admin}.{issued}.{signature}",  # payload changed
        f"{payload}.{int(issued) + 1}.{signature}",  # timestamp changed
        f"{payload}.{issued}.{flipped}",  # signature changed
        good[: len(good) // 2],  # truncated
        good[:-1],
        f"{payload}.{issued}",
        f"{payload}..{signature}",
        f"{payload}.{issued}.!!!not-base64!!!",
        f"{payload}.{issued}.{signature}.extra",
        f"{payload}.{issued}.{signature}!",  # a character base64 decoding would skip
        f"{payload}.{issued}.{signature[:20]}\n{signature[20:]}",
        f"{payload}.-5.{signature}",
        f"{payload}.{issued}.{signature}é",
        signed({"user": "admin"}, secret="somebody-else's-key"),  # signed with an unknown key
        signed({"user": "ada"}, issued=time.time() - 15 * 24 * 3600),  # expired
        signed({"user": "ada"}, issued=time.time() + 3600),  # from the future
        signed(["not", "a", "dict"]),
        signed("text"),
        "",
        "null",
        "x" * 5000,
        "." * 100,
    ]


@pytest.mark.parametrize("value", forged_cookies())
def test_a_forged_or_broken_cookie_gives_an_empty_session(
    make_client: MakeClient, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(session_app())
    with caplog.at_level(logging.WARNING, logger="microasgi"):
        cookie = f"session={value}".encode()  # non-ASCII bytes too
        response = client.get("/", headers={"Cookie": cookie})
    assert response.status_code == 200
    assert response.json() == {}
    assert caplog.records == []


def test_a_valid_cookie_is_read(make_client: MakeClient) -> None:
    client = make_client(session_app())
    response = client.get("/", headers={"Cookie": f"other=1; session={signed({'user': 'ada'})}"})
    assert response.json() == {"user": "ada"}
    # A broken cookie of the same name first (another path, say) does not hide the good one.
    cookie = f"session=broken; session={signed({'user': 'ada'})}"
    assert client.get("/", headers={"Cookie": cookie}).json() == {"user": "ada"}


def test_key_rotation(make_client: MakeClient) -> None:
    old_cookie = signed({"user": "ada"}, secret="old-key")
    client = make_client(session_app(secret_key=["new-key", "old-key"]))
    response = client.get("/", headers={"Cookie": f"session={old_cookie}"})
    assert response.json() == {"user": "ada"}
    header = set_cookie(response)  # re-signed with the new key
    assert header is not None
    value = cookie_value(header)
    only_new = make_client(session_app(secret_key="new-key"))
    assert only_new.get("/", headers={"Cookie": f"session={value}"}).json() == {"user": "ada"}
    only_old = make_client(session_app(secret_key="old-key"))
    assert only_old.get("/", headers={"Cookie": f"session={value}"}).json() == {}


def test_refresh_when_due(make_client: MakeClient) -> None:
    client = make_client(session_app(max_age=1000))  # refreshed after 500 s
    fresh = signed({"user": "ada"}, issued=time.time() - 100)
    assert set_cookie(client.get("/", headers={"Cookie": f"session={fresh}"})) is None
    stale = signed({"user": "ada"}, issued=time.time() - 600)
    response = client.get("/", headers={"Cookie": f"session={stale}"})
    header = set_cookie(response)
    assert header is not None and "Max-Age=1000" in header
    _, issued, _ = cookie_value(header).split(".")
    assert abs(int(issued) - time.time()) < 5
    never = make_client(session_app(max_age=1000, refresh_after=1000))
    assert set_cookie(never.get("/", headers={"Cookie": f"session={stale}"})) is None


def test_oversized_session_is_an_error_not_a_lost_login(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(session_app())
    client.post("/set", json={"user": "ada"})
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        response = client.post("/set", json={"notes": "x" * 4000})
    assert response.status_code == 500
    assert set_cookie(response) is None
    [record] = caplog.records
    message = record.getMessage()
    assert "POST /set" in message and "4096" in message and "id in the session" in message
    size = int(message.split("would be ")[1].split(" ")[0])
    assert 4096 < size < 6000
    assert client.get("/").json() == {"user": "ada"}  # the old cookie is still there


def test_just_under_the_limit_is_written(make_client: MakeClient) -> None:
    client = make_client(session_app())
    # "session=" + base64(JSON) + "." + 10 digits + "." + 43 signature characters
    overhead = len("session=") + 1 + 10 + 1 + 43
    room = (4096 - overhead) * 3 // 4 - len('{"n":""}')
    response = client.post("/set", json={"n": "x" * room})
    header = set_cookie(response)
    assert response.status_code == 200 and header is not None
    assert len(header.split(";")[0]) <= 4096


def test_a_value_that_is_not_json_is_an_error(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        response = make_client(session_app()).post("/bad")
    assert response.status_code == 500
    assert "JSON" in caplog.records[0].getMessage()


@pytest.mark.parametrize("kind", ["nested", "circular"])
def test_a_value_json_cannot_write_is_the_same_logged_500(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    app = session_app()

    @app.post("/deep")
    async def deep(request: Request) -> str:
        value: Any = []
        if kind == "nested":
            for _ in range(100_000):
                value = [value]
        else:
            value.append(value)
        request.session["value"] = value
        return "stored?"

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        response = make_client(app, raise_server_exceptions=False).post("/deep")
    assert response.status_code == 500
    [record] = caplog.records
    assert "not saved" in record.getMessage() and "JSON" in record.getMessage()


def test_many_session_cookies_stay_cheap(make_client: MakeClient) -> None:
    cookie = "; ".join(f"session={signed({'i': i})}x" for i in range(300))
    response = make_client(session_app()).get("/", headers={"Cookie": cookie})
    assert response.json() == {}


def test_websocket_reads_the_session(make_client: MakeClient) -> None:
    client = make_client(session_app())
    client.post("/set", json={"user": "ada"})
    with client.websocket_connect("/ws") as session:
        assert session.receive_json() == {"user": "ada"}


def test_request_session_without_the_middleware_says_what_to_add() -> None:
    with pytest.raises(RuntimeError, match=r"Middleware\(SessionMiddleware, secret_key=\.\.\.\)"):
        Request(http_scope()).session  # noqa: B018 (the property raises)


def test_only_the_signature_as_written_is_accepted() -> None:
    # 43 base64 characters carry 258 bits: the last one has two spare bits, so four
    # spellings decode to the same 32 bytes. Only the one we write is a signature.
    signer = SessionSigner([SECRET])
    value = signer.sign("e30", 1000)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    accepted = [c for c in alphabet if signer.unsign(value[:-1] + c, None, 1000) is not None]
    assert accepted == [value[-1]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # Browsers drop these cookies without a word: every sign-in would be lost.
        ({"session_cookie": "__Host-session"}, "__Host-"),
        ({"session_cookie": "__Host-session", "https_only": True, "path": "/app"}, "path"),
        ({"session_cookie": "__Host-session", "https_only": True, "domain": "a.com"}, "domain"),
        ({"session_cookie": "__Secure-session"}, "__Secure-"),
        # Not a cookie attribute value (RFC 6265 section 4.1.1): the server refuses the header.
        ({"path": "/a\x01b"}, "path"),
        ({"path": "/caf\xe9"}, "path"),
        ({"domain": "a\x7f.com"}, "domain"),
        ({"path": "a"}, "path"),
        ({"max_age": 0}, "max_age"),
        ({"max_age": -5}, "max_age"),
    ],
)
def test_cookies_browsers_would_drop_are_refused_when_built(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SessionMiddleware(App(), **{"secret_key": SECRET, **options})


def test_prefixed_cookie_names_that_browsers_keep(make_client: MakeClient) -> None:
    app = session_app(session_cookie="__Host-session", https_only=True)
    client = make_client(app, base_url="https://testserver")
    header = set_cookie(client.post("/set", json={"user": "ada"}))
    assert header is not None and header.startswith("__Host-session=")
    assert "; path=/;" in header and "secure" in header and "domain" not in header
    assert client.get("/").json() == {"user": "ada"}


def test_the_path_in_the_log_line_cannot_forge_lines(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    app = session_app()

    @app.post("/{anything:path}")
    async def any_path(request: Request) -> str:
        request.session["notes"] = "x" * 5000
        return "stored?"

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        response = make_client(app).post("/a%0D%0AFAKE log line")
    assert response.status_code == 500
    [record] = caplog.records
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message
    assert "/a%0D%0AFAKE%20log%20line" in message
