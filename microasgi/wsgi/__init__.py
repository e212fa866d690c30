"""Serving WSGI (PEP 3333) applications, such as Flask or Django, under microasgi.

`WSGIApp(wsgi_app)` is an ASGI app; mount it like any other, for example
``app.mount("/legacy", WSGIApp(flask_app))``. See docs/wsgi.md.
"""

from microasgi.wsgi._app import WSGIApp, default_max_threads
from microasgi.wsgi._environ import build_environ
from microasgi.wsgi._input import ClientDisconnected

__all__ = ["ClientDisconnected", "WSGIApp", "build_environ", "default_max_threads"]
