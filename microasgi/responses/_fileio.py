"""Opening and reading files for a response: blocking calls, made in worker threads."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

__all__ = [
    "NotAFileError",
    "OpenedFile",
    "chunk_sizes",
    "open_file",
    "read_at",
    "read_chunks",
    "stat_file",
]

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    # A FIFO would block open() until a writer comes; it is refused after fstat.
    | getattr(os, "O_NONBLOCK", 0)
)


class NotAFileError(OSError):
    """The path names something other than a regular file (a directory, a FIFO, ...)."""


class OpenedFile:
    """A file opened for a response: its descriptor and fstat, or all of it in `data`."""

    __slots__ = ("data", "fd", "path", "stat")

    def __init__(
        self, path: str, fd: int | None, stat_result: os.stat_result, data: bytes | None = None
    ) -> None:
        self.path = path
        self.fd = fd
        self.stat = stat_result
        self.data = data

    def close(self) -> None:
        """Close the descriptor (a local close does not block: no thread needed)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


if hasattr(os, "pread"):

    def _pread(fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

else:  # pragma: no cover - Windows

    def _pread(fd: int, size: int, offset: int) -> bytes:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, size)


def read_at(fd: int, offset: int, size: int) -> bytes:
    """`size` bytes from `offset`, fewer only at the end of the file (blocking)."""
    data = _pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = _pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def read_chunks(fd: int, offset: int, sizes: list[int]) -> list[bytes]:
    """Consecutive chunks of the given sizes from `offset` (blocking); stops at the end."""
    chunks = []
    for size in sizes:
        chunk = read_at(fd, offset, size)
        chunks.append(chunk)
        if len(chunk) < size:
            break
        offset += size
    return chunks


def chunk_sizes(start: int, end: int, chunk_size: int, count: int) -> list[int]:
    sizes: list[int] = []
    while start < end and len(sizes) < count:
        size = min(chunk_size, end - start)
        sizes.append(size)
        start += size
    return sizes


def open_file(
    path: str, prefetch: int = 0, verify: Callable[[int, os.stat_result], None] | None = None
) -> OpenedFile:
    """Open `path` and fstat it (blocking: run it in a worker thread).

    A file of at most `prefetch` bytes is read whole and closed at once, so a
    small file costs one trip to a thread. Raises NotAFileError for anything
    but a regular file, and the OSError of open() otherwise. `verify` is
    called with the descriptor and its fstat before anything is read; what
    it raises closes the file and is raised.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAFileError(f"{path} is not a regular file")
        if verify is not None:
            verify(fd, st)
        if st.st_size <= prefetch:
            data = read_at(fd, 0, st.st_size)
            os.close(fd)
            return OpenedFile(path, None, st, data)
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(path, fd, st)


def stat_file(path: str) -> os.stat_result:
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotAFileError(f"{path} is not a regular file")
    return st
