"""The files example with the test client: the download page, names that are not
downloads, the static site, and the script that writes the precompressed siblings."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import brotli
import pytest

from examples.files.app import HERE, create_app, list_downloads
from examples.files.compress import compress_directory
from tests.helpers import MakeClient


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / ".hidden").write_text("secret")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    return tmp_path


def test_listing_has_regular_files_only(downloads: Path) -> None:
    assert list(list_downloads(downloads)) == ["a.txt"]


@pytest.mark.parametrize("name", [".hidden", "sub", "link.txt", "..%2Fapp.py", "nope"])
def test_only_listed_names_download(downloads: Path, make_client: MakeClient, name: str) -> None:
    client = make_client(create_app(downloads))
    assert client.get(f"/downloads/{name}").status_code == 404
    response = client.get("/downloads/a.txt")
    assert (response.status_code, response.text) == (200, "a")
    inline = client.get("/downloads/a.txt", params={"inline": "1"})
    assert inline.headers["content-disposition"] == 'inline; filename="a.txt"'


def test_the_page_and_the_site(make_client: MakeClient) -> None:
    client = make_client(create_app())
    page = client.get("/")
    assert page.headers["content-security-policy"] == "default-src 'self'"
    assert "measurements.csv" in page.text
    site = client.get("/site/", headers={"accept-encoding": "br"})
    assert site.headers["content-encoding"] == "br"
    assert site.text == (HERE / "site" / "index.html").read_text()


def test_every_sibling_in_the_example_is_fresh() -> None:
    for sibling in (HERE / "site").rglob("*"):
        if sibling.suffix in (".gz", ".br"):
            original = sibling.with_suffix("")
            unpack = gzip.decompress if sibling.suffix == ".gz" else brotli.decompress
            assert unpack(sibling.read_bytes()) == original.read_bytes(), sibling


def test_compress_directory(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_text("console.log('x');\n" * 50)
    (tmp_path / "tiny.css").write_text("a{}")
    (tmp_path / "tiny.css.gz").write_bytes(b"stale")
    (tmp_path / "photo.png").write_bytes(os.urandom(1000))
    written = compress_directory(tmp_path)
    assert sorted(p.name for p in written) == ["app.js.br", "app.js.gz"]
    assert (
        gzip.decompress((tmp_path / "app.js.gz").read_bytes()) == (tmp_path / "app.js").read_bytes()
    )
    assert not (tmp_path / "tiny.css.gz").exists()  # no gain: the stale sibling goes
    assert not (tmp_path / "photo.png.gz").exists()
