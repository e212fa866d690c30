"""`wsgi.input`: the request body, pulled from the event loop as the app reads it."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ClientDisconnected", "InputStream"]


class ClientDisconnected(OSError):
    """The client went away: raised by `wsgi.input` reads and by `write()`.

    An OSError, like the error a socket read or write would raise under a WSGI server.
    """


class InputStream:
    """A read-only binary stream over the request body, for the app's worker thread.

    Nothing is read ahead: each call pulls body chunks from the event loop (with
    `read_chunk`, which returns b"" at the end of the body) only until it can
    answer, and keeps the rest of the last chunk for the next call. So an app
    that reads slowly makes the client send slowly. The stream ends where the
    body ends (``wsgi.input_terminated``), so `read()` with no size is safe
    even without a Content-Length.
    """

    def __init__(self, read_chunk: Callable[[], bytes], *, at_end: bool = False) -> None:
        self._read_chunk = read_chunk
        self._buffer = bytearray()
        self._at_end = at_end

    def _fill(self) -> bool:
        """Add the next chunk to the buffer; False if the body has ended."""
        if self._at_end:
            return False
        chunk = self._read_chunk()
        if not chunk:
            self._at_end = True
            return False
        self._buffer += chunk
        return True

    def _take(self, n: int) -> bytes:
        """The first `n` bytes of the buffer (copied once), removed from it."""
        with memoryview(self._buffer) as view:
            data = bytes(view[:n])
        del self._buffer[:n]  # cheap: bytearray drops a prefix without moving the rest
        return data

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to `size` bytes, fewer only at the end of the body; all the rest if size < 0."""
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        if not self._buffer and size:
            # The common loop `read(64 * 1024)`: hand chunks over without copying them.
            if self._at_end:
                return b""
            chunk = self._read_chunk()
            if len(chunk) == size or not chunk:
                self._at_end = not chunk
                return chunk
            if len(chunk) < size:
                after = self._read_chunk()
                if not after:  # the last piece of the body
                    self._at_end = True
                    return chunk
                self._buffer += chunk
                chunk = after
            self._buffer += chunk
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1, /) -> bytes:
        """One line with its b"\\n" (the last may lack it), at most `size` bytes if size >= 0."""
        limit = size if size is not None and size >= 0 else None
        searched = 0
        while True:
            newline = self._buffer.find(b"\n", searched, limit)
            if newline >= 0:
                return self._take(newline + 1)
            if limit is not None and len(self._buffer) >= limit:
                return self._take(limit)
            searched = len(self._buffer)
            if not self._fill():
                return self._take(len(self._buffer))

    def readlines(self, hint: int | None = -1, /) -> list[bytes]:
        """The remaining lines; stops once they add up to `hint` bytes if hint > 0."""
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> InputStream:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readable(self) -> bool:
        return True
