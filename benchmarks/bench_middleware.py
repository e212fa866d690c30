"""The built-in middleware, in process: what each costs per request, next to Starlette's.

    .venv/bin/python benchmarks/bench_middleware.py [--quick] [--json FILE]

Every middleware wraps the same raw ASGI endpoint, and that endpoint alone is timed
in the same run, so "overhead" is the middleware's own cost per request. Where
Starlette has the same middleware (uvicorn for the proxy headers), it wraps the same
endpoint and answers the same request. Each app's answer is checked once before
anything is timed. Rounds rotate the order of the apps; the best round is reported.
Compression is also measured on a 16 KiB JSON body, and on a stream of 64 chunks.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench_http import command_line, machine
from harness import (
    ASGIApp,
    Message,
    Receive,
    Reply,
    Samples,
    Scope,
    Send,
    http_scope,
    request_once,
    run_rounds,
    verify,
)

from microasgi.middleware import (
    CompressionMiddleware,
    CORSMiddleware,
    CrossOriginProtectionMiddleware,
    GZipMiddleware,
    HTTPSRedirectMiddleware,
    ProxyHeadersMiddleware,
    SessionMiddleware,
    TrustedHostMiddleware,
)

BARE = "endpoint alone"
MICROASGI = "microasgi"
STARLETTE = "Starlette"
UVICORN = "uvicorn"
ORIGIN = "https://app.example.com"
HOST = b"127.0.0.1:8000"
SECRET = "benchmark-secret"
# A 16 KiB JSON body: records with some variety, as an API returns them.
BIG = json.dumps(
    [
        {"id": i, "name": f"user {i}", "score": i * 37 % 1000, "active": i % 3 == 0}
        for i in range(300)
    ]
).encode()[: 16 * 1024]
CHUNK = BIG[:256]


@dataclass(frozen=True)
class Settings:
    rounds: int
    batch_ms: float


FULL = Settings(rounds=15, batch_ms=100)
QUICK = Settings(rounds=4, batch_ms=15)


# -- the endpoints the middleware wrap ---------------------------------------------------


def text_app(body: bytes, content_type: bytes = b"text/plain; charset=utf-8") -> ASGIApp:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # A new list each time: some middleware add to the list they are given.
        start = {"type": "http.response.start", "status": 200, "headers": list(headers)}
        await send(start)
        await send({"type": "http.response.body", "body": body})

    return app


HELLO = text_app(b"Hello, World!")
BIG_APP = text_app(BIG, b"application/json")


async def stream_app(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for _ in range(64):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def client_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the client address and scheme it sees."""
    body = f"{scope['client'][0]} {scope['scheme']}".encode()
    await text_app(body)(scope, receive, send)


def session_app(write: bool) -> ASGIApp:
    """Reads the session (and, if `write`, changes it on every request)."""
    counter = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal counter
        session = scope["session"]
        if write:
            counter += 1
            session["n"] = counter
        body = str(session.get("user", "nobody")).encode()
        await text_app(body)(scope, receive, send)

    return app


# -- checks ----------------------------------------------------------------------------


def expect(
    status: int = 200, body: bytes | None = None, **headers: str
) -> Callable[[Reply], str | None]:
    """The answer must have this status, body (if given) and headers (names with _ for -)."""

    def check(reply: Reply) -> str | None:
        if reply.status != status:
            return f"status {reply.status}, expected {status}: {reply.body[:100]!r}"
        if body is not None and reply.body != body:
            return f"body {reply.body[:100]!r}, expected {body[:100]!r}"
        for name, value in headers.items():
            got = reply.headers.get(name.replace("_", "-"))
            if got is None or (value != "*" and got != value):
                return f"{name} {got!r}, expected {value!r}"
        return None

    return check


# -- the cases ---------------------------------------------------------------------------


@dataclass
class Case(Samples):
    scenario: str
    app_name: str
    app: ASGIApp
    scope: dict[str, Any]
    check: Callable[[Reply], str | None]
    requests_per_batch: int = 0
    samples_ns: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.app_name


def scope_with(*headers: tuple[bytes, bytes], method: str = "GET", **extra: Any) -> dict[str, Any]:
    scope = http_scope("/", method)
    scope["headers"] = [(b"host", HOST), (b"user-agent", b"bench"), *headers]
    scope.update(extra)
    return scope


def starlette_middleware() -> dict[str, Any]:
    """Starlette's (and uvicorn's) classes, or {} when Starlette is not installed."""
    try:
        from starlette.middleware.cors import CORSMiddleware as SCORS
        from starlette.middleware.gzip import GZipMiddleware as SGZip
        from starlette.middleware.httpsredirect import HTTPSRedirectMiddleware as SHTTPS
        from starlette.middleware.sessions import SessionMiddleware as SSession
        from starlette.middleware.trustedhost import TrustedHostMiddleware as STrusted
    except ImportError:
        return {}
    classes: dict[str, Any] = {
        "cors": SCORS,
        "gzip": SGZip,
        "https": SHTTPS,
        "session": SSession,
        "trusted": STrusted,
    }
    try:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware as UProxy

        classes["proxy"] = UProxy
    except ImportError:
        pass
    return classes


