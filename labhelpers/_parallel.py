"""Running callables in threads, stopping them all at the first failure: the one parallel runner.

Threads, not processes: the work is in PostgreSQL (each task runs SQL on a connection of its own), so
Python only waits. Example, a ``VACUUM`` per table on three connections::

    def vacuum(table: str) -> int:
        with db.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(table)))
        return 1

    run_parallel([functools.partial(vacuum, t) for t in tables], jobs=3)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TypeVar, cast

__all__ = ["run_parallel"]

T = TypeVar("T")

_POLL_S = 0.2  # how often the calling thread wakes up, so that Ctrl-C reaches it while the tasks run


def run_parallel(
    tasks: Sequence[Callable[[], T]],
    *,
    jobs: int,
    cancel: Callable[[], None] | None = None,
    on_done: Callable[[int, T], None] | None = None,
    name: str = "parallel",
) -> list[T]:
    """Run ``tasks`` on up to ``jobs`` threads; return their results, in the order of ``tasks``.

    The tasks start in their order (each free thread takes the next one), so put the longest first.
    At the first exception of a task, or of ``on_done``, or a KeyboardInterrupt of the calling thread,
    no further task starts, ``cancel()`` is called to stop those running (e.g. cancel their queries),
    the running ones are awaited, and that first exception is raised here.

    :param tasks: callables without arguments (bind them with `functools.partial`).
    :param jobs: the most threads at a time (at least 1; no more threads than tasks).
    :param cancel: called once, from the calling thread, when the run stops early; must not raise.
    :param on_done: ``on_done(index, result)`` after each task, from the task's thread, one call at a
        time (a progress report needs no lock of its own).
    :param name: prefix of the threads' names (seen in debuggers and logs).
    Raise whatever the first failing task raised.
    """
    if not tasks:
        return []
    results: list[T | None] = [None] * len(tasks)
    queue = iter(range(len(tasks)))
    take, report = threading.Lock(), threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            with take:
                i = next(queue, None)
            if i is None:
                return
            result = results[i] = tasks[i]()
            if on_done is not None:
                with report:
                    on_done(i, result)

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix=name) as pool:
        futures = [pool.submit(worker) for _ in range(max(1, min(jobs, len(tasks))))]
        try:
            _wait_for(futures)
        except BaseException:
            stop.set()
            if cancel is not None:
                cancel()
            raise  # leaving the block awaits the running tasks first
    return cast("list[T]", results)  # every slot is filled once no task failed


def _wait_for(futures: Sequence[Future[None]]) -> None:
    """Return when every future is done; raise the first exception as soon as one has failed."""
    while True:
        done, pending = wait(futures, timeout=_POLL_S, return_when=FIRST_EXCEPTION)
        for future in done:
            error = future.exception()
            if error is not None:
                raise error
        if not pending:
            return
