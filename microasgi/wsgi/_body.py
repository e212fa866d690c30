"""The request body of a WSGI request, read in full before the app gets a thread."""

from __future__ import annotations

import io
import tempfile
from typing import BinaryIO

import anyio.to_thread

__all__ = ["ClientDisconnected", "SpooledBody"]


class ClientDisconnected(OSError):
    """The client went away during the response: raised by the `write()` callable.

    An OSError, like the error a socket write would raise under a WSGI server.
    """


class SpooledBody:
    """A request body as it arrives: in memory up to `threshold` bytes, then in a temporary file.

    Chunks are kept as they come. Once more than `threshold` bytes are waiting
    in memory, they go to the file in one write, from a worker thread, so the
    event loop never waits for the disk and the memory held stays below
    `threshold` plus one chunk. `finish()` gives the body as a binary file
    positioned at its start: a BytesIO when it never left memory.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.size = 0
        self._chunks: list[bytes] = []
        self._waiting = 0  # bytes in _chunks
        self._file: BinaryIO | None = None

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._chunks.append(chunk)
        self._waiting += len(chunk)
        if self._waiting > self.threshold:
            await self._spill()

    async def _spill(self) -> None:
        chunks, self._chunks, self._waiting = self._chunks, [], 0
        await anyio.to_thread.run_sync(self._write_to_file, chunks)

    def _write_to_file(self, chunks: list[bytes]) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self._file.writelines(chunks)

    async def finish(self) -> BinaryIO:
        """The whole body, as a file to read from its start."""
        if self._file is None:
            chunks, self._chunks = self._chunks, []
            return io.BytesIO(b"".join(chunks))  # one chunk: joined without a copy
        if self._chunks:
            await self._spill()
        await anyio.to_thread.run_sync(self._file.seek, 0)
        return self._file

    def close(self) -> None:
        """Drop what was received (the temporary file goes away with its handle)."""
        self._chunks = []
        if self._file is not None:
            self._file.close()