async def session_cookie(middleware: ASGIApp) -> bytes:
    """A valid session cookie ``user=ada`` made by `middleware` itself."""
    set_cookie = b""

    async def login(scope: Scope, receive: Receive, send: Send) -> None:
        scope["session"]["user"] = "ada"
        await HELLO(scope, receive, send)

    async def keep(message: Message) -> None:
        nonlocal set_cookie
        for name, value in message.get("headers", []):
            if name == b"set-cookie":
                set_cookie = value

    await middleware.__class__(login, secret_key=SECRET)(scope_with(), _receive, keep)  # type: ignore[call-arg]
    return set_cookie.split(b";")[0]


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def build_cases() -> list[Case]:
    theirs = starlette_middleware()
    cases: list[Case] = []

    def add(
        scenario: str,
        scope: dict[str, Any],
        check: Callable[[Reply], str | None],
        endpoint: ASGIApp,
        ours: ASGIApp,
        others: dict[str, ASGIApp | None],
    ) -> None:
        cases.append(Case(scenario, BARE, endpoint, scope, lambda reply: None))
        cases.append(Case(scenario, MICROASGI, ours, scope, check))
        for name, app in others.items():
            if app is not None:
                cases.append(Case(scenario, name, app, scope, check))

    def other(key: str, endpoint: ASGIApp, **options: Any) -> ASGIApp | None:
        cls = theirs.get(key)
        return None if cls is None else cls(endpoint, **options)

    origin = (b"origin", ORIGIN.encode())
    cors = {"allow_origins": [ORIGIN], "allow_headers": ["x-token"], "allow_credentials": True}
    add(
        "CORS, request from an allowed origin",
        scope_with(origin),
        expect(access_control_allow_origin=ORIGIN),
        HELLO,
        CORSMiddleware(HELLO, **cors),
        {STARLETTE: other("cors", HELLO, **cors)},
    )
    preflight = scope_with(
        origin,
        (b"access-control-request-method", b"GET"),
        (b"access-control-request-headers", b"x-token, content-type"),
        method="OPTIONS",
    )
    add(
        "CORS, preflight",
        preflight,
        expect(access_control_allow_origin=ORIGIN),
        HELLO,
        CORSMiddleware(HELLO, **cors),
        {STARLETTE: other("cors", HELLO, **cors)},
    )
    hosts = {"allowed_hosts": ["example.com", "*.example.org", "127.0.0.1"]}
    add(
        "TrustedHost, allowed host",
        scope_with(),
        expect(body=b"Hello, World!"),
        HELLO,
        TrustedHostMiddleware(HELLO, **hosts),
        {STARLETTE: other("trusted", HELLO, **hosts)},
    )
    add(
        "HTTPSRedirect, HTTPS passes",
        scope_with(scheme="https"),
        expect(body=b"Hello, World!"),
        HELLO,
        HTTPSRedirectMiddleware(HELLO),
        {STARLETTE: other("https", HELLO)},
    )
    add(
        "HTTPSRedirect, HTTP redirected",
        scope_with(),
        expect(307, location="*"),  # Starlette keeps port 8000, we send to 443
        HELLO,
        HTTPSRedirectMiddleware(HELLO),
        {STARLETTE: other("https", HELLO)},
    )
    forwarded = scope_with(
        (b"x-forwarded-for", b"203.0.113.9, 10.0.0.2"), (b"x-forwarded-proto", b"https")
    )
    add(
        "ProxyHeaders, X-Forwarded-For/Proto",
        forwarded,
        expect(body=b"203.0.113.9 https"),
        client_app,
        ProxyHeadersMiddleware(client_app, trusted_proxies=["127.0.0.1", "10.0.0.0/8"]),
        {UVICORN: other("proxy", client_app, trusted_hosts=["127.0.0.1", "10.0.0.0/8"])},
    )
    add(
        "CrossOriginProtection, same-origin POST",
        scope_with((b"sec-fetch-site", b"same-origin"), origin, method="POST"),
        expect(body=b"Hello, World!"),
        HELLO,
        CrossOriginProtectionMiddleware(HELLO),
        {},
    )

    # Sessions: the endpoint reads scope["session"], so it cannot run without one.
    async def empty_session(scope: Scope, receive: Receive, send: Send) -> None:
        scope["session"] = {}
        await session_app(False)(scope, receive, send)

    ours_cookie = await session_cookie(SessionMiddleware(HELLO, secret_key=SECRET))
    theirs_cookie = (
        await session_cookie(theirs["session"](HELLO, secret_key=SECRET))
        if "session" in theirs
        else b""
    )
    for title, cookie_of, write in (
        ("Sessions, no cookie", None, False),
        ("Sessions, read a cookie", "read", False),
        ("Sessions, change the session", "read", True),
    ):
        ours_scope = scope_with(*([(b"cookie", ours_cookie)] if cookie_of else []))
        their_scope = scope_with(*([(b"cookie", theirs_cookie)] if cookie_of else []))
        body = b"ada" if cookie_of else b"nobody"
        check = expect(body=body, set_cookie="*") if write else expect(body=body)
        cases.append(Case(title, BARE, empty_session, ours_scope, lambda reply: None))
        cases.append(
            Case(
                title,
                MICROASGI,
                SessionMiddleware(session_app(write), secret_key=SECRET),
                ours_scope,
                check,
            )
        )
        if "session" in theirs:
            app = theirs["session"](session_app(write), secret_key=SECRET)
            cases.append(Case(title, STARLETTE, app, their_scope, check))

    gzip = (b"accept-encoding", b"gzip, deflate")
    add(
        "Compression, small response (left alone)",
        scope_with(gzip),
        expect(body=b"Hello, World!"),
        HELLO,
        GZipMiddleware(HELLO),
        {STARLETTE: other("gzip", HELLO)},
    )
    add(
        "gzip level 6, 16 KiB JSON",
        scope_with(gzip),
        expect(content_encoding="gzip"),
        BIG_APP,
        GZipMiddleware(BIG_APP, compresslevel=6),
        {STARLETTE: other("gzip", BIG_APP, compresslevel=6)},
    )
    add(
        "gzip level 6, a stream of 64 x 256 B",
        scope_with(gzip),
        expect(content_encoding="gzip"),
        stream_app,
        GZipMiddleware(stream_app, compresslevel=6),
        {STARLETTE: other("gzip", stream_app, compresslevel=6)},
    )
    for name, accept in (("br quality 4", b"br"), ("zstd level 3", b"zstd")):
        add(
            f"{name}, 16 KiB JSON",
            scope_with((b"accept-encoding", accept)),
            expect(content_encoding=accept.decode()),
            BIG_APP,
            CompressionMiddleware(BIG_APP),
            {},
        )
    return cases


