"""The Response family, and what an endpoint's return value becomes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from email.utils import format_datetime
from http.cookies import SimpleCookie
from typing import Any, Literal
from urllib.parse import quote

from microasgi._concurrency import describe
from microasgi._json import encode_json
from microasgi.background import BackgroundTask
from microasgi.datastructures import MutableHeaders, _check_header
from microasgi.types import Receive, Scope, Send

logger = logging.getLogger("microasgi")

_CONTENT_TYPES: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def log_gone(scope: Scope, exc: OSError) -> None:
    method, path = scope.get("method"), scope.get("path")
    logger.debug("Client went away during the response (%s %s): %s", method, path, exc)


def _content_type_header(media_type: str | None, charset: str) -> tuple[bytes, bytes] | None:
    """The Content-Type header for a media type: text types get the charset.

    Checked and encoded once per media type, not per response.
    """
    if media_type is None:
        return None
    header = _CONTENT_TYPES.get((media_type, charset))
    if header is None:
        _check_header(b"content-type", media_type)
        value = media_type
        if value.startswith("text/") and "charset=" not in value.lower():
            value = f"{value}; charset={charset}"
        header = (b"content-type", value.encode("latin-1"))
        if len(_CONTENT_TYPES) < 1024:  # media types made up per request stay uncached
            _CONTENT_TYPES[(media_type, charset)] = header
    return header


def _has_no_body(status_code: int) -> bool:
    return status_code < 200 or status_code in (204, 304)


class Response:
    """Bytes or text with a status and headers.

    `content` may be bytes, str (encoded with `charset`) or None. Text media
    types get ``; charset=utf-8`` unless they name one.
    """

    media_type: str | None = None
    charset = "utf-8"
    _headers_view: MutableHeaders | None = None

    def __init__(
        self,
        content: Any = b"",
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self.status_code = status_code
        if media_type is not None:
            self._set_media_type(media_type)
        self.background = background
        self.raw_headers = self._init_headers(headers, self._take(content))

    def _take(self, content: Any) -> int | None:
        """Keep the content; returns the Content-Length (None: not known in advance)."""
        self.body = b"" if _has_no_body(self.status_code) else self.render(content)
        return len(self.body)

    def _set_media_type(self, media_type: str) -> None:
        self.media_type = media_type
        _, found, rest = media_type.lower().partition("charset=")
        if found:  # text is encoded in the charset the media type names
            self.charset = rest.split(";")[0].strip(' "')

    def render(self, content: Any) -> bytes:
        """The body for `content`: bytes as they are, str encoded with `charset`, None empty."""
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode(self.charset)
        if content is None:
            return b""
        if isinstance(content, (bytearray, memoryview)):
            return bytes(content)
        raise TypeError(
            f"{type(self).__name__} content must be bytes or str, not {type(content).__name__}"
        )

    def _init_headers(
        self, headers: Mapping[str, str] | None, content_length: int | None
    ) -> list[tuple[bytes, bytes]]:
        status = self.status_code
        no_body = status < 200 or status == 204 or status == 304
        content_type = _content_type_header(self.media_type, self.charset)
        raw: list[tuple[bytes, bytes]] = []
        names: set[bytes] = set()
        if headers:  # given headers win over the two we add ourselves
            for key, value in headers.items():
                name = key.lower().encode("latin-1")
                _check_header(name, value)
                raw.append((name, value.encode("latin-1")))
                names.add(name)
        if no_body:
            return raw
        if content_length is not None and b"content-length" not in names:
            raw.append((b"content-length", b"%d" % content_length))
        if content_type is not None and b"content-type" not in names:
            raw.append(content_type)
        return raw

    @property
    def headers(self) -> MutableHeaders:
        """The response headers, editable (writes go to `raw_headers`)."""
        view = self._headers_view
        if view is None or view.raw is not self.raw_headers:
            view = self._headers_view = MutableHeaders(raw=self.raw_headers)
        return view

    def set_cookie(
        self,
        key: str,
        value: str = "",
        max_age: int | None = None,
        expires: datetime | str | int | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
    ) -> None:
        """Add a Set-Cookie header. `expires` takes a datetime, an HTTP date or seconds."""
        cookie: SimpleCookie = SimpleCookie()
        cookie[key] = value  # raises http.cookies.CookieError for an illegal name
        morsel = cookie[key]
        if max_age is not None:
            morsel["max-age"] = max_age
        if expires is not None:
            if isinstance(expires, datetime):
                morsel["expires"] = format_datetime(expires, usegmt=True)
            else:
                morsel["expires"] = expires
        if path is not None:
            morsel["path"] = path
        if domain is not None:
            morsel["domain"] = domain
        if secure:
            morsel["secure"] = True
        if httponly:
            morsel["httponly"] = True
        if samesite is not None:
            if samesite.lower() not in ("lax", "strict", "none"):
                raise ValueError("samesite must be 'lax', 'strict' or 'none'")
            morsel["samesite"] = samesite
        text = morsel.OutputString()
        _check_header(b"set-cookie", text)
        self.raw_headers.append((b"set-cookie", text.encode("latin-1")))

    def delete_cookie(
        self,
        key: str,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
    ) -> None:
        """Tell the client to drop a cookie (same path and domain as when it was set)."""
        self.set_cookie(
            key,
            max_age=0,
            expires="Thu, 01 Jan 1970 00:00:00 GMT",
            path=path,
            domain=domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            body = b"" if scope.get("method") == "HEAD" else self.body
            await send({"type": "http.response.body", "body": body})
        except OSError as exc:  # ASGI 2.4: the client is gone; nothing more to do for it
            log_gone(scope, exc)
            return
        if self.background is not None:
            await self.background()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status_code}>"


class HTMLResponse(Response):
    """An HTML page: `text/html; charset=utf-8`."""

    media_type = "text/html"


class PlainTextResponse(Response):
    """Text: `text/plain; charset=utf-8`."""

    media_type = "text/plain"


class JSONResponse(Response):
    """`content` serialised as compact UTF-8 JSON (NaN and infinities are refused)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Compact UTF-8 JSON; NaN and the infinities are refused (ValueError)."""
        return encode_json(content)


JSON_CONTENT_TYPE = (b"content-type", b"application/json")
TEXT_CONTENT_TYPE = (b"content-type", b"text/plain; charset=utf-8")


class RedirectResponse(Response):
    """Redirect to `url` (307 keeps the method and body; use 303 after a form post)."""

    def __init__(
        self,
        url: Any,
        status_code: int = 307,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(b"", status_code=status_code, headers=headers, background=background)
        location = quote(str(url), safe=":/%#?=@[]!$&'()*+,;~")
        self.headers["location"] = location


def _ready(cls: type[Response], body: bytes, content_type: tuple[bytes, bytes]) -> Response:
    """`cls(content)` for a 200 with no headers of its own, already rendered.

    PERF: what `__init__` does for that case, without its calls (about 1 µs less
    per dict/list/str an endpoint returns through function middleware);
    test_responses checks it builds the very same response as the constructor.
    """
    response = cls.__new__(cls)
    response.status_code = 200
    response.background = None
    response.body = body
    response.raw_headers = [(b"content-length", b"%d" % len(body)), content_type]
    return response


def to_response(result: Any, endpoint: Any) -> Response:
    """Turn what an endpoint returned into a Response, as the API promises.

    A Response as is; dict/list -> JSON; str -> text/plain; bytes ->
    application/octet-stream; None -> 204. Anything else is a TypeError
    naming `endpoint`.
    """
    kind = type(result)
    if kind is dict or kind is list:
        return _ready(JSONResponse, encode_json(result), JSON_CONTENT_TYPE)
    if kind is str:
        return _ready(PlainTextResponse, result.encode("utf-8"), TEXT_CONTENT_TYPE)
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status_code=204)
    if kind is bytes:
        return Response(result, media_type="application/octet-stream")
    if isinstance(result, (dict, list)):
        return JSONResponse(result)
    if isinstance(result, str):
        return PlainTextResponse(result)
    if isinstance(result, bytes):
        return Response(result, media_type="application/octet-stream")
    raise TypeError(
        f"endpoint {describe(endpoint)} returned {kind.__name__}; "
        "return a Response, dict, list, str, bytes or None"
    )
