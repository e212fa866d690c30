"""The documentation site's sources stay in step with the code and the pages.

`./scripts/docs` builds the site (mkdocs.yml) strictly, in CI. These checks run with
the tests: every public module (docs/architecture.md, "The public surface") has an API
reference page and every page of docs/ is in the site's navigation.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import microasgi

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"


def public_modules() -> list[str]:
    """The modules "The public surface" of docs/architecture.md names."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## The public surface", 1)[1].split("\n## ", 1)[0]
    section = section.split("Their `__all__`", 1)[0]  # the list ends there
    names = re.findall(r"`(microasgi(?:\.\w+)?|\.\w+)`", section)
    return ["microasgi" + name if name.startswith(".") else name for name in names]


def nav_pages() -> list[str]:
    """The pages of mkdocs.yml's nav, relative to docs/."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:\n", 1)[1]
    return re.findall(r"^\s+- (?:[^:\n]+: )?(\S+\.md)\s*$", nav, re.M)


def test_every_public_module_has_a_reference_page() -> None:
    modules = public_modules()
    assert "microasgi" in modules and "microasgi.routing" in modules
    assert len(modules) >= 14
    pages = {}
    for module in modules:
        importlib.import_module(module)  # a name that exists
        page = REFERENCE / f"{module.rsplit('.', 1)[-1]}.md"
        assert page.exists(), f"{module} has no page {page.relative_to(ROOT)}"
        assert f"\n::: {module}\n" in page.read_text(encoding="utf-8"), page
        pages[page.name] = module
    # ... and no reference page documents anything else.
    assert {p.name for p in REFERENCE.glob("*.md")} - set(pages) == {"index.md"}


def test_every_page_is_in_the_navigation() -> None:
    nav = nav_pages()
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages  # each page once, and no entry without a page


def test_the_package_page_links_every_name_it_exports() -> None:
    """reference/microasgi.md documents App and links each other name of
    `microasgi.__all__` to the public module that defines it."""
    text = (REFERENCE / "microasgi.md").read_text(encoding="utf-8")
    links = dict(re.findall(r"\[`(\w+)`\]\[([\w.]+)\]", text))
    assert "members: [App]" in text
    assert set(links) == set(microasgi.__all__) - {"App"}
    for name, target in links.items():
        module, _, attribute = target.rpartition(".")
        assert attribute == name
        assert name in importlib.import_module(module).__all__, target
        assert getattr(importlib.import_module(module), name) is getattr(microasgi, name)
