"""The chat page in a real browser: headless Chromium driven by Playwright.

Two pages chat with each other; user text is shown as text (never run as HTML);
the client reconnects by itself when the server comes back.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.services import CHROMIUM, require
from tests.test_chat_integration import ChatServer, chat_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.integration

TIMEOUT_MS = 5000
SCREENSHOT = "/tmp/chat.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require(os.path.exists(CHROMIUM), "Chromium", "apt-get install chromium")
    require(
        importlib.util.find_spec("playwright") is not None,
        "Playwright",
        "pip install playwright (the browser itself comes from the chromium package)",
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with chat_server() as server:
        yield server


class Problems:
    """JavaScript errors and console errors (CSP violations among them) of some pages."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def watch(self, page: Page) -> Page:
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda error: self.seen.append(f"{page.url}: {error}"))
        page.on("console", lambda message: self._console(page, message))
        return page

    def _console(self, page: Page, message: Any) -> None:
        # A refused or dropped WebSocket is logged as an error too: expected while
        # the server is down, so those are left out.
        if message.type == "error" and "WebSocket connection" not in message.text:
            self.seen.append(f"{page.url}: {message.text}")


def open_room(browser: Browser, problems: Problems, url: str) -> Page:
    from playwright.sync_api import expect

    page = problems.watch(browser.new_page(viewport={"width": 820, "height": 520}))
    page.goto(url)
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    return page


def send(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_two_pages_chat(browser: Browser, server: ChatServer) -> None:
    from playwright.sync_api import expect

    problems = Problems()
    alice = open_room(browser, problems, f"{server.http_url}/rooms/test?nick=alice")
    bob = open_room(browser, problems, f"{server.http_url}/rooms/test?nick=bob")
    try:
        expect(alice.locator("#messages .notice").last).to_have_text("bob joined")
        expect(bob.locator("#me")).to_have_text("bob")

        send(alice, "hello from alice")
        expect(bob.locator("#messages .message .text").last).to_have_text("hello from alice")
        expect(bob.locator("#messages .message .nick").last).to_have_text("alice")
        expect(alice.locator("#text")).to_have_value("")  # sent: the box is cleared

        send(bob, "hi alice, how is microasgi?")
        expect(alice.locator("#messages .message .text").last).to_have_text(
            "hi alice, how is microasgi?"
        )
        expect(alice.locator("#messages .message.mine")).to_have_count(1)

        # Markup in a message is shown as text, never turned into elements or run.
        payload = "<img src=x onerror=\"document.title='pwned'\"><b>bold?</b>"
        send(bob, payload)
        expect(alice.locator("#messages .message .text").last).to_have_text(payload)
        assert alice.locator("#messages img, #messages b").count() == 0
        assert alice.title() == "#test · microasgi chat"

        send(alice, "Fast and small, and it fans out through Broadcast.")
        expect(bob.locator("#messages .message .text").last).to_contain_text("Broadcast")
        alice.screenshot(path=SCREENSHOT)

        send(alice, "x" * 2000 + "y")  # too long: the input's maxlength keeps 2,000
        expect(bob.locator("#messages .message .text").last).to_have_text("x" * 2000)
        assert problems.seen == []
    finally:
        alice.close()
        bob.close()


def test_landing_page_leads_to_the_room(browser: Browser, server: ChatServer) -> None:
    from playwright.sync_api import expect

    problems = Problems()
    page = problems.watch(browser.new_page())
    try:
        page.goto(server.http_url + "/")
        page.fill("#nick", "  carol  ")
        page.fill("#room", "garden")
        page.click("button[type=submit]")
        expect(page.locator("#status")).to_have_attribute("data-state", "open")
        assert page.url == f"{server.http_url}/rooms/garden?nick=carol"
        expect(page.locator("#messages .notice").first).to_have_text("carol joined")
        # The nickname is remembered for the next visit.
        page.goto(server.http_url + "/")
        expect(page.locator("#nick")).to_have_value("carol")
        assert problems.seen == []
    finally:
        page.close()


def test_the_page_reconnects_when_the_server_comes_back(
    browser: Browser, server: ChatServer
) -> None:
    from playwright.sync_api import expect

    problems = Problems()
    alice = open_room(browser, problems, f"{server.http_url}/rooms/again?nick=alice")
    bob = open_room(browser, problems, f"{server.http_url}/rooms/again?nick=bob")
    try:
        server.stop()
        for page in (alice, bob):
            expect(page.locator("#status")).to_have_attribute("data-state", "closed")
        send(alice, "while down")
        expect(alice.locator("#messages .error").last).to_contain_text("Not connected")
        expect(alice.locator("#text")).to_have_value("while down")  # kept, to send later

        server.start()  # same port
        for page in (alice, bob):
            expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=15_000)
        send(alice, "back again")
        expect(bob.locator("#messages .message .text").last).to_have_text("back again")
        assert problems.seen == []
    finally:
        alice.close()
        bob.close()
