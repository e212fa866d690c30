"""CORSMiddleware: preflights, origins (normalised, null, regex), Vary, error responses."""

from __future__ import annotations

from typing import Any

import pytest

from microasgi import App, HTTPException, PlainTextResponse, Response, WebSocket
from microasgi.middleware import CompressionMiddleware, CORSMiddleware, Middleware
from tests.helpers import MakeClient

PREFLIGHT = {"Access-Control-Request-Method": "GET"}
CORS_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
    "access-control-allow-private-network",
)

SHARED = PlainTextResponse("shared", headers={"Vary": "Accept-Language"})


def cors_app(calls: list[str] | None = None, **options: Any) -> App:
    """An app behind CORSMiddleware(**options) whose endpoints record their calls."""
    app = App(middleware=[Middleware(CORSMiddleware, **options)])
    log = calls if calls is not None else []

    @app.route("/", methods=["GET", "POST", "OPTIONS"])
    async def index() -> str:
        log.append("index")
        return "Homepage"

    @app.get("/vary")
    async def vary(request: Any) -> Response:
        values = request.query_params.getlist("v")
        response = PlainTextResponse("varied")
        for value in values:
            response.headers.append("vary", value)
        return response

    @app.get("/shared")
    async def shared() -> Response:
        return SHARED  # the same Response object every time

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("endpoint failure")

    @app.get("/forbidden")
    async def forbidden() -> None:
        raise HTTPException(403, "no")

    @app.get("/own")
    async def own() -> Response:
        return PlainTextResponse("public", headers={"Access-Control-Allow-Origin": "*"})

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.headers.get("origin", ""))
        await websocket.close()

    return app


def cors_headers(response: Any) -> dict[str, str]:
    return {name: response.headers[name] for name in CORS_HEADERS if name in response.headers}


# -- configuration -------------------------------------------------------------------


def test_wildcard_with_credentials_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="allow_credentials=False") as info:
        CORSMiddleware(App(), allow_origins=["*"], allow_credentials=True)
    assert "allow_origin_regex" in str(info.value)


def test_one_string_instead_of_a_list_is_refused() -> None:
    with pytest.raises(TypeError, match="list"):
        CORSMiddleware(App(), allow_origins="https://a.example")


@pytest.mark.parametrize(
    "origin", ["a.example", "https://a.example/path", "https://", "ftp//x", "https://a b.example"]
)
def test_a_configured_value_that_is_not_an_origin_is_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        CORSMiddleware(App(), allow_origins=[origin])


@pytest.mark.parametrize(
    "options",
    [
        {"allow_methods": ["GET", "GE T"]},
        {"allow_methods": ["GET\r\nSet-Cookie: a=b"]},
        {"allow_headers": ["X-A\r\nSet-Cookie: a=b"]},
        {"allow_headers": ["X-A, X-B"]},
        {"expose_headers": ["X-To\ntal"]},
        {"expose_headers": [""]},
    ],
)
def test_names_that_are_not_tokens_are_refused_when_built(options: dict[str, Any]) -> None:
    # They go into response headers as they are: not a header, or a header injected.
    with pytest.raises(ValueError, match="not a"):
        CORSMiddleware(App(), allow_origins=["https://a.example"], **options)


# -- preflights ----------------------------------------------------------------------


def test_preflight_allowed_is_answered_without_the_app(make_client: MakeClient) -> None:
    calls: list[str] = []
    app = cors_app(
        calls,
        allow_origins=["https://a.example"],
        allow_methods=["GET", "post"],
        allow_headers=["X-Example", "content-type"],
        allow_credentials=True,
        max_age=300,
    )
    headers = {
        "Origin": "https://a.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-example, Content-Type",
    }
    response = make_client(app).options("/", headers=headers)
    assert response.status_code == 200
    assert response.text == "OK"
    assert cors_headers(response) == {
        "access-control-allow-origin": "https://a.example",
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": (
            "Accept, Accept-Language, Content-Language, Content-Type, X-Example"
        ),
        "access-control-max-age": "300",
    }
    assert response.headers["vary"] == (
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    )
    assert calls == []


@pytest.mark.parametrize(
    ("request_headers", "text"),
    [
        ({"Origin": "https://evil.example"}, "Disallowed CORS origin"),
        ({"Access-Control-Request-Method": "DELETE"}, "Disallowed CORS method"),
        ({"Access-Control-Request-Headers": "X-Nope"}, "Disallowed CORS headers"),
        ({"Access-Control-Request-Headers": "X-Example, X-Nope-2"}, "Disallowed CORS headers"),
        ({"Access-Control-Request-Private-Network": "true"}, "Disallowed CORS private-network"),
        (
            {"Origin": "null", "Access-Control-Request-Method": "PUT"},
            "Disallowed CORS origin, method",
        ),
    ],
)
def test_disallowed_preflight_gets_400_and_no_cors_headers(
    make_client: MakeClient, request_headers: dict[str, str], text: str
) -> None:
    calls: list[str] = []
    app = cors_app(
        calls,
        allow_origins=["https://a.example"],
        allow_headers=["X-Example"],
        allow_credentials=True,
    )
    headers = {"Origin": "https://a.example", **PREFLIGHT, **request_headers}
    response = make_client(app).options("/", headers=headers)
    assert response.status_code == 400
    assert response.text == text
    assert cors_headers(response) == {}
    assert "Origin" in response.headers["vary"]
    assert calls == []


