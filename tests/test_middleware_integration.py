"""The built-in middleware behind a real uvicorn: streamed compression over a socket, Host
headers sent byte for byte, proxy headers from a real peer, CORS on a real 500."""

from __future__ import annotations

import socket
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio.to_thread
import httpx
import pytest

from microasgi import App, Request, StreamingResponse
from microasgi.middleware import (
    CompressionMiddleware,
    CORSMiddleware,
    Middleware,
    ProxyHeadersMiddleware,
    TrustedHostMiddleware,
)
from tests.helpers import free_port
from tests.test_integration_uvicorn import run_server

pytestmark = pytest.mark.integration

ORIGIN = "https://app.example.com"


@dataclass
class Served:
    url: str
    port: int
    untrusted_url: str  # the same app, behind a ProxyHeadersMiddleware that trusts nobody here
    proceed: list[threading.Event]


def build_app(proceed: list[threading.Event], trusted: str) -> App:
    app = App(
        middleware=[
            Middleware(ProxyHeadersMiddleware, trusted_proxies=trusted),
            Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "*.example.com"]),
            Middleware(CORSMiddleware, allow_origins=[ORIGIN], allow_credentials=True),
            Middleware(CompressionMiddleware, minimum_size=100),
        ]
    )

    @app.get("/who")
    async def who(request: Request) -> dict[str, object]:
        return {"client": request.client, "url": str(request.url)}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("endpoint failure")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for index, event in enumerate(proceed):
                yield b"part %d;" % index
                # The next part is only made once the client has decoded this one.
                if not await anyio.to_thread.run_sync(event.wait, 5):
                    raise TimeoutError(f"the client never got part {index}")

        return StreamingResponse(parts(), media_type="text/plain")

    return app


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    proceed = [threading.Event() for _ in range(3)]
    port, other = free_port(), free_port()
    # uvicorn's own proxy header handling is off: ours is under test.
    with (
        run_server(build_app(proceed, "127.0.0.1"), port, proxy_headers=False),
        run_server(build_app(proceed, "10.0.0.0/8"), other, proxy_headers=False),
    ):
        yield Served(f"http://127.0.0.1:{port}", port, f"http://127.0.0.1:{other}", proceed)


def raw_request(port: int, request: bytes) -> bytes:
    """Send `request` byte for byte and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_compressed_stream_arrives_part_by_part(served: Served) -> None:
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    parts: list[bytes] = []
    headers = {"Accept-Encoding": "gzip"}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", served.url + "/stream", headers=headers) as response,
    ):
        assert response.headers["content-encoding"] == "gzip"
        assert "content-length" not in response.headers
        for raw in response.iter_raw():
            decoded = decoder.decompress(raw)
            if decoded:
                parts.append(decoded)
                served.proceed[len(parts) - 1].set()
    assert parts == [b"part 0;", b"part 1;", b"part 2;"]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        (b"127.0.0.1", 200),
        (b"api.example.com:8443", 200),
        (b"API.EXAMPLE.COM.", 200),
        (b"example.com", 400),
        (b"evil.com", 400),
        (b"api.example.com@evil.com", 400),
        (b"[::1]evil", 400),
        (b"127.0.0.1:99999", 400),
        (b"127.0.0.1\xff", 400),
    ],
)
def test_host_headers_sent_byte_for_byte(served: Served, host: bytes, status: int) -> None:
    answer = raw_request(
        served.port, b"GET /who HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]


def test_two_host_headers_are_refused(served: Served) -> None:
    answer = raw_request(
        served.port,
        b"GET /who HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.com\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_proxy_headers_from_a_trusted_and_an_untrusted_peer(served: Served) -> None:
    headers = {
        "X-Forwarded-For": "198.51.100.7, 203.0.113.9",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "www.example.com",
    }
    trusted = httpx.get(served.url + "/who?x=1", headers=headers).json()
    assert trusted == {"client": ["203.0.113.9", 0], "url": "https://www.example.com/who?x=1"}
    untrusted = httpx.get(served.untrusted_url + "/who", headers=headers).json()
    assert untrusted["client"][0] == "127.0.0.1"
    assert untrusted["url"].startswith("http://127.0.0.1:")


def test_cors_headers_on_a_real_500(served: Served) -> None:
    response = httpx.get(served.url + "/boom", headers={"Origin": ORIGIN})
    assert response.status_code == 500
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["vary"] == "Origin"
