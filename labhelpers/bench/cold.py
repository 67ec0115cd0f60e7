"""The first query on a new connection: what the warm series' warm-up hides.

Every new backend pays once for planning with empty relation and catalog caches (Test 3 plans every
monthly partition). For each query and tenant, many new logins as ``app_user`` with the tenant set,
each timing the connect, the first execute + fetch and a second one, then verified; on as many other
new logins ``EXPLAIN (ANALYZE, BUFFERS, SUMMARY)`` first and again, which splits the cost into
PostgreSQL's Planning Time and Execution Time and shows the catalog pages planning reads, and on as
many more ``PREPARE`` first and again (parsing and rewriting, which Planning Time leaves out). The
first checkouts behind real pools are in `pools`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg import sql

from .. import db
from ..errors import LabError
from .environment import chosen_tenants, pick_tenants
from .pools import pgbouncer_first_queries, pool_first_checkouts
from .queries import BENCHMARKS, POOL_KEYS, SWITCH_SQL, Benchmark
from .records import (BenchRecord, BenchTenant, ColdFirstQuery, Percentiles, PoolFirstQueries, PoolSkipped,
                      SessionCheck, SkippedBenchmark, Verified, stats, stats_or_none)
from .results import ColdSection, warm_record
from .session import fresh_session, verify_session
from .timing import params_for, raw_cursor, time_query

__all__ = ["cold_first_queries", "cold_section", "explain_timings"]

log = logging.getLogger("labhelpers")

_HOW = ("each sample a new login as app_user (psycopg.connect, timed), set_config of the tenant (timed), the "
        "query's first execute + fetch (timed) and a second one (timed), then verify_session; on as many other "
        "new logins EXPLAIN (ANALYZE, BUFFERS, SUMMARY) first, then again; round robin over the queries")
_TIMES = ("connect", "set_tenant", "first", "second", "new_connection", "parse_cold", "parse_warm")
_PLANNING_TIME = re.compile(r"^Planning Time: ([\d.]+) ms", re.M)
_EXECUTION_TIME = re.compile(r"^Execution Time: ([\d.]+) ms", re.M)


def explain_timings(text: str) -> dict[str, float | int | None]:
    """Planning and Execution Time (ms) and buffers of ``EXPLAIN (ANALYZE, BUFFERS, SUMMARY)`` text output:
    ``planning_ms``, ``execution_ms``, ``planning_hit``, ``planning_read``, ``execution_hit``,
    ``execution_read`` (the top node's buffers, which include its children's)."""
    lines = text.splitlines()
    cut = next((i for i, line in enumerate(lines) if line.startswith("Planning")), len(lines))
    plan_buf = next((line for line in lines[cut:] if line.strip().startswith("Buffers:")), "")
    exec_buf = next((line for line in lines[:cut] if line.strip().startswith("Buffers:")), "")
    p, e = _PLANNING_TIME.search(text), _EXECUTION_TIME.search(text)
    return {
        "planning_ms": float(p.group(1)) if p else None, "execution_ms": float(e.group(1)) if e else None,
        "planning_hit": _shared(plan_buf, "hit"), "planning_read": _shared(plan_buf, "read"),
        "execution_hit": _shared(exec_buf, "hit"), "execution_read": _shared(exec_buf, "read"),
    }


def _shared(line: str, what: str) -> int:
    """``shared hit=12 read=3`` -> 12 for "hit" (0 when absent)."""
    m = re.search(r"shared(?: \w+=\d+)*? " + what + r"=(\d+)", line)
    return int(m.group(1)) if m else 0


# --------------------------------------------------------------------------------------------------
# One new login each
# --------------------------------------------------------------------------------------------------


def _timed(cur: psycopg.RawCursor[Any], sql_text: str, params: Sequence[Any] | None) -> tuple[float, Any]:
    """One execute + fetch, timed: (ms, rows)."""
    [ms], rows = time_query(cur, sql_text, params, repeat=1, warmup=0)
    return ms, rows


def _statement(bm: Benchmark) -> sql.SQL:
    """The benchmark's query without its semicolon, to follow EXPLAIN or PREPARE."""
    return sql.SQL(bm.sql.rstrip().rstrip(";"))  # the package's own text, written out in BENCHMARKS


