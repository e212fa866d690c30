"""The login example: ``python -m microasgi run examples.login:app``.

docs/middleware-sessions.md walks through it.
"""

from examples.login.app import app

__all__ = ["app"]
