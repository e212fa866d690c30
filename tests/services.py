"""Optional services the tests need (redis-server, Chromium), started on free ports.

When one is missing the test is skipped with what to install, unless
MICROASGI_REQUIRE_SERVICES=1 (CI sets it): then it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["CHROMIUM", "RedisServer", "free_port", "require"]

CHROMIUM = "/usr/bin/chromium"


def require(available: bool, what: str, install: str) -> None:
    """Skip (or, in CI, fail) when a service is not available."""
    if available:
        return
    message = f"{what} is not available: {install}"
    if os.environ.get("MICROASGI_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (MICROASGI_REQUIRE_SERVICES=1 turns this skip into a failure)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
