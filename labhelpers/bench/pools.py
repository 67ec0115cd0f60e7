"""The first query behind a real pool: psycopg_pool with and without `warm_up_backend`, and PgBouncer.

A pool keeps backends alive, so only each pooled connection's first query pays for cold caches;
`warm_up_backend` as the pool's ``configure`` moves that cost before the first checkout.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from .. import db, pooler
from .queries import BENCHMARKS, POOL_SIZE, SWITCH_SQL, Benchmark
from .records import BenchTenant, PoolFirstQueries, PoolSkipped, SessionCheck, Stats, Verified, stats, stats_or_none
from .session import verify_session
from .timing import params_for, raw_cursor, time_query, time_runs, timed_login

__all__ = ["pgbouncer_first_queries", "pool_first_checkouts", "warm_up_backend"]


def warm_up_backend(conn: psycopg.Connection) -> None:
    """Plan every benchmark query once, so the backend's relation and catalog caches are warm.

    Meant as a `psycopg_pool.ConnectionPool` ``configure`` callback: it runs once per new pool
    connection, before its first checkout. ``EXPLAIN (GENERIC_PLAN)`` (PostgreSQL 16+) plans a query
    with ``$n`` placeholders without running it, so it needs no tenant and reads no rows; a generic plan
    prunes nothing at plan time, so every partition's relation is opened. Queries whose columns or
    tables are missing are skipped. The connection is left idle (committed when not autocommit).
    """
    generic_explain = conn.info.server_version >= 160000
    for bm in BENCHMARKS:
        text = sql.SQL(bm.sql.rstrip().rstrip(";"))  # the package's own text, written out in BENCHMARKS
        try:
            if generic_explain:
                conn.execute(sql.SQL("EXPLAIN (GENERIC_PLAN) {}").format(text), prepare=False).fetchall()
            else:
                _explain_generic_before_16(conn, text, placeholders=_placeholders(bm.sql))
        except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable):
            if not conn.autocommit:
                conn.rollback()
    if not conn.autocommit:
        conn.commit()


def _placeholders(text: str) -> int:
    """The highest ``$n`` in ``text``."""
    return max((int(m) for m in re.findall(r"\$(\d+)", text)), default=0)


def _explain_generic_before_16(conn: psycopg.Connection, text: sql.SQL, *, placeholders: int) -> None:
    """PostgreSQL 15 has no GENERIC_PLAN: prepare, force a generic plan, EXPLAIN EXECUTE with NULLs."""
    name = sql.Identifier("lab_warm_up")
    conn.execute(sql.SQL("PREPARE {} AS {}").format(name, text), prepare=False)
    try:
        conn.execute("SET plan_cache_mode = force_generic_plan", prepare=False)
        args = sql.SQL("({})").format(sql.SQL(", ").join([sql.NULL] * placeholders)) if placeholders else sql.SQL("")
        conn.execute(sql.SQL("EXPLAIN EXECUTE {}{}").format(name, args), prepare=False).fetchall()
    finally:
        conn.execute("RESET plan_cache_mode", prepare=False)
        conn.execute(sql.SQL("DEALLOCATE {}").format(name), prepare=False)


def _first_and_second(conn: psycopg.Connection, bm: Benchmark, params: list[Any] | None, switch: str,
                      tenant: BenchTenant) -> tuple[float, float, SessionCheck]:
    """On a pooled connection: the tenant set (``switch``), the query twice (timed), then verify_session."""
    cur = raw_cursor(conn)
    time_query(cur, switch, [tenant.id], repeat=1, warmup=0)
    [first], _ = time_query(cur, bm.sql, params, repeat=1, warmup=0)
    [second], _ = time_query(cur, bm.sql, params, repeat=1, warmup=0)
    return first, second, verify_session(conn, tenant_id=tenant.id)


def pool_first_checkouts(admin_dsn: str, tenant: BenchTenant, bm: Benchmark, *, connections: int,
                         warm: bool, size: int = POOL_SIZE) -> PoolFirstQueries:
    """The first query on each connection of a real psycopg_pool (``min_size = max_size = size``, opened
    and filled before timing), with and without `warm_up_backend` as its ``configure`` callback."""
    app_dsn = db.role_dsn(admin_dsn, "app_user")
    with db.connect(admin_dsn, autocommit=True) as admin:
        params = params_for(admin, bm, tenant.id)
    warm_ms: list[float] = []

    def configure(conn: psycopg.Connection) -> None:
        warm_ms.extend(time_runs(lambda _i: warm_up_backend(conn), repeat=1, warmup=0)[0])

    first: list[float] = []
    second: list[float] = []
    seen: list[SessionCheck] = []
    while len(first) < connections:
        with ConnectionPool(app_dsn, min_size=size, max_size=size, open=True,
                            configure=configure if warm else None,
                            kwargs={"autocommit": True, "prepare_threshold": None,
                                    "options": "-c statement_timeout=120s"}) as pool:
            pool.wait(timeout=60)
            held = [pool.getconn() for _ in range(size)]  # every connection of the pool, each once
            try:
                for conn in held[:connections - len(first)]:
                    f, s, who = _first_and_second(conn, bm, params, SWITCH_SQL, tenant)
                    first.append(f)
                    second.append(s)
                    seen.append(who)
            finally:
                for conn in held:
                    pool.putconn(conn)
    label = f"psycopg_pool.ConnectionPool(min_size={size}, max_size={size}" + (
        ", configure=bench.warm_up_backend)" if warm else ")")
    return _pool_record(bm, tenant, label, warm_up=warm, connect=None, first=first, second=second,
                        warm_up_ms=warm_ms, seen=seen)


def pgbouncer_first_queries(admin_dsn: str, tenant: BenchTenant, bm: Benchmark, *, connections: int,
                            pool_size: int = 2) -> PoolFirstQueries | PoolSkipped:
    """New client logins through a real PgBouncer (transaction mode, `labhelpers.pooler.PgBouncer`), one
    after another: each connects (timed), sets the tenant for its transaction, runs the query twice (timed)
    and verify_session inside the same transaction. The server connections outlive the clients."""
    if pooler.pgbouncer_binary() is None:
        return PoolSkipped(key=bm.key, title=bm.title, tenant=tenant.slug, skipped="pgbouncer is not installed")
    with db.connect(admin_dsn, autocommit=True) as admin:
        params = params_for(admin, bm, tenant.id)
    connect: list[float] = []
    first: list[float] = []
    second: list[float] = []
    seen: list[SessionCheck] = []
    with pooler.PgBouncer(admin_dsn, pool_size=pool_size, pool_mode="transaction") as bouncer:
        client_dsn = bouncer.dsn(db.dbname_of(admin_dsn), "app_user")
        version = bouncer.version()
        for _ in range(connections):
            conn, ms = timed_login(client_dsn, autocommit=False, **db.TRANSACTION_POOLING)
            connect.append(ms)
            try:  # the tenant for this transaction only (BEGIN first)
                f, s, who = _first_and_second(conn, bm, params, "SELECT set_config('app.current_tenant', $1, true)",
                                              tenant)
                first.append(f)
                second.append(s)
                seen.append(who)
                conn.commit()
            finally:
                conn.close()
    return _pool_record(bm, tenant, f"{version}, pool_mode=transaction, default_pool_size={pool_size}",
                        warm_up=False, connect=connect, first=first, second=second, warm_up_ms=None, seen=seen)


def _pool_record(bm: Benchmark, tenant: BenchTenant, pool: str, *, warm_up: bool, connect: list[float] | None,
                 first: list[float], second: list[float], warm_up_ms: list[float] | None,
                 seen: list[SessionCheck]) -> PoolFirstQueries:
    """The one place a `PoolFirstQueries` is made."""
    samples = {"connect": connect, "first": first, "second": second, "warm_up": warm_up_ms}
    warm_up_stats: Stats | None = stats_or_none(warm_up_ms or [])
    return PoolFirstQueries(
        key=bm.key, title=bm.title, variant=bm.variant, tenant=tenant.slug, target_ms=bm.target_ms, pool=pool,
        warm_up=warm_up, connections=len(first), connect=stats(connect) if connect is not None else None,
        first=stats(first), second=stats(second), warm_up_ms=warm_up_stats, verified=Verified.of(seen),
        samples_ms={k: [round(s, 4) for s in v] for k, v in samples.items() if v is not None},
    )
