"""Write the precompressed siblings StaticFiles serves: ``name.gz`` and ``name.br``.

    python -m examples.files.compress [DIRECTORY]     # default: examples/files/site

Run it after changing a file: a sibling older than its file is ignored as stale.
Only text types are compressed (images and fonts are compressed already), and
only when the sibling is smaller. ``.br`` needs the ``brotli`` package.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

SUFFIXES = {".html", ".css", ".js", ".mjs", ".json", ".svg", ".txt", ".xml", ".map"}


def compress_directory(directory: Path) -> list[Path]:
    """Write the siblings of every text file below `directory`; returns those written."""
    try:
        import brotli
    except ImportError:  # pragma: no cover - brotli is in the dev extra
        brotli = None
    written = []
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or path.suffix not in SUFFIXES:
            continue
        data = path.read_bytes()
        siblings = {".gz": gzip.compress(data, compresslevel=9, mtime=0)}
        if brotli is not None:
            siblings[".br"] = brotli.compress(data, quality=11)
        for suffix, packed in siblings.items():
            sibling = path.with_name(path.name + suffix)
            if len(packed) < len(data):
                sibling.write_bytes(packed)
                written.append(sibling)
            elif sibling.exists():
                sibling.unlink()  # no gain: serve the file itself
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "site"
    for sibling in compress_directory(target):
        print(sibling)
