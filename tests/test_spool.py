"""Spool: a body in memory up to a threshold, then in a temporary file (uploads, WSGI bodies)."""

from __future__ import annotations

import io
import os
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microasgi import _spool
from microasgi._spool import MAX_BUFFERS, MAX_DEFAULT_BATCH, MIN_BATCH, SMALL_CHUNK, Spool


def spool_through(chunks: list[bytes], threshold: int) -> tuple[bytes, bool, Spool]:
    """Write `chunks` to a new spool; what it gives back, whether it went to disk, the spool."""

    async def main() -> tuple[bytes, bool, Spool]:
        spool = Spool(threshold)
        for chunk in chunks:
            await spool.write(chunk)
        file = await spool.finish()
        try:
            assert file.tell() == 0
            return file.read(), not isinstance(file, io.BytesIO), spool
        finally:
            file.close()

    return anyio.run(main)


def test_small_body_stays_in_memory() -> None:
    data, on_disk, spool = spool_through([b"abc", b"def" * 2000], threshold=1024 * 1024)
    assert data == b"abc" + b"def" * 2000
    assert not on_disk
    assert spool.size == len(data)


def test_body_over_threshold_goes_to_a_file() -> None:
    chunks = [os.urandom(65536) for _ in range(40)]  # 2.5 MiB in batches over 1 MiB
    data, on_disk, spool = spool_through(chunks, threshold=1024 * 1024)
    assert data == b"".join(chunks)
    assert on_disk
    assert spool.size == len(data)


def test_threshold_zero_writes_every_chunk() -> None:
    data, on_disk, _ = spool_through([b"a" * 5000, b"b" * 7000], threshold=0)
    assert data == b"a" * 5000 + b"b" * 7000
    assert on_disk


def test_tiny_chunks_are_joined_before_they_are_kept() -> None:
    """A body arriving a byte at a time holds about its size, not an object per byte."""

    async def main() -> None:
        spool = Spool(1024 * 1024)
        for _ in range(100_000):
            await spool.write(b"x")
        assert len(spool._chunks) <= 100_000 // SMALL_CHUNK + 1
        file = await spool.finish()
        assert file.read() == b"x" * 100_000

    anyio.run(main)


def test_a_batch_of_more_buffers_than_one_call_takes() -> None:
    """Over MAX_BUFFERS chunks in one batch: written in several calls, in order."""
    chunks = [bytes([i % 251]) * SMALL_CHUNK for i in range(MAX_BUFFERS * 2 + 7)]
    data, on_disk, _ = spool_through(chunks, threshold=len(chunks) * SMALL_CHUNK - 1)
    assert on_disk
    assert data == b"".join(chunks)


def test_short_writes_are_continued(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.pwritev
    calls: list[int] = []

    def short(fd: int, buffers: list[bytes], offset: int) -> int:
        calls.append(offset)
        return real(fd, [buffers[0][: len(buffers[0]) // 2 + 1]], offset)  # part of one buffer

    monkeypatch.setattr(_spool, "_pwritev", short)
    chunks = [os.urandom(10_000) for _ in range(30)]
    data, on_disk, _ = spool_through(chunks, threshold=100_000)
    assert on_disk
    assert calls
    assert data == b"".join(chunks)


def test_without_pwritev(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where os.pwritev is missing (Windows), the file object writes the batch."""
    monkeypatch.setattr(_spool, "_pwritev", None)
    chunks = [os.urandom(50_000) for _ in range(50)]
    data, on_disk, _ = spool_through(chunks, threshold=200_000)
    assert on_disk
    assert data == b"".join(chunks)


@pytest.mark.parametrize("answer", [None, -1])
def test_without_fallocate(monkeypatch: pytest.MonkeyPatch, answer: int | None) -> None:
    """No fallocate, or one that fails (a file system that cannot reserve): asked once per file."""
    calls: list[tuple[int, int]] = []

    def failing(fd: int, mode: int, offset: int, length: int) -> int:
        calls.append((offset, length))
        return -1

    monkeypatch.setattr(_spool, "_fallocate", lambda: None if answer is None else failing)
    chunks = [os.urandom(65536) for _ in range(64)]
    data, on_disk, spool = spool_through(chunks, threshold=300_000)
    assert on_disk
    assert data == b"".join(chunks)
    assert not spool._reserve
    assert len(calls) == (0 if answer is None else 1)


def test_fallocate_reserves_each_batch_where_it_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _spool._fallocate()
    if real is None:
        pytest.skip("fallocate is Linux's")
    calls: list[tuple[int, int]] = []

    def recording(fd: int, mode: int, offset: int, length: int) -> int:
        calls.append((offset, length))
        return real(fd, mode, offset, length)

    monkeypatch.setattr(_spool, "_fallocate", lambda: recording)
    chunks = [os.urandom(65536) for _ in range(40)]
    data, _, _ = spool_through(chunks, threshold=1024 * 1024)
    assert data == b"".join(chunks)
    assert calls[0] == (0, 17 * 65536)  # the first batch over 1 MiB
    assert [offset for offset, _ in calls[1:]] == [
        sum(length for _, length in calls[:i]) for i in range(1, len(calls))
    ]
    assert sum(length for _, length in calls) == len(data)


def test_close_drops_the_file() -> None:
    async def main() -> Any:
        spool = Spool(10)
        await spool.write(b"x" * 100)
        file = spool._file
        spool.close()
        return file

    file = anyio.run(main)
    assert file is not None
    assert file.closed


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(
        st.one_of(st.integers(0, 64), st.integers(SMALL_CHUNK - 2, SMALL_CHUNK + 2)),
        max_size=60,
    ),
    threshold=st.integers(0, 3 * SMALL_CHUNK),
    pwritev=st.booleans(),
)
def test_any_chunking_gives_the_body_back(sizes: list[int], threshold: int, pwritev: bool) -> None:
    """Whatever the chunk sizes and threshold, finish() gives exactly what was written."""
    chunks = [os.urandom(size) for size in sizes]
    saved = _spool._pwritev
    _spool._pwritev = saved if pwritev else None
    try:
        data, on_disk, spool = spool_through(chunks, threshold)
    finally:
        _spool._pwritev = saved
    assert data == b"".join(chunks)
    assert spool.size == len(data)
    assert on_disk == (len(data) > threshold)


def test_batch_buffer_only_when_data_follows_the_first_write() -> None:
    """The body that just crosses the threshold allocates no batch buffer."""

    async def main() -> None:
        spool = Spool(1000)
        await spool.write(b"x" * 1500)
        assert spool._batch is None
        await spool.write(b"y" * 10)
        assert spool._batch is not None
        assert len(spool._batch) == MIN_BATCH  # a threshold under 64 KiB
        file = await spool.finish()
        assert file.read() == b"x" * 1500 + b"y" * 10

    anyio.run(main)


@pytest.mark.parametrize(
    ("threshold", "batch_size", "expected"),
    [
        (0, None, MIN_BATCH),
        (1024 * 1024, None, 1024 * 1024),
        (64 * 1024 * 1024, None, MAX_DEFAULT_BATCH),  # a large threshold: batches stay 4 MiB
        (1024 * 1024, 0, MIN_BATCH),  # never a batch too small to make progress
        (1024 * 1024, 2 * 1024 * 1024, 2 * 1024 * 1024),
    ],
)
def test_batch_size(threshold: int, batch_size: int | None, expected: int) -> None:
    assert Spool(threshold, batch_size).batch_size == expected
