"""The lesson's benchmark: `run_bench`, its warm series per tenant, and which record counts.

For each tenant (the largest and the smallest) one login as ``app_user`` with the tenant set,
verified before and after: every benchmark query (warm-up, then ``repeat`` timed runs, a plan), the
tenant switch both ways, the floor. Then the first query on new connections (`cold`), RLS overhead,
policy variants and the LEAKPROOF decision (`variants`), and the files (`report`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

from .. import datagen, db, tenants
from .._progress import ProgressFn, Tally
from ..errors import LabError
from . import results as stored
from .cold import cold_section
from .environment import (checkpoint, data_age_days, load_avg, machine_info, pick_tenants, seed_info,
                          server_info)
from .queries import (BENCHMARKS, COLD_CONNECTIONS, DETERMINISTIC, FLOOR_SQL, MARGIN, SWITCH_LOCAL_SQL, SWITCH_SQL,
                      TARGETS_MS, Benchmark)
from .records import BenchRecord, BenchTenant, PlanError, PlanRecord, SessionCheck, SkippedBenchmark, stats
from .report import write_report
from .results import BenchResults, TenantSessions
from .session import app_session, verify_session
from .timing import answer, capture_plan, jsonable, params_for, raw_cursor, scalar, time_query, time_runs
from .variants import leakproof_off, policy_variants, rls_overhead

__all__ = ["mark_criterion", "run_bench"]

log = logging.getLogger("labhelpers")

Tick = Callable[[str], None]
_TIMING = ("client wall clock per execute + fetch (one round trip over localhost TCP), values received as text "
           "as psql's \\timing does, ms")


def run_bench(
    dsn: str | None = None,
    *,
    scale: str | None = None,
    repeat: int = 200,
    warmup: int | None = None,
    out_dir: str | Path | None = None,
    variants: bool = True,
    plans: bool = True,
    plot: bool = True,
    auto_seed: bool = True,
    cold_connections: int | None = None,
    on_progress: ProgressFn | None = None,
) -> BenchResults:
    """Run the benchmark on the database of ``dsn`` and write results.json, report.md and the pictures.

    :param dsn: admin DSN (resolved as everywhere); the timed sessions log in as ``app_user``.
    :param scale: the dataset expected (``labhelpers seed --scale``). When the database holds no generated
        data yet and ``auto_seed``, it is seeded first; when it holds another scale, that is an error.
        None: whatever is loaded.
    :param repeat: timed runs per query and tenant (after the warm-up).
    :param warmup: untimed runs first (default: max(5, repeat // 10)).
    :param out_dir: where the files go (default ``runs/bench/<scale>/``).
    :param variants: also measure RLS overhead, policy variants and the LEAKPROOF decision.
    :param plans: record EXPLAIN ANALYZE plans (as app_user, in the timed session).
    :param plot: write the latency pictures (PNG).
    :param cold_connections: new logins per query and tenant for the first execution on a new connection
        (`cold_first_queries`, after the warm series), and per pool for the first checkouts from a real
        pool; default ``min(COLD_CONNECTIONS, repeat)``; 0 skips it.
    :param on_progress: ``callback(task, done, total)``.
    Returns the results (what results.json holds).
    Raise LabError if the database holds another scale, has no data, or a timed session is not app_user
    under RLS with the expected tenant.
    """
    admin_dsn = db.resolve_dsn(dsn)
    warmup = max(5, repeat // 10) if warmup is None else warmup
    started = _start(admin_dsn, scale, repeat=repeat, warmup=warmup, auto_seed=auto_seed)
    tenants = started.tenants
    n_cold = min(COLD_CONNECTIONS, repeat) if cold_connections is None else cold_connections
    tick = _ticker(on_progress, len(tenants) * (len(BENCHMARKS) + 3) + (3 if variants else 0)
                   + (len(tenants) + 1 if n_cold > 0 else 0))
    records: list[BenchRecord | SkippedBenchmark] = []
    sessions: list[TenantSessions] = []
    for tenant in tenants:
        timed, session = _warm_series(admin_dsn, tenant, tenants, repeat=repeat, warmup=warmup, plans=plans,
                                      tick=tick)
        records += timed
        sessions.append(session)
    records = mark_criterion(records)
    # the first query on a new connection, on the same data right after the warm series (so the data
    # is as much in shared buffers as for them): what a new backend pays, and what a pool changes
    cold = cold_section(admin_dsn, tenants, records, connections=n_cold, tick=tick) if n_cold > 0 else None
    compared = _variants(admin_dsn, tenants, records, repeat=repeat, warmup=warmup, tick=tick) if variants else {}
    results = replace(started, benchmarks=records, sessions=sessions, cold=cold,
                      machine=replace(started.machine, load_avg_at_end=load_avg()), **compared)
    write_report(results, Path(out_dir) if out_dir else stored.DEFAULT_OUT / results.scale, plot=plot)
    return results


def _start(admin_dsn: str, scale: str | None, *, repeat: int, warmup: int, auto_seed: bool) -> BenchResults:
    """The data checked (seeded first when asked), a CHECKPOINT, the tenants picked: the results' header."""
    with db.connect(admin_dsn, autocommit=True) as admin:
        run = _seed_run(admin, admin_dsn, scale, auto_seed=auto_seed)
        checkpointed = checkpoint(admin)
        tenants = pick_tenants(admin)
        return BenchResults(
            version=stored.RESULTS_VERSION,
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            scale=run.scale if run else "seed-tenants", seed_run=seed_info(run), database=db.dbname_of(admin_dsn),
            repeat=repeat, warmup=warmup, prepared_statements=False, checkpoint_first=checkpointed, timing=_TIMING,
            machine=machine_info(), server=server_info(admin), tenants=tenants, targets_ms=TARGETS_MS,
            margin_required=MARGIN, benchmarks=[], rls_overhead=[], policy_variants=[], leakproof=[],
            data_age_days=data_age_days(run), sessions=[], cold=None,
        )


def _seed_run(admin: psycopg.Connection, admin_dsn: str, scale: str | None, *,
              auto_seed: bool) -> datagen.SeedRun | None:
    """The loaded data's seed run, seeded first if there is none and ``auto_seed``; checked against ``scale``."""
    run = datagen.latest_run(admin)
    if scale is not None:
        if run is None and auto_seed:
            log.info("bench: no generated data yet: seeding scale %s first", scale)
            datagen.seed(admin_dsn, scale=scale)
            run = datagen.latest_run(admin)
        elif run is None or run.scale != scale:
            have = f"scale {run.scale} ({run.status})" if run else "no generated data"
            raise LabError(
                f"this database holds {have}, not scale {scale}: run `labhelpers seed --scale {scale}` "
                "(use a database of its own for big scales: --dsn)"
            )
    if run is not None and not run.complete:
        raise LabError(f"the seed of scale {run.scale} is incomplete: run `labhelpers seed --scale {run.scale}` "
                       "again to finish it")
    return run


def _ticker(on_progress: ProgressFn | None, total: int) -> Tick:
    """``tick(what)``: one step of ``total`` done, reported as task "bench" and logged."""
    tally = Tally(on_progress, {"bench": total})

    def tick(what: str) -> None:
        tally.add("bench")
        log.info("bench: %s", what)

    return tick


def _variants(admin_dsn: str, tenants: Sequence[BenchTenant], records: Sequence[BenchRecord | SkippedBenchmark], *,
              repeat: int, warmup: int, tick: Tick) -> dict[str, Any]:
    """RLS overhead, policy variants and the LEAKPROOF decision, as fields of `BenchResults`."""
    overhead = rls_overhead(admin_dsn, tenants, records, repeat=repeat, warmup=warmup)
    tick("RLS overhead")
    spelled = policy_variants(admin_dsn, tenants[0], repeat=min(repeat, 50), warmup=min(warmup, 3))
    tick("policy variants")
    leakproof = leakproof_off(admin_dsn, tenants[0], records, repeat=min(repeat, 50), warmup=min(warmup, 3))
    tick("LEAKPROOF decision")
    return {"rls_overhead": overhead, "policy_variants": spelled, "leakproof": leakproof}


# --------------------------------------------------------------------------------------------------
# The warm series of one tenant
# --------------------------------------------------------------------------------------------------


def _warm_series(admin_dsn: str, tenant: BenchTenant, tenants: Sequence[BenchTenant], *, repeat: int, warmup: int,
                 plans: bool, tick: Tick) -> tuple[list[BenchRecord | SkippedBenchmark], TenantSessions]:
    """One app_user session for ``tenant``: every benchmark, then the switches and the floor."""
    with app_session(admin_dsn, tenant.id) as conn:
        before = verify_session(conn, tenant_id=tenant.id)
        records = _time_benchmarks(conn, tenant, repeat=repeat, warmup=warmup, plans=plans, tick=tick)
        other = next((t.id for t in tenants if t.id != tenant.id), tenant.id)
        switches = _time_switches(conn, tenant, other, repeat=repeat, warmup=warmup, tick=tick)
    # the floor's session is the last one verified, after the switches
    return records + switches, TenantSessions(tenant=tenant.slug, before=before, after=switches[-1].session)


def _time_benchmarks(conn: psycopg.Connection, tenant: BenchTenant, *, repeat: int, warmup: int, plans: bool,
                     tick: Tick) -> list[BenchRecord | SkippedBenchmark]:
    """Each of `BENCHMARKS` timed; a tuned query whose answer is determined is checked against the lesson's."""
    cur = raw_cursor(conn)
    answers: dict[str, str] = {}
    out: list[BenchRecord | SkippedBenchmark] = []
    for bm in BENCHMARKS:
        name = f"{bm.key} [{tenant.slug}]"
        params = params_for(conn, bm, tenant.id)
        try:
            samples, rows = time_query(cur, bm.sql, params, repeat=repeat, warmup=warmup)
        except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable) as e:
            out.append(_skipped(bm, name, tenant, e))
            log.warning("bench: %s needs a schema change: %s", bm.key, bm.needs)
            tick(f"{name} skipped")
            continue
        after = verify_session(conn, tenant_id=tenant.id)
        answers[bm.key] = answer(rows)
        same = None
        if bm.variant == "tuned" and bm.lesson in answers and bm.lesson in DETERMINISTIC:
            same = answers[bm.key] == answers[bm.lesson]  # a tuned query must give the lesson's answer
        rec = timed_record(bm, name=name, tenant=tenant, samples=samples, rows=rows, session=after, sql_text=bm.sql,
                           params=params, lesson=bm.lesson, variant=bm.variant, target_ms=bm.target_ms,
                           title=bm.title, note=bm.note, same_result_as_verbatim=same,
                           plan=capture_plan(conn, bm.sql, params) if plans else None)
        out.append(rec)
        tick(f"{name}: p95 {rec.stats.p95_ms:.2f} ms")
    return out


def _skipped(bm: Benchmark, name: str, tenant: BenchTenant, error: Exception) -> SkippedBenchmark:
    return SkippedBenchmark(name=name, key=bm.key, lesson=bm.lesson, title=bm.title, variant=bm.variant,
                            tenant=tenant.slug, tenant_role=tenant.role, sql=bm.sql,
                            error=str(error).strip().splitlines()[0], needs=bm.needs, target_ms=bm.target_ms)


def _time_switches(conn: psycopg.Connection, tenant: BenchTenant, other: str, *, repeat: int, warmup: int,
                   tick: Tick) -> list[BenchRecord]:
    """The tenant switch, session-scoped and pool-safe, alternating with ``other``; then the floor."""
    cur = raw_cursor(conn)
    ids = [other, tenant.id]

    def switch(i: int) -> Any:
        cur.execute(SWITCH_SQL, [ids[i % 2]])
        return cur.fetchall()

    def switch_local(i: int) -> None:  # BEGIN; set_config(..., true); COMMIT: three round trips
        with conn.transaction():
            conn.execute("SELECT set_config('app.current_tenant', %s, true)", (ids[i % 2],))

    samples, _ = time_runs(switch, repeat=repeat, warmup=warmup)
    tenants.set_setting(conn, tenants.TENANT_SETTING, tenant.id, local=False)  # back to this tenant
    after = verify_session(conn, tenant_id=tenant.id)
    common: dict[str, Any] = {"tenant": tenant, "rows": None, "lesson": "switch", "params": [ids[0]]}
    recs = [timed_record(
        None, name=f"switch [{tenant.slug}]", samples=samples, session=after, sql_text=SWITCH_SQL,
        variant="verbatim", target_ms=TARGETS_MS["switch"], title="Tenant switch: set_config round trip (session)",
        note="one round trip; SET app.current_tenant cannot take a bind parameter (PITFALLS 8)", **common)]
    tick(f"switch [{tenant.slug}]")
    samples, _ = time_runs(switch_local, repeat=repeat, warmup=warmup)
    after = verify_session(conn, tenant_id=tenant.id)
    recs.append(timed_record(
        None, name=f"switch_local [{tenant.slug}]", samples=samples, session=after, sql_text=SWITCH_LOCAL_SQL,
        variant="tuned", target_ms=TARGETS_MS["switch"],
        title="Tenant switch, pool-safe: BEGIN; set_config(..., true); COMMIT",
        note="transaction-scoped context (PITFALLS 7): three round trips", **common))
    tick(f"switch_local [{tenant.slug}]")
    samples, _ = time_query(cur, FLOOR_SQL, None, repeat=repeat, warmup=warmup)  # one round trip doing nothing
    recs.append(timed_record(
        None, name=f"floor [{tenant.slug}]", tenant=tenant, samples=samples, rows=None, session=after,
        sql_text=FLOOR_SQL, params=None, lesson="floor", variant="floor", target_ms=None,
        title="Floor: SELECT 1 (one round trip)"))
    tick(f"floor [{tenant.slug}]")
    return recs


def timed_record(bm: Benchmark | None, *, name: str, tenant: BenchTenant, samples: list[float], rows: Any,
                 session: SessionCheck, sql_text: str, params: Sequence[Any] | None, lesson: str, variant: str,
                 target_ms: float | None, title: str, note: str = "", same_result_as_verbatim: bool | None = None,
                 plan: PlanRecord | PlanError | None = None) -> BenchRecord:
    """The one place a `BenchRecord` is made: its figures, its answer, its verdict against the target."""
    st = stats(samples)
    result, nrows = _answer_value(rows)
    return BenchRecord(
        name=name, key=bm.key if bm else lesson, lesson=lesson, title=title, variant=variant, tenant=tenant.slug,
        tenant_id=tenant.id, tenant_role=tenant.role, role=session.current_user, session=session, sql=sql_text,
        params=list(params) if params else [], rows_returned=nrows, result_value=jsonable(result),
        target_ms=target_ms, samples_ms=[round(s, 4) for s in samples], stats=st, note=note, criterion=False,
        passed=st.p95_ms <= target_ms if target_ms is not None else None,
        margin=round(target_ms / st.p95_ms, 1) if target_ms is not None and st.p95_ms > 0 else None,
        same_result_as_verbatim=same_result_as_verbatim, plan=plan,
    )


def _answer_value(rows: Any) -> tuple[Any, int | None]:
    """(the value of a one-cell answer that is not text, e.g. a count, else None; the number of rows)."""
    single = isinstance(rows, list) and len(rows) == 1 and len(rows[0]) == 1
    value = scalar(rows[0][0]) if single else None
    if single and not isinstance(value, str):
        return value, 1
    return None, len(rows) if isinstance(rows, list) else None


def mark_criterion(records: Sequence[BenchRecord | SkippedBenchmark]) -> list[BenchRecord | SkippedBenchmark]:
    """For the success criterion, each lesson benchmark counts once per tenant: the verbatim query when it
    meets the target with the course's margin, else the course's tuned version (the fix the course teaches).

    Returns ``records`` with ``criterion`` set on the ones that count.
    """
    groups: dict[tuple[str, str], list[BenchRecord]] = {}
    for r in records:
        if isinstance(r, BenchRecord) and r.target_ms:
            groups.setdefault((r.lesson, r.tenant), []).append(r)
    chosen = {id(c) for c in map(_counting, groups.values()) if c is not None}
    return [replace(r, criterion=True) if id(r) in chosen else r for r in records]


def _counting(group: Sequence[BenchRecord]) -> BenchRecord | None:
    verbatim = [r for r in group if r.variant == "verbatim"]
    tuned = [r for r in group if r.variant == "tuned" and r.same_result_as_verbatim is not False]
    if verbatim and verbatim[0].stats.p95_ms * MARGIN <= (verbatim[0].target_ms or 0):
        return verbatim[0]
    if tuned:
        return min(tuned, key=lambda r: r.stats.p95_ms)
    return verbatim[0] if verbatim else None