def _first_on_fresh(app_dsn: str, bm: Benchmark, tenant: BenchTenant, params: Sequence[Any] | None
                    ) -> tuple[dict[str, float], Any, SessionCheck]:
    """connect, set the tenant, the query twice, each timed; then verify_session (after, so that its own
    catalog reads do not warm the backend first: the role is the login's, fixed before the query)."""
    conn, connect_ms = fresh_session(app_dsn)
    try:
        cur = raw_cursor(conn)
        set_ms, _ = _timed(cur, SWITCH_SQL, [tenant.id])
        first_ms, rows = _timed(cur, bm.sql, params)
        second_ms, _ = _timed(cur, bm.sql, params)
        seen = verify_session(conn, tenant_id=tenant.id)
    finally:
        conn.close()
    return {"connect": connect_ms, "set_tenant": set_ms, "first": first_ms, "second": second_ms}, rows, seen


def _explain_fresh(app_dsn: str, bm: Benchmark, tenant: BenchTenant, params: Sequence[Any] | None
                   ) -> tuple[str, str, SessionCheck]:
    """EXPLAIN (ANALYZE, BUFFERS, SUMMARY) as the first statement after the tenant on a new login, then
    again; returns both texts and what verify_session saw afterwards."""
    conn, _ = fresh_session(app_dsn)
    try:
        cur = raw_cursor(conn)
        _timed(cur, SWITCH_SQL, [tenant.id])
        stmt = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, SUMMARY) {}").format(_statement(bm)).as_string(conn)
        texts = ["\n".join(r[0] for r in _timed(cur, stmt, params)[1]) for _ in range(2)]
        return texts[0], texts[1], verify_session(conn, tenant_id=tenant.id)
    finally:
        conn.close()


def _parse_fresh(app_dsn: str, bm: Benchmark, tenant: BenchTenant) -> tuple[float, float, SessionCheck]:
    """PREPARE (parse analysis and rewrite, no planning) first on a new login, then again: round trips, ms."""
    conn, _ = fresh_session(app_dsn)
    try:
        cur = raw_cursor(conn)
        _timed(cur, SWITCH_SQL, [tenant.id])
        cold, warm = (sql.SQL("PREPARE {} AS {}").format(sql.Identifier(name), _statement(bm)).as_string(conn)
                      for name in ("lab_cold_1", "lab_cold_2"))
        cold_ms, _ = _timed(cur, cold, None)
        warm_ms, _ = _timed(cur, warm, None)
        return cold_ms, warm_ms, verify_session(conn, tenant_id=tenant.id)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------
# Many new logins per query and tenant
# --------------------------------------------------------------------------------------------------


@dataclass
class _Fresh:
    """What the new logins of one query and tenant measured so far."""

    times: dict[str, list[float]] = field(default_factory=dict)  # the keys of _TIMES
    explains: list[tuple[str, str]] = field(default_factory=list)  # (first EXPLAIN, second EXPLAIN)
    seen: list[SessionCheck] = field(default_factory=list)
    rows: int | None = None  # rows of the last first execution

    def add(self, figure: str, ms: float) -> None:
        self.times.setdefault(figure, []).append(ms)


def _round_of_logins(app_dsn: str, bm: Benchmark, tenant: BenchTenant, params: Sequence[Any] | None,
                     got: _Fresh, *, explain: bool) -> None:
    """One new login timing the query's first execution; with ``explain``, one for EXPLAIN and one for PREPARE."""
    try:
        times, rows, seen = _first_on_fresh(app_dsn, bm, tenant, params)
    except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable):
        return  # a later stage's schema: no cold measurement
    for figure, ms in times.items():
        got.add(figure, ms)
    got.add("new_connection", times["connect"] + times["set_tenant"] + times["first"])
    got.seen.append(seen)
    got.rows = len(rows) if isinstance(rows, list) else None
    if explain:
        cold, warm, seen = _explain_fresh(app_dsn, bm, tenant, params)
        got.explains.append((cold, warm))
        got.seen.append(seen)
        parse_cold, parse_warm, seen = _parse_fresh(app_dsn, bm, tenant)
        got.add("parse_cold", parse_cold)
        got.add("parse_warm", parse_warm)
        got.seen.append(seen)


