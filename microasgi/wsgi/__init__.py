"""Serving WSGI (PEP 3333) applications, such as Flask or Django, under microasgi.

`WSGIApp(wsgi_app)` is an ASGI app; mount it like any other, for example
``app.mount("/legacy", WSGIApp(flask_app))``. See docs/wsgi.md.
"""

from microasgi.wsgi._app import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
    DEFAULT_SPOOL_THRESHOLD,
    WSGIApp,
    default_max_threads,
)
from microasgi.wsgi._environ import build_environ
from microasgi.wsgi._response import ClientDisconnected

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_SEND_TIMEOUT",
    "DEFAULT_SPOOL_THRESHOLD",
    "ClientDisconnected",
    "WSGIApp",
    "build_environ",
    "default_max_threads",
]
