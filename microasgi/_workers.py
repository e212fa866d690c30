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
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn.supervisors.multiprocess as multiprocess

__all__ = ["OwnSocketProcess", "bind_own_socket", "own_sockets"]


def bind_own_socket(host: str, port: int, backlog: int, *, listen: bool = True) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, listening unless told not to.

    OSError if the address is taken by a socket that does not share it.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class OwnSocketProcess(multiprocess.Process):
    """uvicorn's worker process, serving on a socket it binds itself instead of the
    supervisor's (pickled to the worker by name, like uvicorn's own)."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:
        config: Any = self.config
        # Bound, not listening: uvicorn listens once the app has started (its server
        # calls listen()), so no connection waits in this worker's queue meanwhile. A
        # socket that listened from here held connections for the second the chat took
        # to import and start: the worker-kill phase's latency max went from about 0.2
        # to 1.2 s.
        sock = bind_own_socket(config.host, config.port, config.backlog, listen=False)
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