# -- running -----------------------------------------------------------------------------


async def compressed_sizes() -> dict[str, int]:
    sizes = {"identity": len(BIG)}
    for accept in ("gzip", "br", "zstd"):
        reply = await request_once(
            CompressionMiddleware(BIG_APP), scope_with((b"accept-encoding", accept.encode()))
        )
        sizes[accept] = len(reply.body)
    return sizes


def overhead(cases: Sequence[Case], case: Case) -> float:
    bare = next(c for c in cases if c.scenario == case.scenario and c.app_name == BARE)
    return case.best_us - bare.best_us


def format_table(cases: Sequence[Case], sizes: dict[str, int]) -> str:
    header = f"{'scenario':<42}  {'app':<16}  {'best µs':>8}  {'median µs':>9}  {'overhead µs':>11}"
    lines = [header, "-" * len(header)]
    previous = None
    for case in cases:
        if case.scenario != previous:
            if previous is not None:
                lines.append("")
            previous = case.scenario
            title = case.scenario
        else:
            title = ""
        extra = "" if case.app_name == BARE else f"{overhead(cases, case):>11.2f}"
        timing = f"{case.best_us:>8.2f}  {case.median_us:>9.2f}"
        lines.append(f"{title:<42}  {case.app_name:<16}  {timing}  {extra}")
    lines += ["", "overhead of microasgi / of the other, same request:"]
    for case in cases:
        if case.app_name in (STARLETTE, UVICORN):
            ours = next(c for c in cases if c.scenario == case.scenario and c.app_name == MICROASGI)
            ratio = overhead(cases, ours) / max(overhead(cases, case), 0.01)
            lines.append(f"  {case.scenario:<42}  {ratio:5.2f}  (vs {case.app_name})")
    listed = ", ".join(f"{name} {size:,} B" for name, size in sizes.items())
    lines += ["", f"16 KiB JSON compressed: {listed}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = command_line(argv, __doc__)
    settings = QUICK if args.quick else FULL
    print(f"{settings.rounds} rounds of ~{settings.batch_ms:g} ms per app, in process\n")
    sys.stdout.flush()

    async def run() -> tuple[list[Case], dict[str, int], float]:
        started = time.perf_counter()
        cases = await build_cases()
        problems = await verify(cases)
        if problems:
            raise SystemExit(
                "an app failed its check, nothing was timed:\n  " + "\n  ".join(problems)
            )
        await run_rounds(cases, settings.rounds, settings.batch_ms)
        return cases, await compressed_sizes(), time.perf_counter() - started

    cases, sizes, seconds = asyncio.run(run())
    print(format_table(cases, sizes))
    print(f"\n({seconds:.0f} s)")
    if args.json:
        data = {
            "machine": machine(),
            "settings": vars(settings),
            "compressed_sizes": sizes,
            "benchmarks": [
                {
                    "scenario": case.scenario,
                    "app": case.app_name,
                    "best_us": round(case.best_us, 3),
                    "median_us": round(case.median_us, 3),
                    "overhead_us": None
                    if case.app_name == BARE
                    else round(overhead(cases, case), 3),
                }
                for case in cases
            ],
        }
        with open(args.json, "w") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
