"""The login example in headless Chromium, served by uvicorn: signing in and out with the
session cookie, and a page on another site that posts to it (refused)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from examples.login import app
from microasgi.types import ASGIApp, Receive, Scope, Send
from tests import test_chat_browser
from tests.helpers import free_port
from tests.test_chat_browser import Problems
from tests.test_integration_uvicorn import run_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.integration

SCREENSHOT = "/tmp/login.png"

browser = test_chat_browser.browser  # the headless Chromium fixture, shared


def attacker_site(target: str) -> ASGIApp:
    """Another site whose pages post forms to `target` as soon as they load."""

    async def site(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        action = {"/logout": "/logout", "/login": "/login"}.get(scope["path"], "/logout")
        html = (
            f'<!doctype html><form id="f" method="post" action="{target}{action}">'
            '<input name="user" value="ada"><input name="password" value="lovelace"></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        headers = [(b"content-type", b"text/html; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": html})

    return site


@pytest.fixture(scope="module")
def sites() -> Iterator[tuple[str, str]]:
    """(the example on 127.0.0.1, the attacker on localhost: another site)."""
    port, other = free_port(), free_port()
    target = f"http://127.0.0.1:{port}"
    with run_server(app, port), run_server(attacker_site(target), other, lifespan="off"):  # type: ignore[arg-type]
        yield target, f"http://localhost:{other}"


def sign_in(page: Page, url: str, password: str) -> None:
    page.goto(url + "/")
    page.fill("#user", "ada")
    page.fill("#password", password)
    page.click("#sign-in")


def test_sign_in_stay_signed_in_and_sign_out(browser: Browser, sites: tuple[str, str]) -> None:
    from playwright.sync_api import expect

    target, _ = sites
    problems = Problems()
    context = browser.new_context()
    page = problems.watch(context.new_page())
    try:
        sign_in(page, target, "wrong")
        expect(page.locator("#error")).to_have_text("Wrong name or password.")
        expect(page.locator("#user")).to_have_value("ada")
        assert context.cookies() == []
        problems.seen.clear()  # the 400 of the wrong password was expected

        sign_in(page, target, "lovelace")
        expect(page.locator("#who")).to_have_text("Signed in as ada.")
        [cookie] = context.cookies()
        assert cookie["name"] == "session"
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
        assert page.evaluate("document.cookie") == ""  # out of reach of scripts

        page.click("#account")
        expect(page.locator("#visits")).to_have_text("Account page visits this session: 1")
        page.reload()
        expect(page.locator("#visits")).to_have_text("Account page visits this session: 2")
        page.screenshot(path=SCREENSHOT)

        other = problems.watch(context.new_page())  # another tab shares the session
        other.goto(target + "/")
        expect(other.locator("#who")).to_have_text("Signed in as ada.")
        other.close()

        page.click("#sign-out")
        expect(page.locator("#sign-in")).to_be_visible()
        assert context.cookies() == []
        page.goto(target + "/account")
        expect(page.locator("#sign-in")).to_be_visible()  # sent back to sign in
        assert problems.seen == []
    finally:
        context.close()


def test_a_form_on_another_site_cannot_post(browser: Browser, sites: tuple[str, str]) -> None:
    from playwright.sync_api import expect

    target, attacker = sites
    context = browser.new_context()
    page = context.new_page()
    try:
        sign_in(page, target, "lovelace")
        expect(page.locator("#who")).to_have_text("Signed in as ada.")

        for path in ("/logout", "/login"):
            with page.expect_response(f"{target}{path}") as answer:
                page.goto(attacker + path)  # its script posts the form to the example
            assert answer.value.status == 403
            expect(page.locator("body")).to_have_text("Cross-origin request refused")

        page.goto(target + "/")
        expect(page.locator("#who")).to_have_text("Signed in as ada.")  # still signed in
    finally:
        context.close()
