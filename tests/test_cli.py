"""`python -m microasgi run`: argument checks and a real run of the example app."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))


def run_cli(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "microasgi", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_missing_colon_exits_2() -> None:
    result = run_cli("run", "examples.hello")
    assert result.returncode == 2
    assert "module:attribute" in result.stderr


def test_reload_with_several_workers_exits_2() -> None:
    result = run_cli("run", "examples.hello:app", "--reload", "--workers", "2")
    assert result.returncode == 2
    assert "--reload" in result.stderr
    assert "--workers" in result.stderr


def test_no_command_exits_2() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "usage" in result.stderr.lower()


def test_bad_port_exits_2() -> None:
    result = run_cli("run", "examples.hello:app", "--port", "not-a-number")
    assert result.returncode == 2


def test_help_mentions_run() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "run" in result.stdout


def test_main_function_returns_2_for_bad_app(capsys: pytest.CaptureFixture[str]) -> None:
    from microasgi.__main__ import main

    assert main(["run", "no_colon_here"]) == 2
    assert "module:attribute" in capsys.readouterr().err
    assert main(["run", "examples.hello:app", "--reload", "--workers", "3"]) == 2


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian"])
def test_unimportable_app_fails(server: str) -> None:
    port = str(free_port())
    arguments = ["no_such_module_xyz:app", "--server", server, "--port", port]
    result = run_cli("run", *arguments, timeout=30)
    assert result.returncode != 0
    assert "no_such_module_xyz" in result.stdout + result.stderr


@contextlib.contextmanager
def serving(app: str, *options: str, scheme: str = "http", verify: Any = True) -> Iterator[int]:
    """`python -m microasgi run app` in a subprocess, up and answering; yields its port."""
    port = free_port()
    process = subprocess.Popen(
        [PYTHON, "-m", "microasgi", "run", app, "--port", str(port), *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "MICROASGI_BROADCAST_URL": "memory://"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"server exited early with {process.returncode}:\n{output}")
            try:
                httpx.get(f"{scheme}://127.0.0.1:{port}/", timeout=1, verify=verify)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout:
            process.stdout.close()


SERVER_NAMES = ["uvicorn", "hypercorn", "granian"]


@pytest.mark.parametrize("server", SERVER_NAMES)
def test_real_run_serves_the_example_app(server: str) -> None:
    with serving("examples.hello:app", "--server", server) as port:
        url = f"http://127.0.0.1:{port}"
        response = httpx.get(url + "/health", timeout=2)
        assert response.status_code == 200
        assert response.text == "ok"
        hello = httpx.get(url + "/hello/world", timeout=2).json()
        assert hello == {
            "message": "Hello, world!",
            "url": f"http://127.0.0.1:{port}/hello/world",
        }
        assert httpx.get(url + "/nope", timeout=2).status_code == 404


# -- WebSocket handshakes through the CLI's server ------------------------------------------

KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
UPGRADE = (
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
)


def handshake(port: int, request: bytes) -> tuple[bytes, bool]:
    """Send `request` on a raw socket: the status line answered, and whether the server
    then closed the connection (a connection left open, unanswered, fails the test)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pytest.fail(f"no answer in 5 s to a {len(request)}-byte handshake request")
        closed = False
        if not data.startswith(b"HTTP/1.1 101"):
            try:
                while chunk := sock.recv(65536):
                    data += chunk
                closed = True
            except TimeoutError:
                closed = False
            except ConnectionResetError:
                closed = True
    return data.partition(b"\r\n")[0], closed


@pytest.fixture(scope="module")
def chat_port() -> Iterator[int]:
    with serving("examples.chat:app") as port:
        yield port


