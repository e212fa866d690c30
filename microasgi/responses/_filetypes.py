"""What a served file is called and typed: its media type, and Content-Disposition."""

from __future__ import annotations

import mimetypes
import os
import re
import unicodedata
from urllib.parse import quote

__all__ = ["MEDIA_TYPES", "content_disposition", "guess_media_type"]

#: The web's core types, looked up by suffix before the `mimetypes` module, whose
#: answers depend on the machine (on Windows the registry has been known to map
#: .js to text/plain, which browsers refuse to run as a module).
MEDIA_TYPES: dict[str, str] = {
    # documents, scripts and data
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".cjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".jsonld": "application/ld+json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".xml": "application/xml",
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".ics": "text/calendar",
    ".vtt": "text/vtt",
    ".pdf": "application/pdf",
    # images
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".apng": "image/apng",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".jxl": "image/jxl",
    ".ico": "image/vnd.microsoft.icon",
    ".bmp": "image/bmp",
    # fonts
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    # audio and video
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    # archives: by their own type, never "tar with a gzip encoding"
    ".zip": "application/zip",
    ".gz": "application/gzip",
    ".tgz": "application/gzip",
    ".bz2": "application/x-bzip2",
    ".xz": "application/x-xz",
    ".zst": "application/zstd",
    ".br": "application/octet-stream",
    ".tar": "application/x-tar",
}

_OCTET_STREAM = "application/octet-stream"


def guess_media_type(name: str) -> str:
    """The media type for a file name: our table, then `mimetypes`, else octet-stream."""
    suffix = os.path.splitext(name)[1].lower()
    media_type = MEDIA_TYPES.get(suffix)
    if media_type is not None:
        return media_type
    guessed, encoding = mimetypes.guess_type(os.path.basename(name), strict=False)
    if guessed is None or encoding is not None:
        return _OCTET_STREAM
    return guessed


# -- Content-Disposition (RFC 6266) ---------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: attr-char of RFC 8187, besides letters and digits (which quote() keeps anyway)
_ATTR_CHAR_SAFE = "!#$&+-.^_`|~"


def _ascii_fallback(name: str) -> str:
    """`name` in printable ASCII: accents dropped, anything else (and ``"``, ``\\``, ``%``) as _."""
    decomposed = unicodedata.normalize("NFKD", name)
    chars = []
    for char in decomposed:
        if unicodedata.combining(char):
            continue
        chars.append(char if " " <= char <= "~" and char not in '"\\%' else "_")
    return "".join(chars)


def content_disposition(filename: str, disposition_type: str = "attachment") -> str:
    """A Content-Disposition value for `filename` (RFC 6266).

    Control characters (CR and LF among them) are removed. The ``filename``
    parameter carries an ASCII form; when that differs from the name, the
    exact name follows as ``filename*=UTF-8''...`` (percent-encoded), which
    browsers prefer.
    """
    if not _TOKEN.fullmatch(disposition_type):
        raise ValueError(f"invalid disposition type {disposition_type!r}")
    name = _CONTROL.sub("", filename)
    fallback = _ascii_fallback(name)
    value = f'{disposition_type}; filename="{fallback}"'
    if fallback != name:
        value += "; filename*=UTF-8''" + quote(name.encode("utf-8"), safe=_ATTR_CHAR_SAFE)
    return value
