"""`python -m microasgi run`: argument checks and a real run of the example app."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

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


def test_unimportable_app_fails() -> None:
    result = run_cli("run", "no_such_module_xyz:app", "--port", str(free_port()), timeout=20)
    assert result.returncode != 0


def test_real_run_serves_the_example_app() -> None:
    port = free_port()
    process = subprocess.Popen(
        [PYTHON, "-m", "microasgi", "run", "examples.hello:app", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        response = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"server exited early with {process.returncode}:\n{output}")
            try:
                response = httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert response is not None, "the server never answered"
        assert response.status_code == 200
        assert response.text == "ok"
        hello = httpx.get(url + "/hello/world", timeout=2).json()
        assert hello == {
            "message": "Hello, world!",
            "url": f"http://127.0.0.1:{port}/hello/world",
        }
        assert httpx.get(url + "/nope", timeout=2).status_code == 404
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout:
            process.stdout.close()
