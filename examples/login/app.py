"""Log in and out with a session cookie, behind the middleware a public site wants.

    MICROASGI_SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') \\
        python -m microasgi run examples.login:app

Open http://127.0.0.1:8000/ and sign in as ``ada`` with the password ``lovelace``.

- SessionMiddleware keeps who is signed in, in a signed cookie (`request.session`).
- CrossOriginProtectionMiddleware refuses form posts from other sites (403): no
  CSRF tokens in the forms.
- TrustedHostMiddleware answers only for the host names in MICROASGI_ALLOWED_HOSTS
  (by default 127.0.0.1 and localhost).

Without MICROASGI_SECRET_KEY a random key is made at startup: sessions then end
when the server restarts and do not work across several workers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from html import escape

import anyio.to_thread

from microasgi import App, HTMLResponse, RedirectResponse, Request, Response
from microasgi.middleware import (
    CrossOriginProtectionMiddleware,
    Middleware,
    SessionMiddleware,
    TrustedHostMiddleware,
)

__all__ = ["app", "check_password", "hash_password"]

logger = logging.getLogger("microasgi.login")

ITERATIONS = 100_000
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``salt$hash``: PBKDF2-HMAC-SHA256 from the standard library."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)
    return f"{salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    salt, _, expected = stored.partition("$")
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), ITERATIONS)
    return hmac.compare_digest(digest.hex(), expected)


# A real app keeps its users in a database; the example has one.
USERS = {"ada": hash_password("lovelace")}
# Checked when the name is unknown too, so the answer takes as long either way.
_NOBODY = hash_password(secrets.token_urlsafe())


def _secret_key() -> str:
    key = os.environ.get("MICROASGI_SECRET_KEY")
    if key:
        return key
    logger.warning("MICROASGI_SECRET_KEY is not set: sessions end when the server restarts")
    return secrets.token_urlsafe(32)


def _allowed_hosts() -> list[str]:
    hosts = os.environ.get("MICROASGI_ALLOWED_HOSTS", "127.0.0.1,localhost")
    return [host.strip() for host in hosts.split(",") if host.strip()]


app = App(
    middleware=[
        Middleware(TrustedHostMiddleware, allowed_hosts=_allowed_hosts()),
        Middleware(CrossOriginProtectionMiddleware),
        Middleware(SessionMiddleware, secret_key=_secret_key(), max_age=8 * 3600),
    ]
)


def page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body {{ font: 16px system-ui, sans-serif; max-width: 28rem; margin: 3rem auto; }}
label {{ display: block; margin: .5rem 0; }} .error {{ color: #b00020; }}</style></head>
<body><h1>{escape(title)}</h1>{body}</body></html>"""
    return HTMLResponse(html, status_code, headers=SECURITY_HEADERS)


def login_form(error: str = "", user: str = "", status_code: int = 200) -> HTMLResponse:
    message = f'<p class="error" id="error">{escape(error)}</p>' if error else ""
    return page(
        "Sign in",
        f"""{message}<form method="post" action="/login">
<label>Name <input name="user" id="user" value="{escape(user)}" autocomplete="username"></label>
<label>Password <input name="password" id="password" type="password"
  autocomplete="current-password"></label>
<button id="sign-in">Sign in</button></form>""",
        status_code,
    )


LOGOUT = '<form method="post" action="/logout"><button id="sign-out">Sign out</button></form>'


@app.get("/")
async def index(request: Request) -> Response:
    user = request.session.get("user")
    if user is None:
        return login_form()
    return page(
        "Welcome",
        f'<p id="who">Signed in as <b>{escape(user)}</b>.</p>'
        f'<p><a href="/account" id="account">Your account</a></p>{LOGOUT}',
    )


@app.post("/login")
async def login(request: Request) -> Response:
    form = await request.form(max_fields=10, max_part_size=4096)
    user, password = str(form.get("user", "")).strip(), str(form.get("password", ""))
    stored = USERS.get(user, _NOBODY)
    valid = await anyio.to_thread.run_sync(check_password, password, stored)
    if not valid or user not in USERS:
        return login_form("Wrong name or password.", user, status_code=400)
    request.session.clear()  # nothing of an earlier visitor carries over
    request.session.update(user=user, since=int(time.time()), visits=0)
    return RedirectResponse("/", status_code=303)


@app.post("/logout")
async def logout(request: Request) -> Response:
    request.session.clear()  # the cookie is deleted with the response
    return RedirectResponse("/", status_code=303)


@app.get("/account")
async def account(request: Request) -> Response:
    session = request.session
    if "user" not in session:
        return RedirectResponse("/", status_code=303)
    session["visits"] = session.get("visits", 0) + 1
    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(session.get("since", 0)))
    return page(
        "Your account",
        f'<p id="who">Signed in as <b>{escape(session["user"])}</b> since {since}.</p>'
        f'<p id="visits">Account page visits this session: {session["visits"]}</p>'
        f'<p><a href="/">Home</a></p>{LOGOUT}',
    )
