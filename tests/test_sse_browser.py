"""The SSE page in headless Chromium: a real EventSource shows the clock and the
messages, and when the stream ends it reconnects with Last-Event-ID and gets exactly the
messages it missed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.services import ServerProcess, free_port
from tests.test_chat_browser import Problems, browser

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.integration

__all__ = ["browser"]  # the fixture, shared with the chat's browser tests

STREAM_SECONDS = 2


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    # Each stream ends after two seconds, as a proxy with a timeout would end it.
    env = {"MICROASGI_SSE_STREAM_SECONDS": str(STREAM_SECONDS)}
    with ServerProcess("examples.sse:app", free_port(), env=env, ready_path="/stats") as process:
        yield process


def test_event_source_reconnects_and_resumes(browser: Browser, server: ServerProcess) -> None:
    from playwright.sync_api import expect

    problems = Problems()
    page = problems.watch(browser.new_page())
    page.goto(server.http_url + "/")
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "open")
    expect(page.locator("#clock")).to_have_text(re.compile(r"\d\d:\d\d:\d\d"))

    # Posted from the page's own form while the stream is open: shown live.
    page.fill("#text", "<b>from the page</b>")
    page.press("#text", "Enter")
    items = page.locator("#messages li")
    expect(items).to_have_count(1)
    expect(items.nth(0).locator(".text")).to_have_text("<b>from the page</b>")  # as text
    expect(items.nth(0)).to_have_attribute("data-id", "1")

    with httpx.Client(base_url=server.http_url, timeout=10) as client:
        # Wait for the gap between the end of a stream and the browser's reconnect
        # (retry: 1000 ms), and post a message nobody is connected to receive.
        deadline = time.monotonic() + 10
        while client.get("/stats").json()["open_streams"] != 0:
            assert time.monotonic() < deadline, "the stream never ended"
            time.sleep(0.02)
        missed = client.post("/messages", json={"text": "posted while away"}).json()["id"]
        assert missed == 2

        expect(items).to_have_count(2)
        expect(items.nth(1)).to_have_attribute("data-id", "2")
        expect(items.nth(1).locator(".text")).to_have_text("posted while away")
        # The browser sent the id of the last message it had when it reconnected.
        assert "1" in client.get("/stats").json()["resumed_from"]

        # Several more reconnects later: still every message once, in order.
        client.post("/messages", json={"text": "three"})
        connections = int(status.get_attribute("data-connections") or 0)
        expect(status).not_to_have_attribute("data-connections", str(connections))
        client.post("/messages", json={"text": "four"})
        expect(items).to_have_count(4)
        page.wait_for_timeout(STREAM_SECONDS * 1000 + 1500)  # one more reconnect at least
    assert [items.nth(i).get_attribute("data-id") for i in range(items.count())] == [
        "1",
        "2",
        "3",
        "4",
    ]
    assert int(status.get_attribute("data-connections") or 0) >= 3
    assert problems.seen == []
    page.close()
