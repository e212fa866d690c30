"""The login example (examples/login) through the test client: sessions, CSRF, hosts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from examples.login import app
from microasgi.testclient import TestClient

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient, password: str = "lovelace") -> int:
    form = {"user": "ada", "password": password}
    return client.post("/login", data=form, headers=SAME_ORIGIN).status_code


def test_sign_in_and_out(client: TestClient) -> None:
    assert 'id="sign-in"' in client.get("/").text
    assert client.get("/account").headers["location"] == "/"
    response = client.post(
        "/login", data={"user": "ada", "password": "lovelace"}, headers=SAME_ORIGIN
    )
    assert (response.status_code, response.headers["location"]) == (303, "/")
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie and "samesite=lax" in cookie and "Max-Age=28800" in cookie
    assert "Signed in as <b>ada</b>" in client.get("/").text
    assert "visits this session: 1" in client.get("/account").text
    assert "visits this session: 2" in client.get("/account").text
    response = client.post("/logout", headers=SAME_ORIGIN)
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert 'id="sign-in"' in client.get("/").text


@pytest.mark.parametrize(("user", "password"), [("ada", "wrong"), ("bob", "lovelace"), ("", "")])
def test_wrong_credentials(client: TestClient, user: str, password: str) -> None:
    response = client.post("/login", data={"user": user, "password": password}, headers=SAME_ORIGIN)
    assert response.status_code == 400
    assert "Wrong name or password." in response.text
    assert "set-cookie" not in response.headers


def test_cross_site_posts_are_refused(client: TestClient) -> None:
    assert sign_in(client) == 303
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        assert client.post("/logout", headers=headers).status_code == 403
        form = {"user": "ada", "password": "lovelace"}
        assert client.post("/login", data=form, headers=headers).status_code == 403
    assert "Signed in as" in client.get("/").text


def test_unknown_hosts_are_refused(client: TestClient) -> None:
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/", headers={"Host": "localhost:8000"}).status_code == 200


def test_pages_say_what_the_browser_may_do(client: TestClient) -> None:
    headers = client.get("/").headers
    assert "form-action 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
