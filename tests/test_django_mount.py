"""examples/django_mount: Django's admin under /django, next to native routes, behind a real
uvicorn (`python -m microasgi run`, h11) and driven in headless Chromium: CSRF, login,
create, edit, logout. Also how Django's static files are served under the mount.

Each server gets a SQLite database in a temporary directory; the test runs the example's
migrations and creates the admin user with Django's own management commands.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests import test_chat_browser
from tests.services import ROOT, ServerProcess, free_port
from tests.test_chat_browser import Problems

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Response

pytestmark = pytest.mark.integration

SCREENSHOT = "/tmp/django_admin.png"
USER, PASSWORD = "ada", "correct horse battery staple"
CSS = "/static/admin/css/base.css"

browser = test_chat_browser.browser  # the headless Chromium fixture, shared


def django_env(directory: Path, **extra: str) -> dict[str, str]:
    return {
        "DJANGO_MOUNT_DATABASE": str(directory / "db.sqlite3"),
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
        **extra,
    }


def manage(env: dict[str, str], *args: str) -> None:
    """`python -m examples.django_mount ARGS`: the example's Django management commands."""
    subprocess.run(
        [sys.executable, "-m", "examples.django_mount", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=60,
    )


def serve(env: dict[str, str]) -> ServerProcess:
    server = ServerProcess("examples.django_mount:app", free_port(), env=env)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The example with a migrated database and an admin user, Django's DEBUG off."""
    env = django_env(tmp_path_factory.mktemp("django"))
    manage(env, "migrate", "--noinput")
    manage(
        {**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD},
        "createsuperuser", "--noinput", "--username", USER, "--email", "ada@example.com",
    )  # fmt: skip
    server = serve(env)
    try:
        yield server
    finally:
        server.close()


def watch_failures(page: Page) -> list[str]:
    """Every response of `page` with a status of 400 or more, as "status url"."""
    failed: list[str] = []

    def check(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    page.on("response", check)
    return failed


def cookie_names(page: Page) -> set[str]:
    return {cookie["name"] for cookie in page.context.cookies()}


def test_admin_flow_in_chromium(browser: Browser, site: ServerProcess) -> None:
    from playwright.sync_api import expect

    url = site.http_url
    problems = Problems()
    context = browser.new_context()
    # Not the example's business: the site has no icon, and the browser asks for one.
    context.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    page = problems.watch(context.new_page())
    failed = watch_failures(page)
    try:
        # Django's redirect to its login page carries the mount's prefix.
        page.goto(url + "/django/admin/")
        assert page.url == url + "/django/admin/login/?next=/django/admin/"
        expect(page.locator("#site-name")).to_have_text("Django administration")
        # Its stylesheets (written as /django/static/... by {% static %}) were applied.
        display = page.eval_on_selector("#header", "e => getComputedStyle(e).display")
        assert display == "flex"
        assert "csrftoken" in cookie_names(page)

        # CSRF: a login form post without the form's token is refused.
        refused = page.request.post(
            url + "/django/admin/login/",
            form={"username": USER, "password": PASSWORD},
            headers={"Origin": url},
        )
        assert refused.status == 403
        assert "CSRF" in refused.text()
        # ... and one from the form, with a wrong password, is answered by the form.
        page.fill("#id_username", USER)
        page.fill("#id_password", "wrong")
        page.click("input[type=submit]")
        expect(page.locator(".errornote")).to_contain_text("correct username and password")
        assert "sessionid" not in cookie_names(page)

        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        expect(page.locator("#content h1")).to_have_text("Site administration")
        assert page.url == url + "/django/admin/"
        assert "sessionid" in cookie_names(page)  # its Set-Cookie came through h11

        # Create a book.
        page.click("a[href='/django/admin/catalog/book/add/']")
        page.fill("#id_title", "The Analytical Engine")
        page.fill("#id_author", "Ada Lovelace")
        page.fill("#id_year", "1843")
        page.click("input[name=_save]")
        expect(page.locator(".messagelist")).to_contain_text("was added successfully")
        assert page.url == url + "/django/admin/catalog/book/"
        # A native microasgi route reads it with Django's ORM.
        [book] = httpx.get(url + "/api/books").json()
        assert book["title"] == "The Analytical Engine" and book["year"] == 1843

        # Edit it.
        page.click("#result_list a:text('The Analytical Engine')")
        expect(page).to_have_url(url + f"/django/admin/catalog/book/{book['id']}/change/")
        page.fill("#id_title", "Notes on the Analytical Engine")
        page.click("input[name=_save]")
        expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
        expect(page.locator("#result_list")).to_contain_text("Notes on the Analytical Engine")
        [book] = httpx.get(url + "/api/books").json()
        assert book["title"] == "Notes on the Analytical Engine"
        page.screenshot(path=SCREENSHOT, full_page=True)

        # Log out (a POST form with the CSRF token): the session ends.
        page.click("#logout-form button")
        expect(page.locator("#content h1")).to_have_text("Logged out")
        assert "sessionid" not in cookie_names(page)
        page.goto(url + "/django/admin/catalog/book/")
        expect(page).to_have_url(url + "/django/admin/login/?next=/django/admin/catalog/book/")

        assert failed == []
        assert problems.seen == []
    finally:
        context.close()


def test_static_files_under_the_mount(site: ServerProcess) -> None:
    """With DEBUG off, microasgi's StaticFiles answers at Django's STATIC_URL (with
    validators); the native routes are next to Django's."""
    url = site.http_url
    css = httpx.get(url + "/django" + CSS)
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "etag" in css.headers  # served by StaticFiles, not by a Django view
    again = httpx.get(url + "/django" + CSS, headers={"If-None-Match": css.headers["etag"]})
    assert again.status_code == 304
    assert httpx.get(url + "/django/django" + CSS).status_code == 404
    assert httpx.get(url + "/api/books").status_code == 200
    home = httpx.get(url + "/")
    assert "href='/django/admin/'" in home.text


def test_django_serves_static_files_in_debug_mode(tmp_path: Path) -> None:
    """With DJANGO_DEBUG=1 the example leaves static files to Django's serve view, under
    the pattern static("/static/"): it answers at /django/static/..., where
    {% static %} points."""
    server = serve(django_env(tmp_path, DJANGO_DEBUG="1"))
    try:
        css = httpx.get(server.http_url + "/django" + CSS)
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert "etag" not in css.headers  # Django's view, not StaticFiles
        assert "last-modified" in css.headers
        login = httpx.get(server.http_url + "/django/admin/login/")
        assert 'href="/django' + CSS + '"' in login.text
    finally:
        server.close()


# The usual urls.py of a Django project that lets Django serve its static files.
DOUBLED_URLS = """
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls), *staticfiles_urlpatterns()]
"""

# The example with that urls.py, asked for the stylesheet at the two places. In a process
# of its own: Django's settings are per process.
ASK_BOTH = """
import json

from django.conf import settings

from examples.django_mount import app
from microasgi.testclient import TestClient

settings.ROOT_URLCONF = "doubled_urls"
with TestClient(app, base_url="http://127.0.0.1") as client:
    paths = ["/django/static/admin/css/base.css", "/django/django/static/admin/css/base.css"]
    print(json.dumps({path: client.get(path).status_code for path in paths}))
"""


def test_staticfiles_urlpatterns_doubles_the_prefix(tmp_path: Path) -> None:
    """What docs/wsgi.md says: under the mount, staticfiles_urlpatterns() matches
    /django/django/static/..., not /django/static/..., where {% static %} points. Its
    pattern comes from STATIC_URL, which Django prefixes with the script name (/django),
    while URL patterns are matched against the path below the mount."""
    (tmp_path / "doubled_urls.py").write_text(DOUBLED_URLS)
    env = {**os.environ, **django_env(tmp_path, DJANGO_DEBUG="1"), "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", ASK_BOTH],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    statuses = json.loads(done.stdout.strip().splitlines()[-1])
    assert statuses == {
        "/django/static/admin/css/base.css": 404,
        "/django/django/static/admin/css/base.css": 200,
    }
