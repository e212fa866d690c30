"""The error a WSGI app sees when its client goes away."""

from __future__ import annotations

__all__ = ["ClientDisconnected"]


class ClientDisconnected(OSError):
    """The client went away during the response: raised by the `write()` callable.

    An OSError, like the error a socket write would raise under a WSGI server.
    """
