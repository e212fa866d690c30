"""Optional services the tests need (redis-server, Chromium), started on free ports.

When one is missing the test is skipped with what to install, unless
MICROASGI_REQUIRE_SERVICES=1 (CI sets it): then it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Self

import httpx
import pytest

from tests.helpers import free_port

__all__ = ["CHROMIUM", "ROOT", "RedisServer", "ServerProcess", "free_port", "require"]

ROOT = Path(__file__).resolve().parent.parent

CHROMIUM = "/usr/bin/chromium"


def require(available: bool, what: str, install: str) -> None:
    """Skip (or, in CI, fail) when a service is not available."""
    if available:
        return
    message = f"{what} is not available: {install}"
    if os.environ.get("MICROASGI_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (MICROASGI_REQUIRE_SERVICES=1 turns this skip into a failure)")
    pytest.skip(message)


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RedisServer:
    """A redis-server of our own on a free port, with a data directory so that
    its counters survive a restart (it saves on shutdown)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "3600 1",
                "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """Kill it (SIGKILL): no save on the way out, as in a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        """Stop it answering (SIGSTOP) without closing its connections: a hung server."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class ServerProcess:
    """`python -m microasgi run APP` (uvicorn) in a process of its own, on `port`.

    `env` is added to this process's environment and `args` to the command line.
    It counts as up once `ready_path` answers 200.
    """

    def __init__(
        self,
        app: str,
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        ready_path: str = "/",
    ) -> None:
        self.app = app
        self.port = port
        self.env = dict(env or {})
        self.args = list(args)
        self.ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None  # the server's output, for error messages

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        command = [sys.executable, "-m", "microasgi", "run", self.app]
        command += ["--port", str(self.port), "--log-level", "warning", *self.args]
        if self.log is None:
            self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: its workers stop with it
        )
        # Up when it answers (with --workers, every worker has run its lifespan by then
        # or queues the request until it has).
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.app} exited early:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.http_url + self.ready_path, timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.app} did not start in {timeout}s:\n{self.output()}")
            time.sleep(0.1)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group we created for it
            process.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        if self.log is not None:
            self.log.close()
            self.log = None

    def __enter__(self) -> Self:
        """Started (and closed again if it does not come up)."""
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def output(self) -> str:
        """The end of what the server printed."""
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]
