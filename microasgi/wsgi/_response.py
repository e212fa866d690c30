"""What a WSGI app gives `start_response` and `write()`, checked and turned into ASGI.

The status line and headers are validated as PEP 3333 and RFC 9110 ask (a
header value with CR, LF or NUL is the app's error, not a response to send);
`ClientDisconnected` is what `write()` raises once the client is gone.
"""

from __future__ import annotations

import re

__all__ = [
    "NO_CONTENT",
    "ClientDisconnected",
    "content_length",
    "encode_headers",
    "status_code",
]

#: Statuses that have no body (with 1xx and HEAD responses).
NO_CONTENT = frozenset({204, 304})
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs but HTAB: not allowed in a field value


class ClientDisconnected(OSError):
    """The client went away during the response: raised by the `write()` callable.

    An OSError, like the error a socket write would raise under a WSGI server.
    """


def content_length(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()):  # absent, or not a number
        return None
    return int(value)


def status_code(status: str) -> int:
    """The code of a PEP 3333 status line such as "200 OK"."""
    if (
        not isinstance(status, str)
        or len(status) < 3
        or not (status[:3].isascii() and status[:3].isdigit())
        or (len(status) > 3 and status[3] != " ")
        or int(status[:3]) < 100
    ):
        raise ValueError(f"invalid WSGI status {status!r}: expected e.g. '200 OK'")
    return int(status[:3])


def encode_headers(headers: list[tuple[str, str]]) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """ASGI headers (lowercase names, latin-1) and the Content-Length if one is given.

    Values lose the optional whitespace around them (RFC 9110 OWS: Django writes
    Set-Cookie values with a leading space, which h11 refuses to send). A value
    with CR, LF or NUL (header injection) or another control character is an
    error of the app.
    """
    raw: list[tuple[bytes, bytes]] = []
    length: int | None = None
    for name, value in headers:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"WSGI header names and values are str: {(name, value)!r}")
        if not TOKEN.fullmatch(name):
            raise ValueError(f"invalid WSGI header name {name!r}")
        value = value.strip(" \t")
        bad = CONTROL.search(value)
        if bad is not None:
            what = "CR, LF or NUL" if bad.group() in "\r\n\x00" else "a control character"
            raise ValueError(f"the WSGI header {name!r} has {what} in its value: {value!r}")
        try:
            encoded = value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(
                f"the WSGI header {name!r} has a value that is not latin-1: {value!r}"
            ) from None
        lower = name.lower()
        raw.append((lower.encode("latin-1"), encoded))
        if lower == "content-length" and length is None:
            length = content_length(value)
    return raw, length
