"""Server-sent events (a clock, a message feed): ``python -m microasgi run examples.sse:app``."""

from examples.sse.app import Feed, app, create_app

__all__ = ["Feed", "app", "create_app"]
