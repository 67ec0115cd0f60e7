"""Errors a user can cause: the CLI shows them as one line, without a traceback."""

from __future__ import annotations

__all__ = ["LabError"]


class LabError(Exception):
    """A user-facing error: one line, no traceback."""