def test_preflight_to_a_path_that_does_not_exist_is_answered(make_client: MakeClient) -> None:
    app = cors_app(allow_origins=["https://a.example"])
    headers = {"Origin": "https://a.example", **PREFLIGHT}
    response = make_client(app).options("/nowhere", headers=headers)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://a.example"


def test_options_without_request_method_is_not_a_preflight(make_client: MakeClient) -> None:
    calls: list[str] = []
    app = cors_app(calls, allow_origins=["https://a.example"])
    response = make_client(app).options("/", headers={"Origin": "https://a.example"})
    assert response.text == "Homepage"
    assert calls == ["index"]
    assert response.headers["access-control-allow-origin"] == "https://a.example"


def test_allow_all_headers_mirrors_the_request(make_client: MakeClient) -> None:
    app = cors_app(allow_origins=["*"], allow_headers=["*"], allow_methods=["*"])
    headers = {
        "Origin": "https://any.example",
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "X-Anything, X-Else",
    }
    response = make_client(app).options("/", headers=headers)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-headers"] == "X-Anything, X-Else"
    methods = response.headers["access-control-allow-methods"].split(", ")
    assert {"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"} <= set(methods)
    assert "access-control-allow-credentials" not in response.headers


def test_private_network_preflight_when_allowed(make_client: MakeClient) -> None:
    app = cors_app(allow_origins=["https://a.example"], allow_private_network=True)
    client = make_client(app)
    base = {"Origin": "https://a.example", **PREFLIGHT}
    response = client.options(
        "/", headers={**base, "Access-Control-Request-Private-Network": "true"}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-private-network"] == "true"
    assert "Access-Control-Request-Private-Network" in response.headers["vary"]
    response = client.options("/", headers=base)
    assert "access-control-allow-private-network" not in response.headers
    response = client.get("/", headers={**base, "Access-Control-Request-Private-Network": "true"})
    assert "access-control-allow-private-network" not in response.headers


# -- origins -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "allowed"),
    [
        ("https://a.example", True),
        ("HTTPS://A.EXAMPLE", True),
        ("https://a.example:443", True),
        ("https://a.example/", True),
        ("https://a.example.", True),
        ("https://a.example:8443", False),
        ("http://a.example", False),
        ("https://a.example.evil", False),
        ("https://evil-a.example", False),
        ("https://a.example/path", False),
        ("https://a.example?x", False),
        ("https://user@a.example", False),
        ("https://a.example:99999", False),
        ("https://", False),
        ("a.example", False),
        ("", False),
        ("https://[::1", False),
        ("https://a.example\x00", False),
        ("https://a.éxample".encode(), False),
        ("x" * 10_000, False),
    ],
)
def test_origins_are_compared_normalised(
    make_client: MakeClient, sent: str | bytes, allowed: bool
) -> None:
    # Configured with upper case, the default port and a trailing slash.
    app = cors_app(allow_origins=["HTTPS://A.Example:443/"], allow_credentials=True)
    response = make_client(app).get("/", headers={"Origin": sent})
    assert response.status_code == 200
    assert response.headers["vary"] == "Origin"
    if allowed:
        assert response.headers["access-control-allow-origin"] == sent  # echoed as sent
        assert response.headers["access-control-allow-credentials"] == "true"
    else:
        assert cors_headers(response) == {}


def test_null_origin_is_never_echoed_unless_listed(make_client: MakeClient) -> None:
    anything = cors_app(allow_origins=["https://a.example"], allow_origin_regex=".*")
    response = make_client(anything).get("/", headers={"Origin": "null"})
    assert "access-control-allow-origin" not in response.headers
    preflight = make_client(anything).options("/", headers={"Origin": "null", **PREFLIGHT})
    assert preflight.status_code == 400
    listed = cors_app(allow_origins=["null"], allow_credentials=True)
    response = make_client(listed).get("/", headers={"Origin": "null"})
    assert response.headers["access-control-allow-origin"] == "null"


def test_regex_must_match_the_whole_origin(make_client: MakeClient) -> None:
    app = cors_app(allow_origin_regex=r"https://[a-z]+\.example\.org", allow_credentials=True)
    client = make_client(app)
    ok = client.get("/", headers={"Origin": "https://sub.example.org"})
    assert ok.headers["access-control-allow-origin"] == "https://sub.example.org"
    for origin in (
        "https://sub.example.org.evil.com",
        "xhttps://sub.example.org",
        "http://sub.example.org",
    ):
        response = client.get("/", headers={"Origin": origin})
        assert "access-control-allow-origin" not in response.headers, origin


