"""SessionMiddleware: `request.session`, a dict kept in a signed cookie."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

from microasgi.datastructures import quote_path
from microasgi.middleware._headers import OWS, TOKEN_CHARS, get_headers, with_vary
from microasgi.middleware._respond import send_text
from microasgi.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "MAX_COOKIE_SIZE",
    "SESSION_KEY",
    "SessionMiddleware",
    "SessionNotSaved",
    "SessionSigner",
]

logger = logging.getLogger("microasgi")

#: The scope key the session dict is kept under (`request.session` reads it).
SESSION_KEY = "session"
#: Browsers drop a cookie whose name and value are longer than this, without a word.
MAX_COOKIE_SIZE = 4096

_PURPOSE = b"microasgi.session.v1"
_CLOCK_SKEW = 60  # seconds a cookie may seem to come from the future (clocks of workers)
# What a cookie attribute value may hold (RFC 6265 section 4.1.1: any CHAR but the
# controls and ";"): printable ASCII. Commas and quotes are left out too, as before.
_ATTRIBUTE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - frozenset(';,"')
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: str | bytes) -> bytes:
    secret_bytes = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not secret_bytes:
        raise ValueError("SessionMiddleware: a secret key cannot be empty")
    # A key of our own per purpose: the same secret used elsewhere signs nothing of ours.
    return hmac.new(secret_bytes, _PURPOSE, hashlib.sha256).digest()


class SessionSigner:
    """Signs and checks session cookie values: ``payload.issued.signature``.

    The payload is the session as compact JSON in URL-safe base64, `issued`
    the time of signing (seconds), the signature an HMAC-SHA256 of both with
    the first key; every key is accepted when checking (key rotation).
    """

    def __init__(self, secrets: Sequence[str | bytes]) -> None:
        if not secrets:
            raise ValueError("SessionMiddleware: give at least one secret key")
        self.keys = [_key(secret) for secret in secrets]

    def sign(self, payload: str, issued: int) -> str:
        message = f"{payload}.{issued}".encode("ascii")
        signature = hmac.digest(self.keys[0], message, "sha256")
        return f"{payload}.{issued}.{_b64encode(signature)}"

    def unsign(self, value: str, max_age: int | None, now: float) -> tuple[str, int, int] | None:
        """(payload, issued, index of the key that signed it), or None if the value is
        not one we signed, or has expired."""
        payload, _, rest = value.partition(".")
        issued_text, _, signature_text = rest.partition(".")
        if not (issued_text.isascii() and issued_text.isdigit()) or len(issued_text) > 12:
            return None
        # Exactly what _b64encode writes for 32 bytes: the decoder would skip other characters.
        if len(signature_text) != 43 or not _BASE64URL.issuperset(signature_text):
            return None
        if not payload.isascii():
            return None
        message = f"{payload}.{issued_text}".encode("ascii")
        for index, key in enumerate(self.keys):
            # Compared as written: the last character has spare bits, and other
            # spellings of the same bytes are not what we signed.
            expected = _b64encode(hmac.digest(key, message, "sha256"))
            if hmac.compare_digest(expected, signature_text):
                issued = int(issued_text)
                if issued > now + _CLOCK_SKEW or (max_age is not None and now - issued > max_age):
                    return None
                return payload, issued, index
        return None


def _cookie_values(headers: list[tuple[bytes, bytes]], name: str) -> list[str]:
    """Every value sent for cookie `name` (browsers send the most specific path first)."""
    values = []
    for header in get_headers(headers, b"cookie"):
        for pair in header.decode("latin-1").split(";"):
            key, sep, value = pair.partition("=")
            if sep and key.strip(OWS) == name:
                values.append(value.strip(OWS).strip('"'))
    return values


class SessionNotSaved(Exception):
    """The session could not be written to its cookie (too large, or not JSON)."""


def _check_prefix(name: str, *, https_only: bool, path: str, domain: str | None) -> None:
    """ValueError when browsers would refuse a cookie of this name and these attributes
    (the ``__Secure-`` and ``__Host-`` prefixes), rather than drop it without a word."""
    prefix = name[: name.find("-") + 1]  # compared without case, as browsers do
    if prefix.lower() in ("__secure-", "__host-") and not https_only:
        raise ValueError(f"a cookie named {prefix}... needs https_only=True (Secure)")
    if prefix.lower() == "__host-" and (path != "/" or domain is not None):
        raise ValueError(f"a cookie named {prefix}... needs path='/' and no domain")


def _dumps(session: dict[str, Any]) -> str:
    return json.dumps(session, separators=(",", ":"), ensure_ascii=False)


class SessionMiddleware:
    """`request.session`: a dict of JSON values kept in a signed cookie.

    The cookie holds the session as JSON with the time it was signed and an
    HMAC-SHA256 signature; the client can read it but not change it, so keep
    secrets out of it. `secret_key` is one key or a list of them: the first
    signs, all are accepted, so a new key can be put first while cookies
    signed with the old one keep working (they are re-signed with the new key
    on the next response). A cookie that is tampered with, truncated,
    expired, not base64, or signed with a key not in the list gives an empty
    session, never an error.

    The cookie is written only when the session changed (compared as JSON,
    so changes inside nested values count), when it was signed with an old
    key, or when more than `refresh_after` seconds have passed since it was
    signed (by default half of `max_age`: active users stay logged in). An
    emptied session clears the cookie. A session that cannot be saved (its
    cookie would be longer than the 4,096 bytes browsers keep, or it holds a
    value JSON cannot encode) is logged and answered with a 500 instead of
    being lost without a word: keep an id in the session and the data on the
    server.
    """

    def __init__(
        self,
        app: ASGIApp,
        secret_key: str | bytes | Sequence[str | bytes],
        session_cookie: str = "session",
        max_age: int | None = 14 * 24 * 60 * 60,
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        domain: str | None = None,
        partitioned: bool = False,
        *,
        refresh_after: int | None = None,
    ) -> None:
        secrets = [secret_key] if isinstance(secret_key, (str, bytes)) else list(secret_key)
        if same_site.lower() not in ("lax", "strict", "none"):
            raise ValueError(f"same_site must be 'lax', 'strict' or 'none', not {same_site!r}")
        if same_site.lower() == "none" and not https_only:
            raise ValueError("same_site='none' needs https_only=True (browsers require Secure)")
        if partitioned and not https_only:
            raise ValueError("partitioned=True needs https_only=True (browsers require Secure)")
        if not session_cookie or not TOKEN_CHARS.issuperset(session_cookie):
            raise ValueError(f"session_cookie {session_cookie!r} is not a valid cookie name")
        if max_age is not None and max_age <= 0:
            raise ValueError(
                f"max_age must be a number of seconds above 0 (or None), not {max_age}"
            )
        for name, value in (("path", path), ("domain", domain or "")):
            if not _ATTRIBUTE_CHARS.issuperset(value):
                raise ValueError(f"{name} {value!r} cannot go in a cookie")
        if not path.startswith("/"):
            raise ValueError(f"path {path!r} must start with '/' (browsers ignore it otherwise)")
        _check_prefix(session_cookie, https_only=https_only, path=path, domain=domain)
        self.app = app
        self.signer = SessionSigner(secrets)
        self.session_cookie = session_cookie
        self.max_age = max_age
        if refresh_after is None and max_age is not None:
            refresh_after = max_age // 2
        self.refresh_after = refresh_after
        # Attributes written as Starlette writes them, so tests that read them still pass.
        flags = f"; httponly; samesite={same_site.lower()}"
        if https_only:
            flags += "; secure"
        if domain is not None:
            flags += f"; domain={domain}"
        if partitioned:
            flags += "; partitioned"
        expiry = "" if max_age is None else f"; Max-Age={max_age}"
        self._flags = f"; path={path}{expiry}{flags}"
        clear = f"{session_cookie}=; path={path}; Max-Age=0; expires=Thu, 01 Jan 1970 00:00:00 GMT"
        self._clear = (b"set-cookie", f"{clear}{flags}".encode("latin-1"))

    def load(self, scope: Scope, now: float) -> tuple[dict[str, Any], str, bool]:
        """(session, its JSON as loaded, whether the cookie must be re-signed) from the request."""
        for value in _cookie_values(scope["headers"], self.session_cookie):
            if len(value) > MAX_COOKIE_SIZE:
                continue
            checked = self.signer.unsign(value, self.max_age, now)
            if checked is None:
                continue
            payload, issued, key_index = checked
            try:
                text = _b64decode(payload).decode("utf-8")
                session = json.loads(text)
            except (binascii.Error, ValueError):
                continue
            if not isinstance(session, dict):
                continue
            stale = self.refresh_after is not None and now - issued > self.refresh_after
            # `text` is what _dumps wrote when signing, so it compares with _dumps later.
            return session, text, stale or key_index > 0
        return {}, "", False

    def cookie_pair(self, session: dict[str, Any]) -> str:
        """``name=value`` of the cookie for `session` (TypeError or ValueError if a value
        is not JSON)."""
        payload = _b64encode(_dumps(session).encode("utf-8"))
        return f"{self.session_cookie}={self.signer.sign(payload, int(time.time()))}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        session, loaded, resign = self.load(scope, time.time())
        scope[SESSION_KEY] = session
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # a WebSocket reads the session, never writes
            return
        failed = False

        async def send_with_session(message: Message) -> None:
            nonlocal failed
            if message["type"] != "http.response.start":
                if not failed:
                    await send(message)
                return
            try:
                header = self.set_cookie_header(scope[SESSION_KEY], loaded, resign)
            except SessionNotSaved as exc:
                failed = True  # the app's response goes nowhere: ours replaces it
                # The path as a URL has it: a decoded one could carry a line break.
                path = quote_path(scope["path"])
                logger.error("Session of %s %s not saved: %s", scope["method"], path, exc)
                await send_text(scope, send, 500, "Internal Server Error")
                return
            headers = list(message.get("headers") or ())
            if header is not None:
                headers.append(header)
            if header is not None or loaded:  # the response was made knowing the session
                headers = with_vary(headers, ("Cookie",))
            await send({**message, "headers": headers})

        await self.app(scope, receive, send_with_session)

    def set_cookie_header(
        self, session: dict[str, Any], loaded: str, resign: bool
    ) -> tuple[bytes, bytes] | None:
        """The Set-Cookie header the response needs, or None if the cookie stays as it is.

        Raises SessionNotSaved when the session cannot be kept in a cookie.
        """
        if not session:
            return self._clear if loaded else None
        try:
            if _dumps(session) == loaded and not resign:
                return None
            pair = self.cookie_pair(session)
        except (TypeError, ValueError, RecursionError) as exc:  # not JSON, circular, too deep
            raise SessionNotSaved(f"a value cannot be stored as JSON ({exc})") from exc
        if len(pair) > MAX_COOKIE_SIZE:
            raise SessionNotSaved(
                f"its cookie would be {len(pair)} bytes, more than the {MAX_COOKIE_SIZE} that "
                "browsers keep; keep an id in the session and the data on the server"
            )
        return (b"set-cookie", f"{pair}{self._flags}".encode("latin-1"))
