"""Content codings for CompressionMiddleware: gzip, brotli, zstd, and choosing one.

gzip comes with Python (zlib). brotli is the ``brotli`` package, imported
the first time a middleware asks for it. zstd is ``compression.zstd``
(Python 3.14+) or the ``backports.zstd`` package.
"""

from __future__ import annotations

import functools
import importlib
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from microasgi._encodings import parse_accept_encoding

__all__ = [
    "CODEC_NAMES",
    "Codec",
    "Encoder",
    "UnavailableCodec",
    "choose_encoding",
    "get_codec",
]

#: Our codings in the order preferred when a client weighs them the same.
CODEC_NAMES = ("zstd", "br", "gzip")

# Longer Accept-Encoding values are parsed each time instead of being cached.
_CACHED_LENGTH = 256


class UnavailableCodec(ValueError):
    """A coding was asked for whose module is not installed."""


class Encoder(Protocol):
    """One response's compression stream."""

    def chunk(self, data: bytes) -> bytes:
        """Compress `data` and flush, so the client can decode everything so far."""

    def finish(self, data: bytes) -> bytes:
        """Compress the last `data` and end the stream."""


class _Gzip:
    __slots__ = ("_stream",)

    def __init__(self, level: int) -> None:
        self._stream = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def chunk(self, data: bytes) -> bytes:
        return self._stream.compress(data) + self._stream.flush(zlib.Z_SYNC_FLUSH)

    def finish(self, data: bytes) -> bytes:
        return self._stream.compress(data) + self._stream.flush()


class _Brotli:
    __slots__ = ("_stream",)

    def __init__(self, module: Any, quality: int) -> None:
        self._stream = module.Compressor(quality=quality)

    def chunk(self, data: bytes) -> bytes:
        out: bytes = self._stream.process(data) + self._stream.flush()
        return out

    def finish(self, data: bytes) -> bytes:
        out: bytes = self._stream.process(data) + self._stream.finish()
        return out


class _Zstd:
    __slots__ = ("_block", "_frame", "_stream")

    def __init__(self, module: Any, level: int) -> None:
        self._stream = module.ZstdCompressor(level=level)
        self._block = module.ZstdCompressor.FLUSH_BLOCK
        self._frame = module.ZstdCompressor.FLUSH_FRAME

    def chunk(self, data: bytes) -> bytes:
        out: bytes = self._stream.compress(data, self._block)
        return out

    def finish(self, data: bytes) -> bytes:
        out: bytes = self._stream.compress(data, self._frame)
        return out


class Codec:
    """A coding at a level: `compress` for a whole body, `encoder()` for a stream."""

    __slots__ = ("compress", "encoder", "name")

    def __init__(
        self, name: str, compress: Callable[[bytes], bytes], encoder: Callable[[], Encoder]
    ) -> None:
        self.name = name
        self.compress = compress
        self.encoder = encoder


def _import_first(*names: str) -> Any:
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def get_codec(name: str, level: int) -> Codec:
    """The codec `name` ("gzip", "br" or "zstd") at `level`; UnavailableCodec if its
    module is not installed, ValueError if it has no such level."""
    codec = _make_codec(name, level)
    try:  # now, rather than as a 500 on every response that would be compressed
        codec.compress(b"")
        codec.encoder().finish(b"")
    except Exception as exc:  # zlib.error, brotli.error, ValueError
        raise ValueError(f"{name} cannot compress at level {level}: {exc}") from None
    return codec


def _make_codec(name: str, level: int) -> Codec:
    if name == "gzip":
        return Codec(
            "gzip",
            lambda data: zlib.compress(data, level, wbits=16 + zlib.MAX_WBITS),
            lambda: _Gzip(level),
        )
    if name == "br":
        brotli = _import_first("brotli")
        if brotli is None:
            raise UnavailableCodec(
                "brotli needs the brotli package: pip install 'microasgi[brotli]'"
            )
        return Codec(
            "br", lambda data: brotli.compress(data, quality=level), lambda: _Brotli(brotli, level)
        )
    if name == "zstd":
        zstd = _import_first("compression.zstd", "backports.zstd")
        if zstd is None:
            raise UnavailableCodec(
                "zstd needs Python 3.14 or the backports.zstd package: "
                "pip install 'microasgi[zstd]'"
            )
        return Codec(
            "zstd", lambda data: zstd.compress(data, level=level), lambda: _Zstd(zstd, level)
        )
    raise ValueError(f"unknown content coding {name!r}; choose among {', '.join(CODEC_NAMES)}")


def _choose(value: str, offered: tuple[str, ...]) -> str | None:
    weights = parse_accept_encoding(value)
    wildcard = weights.get("*", 0.0)
    best, best_weight = None, 0.0
    for name in offered:  # in order of preference: a tie keeps the earlier one
        weight = weights.get(name, wildcard)
        if weight > best_weight:
            best, best_weight = name, weight
    if best is not None and weights.get("identity", -1.0) > best_weight:
        return None  # the client said it would rather have the body as it is
    return best


_choose_cached = functools.lru_cache(maxsize=512)(_choose)


def choose_encoding(value: bytes, offered: tuple[str, ...]) -> str | None:
    """The coding of `offered` (in order of preference) that the client weighs most,
    or None for the body as it is."""
    text = value.decode("latin-1")
    if len(text) > _CACHED_LENGTH:
        return _choose(text, offered)
    return _choose_cached(text, offered)
