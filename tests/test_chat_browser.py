"""The chat page in a real browser: headless Chromium driven by Playwright.

Two pages chat with each other; user text is shown as text (never run as HTML); a
newcomer sees the recent messages; the client reconnects by itself when the server comes
back, or its worker is killed, and shows what it missed, once, in order.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.services import CHROMIUM, RedisServer, require
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


def message_texts(page: Page) -> list[str]:
    return page.locator("#messages .message .text").all_text_contents()


def test_a_newcomer_sees_the_recent_messages(browser: Browser, server: ChatServer) -> None:
    from playwright.sync_api import expect

    problems = Problems()
    alice = open_room(browser, problems, f"{server.http_url}/rooms/recent?nick=alice")
    try:
        for text in ("one", "two", "three"):
            send(alice, text)
            expect(alice.locator("#messages .message .text").last).to_have_text(text)
        bob = open_room(browser, problems, f"{server.http_url}/rooms/recent?nick=bob")
        expect(bob.locator("#messages .notice").last).to_have_text("bob joined")
        assert message_texts(bob) == ["one", "two", "three"]
        assert problems.seen == []
    finally:
        alice.close()


def publish_directly(redis_url: str, room: str, texts: list[str]) -> None:
    """Publish chat messages into Redis as a worker would, while the servers are down.

    In a thread: Playwright's sync API runs an event loop in this one.
    """
    import json
    import threading

    import anyio

    from microasgi.broadcast import Broadcast

    async def publish() -> None:
        async with Broadcast(redis_url) as broadcast:
            for text in texts:
                event = {"type": "message", "id": text, "nick": "carol", "text": text, "time": 0}
                await broadcast.publish(f"chat:room:{room}", json.dumps(event))

    failures: list[BaseException] = []

    def run() -> None:
        try:
            anyio.run(publish)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive() and not failures, failures


def worker_pids(server: ChatServer) -> list[int]:
    assert server.process is not None
    found = []
    for task in os.listdir(f"/proc/{server.process.pid}/task"):
        with open(f"/proc/{server.process.pid}/task/{task}/children") as children:
            found += [int(pid) for pid in children.read().split()]
    return [pid for pid in found if b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()]


@pytest.mark.parametrize("how", ["server restart (1012)", "workers killed"])
def test_the_page_resumes_where_it_left_off(
    browser: Browser, redis_server: RedisServer, how: str
) -> None:
    """The page reconnects with ?since= the last message it showed: what was published
    while it was away appears once, in order, then the conversation goes on."""
    from playwright.sync_api import expect

    problems = Problems()
    workers = 2 if how == "workers killed" else None
    with chat_server(redis_server.url, workers=workers) as server:
        alice = open_room(browser, problems, f"{server.http_url}/rooms/resume?nick=alice")
        try:
            for text in ("before 0", "before 1"):
                send(alice, text)
                expect(alice.locator("#messages .message .text").last).to_have_text(text)
            if how == "workers killed":
                for pid in worker_pids(server):
                    os.kill(pid, signal.SIGKILL)  # the supervisor starts new ones
            else:
                server.stop()  # uvicorn closes the WebSocket with 1012
            expect(alice.locator("#status")).to_have_attribute("data-state", "closed")
            away = [f"while away {i}" for i in range(3)]
            publish_directly(redis_server.url, "resume", away)
            if how != "workers killed":
                server.start()
            expect(alice.locator("#status")).to_have_attribute("data-state", "open", timeout=20_000)
            expect(alice.locator("#messages .message .text").last).to_have_text(away[-1])
            send(alice, "after")
            expect(alice.locator("#messages .message .text").last).to_have_text("after")
            assert message_texts(alice) == ["before 0", "before 1", *away, "after"]
            assert alice.locator("#messages .notice.system").count() == 0  # nothing lost
            assert problems.seen == []
        finally:
            alice.close()