@pytest.mark.integration
@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /ws/lobby?nick=ann&pad=" + b"a" * 9000 + b" HTTP/1.1\r\n" + UPGRADE + KEY, 414),
        (b"GET /ws/lobby?nick=ann&pad=" + b"a" * 20000 + b" HTTP/1.1\r\n" + UPGRADE + KEY, 414),
        (
            b"GET /ws/lobby?nick=ann HTTP/1.1\r\nX-Big: " + b"b" * 9000 + b"\r\n" + UPGRADE + KEY,
            431,
        ),
        (
            b"GET /ws/lobby?nick=ann HTTP/1.1\r\n"
            + b"".join(b"X-H%d: v\r\n" % i for i in range(200))
            + UPGRADE
            + KEY,
            431,
        ),
        (b"GET /ws/lobby?nick=ann HTTP/1.1\r\n" + UPGRADE + b"Sec-WebSocket-Key: nope\r\n", 400),
        (b"GET /ws/lobby?nick=ann HTTP/1.1\r\n" + UPGRADE.replace(b"13", b"8") + KEY, 400),
    ],
    ids=["request-line-9k", "request-line-20k", "header-9k", "200-headers", "bad-key", "version"],
)
def test_malformed_or_oversized_handshakes_are_answered(
    chat_port: int, request_bytes: bytes, status: int
) -> None:
    """Before, uvicorn's default WebSocket implementation left the first four unanswered
    with the socket open."""
    status_line, closed = handshake(chat_port, request_bytes + b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 %d " % status), status_line
    assert closed, "the server left the connection open after refusing the handshake"


@pytest.mark.integration
def test_a_valid_handshake_is_still_accepted(chat_port: int) -> None:
    status_line, _ = handshake(
        chat_port, b"GET /ws/lobby?nick=ann HTTP/1.1\r\n" + UPGRADE + KEY + b"\r\n"
    )
    assert status_line == b"HTTP/1.1 101 Switching Protocols"


def test_websocket_protocol_is_ours() -> None:
    from microasgi.__main__ import websocket_protocol

    assert websocket_protocol() == "microasgi._uvicorn:PerMessageProtocol"
    assert websocket_protocol("context") == "microasgi._uvicorn:HandshakeAnsweringProtocol"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("option", "answer", "kept"),
    [
        ([], "permessage-deflate; server_no_context_takeover; client_no_context_takeover", 0),
        (["--ws-deflate", "message"], "server_no_context_takeover; client_no_context_", 0),
        (["--ws-deflate", "context"], "permessage-deflate; server_max_window_bits=12", 2),
        (["--ws-deflate", "off"], None, 0),
    ],
)
def test_websocket_compression_choices(option: list[str], answer: str | None, kept: int) -> None:
    """What the server answers a browser's offer, and that messages go both ways compressed.
    `kept`: how many zlib contexts the client keeps after the messages, as the server
    told it (without context takeover, none: an idle connection holds no zlib state)."""
    from websockets.asyncio.client import connect

    async def chat(port: int) -> tuple[str | None, int, list[str]]:
        url = f"ws://127.0.0.1:{port}/ws/lobby?nick=ann"
        async with connect(url, open_timeout=5, proxy=None) as ws:
            assert ws.response is not None
            offered = ws.response.headers.get("Sec-WebSocket-Extensions")
            texts = []
            for number in range(3):
                await ws.send(json.dumps({"text": f"hello {number} " * 20 + "!"}))
            while len(texts) < 3:
                event = json.loads(await asyncio.wait_for(ws.recv(), 5))
                events = event["events"] if event["type"] == "batch" else [event]
                texts += [e["text"] for e in events if e["type"] == "message"]
            contexts = sum(
                hasattr(extension, name)
                for extension in ws.protocol.extensions
                for name in ("encoder", "decoder")
            )
            return offered, contexts, texts

    with serving("examples.chat:app", *option) as port:
        offered, contexts, texts = asyncio.run(chat(port))
    if answer is None:
        assert offered is None
    else:
        assert offered is not None and answer in offered, offered
    assert contexts == kept
    assert texts == [f"hello {number} " * 20 + "!" for number in range(3)]


# -- every server, with the same options ---------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("server", SERVER_NAMES)
def test_root_path_means_the_same_on_every_server(server: str) -> None:
    """uvicorn's meaning: the proxy removed the prefix; the app sees it in root_path and
    in front of the path, builds its URLs with it and routes without it."""
    with serving("examples.hello:app", "--server", server, "--root-path", "/app") as port:
        hello = httpx.get(f"http://127.0.0.1:{port}/hello/world", timeout=5).json()
        assert hello["url"] == f"http://127.0.0.1:{port}/app/hello/world"
        redirect = httpx.get(f"http://127.0.0.1:{port}/health/", timeout=5)
        assert (redirect.status_code, redirect.headers["location"]) == (307, "/app/health")


