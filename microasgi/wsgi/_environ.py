"""From an ASGI HTTP scope to a PEP 3333 environ, and the `wsgi.errors` stream."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from microasgi.types import Scope

__all__ = ["ErrorStream", "build_environ", "split_path"]

errors_logger = logging.getLogger("microasgi.wsgi")

# The environ key of the request headers that are not HTTP_*, and of the common ones
# (computed once; others are computed per request, never cached: their names come
# from the client).
_SPECIAL_KEYS = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
_KNOWN_KEYS: dict[bytes, str] = {
    name: "HTTP_" + name.decode().upper().replace("-", "_")
    for name in (
        b"host",
        b"user-agent",
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"connection",
        b"cookie",
        b"referer",
        b"origin",
        b"authorization",
        b"cache-control",
        b"if-none-match",
        b"if-modified-since",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-requested-with",
        b"transfer-encoding",
        b"upgrade-insecure-requests",
    )
}
_KNOWN_KEYS.update(_SPECIAL_KEYS)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no server should produce
        return text.encode("utf-8", "replace")


def split_path(scope: Scope) -> tuple[str, str]:
    """SCRIPT_NAME and PATH_INFO for `scope`, as PEP 3333 "bytes-as-latin-1" strings.

    SCRIPT_NAME is `root_path` (without a trailing slash). PATH_INFO is `path`
    without `root_path`, cut only at a segment boundary: with root "/app", the
    path "/apple" is not below the root and is passed on whole (the app answers
    404) instead of becoming "le". The bytes are those the client sent, taken
    from `raw_path` when it agrees with `path`, so a percent-escape that is not
    UTF-8 (say "%E9") reaches the app as that byte, as under a WSGI server,
    instead of as U+FFFD.
    """
    path: str = scope["path"]
    root: str = (scope.get("root_path") or "").rstrip("/")
    root_bytes = _utf8(root)
    raw = scope.get("raw_path")
    if raw:
        raw = bytes(raw).partition(b"?")[0]  # a few servers leave the query string on
        if b"%" in raw:
            raw = unquote_to_bytes(raw)
        if raw.decode("utf-8", "replace") == path:
            cut = _below(raw, root_bytes)
            if cut is not None:
                return root_bytes.decode("latin-1"), cut.decode("latin-1")
    path_bytes = _utf8(path)
    cut = _below(path_bytes, root_bytes)
    return root_bytes.decode("latin-1"), (path_bytes if cut is None else cut).decode("latin-1")


def _below(path: bytes, root: bytes) -> bytes | None:
    """`path` without `root` if `root` is a whole-segment prefix of it, else None."""
    if not root:
        return path
    if path.startswith(root) and (len(path) == len(root) or path[len(root)] == 0x2F):
        return path[len(root) :]
    return None


def build_environ(scope: Scope, wsgi_input: Any, errors: Any) -> dict[str, Any]:
    """The WSGI environ for an ASGI HTTP scope, per the ASGI spec's WSGI section.

    Repeated request headers are joined with ", " (Cookie with "; "). Headers
    whose name holds an underscore are left out: CGI names cannot tell
    "X-User" from "X_User", and a proxy that checks one would let the other
    through (nginx and gunicorn drop them too).
    """
    script_name, path_info = split_path(scope)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": bytes(scope.get("query_string", b"")).decode("latin-1"),
        "SERVER_PROTOCOL": "HTTP/" + scope.get("http_version", "1.1"),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme") or "http",
        "wsgi.input": wsgi_input,
        "wsgi.input_terminated": True,
        "wsgi.errors": errors,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "asgi.scope": scope,
    }
    known = _KNOWN_KEYS
    for name, value in scope.get("headers", ()):
        key = known.get(name)
        if key is None:
            if b"_" in name:
                continue
            text = name.decode("latin-1")
            key = _SPECIAL_KEYS.get(name) or "HTTP_" + text.upper().replace("-", "_")
        text_value = value.decode("latin-1")
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ", "
            text_value = environ[key] + separator + text_value
        environ[key] = text_value

    server = scope.get("server")
    if server and server[1] is not None:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = str(server[0]), str(server[1])
    else:  # no server, or a Unix socket ([path, None]): from the Host header
        default_port = "443" if environ["wsgi.url_scheme"] == "https" else "80"
        host = environ.get("HTTP_HOST", "")
        name, colon, port = host.rpartition(":")
        if not (colon and port.isdigit()):  # no port ("[::1]" has colons but no port)
            name, port = host, ""
        environ["SERVER_NAME"] = name or "localhost"
        environ["SERVER_PORT"] = port or default_port
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
        if client[1] is not None:
            environ["REMOTE_PORT"] = str(client[1])
    return environ


class ErrorStream:
    """`wsgi.errors`: what the app writes is logged on ``microasgi.wsgi`` at ERROR.

    Text is held until it ends a line (or `flush()`), then logged as one
    record per write, so a traceback written in one go stays one record.
    """

    def __init__(self, logger: logging.Logger = errors_logger) -> None:
        self._logger = logger
        self._pending = ""

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors takes str, not {type(text).__name__}")
        pending = self._pending + text
        head, newline, tail = pending.rpartition("\n")
        if newline:
            self._logger.error("%s", head)
        self._pending = tail if newline else pending
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, ""
            self._logger.error("%s", pending)
