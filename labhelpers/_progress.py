"""Progress reporting: the one callback type, its rich display, and a thread-safe tally behind it.

Library code reports progress through a `ProgressFn` it is given (never by printing); whoever shows
it chooses how: the CLI and notebooks use `rich_progress`, tests pass a function of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["ProgressFn", "Tally", "rich_progress"]

ProgressFn = Callable[[str, int, int], None]
"""``on_progress(task, done, total)``: ``task`` names what advances (a table, a phase such as ``vacuum``),
``done`` of ``total`` units are finished. May be called from worker threads, never concurrently."""


@contextmanager
def rich_progress(*, transient: bool = False) -> Iterator[ProgressFn]:
    """A rich progress display with one bar per task; yields the `ProgressFn` that drives it.

    Works in a terminal and in Jupyter. A bar appears at a task's first report. Example::

        with rich_progress() as bar:
            datagen.seed(dsn, scale="large", on_progress=bar)

    :param transient: remove the bars when the block ends (else they stay on screen).
    """
    # Imported here: rich draws, and only the callers that show progress need it.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("{task.description:<13}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), transient=transient)
    tasks: dict[str, Any] = {}
    lock = threading.Lock()

    def update(task: str, done: int, total: int) -> None:
        with lock:
            if task not in tasks:
                tasks[task] = progress.add_task(task, total=total)
            progress.update(tasks[task], completed=done, total=total)

    with progress:
        yield update


class Tally:
    """Running totals per task, each increase reported to a `ProgressFn` (thread-safe).

    Example: ``tally = Tally(on_progress, {"vacuum": len(tables)})``, then ``tally.add("vacuum")`` as
    each table is done. ``on_progress`` may be None: the tally then only counts.
    """

    def __init__(self, on_progress: ProgressFn | None, totals: Mapping[str, int],
                 done: Mapping[str, int] | None = None) -> None:
        """Count towards ``totals`` (units per task), from ``done`` (units already done; default 0)."""
        self._on_progress = on_progress
        self._totals = dict(totals)
        self._done = {task: (done or {}).get(task, 0) for task in totals}
        self._lock = threading.Lock()

    def show(self) -> None:
        """Report every task as it stands (e.g. what a resumed run has done already)."""
        with self._lock:
            for task in self._totals:
                self._report(task)

    def add(self, task: str, units: int = 1) -> None:
        """Count ``units`` more of ``task`` done, and report it."""
        with self._lock:
            self._done[task] += units
            self._report(task)

    def _report(self, task: str) -> None:
        if self._on_progress is not None:
            self._on_progress(task, self._done[task], self._totals[task])
