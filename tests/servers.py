"""The server matrix: every ASGI server (and protocol) the test suite runs the app under.

`SERVERS` lists the server processes: uvicorn with h11 + wsproto and with
httptools + uvloop + websockets-sansio; hypercorn on asyncio and on trio, each
over HTTP/1.1, h2c (HTTP/2 without TLS, by prior knowledge) and HTTP/2 over TLS
(ALPN, a certificate made for the run with trustme); granian over HTTP/1.1 and
h2c. `TARGETS` are the (server, protocol) pairs an HTTP test runs against.

`ServerPool` starts each server the first time a test asks for it, once per test
session, on free ports, serving `tests.server_app:asgi` from its own command line
(not through microasgi's CLI: the point is the server as its users start it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from unittest import mock

import httpx
import pytest

from tests.helpers import free_ports
from tests.services import ROOT

__all__ = [
    "SERVERS",
    "TARGETS",
    "WS_SERVERS",
    "Certificate",
    "RawH2",
    "Server",
    "ServerPool",
    "Target",
    "known_bug",
]

APP = "tests.server_app:asgi"


@dataclass(frozen=True)
class Kind:
    """One way to run a server: its command line and the protocols it speaks."""

    id: str
    protocols: tuple[str, ...]
    tls: bool = False

    def command(self, port: int, tls_port: int, cert: Certificate) -> list[str]:
        python = sys.executable
        if self.id.startswith("uvicorn"):
            if self.id == "uvicorn-h11":
                impl = ["--http", "h11", "--ws", "wsproto", "--loop", "asyncio"]
            else:
                impl = ["--http", "httptools", "--ws", "websockets-sansio", "--loop", "uvloop"]
            return [
                python, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(port),
                "--lifespan", "on", "--log-level", "warning", *impl,
            ]  # fmt: skip
        if self.id.startswith("hypercorn"):
            worker = self.id.removeprefix("hypercorn-")
            return [
                python, "-m", "hypercorn", "-k", worker, "--log-level", "WARNING",
                "--bind", f"127.0.0.1:{tls_port}", "--insecure-bind", f"127.0.0.1:{port}",
                "--certfile", str(cert.certfile), "--keyfile", str(cert.keyfile), APP,
            ]  # fmt: skip
        return [
            python, "-m", "granian", "--interface", "asgi", "--http", "auto",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", APP,
        ]  # fmt: skip


SERVERS = {
    kind.id: kind
    for kind in (
        Kind("uvicorn-h11", ("h1",)),
        Kind("uvicorn-httptools", ("h1",)),
        Kind("hypercorn-asyncio", ("h1", "h2c", "h2"), tls=True),
        Kind("hypercorn-trio", ("h1", "h2c", "h2"), tls=True),
        Kind("granian", ("h1", "h2c")),
    )
}
WS_SERVERS = list(SERVERS)


@dataclass(frozen=True)
class Target:
    """A server and the protocol a client speaks to it."""

    server: str
    protocol: str

    @property
    def id(self) -> str:
        return f"{self.server}/{self.protocol}"

    @property
    def tag(self) -> str:
        """The id as one path segment."""
        return f"{self.server}-{self.protocol}"

    @property
    def http2(self) -> bool:
        return self.protocol != "h1"


TARGETS = [Target(kind.id, protocol) for kind in SERVERS.values() for protocol in kind.protocols]


# -- known server bugs (each reproduced without microasgi in tests/test_servers_bugs.py) --------

HYPERCORN_H2_KEYERROR = (
    "hypercorn (0.18) over HTTP/2: request DATA arriving after the response is complete "
    "raises KeyError in its h2 protocol and the whole connection dies "
    "(pgjones/hypercorn#329, fixes proposed in #334 and #365)"
)
HYPERCORN_H2_KEYERROR_TRIO = (
    HYPERCORN_H2_KEYERROR + "; with the trio worker the KeyError ends the whole worker process"
)
HYPERCORN_WS_1006 = (
    "hypercorn (0.18) reports every close by the client as 1006 to the app, whatever "
    "code the client sent (pgjones/hypercorn#127)"
)
GRANIAN_ACCEPT_HEADERS = (
    "granian (2.8) drops the headers of websocket.accept from the handshake response"
)
GRANIAN_HTTP10_VERSION = 'granian (2.8) reports HTTP/1.0 requests with http_version "1"'
GRANIAN_PORTS = "granian (2.8) gives the ports of scope client and server as str, not int"
HYPERCORN_TRIO_NO_CLOSE = (
    "hypercorn (0.18) with the trio worker does not close a connection that asked for "
    "it (HTTP/1.0, or Connection: close) after a streamed response if the app was "
    "waiting in receive() for a disconnect meanwhile (the asyncio worker does)"
)
HYPERCORN_TRIO_CLOSE_RACE = (
    "hypercorn (0.18) with the trio worker: when a WebSocket's app ends (closes, or returns) "
    "while hypercorn answers the client's own close frame, closing the connection "
    "(send_eof, outside the send lock) and sending the answer (send_all) meet on the "
    "socket; trio raises BusyResourceError, which ends the whole worker process, every "
    "connection with it, and the server exits (status 0); the asyncio worker does not"
)
UVICORN_HTTPTOOLS_HTTP10_CHUNKED = (
    "uvicorn (0.54) with httptools answers an HTTP/1.0 request with a streamed body in "
    "chunked transfer coding, which HTTP/1.0 clients do not know (h11 does not)"
)


def known_bug(request: pytest.FixtureRequest, applies: bool, reason: str) -> None:
    """Mark the running test as an expected failure (strict) where a server bug applies."""
    if applies:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


@dataclass
class Certificate:
    """A CA and a server certificate for 127.0.0.1 and localhost (trustme), as files."""

    directory: Path
    certfile: Path = field(init=False)
    keyfile: Path = field(init=False)
    ca: Any = field(init=False)

    def __post_init__(self) -> None:
        import trustme

        self.ca = trustme.CA()
        issued = self.ca.issue_cert("127.0.0.1", "localhost")
        self.certfile = self.directory / "server.pem"
        self.keyfile = self.directory / "server.key"
        issued.cert_chain_pems[0].write_to_path(self.certfile)
        issued.private_key_pem.write_to_path(self.keyfile)

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


class Server:
    """One running server process."""

    def __init__(self, kind: Kind, cert: Certificate) -> None:
        self.kind = kind
        self.cert = cert
        self.users: list[str] = []  # the tests that asked the pool for it, in order
        self.port, self.tls_port = free_ports(2)
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            kind.command(self.port, self.tls_port, cert),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "MICROASGI_BROADCAST_URL": "memory://"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_until_up()

    def wait_until_up(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind.id} exited early:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/json", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.kind.id} did not start:\n{self.output()}")
            time.sleep(0.1)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def url(self, protocol: str) -> str:
        if protocol == "h2":
            return f"https://127.0.0.1:{self.tls_port}"
        return self.http_url

    def client(self, protocol: str, **options: Any) -> httpx.Client:
        """An httpx client speaking `protocol` to this server."""
        options.setdefault("timeout", 10)
        if protocol == "h1":
            return httpx.Client(base_url=self.http_url, **options)
        if protocol == "h2c":  # prior knowledge: HTTP/2 from the first byte
            return httpx.Client(base_url=self.http_url, http1=False, http2=True, **options)
        context = self.cert.client_context()
        return httpx.Client(base_url=self.url("h2"), http2=True, verify=context, **options)

    def signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def stop(self) -> int | None:
        """SIGTERM to the server's main process (which stops its workers), SIGKILL to
        them all after 10 s; the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(timeout=5)
        return self.process.returncode

    def last_users(self, count: int = 3) -> str:
        """The last tests that used the server, the latest last."""
        return ", ".join(self.users[-count:]) or "no test"

    def answers(self) -> bool:
        """Whether the server still answers a request (within 2 s)."""
        try:
            return httpx.get(f"{self.http_url}/json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def output(self, limit: int = 6000) -> str:
        """The end of what the server printed, `limit` characters at most."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]

    def close(self) -> None:
        self.stop()
        self.log.close()


class ServerPool:
    """Servers started on first use, stopped at the end."""

    def __init__(self, directory: Path) -> None:
        self.cert = Certificate(directory)
        self.running: dict[str, Server] = {}

    def get(self, server_id: str, user: str = "") -> Server:
        """The running server, for the test `user`; one that died since is restarted, and
        the test that finds it dead fails with what it printed and who used it last."""
        server = self.running.get(server_id)
        if server is not None and server.process.poll() is not None:
            output = server.output()
            server.close()
            del self.running[server_id]
            raise RuntimeError(
                f"{server_id} died (status {server.process.returncode}) "
                f"after {server.last_users()}:\n{output}"
            )
        if server is None:
            server = self.running[server_id] = Server(SERVERS[server_id], self.cert)
        if user:
            server.users.append(user)
        return server

    def post_mortems(self) -> list[str]:
        """For a failed test: what each server that has died, or no longer answers,
        printed, and the tests that used it last. One caught as it goes down (a refused
        connection while its workers exit, say) is given 5 s to finish."""
        notes = []
        for server_id, server in self.running.items():
            if server.process.poll() is None and server.answers():
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(timeout=5)
            notes.append(
                f"{server_id} (exit status {server.process.returncode}) "
                f"after {server.last_users()}:\n{server.output(20000)}"
            )
        return notes

    def restart(self, server_id: str) -> None:
        """Stop a server that a test may have broken; the next `get` starts a new one."""
        server = self.running.pop(server_id, None)
        if server is not None:
            server.close()

    def close(self) -> None:
        for server in self.running.values():
            server.close()
        self.running.clear()


@contextlib.contextmanager
def fresh_server(server_id: str, cert: Certificate, **env: str) -> Iterator[Server]:
    """A server of its own (for tests that stop it), with `env` added."""
    with mock.patch.dict(os.environ, env):
        server = Server(SERVERS[server_id], cert)
    try:
        yield server
    finally:
        server.close()


class RawH2:
    """A bare HTTP/2 client (the `h2` library over a socket, h2c or TLS with ALPN) for
    what httpx cannot do: keep sending a body after the server has answered, as
    RFC 9113 (8.1) lets a server answer early, and watch the connection afterwards."""

    def __init__(self, server: Server, protocol: str) -> None:
        import socket

        import h2.config
        import h2.connection

        port = server.tls_port if protocol == "h2" else server.port
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if protocol == "h2":
            context = server.cert.client_context()
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
        self.sock = sock
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.responses: dict[int, dict[str, Any]] = {}
        self.closed = False

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def request(
        self, method: str, path: str, *, body: bool = False, length: int | None = None
    ) -> int:
        """Send a request's headers; its body follows with `send_body` if `body`."""
        stream_id: int = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "t")]
        if length is not None:
            headers.append(("content-length", str(length)))
        self.conn.send_headers(stream_id, headers, end_stream=not body)
        self.responses[stream_id] = {"status": None, "body": b"", "ended": False, "reset": False}
        self.flush()
        return stream_id

    def send_body(self, stream_id: int, data: bytes, chunk: int = 8192) -> int:
        """Send `data` (ending the stream) until done or the server reset the stream.

        A complete response does not stop it: RFC 9113 (8.1) lets the server ask the
        client to stop with RST_STREAM (NO_ERROR); without one the request goes on.
        """
        import h2.exceptions

        sent = 0
        while sent < len(data) and not self.responses[stream_id]["reset"] and not self.closed:
            piece = data[sent : sent + chunk]
            window = self.conn.local_flow_control_window(stream_id)
            if window < len(piece):
                if not self.receive(0.5):
                    break  # no window, nothing more from the server: it stopped reading
                continue
            try:
                self.conn.send_data(stream_id, piece, end_stream=sent + len(piece) == len(data))
                self.flush()
            except h2.exceptions.StreamClosedError:
                break  # the server reset the stream after answering: stop, as RFC 9113 says
            sent += len(piece)
            self.receive(0.01)
        return sent

    def receive(self, timeout: float) -> bool:
        """Read what the server sent within `timeout`; False if nothing came."""

        import h2.events

        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            data = b""
        if not data:
            self.closed = True
            for response in self.responses.values():
                response["ended"] = response["reset"] = True
            return False
        for event in self.conn.receive_data(data):
            response = self.responses.get(getattr(event, "stream_id", 0) or 0)
            if response is None:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                response["status"] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                response["body"] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                response["ended"] = True
            elif isinstance(event, h2.events.StreamReset):
                response["ended"] = response["reset"] = True
        with contextlib.suppress(OSError):
            self.flush()
        return True

    def wait(self, stream_id: int, timeout: float = 5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.responses[stream_id]["ended"] and time.monotonic() < deadline:
            self.receive(0.1)
        return self.responses[stream_id]

    def close(self) -> None:
        self.sock.close()
