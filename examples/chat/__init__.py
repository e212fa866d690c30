"""The chat example: ``python -m microasgi run examples.chat:app`` (see docs/chat.md)."""

from examples.chat.app import app

__all__ = ["app"]
