"""Every Python example in the docs runs, so the docs cannot rot.

Each ```python fence in README.md and docs/*.md is a test. By default it runs
on its own, in a fresh namespace, as a reader would paste it (most examples
end with TestClient assertions, so running them checks what they claim). An
HTML comment on the line before a fence says otherwise:

- `<!-- docs-test: continue -->` runs it in the namespace of the file's
  previous fence (an example told in several steps);
- `<!-- docs-test: excerpt PATH -->` checks that the fence is an excerpt of
  PATH (every line, in order), for code quoted from the examples;
- `<!-- docs-test: redis -->` runs it against a redis-server of the test's
  own: the `redis://127.0.0.1:6379/0` in it is replaced by that server's URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.services import RedisServer

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(\w+)\s*(.*?)\s*-->\s*\Z")
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class Example:
    path: Path
    line: int
    code: str
    directive: str  # "", "continue", "excerpt" or "redis"
    argument: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def collect() -> list[Example]:
    examples = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            directive = DIRECTIVE.search(before)
            examples.append(
                Example(
                    path=path,
                    line=text.count("\n", 0, match.start()) + 1,
                    code=match.group(1),
                    directive=directive.group(1) if directive else "",
                    argument=directive.group(2) if directive else "",
                )
            )
    return examples


EXAMPLES = collect()
# The namespace each file's last run fence left, for `continue`.
_namespaces: dict[Path, dict[str, Any]] = {}


def run(example: Example, code: str) -> None:
    if example.directive == "continue":
        namespace = _namespaces.get(example.path)
        assert namespace is not None, f"{example.id}: 'continue' needs an earlier fence run first"
    else:
        namespace = {"__name__": f"docs_example_{example.line}"}
    _namespaces[example.path] = namespace
    exec(compile(code, example.id, "exec"), namespace)


def test_every_directive_is_known() -> None:
    known = {"", "continue", "excerpt", "redis"}
    assert {e.id: e.directive for e in EXAMPLES if e.directive not in known} == {}
    assert len(EXAMPLES) > 50  # the collector found the docs


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_docs_example(example: Example, request: pytest.FixtureRequest) -> None:
    if example.directive == "excerpt":
        source = (ROOT / example.argument).read_text(encoding="utf-8")
        position = 0
        for line in example.code.splitlines():
            if not line.strip():
                continue
            found = source.find(line, position)
            assert found >= 0, f"{example.id}: not in {example.argument} (in order): {line!r}"
            position = found + len(line)
        return
    code = example.code
    if example.directive == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        assert DEFAULT_REDIS in code, (
            f"{example.id}: no {DEFAULT_REDIS} to point at the test's server"
        )
        code = code.replace(DEFAULT_REDIS, server.url)
    run(example, code)