def _cold_record(bm: Benchmark, tenant: BenchTenant, got: _Fresh) -> ColdFirstQuery:
    """The one place a `ColdFirstQuery` is made, from what the new logins measured."""
    parsed = [(explain_timings(c), explain_timings(w)) for c, w in got.explains]

    def series(which: int, figure: str) -> list[float]:  # which: 0 = the first EXPLAIN, 1 = the second
        values = (p[which][figure] for p in parsed)
        return [float(v) for v in values if v is not None]

    t = got.times
    first = stats(t["first"])
    return ColdFirstQuery(
        key=bm.key, lesson=bm.lesson, title=bm.title, variant=bm.variant, tenant=tenant.slug,
        tenant_id=tenant.id, tenant_role=tenant.role, target_ms=bm.target_ms,
        connections=len(t["first"]), explain_connections=len(parsed),
        connect=stats(t["connect"]), set_tenant=stats(t["set_tenant"]), first=first, second=stats(t["second"]),
        new_connection=stats(t["new_connection"]),
        planning_cold=stats_or_none(series(0, "planning_ms")), execution_cold=stats_or_none(series(0, "execution_ms")),
        planning_warm=stats_or_none(series(1, "planning_ms")), execution_warm=stats_or_none(series(1, "execution_ms")),
        parse_cold=stats_or_none(t.get("parse_cold", [])), parse_warm=stats_or_none(t.get("parse_warm", [])),
        planning_hit_cold=stats_or_none(series(0, "planning_hit")),
        planning_hit_warm=stats_or_none(series(1, "planning_hit")),
        planning_read_cold=int(sum(series(0, "planning_read"))),
        execution_read_cold=int(sum(series(0, "execution_read"))),
        rows_returned=got.rows, verified=Verified.of(got.seen),
        explain_cold=got.explains[0][0] if parsed else "", explain_warm=got.explains[0][1] if parsed else "",
        samples_ms={k: [round(s, 4) for s in t[k]] for k in _TIMES if k in t}
        | {"planning_cold": series(0, "planning_ms"), "execution_cold": series(0, "execution_ms"),
           "planning_warm": series(1, "planning_ms"), "execution_warm": series(1, "execution_ms")},
        passed=first.p95_ms <= bm.target_ms,
        margin=round(bm.target_ms / first.p95_ms, 1) if first.p95_ms > 0 else None,
    )


def _measure_cold(admin_dsn: str, tenants: Sequence[BenchTenant], benchmarks: Sequence[Benchmark], *,
                  connections: int, explain: bool = True,
                  tick: Callable[[str], None] | None = None) -> list[ColdFirstQuery]:
    app_dsn = db.role_dsn(admin_dsn, "app_user")
    out = []
    for tenant in tenants:
        # the parameters are computed once, by the administrator: on the fresh sessions nothing runs first
        with db.connect(admin_dsn, autocommit=True) as admin:
            params = {bm.key: params_for(admin, bm, tenant.id) for bm in benchmarks}
        runs = {bm.key: _Fresh() for bm in benchmarks}
        # round robin: each round one new login per query, so drift in the machine's load spreads evenly
        for _ in range(connections):
            for bm in benchmarks:
                _round_of_logins(app_dsn, bm, tenant, params[bm.key], runs[bm.key], explain=explain)
        for bm in benchmarks:
            if "first" not in runs[bm.key].times:
                log.warning("bench: %s needs a schema change: %s (no cold measurement)", bm.key, bm.needs)
                continue
            rec = _cold_record(bm, tenant, runs[bm.key])
            out.append(rec)
            log.info("bench: %s [%s] first on a new connection: p50 %.2f ms, p95 %.2f ms (second %.2f ms)",
                     bm.key, tenant.slug, rec.first.p50_ms, rec.first.p95_ms, rec.second.p50_ms)
        if tick:
            tick(f"first queries on new connections [{tenant.slug}]")
    return out


