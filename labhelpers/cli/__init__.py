"""The `labhelpers` command: a thin layer, one library call per command.

Commands live by subject: `database` (``db ...``), `course` (``build``, ``run``, ``explain``, ``check``),
`data` (``seed``, ``bench``, ``bench-load``); `_base` holds the group, its one-line errors and ``--dsn``.
"""

from __future__ import annotations

from . import course, data, database  # noqa: F401 - importing them registers their commands
from ._base import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="labhelpers")
