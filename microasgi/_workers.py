"""uvicorn workers that listen on sockets of their own: `python -m microasgi run --reuse-port`.

uvicorn's workers share the one listening socket its supervisor binds, and a
connection goes to whichever worker accepts first. In a burst that split is
uneven: in the chat's 2,000-client join storm one of two workers often took
55 to 58 % of the connections and set the p99. With `SO_REUSEPORT` each worker
binds a socket of its own to the same address, and Linux hashes each new
connection to one of them: the split measured 50 to 52 %. The price is that what
waits in a worker's queue when that worker dies or restarts is reset instead
of going to another worker (clients connect again).

This module imports uvicorn: only the CLI imports it, when uvicorn is there.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn.supervisors.multiprocess as multiprocess

__all__ = ["OwnSocketProcess", "bind_own_socket", "own_sockets"]

logger = logging.getLogger("uvicorn.error")

#: uvicorn's exit status for a worker that cannot start: its supervisor stops then,
#: instead of starting the worker again and again.
STARTUP_FAILURE = 3


def bind_own_socket(host: str, port: int, *, share: bool = True) -> socket.socket:
    """A socket bound to (host, port), not listening: with SO_REUSEPORT if `share`.

    The address family is chosen as uvicorn chooses it (IPv6 for a host with a
    colon, else IPv4), so that ``--host localhost`` means 127.0.0.1 either way.
    OSError if the address is taken (by any listening socket, when not `share`).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = socket.getaddrinfo(
        host, port, family=family, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0][4]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if share:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


class OwnSocketProcess(multiprocess.Process):
    """uvicorn's worker process, serving on a socket it binds itself instead of the
    supervisor's (pickled to the worker by name, like uvicorn's own)."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:
        config: Any = self.config
        # Bound, not listening: uvicorn's server calls listen() once the app has
        # started, so no connection waits in the queue of a worker that cannot
        # serve it yet.
        try:
            sock = bind_own_socket(config.host, config.port)
        except OSError as exc:  # taken since the supervisor's check, or gone
            logger.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
            sys.exit(STARTUP_FAILURE)
        super().target([sock])


@contextlib.contextmanager
def own_sockets() -> Iterator[None]:
    """While inside, uvicorn's supervisor starts (and restarts) `OwnSocketProcess` workers.

    uvicorn's `Multiprocess` makes its workers with the module's `Process` class,
    and offers no other way to choose it: the supervisor process runs nothing else.
    """
    original = multiprocess.Process
    multiprocess.Process = OwnSocketProcess  # type: ignore[misc]
    try:
        yield
    finally:
        multiprocess.Process = original  # type: ignore[misc]
