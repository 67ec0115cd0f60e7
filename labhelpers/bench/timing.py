"""Timing on a session: the one timing loop, the cursor it times with, and what a timed answer holds.

`time_runs` is the loop every figure of the benchmark comes from (warm series, tenant switches, the
first query on a new connection, a login, a pool's warm-up); `time_query` is that loop over one SQL
statement, what notebooks call directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader

from .. import db
from ..explain import explain
from .queries import Benchmark
from .records import PlanError, PlanRecord

__all__ = ["answer", "capture_plan", "jsonable", "params_for", "raw_cursor", "scalar", "time_query", "time_runs",
           "timed_login"]

log = logging.getLogger("labhelpers")

T = TypeVar("T")


def time_runs(run: Callable[[int], T], *, repeat: int, warmup: int,
              budget_s: float | None = None) -> tuple[list[float], T | None]:
    """The one timing loop: ``run(i)`` ``warmup`` times untimed, then ``repeat`` times timed (wall clock).

    ``i`` counts every run, warm-up included (0, 1, ...), so a run can alternate what it does. With
    ``budget_s``, stops early once that many seconds were spent timing (at least 5 samples).
    Returns (samples in ms, what the last timed run returned).
    """
    for i in range(warmup):
        run(i)
    samples: list[float] = []
    last: T | None = None
    started = time.perf_counter()
    for i in range(warmup, warmup + repeat):
        t0 = time.perf_counter_ns()
        last = run(i)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if budget_s is not None and len(samples) >= 5 and time.perf_counter() - started > budget_s:
            break
    return samples, last


def time_query(
    cur: psycopg.Cursor[Any] | psycopg.RawCursor[Any],
    sql_text: str,
    params: Sequence[Any] | None,
    *,
    repeat: int,
    warmup: int,
    budget_s: float | None = None,
) -> tuple[list[float], Any]:
    """Run ``sql_text`` ``warmup`` times untimed, then ``repeat`` times timed (client wall clock).

    Each sample is one execute + fetch of every row: what the application waits for, round trip
    included. With ``budget_s``, stops early once that many seconds were spent (at least 5 samples).
    Returns (samples in ms, the last result's rows; None for a statement without rows).
    """

    def run(_i: int) -> Any:
        cur.execute(sql_text, params)
        return cur.fetchall() if cur.description is not None else None

    return time_runs(run, repeat=repeat, warmup=warmup, budget_s=budget_s)


def timed_login(conninfo: str, *, autocommit: bool, **kwargs: Any) -> tuple[psycopg.Connection, float]:
    """A new login (a new backend) to exactly ``conninfo``; returns it with the time the login took, ms.

    Only the login is timed: `db.open_connection` (no DSN resolution, no role check first).
    """
    [ms], conn = time_runs(lambda _i: db.open_connection(conninfo, autocommit=autocommit, **kwargs),
                           repeat=1, warmup=0)
    assert conn is not None
    return conn, ms


def raw_cursor(conn: psycopg.Connection) -> psycopg.RawCursor[Any]:
    """A cursor that sends ``$1`` placeholders to the server as they are (the lesson's text, verbatim)
    and receives every value as text, as psql's ``\\timing`` (the lesson's own measure) does.

    So a sample is the query, its round trip and the transfer of its rows, not the driver's conversion
    into Python objects (Test 3's 50 custom_fields parsed into dicts cost about a millisecond more on the
    course's 2-core machine than the database spends on the query).
    """
    cur = psycopg.RawCursor(conn)
    for t in psycopg.postgres.types:
        cur.adapters.register_loader(t.oid, TextLoader)
    return cur


def params_for(conn: psycopg.Connection, bm: Benchmark, tenant_id: str) -> list[Any] | None:
    """$1 = the tenant id (when the query takes it), then the benchmark's extra parameters."""
    params: list[Any] = [tenant_id] if bm.tenant_param else []
    for expr in bm.extra_params:  # SQL expressions of BENCHMARKS, the package's own text
        params.append(conn.execute(sql.SQL("SELECT {}").format(sql.SQL(expr))).fetchone()[0])  # type: ignore[index]
    return params or None


def scalar(value: Any) -> Any:
    """A single-cell result (received as text) as the number it is, else as it is."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+\.\d+", value):
        return float(value)
    return value


def jsonable(value: Any) -> Any:
    """``value`` as JSON holds it: a JSON scalar as it is, anything else as its text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def answer(rows: Any) -> str:
    """A fingerprint of a result set, insensitive to row order (for GROUP BY without ORDER BY)."""
    if not isinstance(rows, list):
        return ""
    return hashlib.sha256("\n".join(sorted(repr(tuple(r)) for r in rows)).encode()).hexdigest()


def _percent_s(sql_text: str, params: Sequence[Any] | None) -> tuple[str, list[Any] | None]:
    """``$1``, ``$2``... -> ``%s`` (with the parameters in order of appearance), for APIs that take
    psycopg placeholders (`labhelpers.explain.explain`)."""
    order: list[int] = []

    def sub(m: re.Match[str]) -> str:
        order.append(int(m.group(1)))
        return "%s"

    text = re.sub(r"\$(\d+)", sub, sql_text.replace("%", "%%"))
    if not params:
        return text, None
    return text, [params[i - 1] for i in order]


def capture_plan(conn: psycopg.Connection, sql_text: str, params: Sequence[Any] | None) -> PlanRecord | PlanError:
    """``EXPLAIN ANALYZE`` of the query in this session, as evidence beside its timings."""
    try:
        text, ordered = _percent_s(sql_text, params)
        plan = explain(conn, text, ordered, analyze=True)
    except Exception as e:  # a plan is evidence, not the measurement: never lose the run for it
        log.warning("bench: no plan for %s: %s", sql_text.splitlines()[0], e)
        if not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        return PlanError(error=str(e).strip().splitlines()[0])
    return PlanRecord(summary=plan.summary(), plan_json=json.loads(plan.to_json()), execution_ms=plan.execution_ms,
                      planning_ms=plan.planning_ms, indexes_used=list(plan.indexes_used), top=plan.root.label())
