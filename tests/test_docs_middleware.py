"""The Python examples of the middleware pages in docs/ run, and their asserts hold.

Blocks fenced as ```python are whole programs; excerpts of larger files are fenced
as ```py and are not run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("middleware*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def examples() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for index, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8"))):
            found.append((f"{page.name}#{index + 1}", match.group(1)))
    return found


def test_every_middleware_page_has_examples() -> None:
    pages = {name.split("#")[0] for name, _ in examples()}
    assert pages == {page.name for page in PAGES}


@pytest.mark.parametrize(("name", "code"), examples(), ids=[name for name, _ in examples()])
def test_example_runs(name: str, code: str) -> None:
    exec(compile(code, name, "exec"), {"__name__": f"docs_example_{name}"})
