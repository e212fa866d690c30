"""Files: a download page and a static site: ``python -m microasgi run examples.files:app``."""

from examples.files.app import app, create_app

__all__ = ["app", "create_app"]
