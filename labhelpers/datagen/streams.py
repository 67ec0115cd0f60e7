"""Loading streams: the seed's connections, one per thread, all cancelled when one stream fails.

Every connection of a seed is named ``labhelpers seed`` (``application_name``), so an operator, or a
test that kills the loaders, finds them in ``pg_stat_activity``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import psycopg

from .. import db
from .._parallel import run_parallel

__all__ = ["connect", "run_streams"]

log = logging.getLogger("labhelpers")

I = TypeVar("I")
R = TypeVar("R")


def connect(dsn: str) -> psycopg.Connection:
    """An autocommit connection of the seed to ``dsn``. Raise LabError if the server cannot be reached."""
    conn = db.connect(dsn, autocommit=True)
    conn.execute("SET application_name = 'labhelpers seed'")
    return conn


def run_streams(dsn: str, items: Sequence[I], work: Callable[[psycopg.Connection, I], R], *, jobs: int,
                on_done: Callable[[I, R], None] | None = None) -> list[R]:
    """``work(conn, item)`` for every item, in order, on up to ``jobs`` connections (one per thread).

    At the first failure (or Ctrl-C) the other streams' statements are cancelled on the server, and the
    failure is raised. ``on_done(item, result)`` follows each item, one call at a time.
    """
    streams = _Streams(dsn)
    tasks = [functools.partial(lambda item: work(streams.conn(), item), item) for item in items]
    report = (lambda i, result: on_done(items[i], result)) if on_done is not None else None
    try:
        return run_parallel(tasks, jobs=jobs, cancel=streams.cancel, on_done=report, name="seed")
    finally:
        streams.close()


class _Streams:
    """The connection of each worker thread, opened at its first task."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._local = threading.local()
        self._conns: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def conn(self) -> psycopg.Connection:
        conn: psycopg.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self._dsn)
            with self._lock:
                self._conns.append(conn)
        return conn

    def cancel(self) -> None:
        """Cancel the running statement of every stream (never raises)."""
        with self._lock:
            for conn in self._conns:
                try:
                    conn.cancel_safe(timeout=5)
                except Exception:  # the connection may already be gone; a cleanup path must not raise
                    log.debug("seed: cannot cancel a stream's statement", exc_info=True)

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
