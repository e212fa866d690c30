"""Middleware users install: `Middleware(cls, **options)` and the built-in classes."""

from microasgi._stack import Middleware

__all__ = ["Middleware"]