def cold_first_queries(
    dsn: str | None = None,
    *,
    tenants: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
    connections: int = 10,
    explain: bool = True,
) -> list[ColdFirstQuery]:
    """Time the first execution of the benchmark queries on new connections, as ``app_user`` under RLS.

    For each tenant and query, ``connections`` times: a new login as ``app_user`` (timed), the tenant set
    (timed), the query's first execute + fetch (timed), the same again (timed), then `verify_session`.
    With ``explain``, as many other new logins run ``EXPLAIN (ANALYZE, BUFFERS, SUMMARY)`` first, then
    again: planning vs execution, cold vs warm, in PostgreSQL's own figures; and as many more time
    ``PREPARE`` first and again (parse analysis and rewrite, which Planning Time leaves out).

    :param dsn: admin DSN (resolved as everywhere); the measured sessions log in as ``app_user``.
    :param tenants: tenant slugs; default the largest and the smallest by contacts.
    :param keys: `BENCHMARKS` keys; default all of them.
    :param connections: new logins per tenant and query (and twice as many more with ``explain``).
    Returns one `ColdFirstQuery` per tenant and query (queries whose schema is missing are left out).
    Raise LabError if a tenant or key is unknown, there is no data, or a session is not app_user under
    RLS with the tenant set.
    """
    admin_dsn = db.resolve_dsn(dsn)
    with db.connect(admin_dsn, autocommit=True) as admin:
        picked = pick_tenants(admin) if tenants is None else chosen_tenants(admin, tenants)
    by_key = {bm.key: bm for bm in BENCHMARKS}
    unknown = [k for k in keys or () if k not in by_key]
    if unknown:
        raise LabError(f"no benchmark {', '.join(unknown)}; expected one of: {', '.join(by_key)}")
    chosen = [by_key[k] for k in keys] if keys else list(BENCHMARKS)
    db.connect(admin_dsn, role="app_user").close()  # LabError when the role is missing
    return _measure_cold(admin_dsn, picked, chosen, connections=connections, explain=explain)


def cold_section(admin_dsn: str, tenants: Sequence[BenchTenant], records: list[BenchRecord | SkippedBenchmark], *,
                 connections: int, tick: Callable[[str], None]) -> ColdSection:
    """`run_bench`'s part on new connections: every benchmark on fresh logins, beside its warm series
    (``records``), then the first checkouts behind a real pool and PgBouncer for `POOL_KEYS`."""
    cold = _measure_cold(admin_dsn, tenants, BENCHMARKS, connections=connections, tick=tick)
    queries = [replace(r, warm=_warm_percentiles(records, r)) for r in cold]
    connect = {t.slug: stats([s for r in cold if r.tenant == t.slug for s in r.samples_ms["connect"]])
               for t in tenants if any(r.tenant == t.slug for r in cold)}
    pooled = [bm for bm in BENCHMARKS if bm.key in POOL_KEYS]
    pool: list[PoolFirstQueries | PoolSkipped] = [pool_first_checkouts(admin_dsn, tenants[0], bm, connections=connections, warm=warm)
            for bm in pooled for warm in (False, True)]
    pool += [pgbouncer_first_queries(admin_dsn, tenants[0], bm, connections=connections) for bm in pooled]
    tick("first checkouts from a pool")
    return ColdSection(connections=connections, how=_HOW, queries=queries, connect=connect, pool=pool)


def _warm_percentiles(records: list[BenchRecord | SkippedBenchmark], r: ColdFirstQuery) -> Percentiles | None:
    warm = warm_record(records, r.key, r.tenant)
    return Percentiles.of(warm.stats) if warm else None
