"""Middleware users install: `Middleware(cls, **options)` and the built-in classes.

Each built-in middleware is a plain ASGI callable, `cls(app, **options)`, that
passes the scopes it does not handle straight through.
"""

from microasgi._stack import Middleware
from microasgi.middleware.compression import CompressionMiddleware, GZipMiddleware
from microasgi.middleware.cors import CORSMiddleware
from microasgi.middleware.crossorigin import CrossOriginProtectionMiddleware
from microasgi.middleware.httpsredirect import HTTPSRedirectMiddleware
from microasgi.middleware.proxyheaders import ProxyHeadersMiddleware
from microasgi.middleware.sessions import SessionMiddleware
from microasgi.middleware.trustedhost import TrustedHostMiddleware

__all__ = [
    "CORSMiddleware",
    "CompressionMiddleware",
    "CrossOriginProtectionMiddleware",
    "GZipMiddleware",
    "HTTPSRedirectMiddleware",
    "Middleware",
    "ProxyHeadersMiddleware",
    "SessionMiddleware",
    "TrustedHostMiddleware",
]