def test_wildcard_without_credentials_is_the_same_for_everybody(make_client: MakeClient) -> None:
    app = cors_app(allow_origins=["*"], expose_headers=["X-Status"])
    client = make_client(app)
    for headers in ({"Origin": "https://any.example"}, {"Origin": "null"}, {}):
        response = client.get("/vary?v=Accept-Encoding", headers=headers)
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["access-control-expose-headers"] == "X-Status"
        assert response.headers["vary"] == "Accept-Encoding"  # not Origin: nothing depends on it
        assert "access-control-allow-credentials" not in response.headers


def test_allowed_origin_does_not_leak_into_the_next_request(make_client: MakeClient) -> None:
    client = make_client(cors_app(allow_origins=["https://a.example"]))
    assert client.get("/", headers={"Origin": "https://a.example"}).headers[
        "access-control-allow-origin"
    ] == ("https://a.example")
    assert (
        "access-control-allow-origin"
        not in client.get("/", headers={"Origin": "https://b.example"}).headers
    )


# -- Vary ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app_vary", "expected"),
    [
        ([], ["Origin"]),
        (["Accept-Encoding"], ["Accept-Encoding, Origin"]),
        (["origin"], ["origin"]),
        (["Accept-Encoding, ORIGIN"], ["Accept-Encoding, ORIGIN"]),
        (["*"], ["*"]),
        (["Accept-Encoding", "Cookie"], ["Accept-Encoding, Origin", "Cookie"]),
    ],
)
def test_vary_origin_is_merged_never_duplicated_or_clobbered(
    make_client: MakeClient, app_vary: list[str], expected: list[str]
) -> None:
    client = make_client(cors_app(allow_origins=["https://a.example"]))
    query = "&".join(f"v={value}" for value in app_vary)
    response = client.get(f"/vary?{query}", headers={"Origin": "https://a.example"})
    assert response.headers.get_list("vary") == expected


def test_vary_with_compression_in_the_stack(make_client: MakeClient) -> None:
    app = App(
        middleware=[
            Middleware(CORSMiddleware, allow_origins=["https://a.example"]),
            Middleware(CompressionMiddleware, minimum_size=1),
        ]
    )

    @app.get("/")
    async def index() -> str:
        return "hello " * 100

    response = make_client(app).get(
        "/", headers={"Origin": "https://a.example", "Accept-Encoding": "gzip"}
    )
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers.get_list("vary") == ["Accept-Encoding, Origin"]


def test_a_reused_response_object_does_not_collect_headers(make_client: MakeClient) -> None:
    client = make_client(cors_app(allow_origins=["https://a.example"]))
    for _ in range(3):
        response = client.get("/shared", headers={"Origin": "https://a.example"})
        assert response.headers.get_list("vary") == ["Accept-Language, Origin"]
        assert response.headers.get_list("access-control-allow-origin") == ["https://a.example"]
    assert SHARED.raw_headers.count((b"vary", b"Accept-Language")) == 1


# -- every response ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"), [("/boom", 500), ("/forbidden", 403), ("/missing", 404)]
)
def test_error_responses_carry_the_cors_headers(
    make_client: MakeClient, path: str, status: int
) -> None:
    app = cors_app(
        allow_origins=["https://a.example"], allow_credentials=True, expose_headers=["X-Trace"]
    )
    response = make_client(app, raise_server_exceptions=False).get(
        path, headers={"Origin": "https://a.example"}
    )
    assert response.status_code == status
    assert cors_headers(response) == {
        "access-control-allow-origin": "https://a.example",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "X-Trace",
    }
    assert response.headers["vary"] == "Origin"


def test_an_exception_handler_response_carries_the_cors_headers(make_client: MakeClient) -> None:
    app = cors_app(allow_origins=["https://a.example"])

    @app.exception_handler(RuntimeError)
    async def handle(request: Any, exc: Exception) -> Response:
        return PlainTextResponse("handled", status_code=503)

    response = make_client(app).get("/boom", headers={"Origin": "https://a.example"})
    assert response.status_code == 503
    assert response.headers["access-control-allow-origin"] == "https://a.example"


def test_cors_headers_the_app_set_itself_are_kept(make_client: MakeClient) -> None:
    client = make_client(cors_app(allow_origins=["https://a.example"]))
    response = client.get("/own", headers={"Origin": "https://b.example"})
    assert response.headers.get_list("access-control-allow-origin") == ["*"]
    response = client.get("/own", headers={"Origin": "https://a.example"})
    assert response.headers.get_list("access-control-allow-origin") == ["*"]


def test_websocket_passes_through(make_client: MakeClient) -> None:
    client = make_client(cors_app(allow_origins=["https://a.example"]))
    with client.websocket_connect("/ws", headers={"Origin": "https://evil.example"}) as session:
        assert session.receive_text() == "https://evil.example"
