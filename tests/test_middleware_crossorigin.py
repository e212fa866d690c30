"""CrossOriginProtectionMiddleware: Sec-Fetch-Site, the Origin/Host fallback, exemptions."""

from __future__ import annotations

from typing import Any

import pytest

from microasgi import App
from microasgi.middleware import CrossOriginProtectionMiddleware, Middleware
from microasgi.types import Receive, Scope, Send
from tests.helpers import Exchange, MakeClient, http_scope


async def post(
    headers: dict[str, str | bytes],
    *,
    method: str = "POST",
    path: str = "/form",
    host: bytes = b"app.example:8000",
    root_path: str = "",
    **options: Any,
) -> tuple[int | None, list[str]]:
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["method"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    raw = [(b"host", host)] + [
        (k.lower().encode(), v if isinstance(v, bytes) else v.encode()) for k, v in headers.items()
    ]
    scope = http_scope(method, root_path + path, headers=raw, root_path=root_path)
    ex = await Exchange().run(CrossOriginProtectionMiddleware(app, **options), scope)
    return ex.status, calls


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
async def test_safe_methods_always_pass(method: str) -> None:
    status, calls = await post(
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, method=method
    )
    assert (status, calls) == (200, [method])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Sec-Fetch-Site": "same-origin"}, True),
        ({"Sec-Fetch-Site": "none"}, True),  # typed in, a bookmark
        ({"Sec-Fetch-Site": "Same-Origin "}, True),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"}, True),
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Sec-Fetch-Site": "same-site"}, False),  # a sibling subdomain is another origin
        ({"Sec-Fetch-Site": "cross-site", "Origin": "http://app.example:8000"}, False),
        ({"Sec-Fetch-Site": "garbage"}, False),
        ({"Sec-Fetch-Site": ""}, False),
        # No Sec-Fetch-Site (an older browser): the Origin must name the Host.
        ({}, True),  # neither header: not a browser, or a same-origin request
        ({"Origin": "http://app.example:8000"}, True),
        ({"Origin": "https://APP.example:8000/"}, True),
        ({"Origin": "https://evil.example"}, False),
        ({"Origin": "http://app.example"}, False),  # another port
        ({"Origin": "http://app.example:8001"}, False),
        ({"Origin": "http://evil.app.example:8000"}, False),
        ({"Origin": "null"}, False),
        ({"Origin": "garbage"}, False),
        ({"Origin": b"http://app.example:8000\xff"}, False),
        ({"Origin": ""}, False),
    ],
)
async def test_unsafe_requests(headers: dict[str, str | bytes], allowed: bool) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        status, calls = await post(headers, method=method)
        assert (status, calls) == ((200, [method]) if allowed else (403, [])), method


@pytest.mark.anyio
async def test_default_ports_match_in_the_fallback() -> None:
    status, _ = await post({"Origin": "https://app.example"}, host=b"app.example:443")
    assert status == 200
    status, _ = await post({"Origin": "http://[::1]:8000"}, host=b"[0::1]:8000")
    assert status == 200
    status, _ = await post({"Origin": "https://app.example"}, host=b"app.example@evil")
    assert status == 403


@pytest.mark.anyio
async def test_trusted_origins() -> None:
    options = {"trusted_origins": ["https://login.example/"]}
    for headers in (
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://login.example"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://LOGIN.example:443"},
        {"Origin": "https://login.example"},
    ):
        assert (await post(headers, **options))[0] == 200
    for headers in (
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://login.example"},
    ):
        assert (await post(headers, **options))[0] == 403


@pytest.mark.anyio
async def test_exempt_paths() -> None:
    options = {"exempt_paths": ["/hooks/stripe", "/public/*"]}
    cross = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}
    assert (await post(cross, path="/hooks/stripe", **options))[0] == 200
    assert (await post(cross, path="/hooks/stripe/x", **options))[0] == 403
    assert (await post(cross, path="/public/a/b", **options))[0] == 200
    assert (await post(cross, path="/publicity", **options))[0] == 403
    # Paths as the app sees them, below its root path.
    assert (await post(cross, path="/hooks/stripe", root_path="/api", **options))[0] == 200


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="not an origin"):
        CrossOriginProtectionMiddleware(App(), trusted_origins=["login.example"])
    with pytest.raises(ValueError, match="not an origin"):
        CrossOriginProtectionMiddleware(App(), trusted_origins=["null"])
    with pytest.raises(TypeError):
        CrossOriginProtectionMiddleware(App(), exempt_paths="/hooks")


def test_through_an_app(make_client: MakeClient) -> None:
    app = App(middleware=[Middleware(CrossOriginProtectionMiddleware)])
    posted: list[str] = []

    @app.post("/transfer")
    async def transfer() -> str:
        posted.append("transfer")
        return "sent"

    @app.websocket("/ws")
    async def ws(websocket: Any) -> None:
        await websocket.accept()
        await websocket.send_text("open")
        await websocket.close()

    client = make_client(app)
    response = client.post("/transfer", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403
    assert response.text == "Cross-origin request refused"
    assert posted == []
    response = client.post("/transfer", headers={"Origin": "http://testserver"})
    assert (response.status_code, posted) == (200, ["transfer"])
    headers = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}
    with client.websocket_connect("/ws", headers=headers) as session:  # a GET: not checked here
        assert session.receive_text() == "open"