@pytest.mark.integration
@pytest.mark.parametrize("server", SERVER_NAMES)
def test_tls_with_a_certificate_and_key(server: str, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    issued.private_key_pem.write_to_path(tmp_path / "key.pem")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    tls = ["--ssl-certfile", str(tmp_path / "cert.pem"), "--ssl-keyfile", str(tmp_path / "key.pem")]
    with serving(
        "examples.hello:app", "--server", server, *tls, scheme="https", verify=context
    ) as port:
        hello = httpx.get(f"https://127.0.0.1:{port}/hello/tls", verify=context, timeout=5)
        assert hello.json()["url"] == f"https://127.0.0.1:{port}/hello/tls"


@pytest.mark.integration
@pytest.mark.parametrize("server", SERVER_NAMES)
def test_several_workers(server: str) -> None:
    with serving("examples.hello:app", "--server", server, "--workers", "2") as port:
        for _ in range(5):
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).text == "ok"


def test_reuse_port_needs_linux(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from microasgi.__main__ import main

    monkeypatch.setattr(sys, "platform", "darwin")
    assert main(["run", "examples.hello:app", "--workers", "2", "--reuse-port"]) == 2
    assert "--reuse-port needs Linux" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads on Linux")
@pytest.mark.parametrize("shared", [False, True], ids=["plain", "reuse-port"])
def test_reuse_port_on_a_taken_address_exits_1(shared: bool) -> None:
    """A port something listens on already, even a socket that would share it (an old
    deployment's workers): one clear error, no workers started."""
    with socket.socket() as holder:
        if shared:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli(
            "run", "examples.hello:app", "--workers", "2", "--reuse-port", "--port", str(port)
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads on Linux")
def test_reuse_port_worker_that_cannot_bind_stops_the_supervisor() -> None:
    """A worker whose address was taken after the supervisor's check exits with uvicorn's
    startup-failure status, which stops the supervisor instead of restarting it forever."""
    import uvicorn

    from microasgi._workers import STARTUP_FAILURE, OwnSocketProcess

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        config = uvicorn.Config("examples.hello:app", port=holder.getsockname()[1], workers=2)
        process = OwnSocketProcess(config, [])
        with pytest.raises(SystemExit) as exited:
            process.target()
    assert exited.value.code == STARTUP_FAILURE == 3


def test_reuse_port_chooses_the_family_as_uvicorn_does() -> None:
    """``localhost`` is IPv4 (uvicorn takes IPv6 only for a host with a colon)."""
    from microasgi._workers import bind_own_socket

    with bind_own_socket("localhost", 0) as sock:
        assert sock.family == socket.AF_INET
        assert sock.getsockname()[0] == "127.0.0.1"


def test_a_server_that_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from microasgi.__main__ import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "granian" else real(name, *a)
    )
    assert main(["run", "examples.hello:app", "--server", "granian"]) == 1
    assert "pip install 'microasgi[granian]'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--server", "nginx"], "invalid choice"),
        (["--ssl-certfile", "cert.pem"], "--ssl-keyfile"),
        (["--grace", "-1"], "--grace"),
        (["--workers", "0"], "--workers"),
        (["--log-level", "loud"], "invalid choice"),
        (["--ws-deflate", "max"], "invalid choice"),
        (["--server", "hypercorn", "--ws-deflate", "off"], "--ws-deflate is for uvicorn"),
        (["--server", "granian", "--reuse-port"], "--reuse-port is for uvicorn"),
        (["--reuse-port"], "--workers 2 or more"),
    ],
)
def test_bad_options_exit_2(arguments: list[str], message: str) -> None:
    result = run_cli("run", "examples.hello:app", *arguments)
    assert result.returncode == 2
    assert message in result.stderr


def test_reload_with_workers_is_fine_for_the_other_servers() -> None:
    """Only uvicorn cannot reload with several workers."""
    from microasgi.__main__ import _parser

    args = _parser().parse_args(
        ["run", "a:b", "--server", "hypercorn", "--reload", "--workers", "2"]
    )
    assert (args.reload, args.workers, args.server) == (True, 2, "hypercorn")
