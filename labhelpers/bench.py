"""The lesson's benchmark targets, measured as the application measures them: as ``app_user``, under RLS.

`run_bench` times, for the largest and the smallest tenant of the loaded dataset:

- the lesson's Test 1, Test 2, Test 3 and Scenario 2 **verbatim** (``$1`` bound to the tenant id on the
  server, exactly the text of the lesson), and the course's tuned version of each (what the schema
  stages make possible: generated columns, covering indexes, a ``timestamptz`` bound);
- the tenant switch: one ``set_config('app.current_tenant', ...)`` round trip (session-scoped), and the
  pool-safe transaction-scoped form; with ``SELECT 1`` as the floor (one round trip, no work).

Every timed session is a real login as ``app_user``; inside it, before and after the timed runs, the
session checks ``current_user``, ``rolsuper``, ``rolbypassrls``, table ownership and the tenant setting,
and records them (PITFALLS 1-2: numbers taken as a superuser or the owner measure a query no
application runs). Each query gets a warm-up, then ``repeat`` timed runs; the raw samples are kept and
p50/p95/p99/max computed; a query passes when its p95 is within the lesson's target.

On the same data and in the same run it also measures:

- **RLS overhead**: each query as ``app_user`` against the owner (``postgres``, who bypasses RLS) with
  the tenant as an explicit predicate;
- **policy-expression variants** (PITFALLS 10): the tenant policy of contacts rewritten as a direct
  ``current_setting`` read (the course's), a scalar subselect, a STABLE function, a subselect around it,
  and a plpgsql function (VOLATILE by default); each variant is created *inside a transaction that is
  rolled back* (the measured session switches to ``app_user`` with ``SET LOCAL ROLE``), so the schema is
  never changed (but contacts is locked for the duration: run it on a database of its own);
- **the LEAKPROOF decision of sql/04** (PITFALLS 11): the verbatim queries with the LEAKPROOF marks of
  ``jsonb_contains`` and the ``timestamptz``-vs-``timestamp`` comparisons taken back, the same way.

It also measures **the first query on a new connection** (`cold_first_queries`): the warm-up above
hides what every new backend pays once, planning with empty relation and catalog caches (Test 3 plans
every monthly partition). For each query and tenant, many new logins as ``app_user`` with the tenant
set, each timing the connect, the first execute + fetch and a second one, then verified; on as many
other new logins ``EXPLAIN (ANALYZE, BUFFERS, SUMMARY)`` first and again, which splits the cost into
PostgreSQL's Planning Time and Execution Time and shows the catalog pages planning reads, and on as many
more ``PREPARE`` first and again (parsing and rewriting, which Planning Time leaves out); and the first
checkouts from a real ``psycopg_pool`` pool, with and without `warm_up_backend` as its ``configure``,
and new client logins through a real PgBouncer in transaction mode (`labhelpers.pooler`, when installed).

Results: ``results.json`` (samples, percentiles, plans, server and machine), ``report.md`` (the table a
student reads), ``latency-<tenant>.png`` and ``cold-<largest tenant>.png`` in ``runs/bench/<scale>/`` by
default. `latest_results` reads the newest results back (the benchmark criterion of `labhelpers.checks` uses it). No plotting
here beyond calling `labhelpers.plots`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import platform
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from . import db, lesson
from .errors import LabError

__all__ = [
    "BENCHMARKS",
    "COLD_CONNECTIONS",
    "Benchmark",
    "ColdFirstQuery",
    "Stats",
    "DEFAULT_OUT",
    "TARGETS_MS",
    "cold_first_queries",
    "cold_table",
    "explain_timings",
    "latest_results",
    "load_results",
    "machine_info",
    "percentile",
    "report_markdown",
    "run_bench",
    "stats",
    "summary_table",
    "time_query",
    "verify_session",
    "warm_up_backend",
    "write_report",
]

log = logging.getLogger("labhelpers")

DEFAULT_OUT = db.PROJECT_DIR / "runs" / "bench"
RESULTS_VERSION = 1

# The lesson's targets (labhelpers.lesson is the one place for the lesson's text and numbers).
TARGETS_MS: dict[str, float] = lesson.TARGETS_MS
# "Every target with at least 10x margin" is the course's own bar at the large scale.
MARGIN = 10.0


@dataclass(frozen=True)
class Benchmark:
    """One timed query: ``sql`` uses ``$1`` for the tenant id when ``tenant_param`` is true."""

    key: str
    lesson: str          # key into TARGETS_MS
    title: str
    variant: str         # 'verbatim' (the lesson's text) or 'tuned' (the course's fix) or 'floor'
    sql: str
    tenant_param: bool
    note: str = ""
    needs: str = ""      # what the tuned query needs from the schema (shown when it is missing)
    owner_sql: str | None = None  # the owner's version (explicit tenant predicate), for RLS overhead
    extra_params: tuple[str, ...] = ()  # SQL expressions evaluated once in the session: $2, $3, ...

    @property
    def target_ms(self) -> float:
        """The lesson's target for this benchmark."""
        return TARGETS_MS[self.lesson]


# The lesson's queries, verbatim.
TEST1, TEST2, TEST3, SCENARIO2 = lesson.TEST_1, lesson.TEST_2, lesson.TEST_3, lesson.SCENARIO_2

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("test1", "test1", "Test 1: contact search by custom field", "verbatim", TEST1, True),
    Benchmark(
        "test1_tuned", "test1", "Test 1 tuned: generated column cf_industry", "tuned",
        "SELECT * FROM contacts\nWHERE tenant_id = $1\n  AND cf_industry = 'tech'\nLIMIT 20;", True,
        note="text = is leakproof: (tenant_id, cf_industry) is one index condition under RLS",
        needs="contacts.cf_industry (sql/04) and index (tenant_id, cf_industry)",
    ),
    Benchmark("test2", "test2", "Test 2: lead pipeline analytics", "verbatim", TEST2, True),
    Benchmark(
        "test2_tuned", "test2", "Test 2 tuned: timestamptz bound, covering index", "tuned",
        """SELECT
  stage,
  COUNT(*) as count,
  SUM(value) as total_value
FROM leads
WHERE tenant_id = $1
  AND created_at >= (CURRENT_DATE - INTERVAL '30 days')::timestamptz
GROUP BY stage;""", True,
        note="the explicit ::timestamptz is what the implicit cross-type comparison does, as a leakproof "
             "operator (an index condition under RLS); value is the column custom_fields->'value' mirrors "
             "(a CHECK keeps them equal), so leads (tenant_id, created_at) INCLUDE (stage, value) answers it "
             "index-only; the benchmark checks the answer equals the verbatim query's",
        needs="index leads (tenant_id, created_at) INCLUDE (stage, value) (sql/01)",
    ),
    Benchmark(
        "test2_rollup", "test2", "Test 2 rollup: pre-aggregated per hour and stage", "tuned",
        """SELECT
  stage,
  SUM(lead_count) as count,
  SUM(total_value) as total_value
FROM lead_pipeline_hourly
WHERE tenant_id = $1
  AND hour >= (CURRENT_DATE - INTERVAL '30 days')::timestamptz
GROUP BY stage;""", True,
        note="lead_pipeline_hourly (sql/01 section 9, kept by statement triggers on leads) holds one row per "
             "tenant, UTC hour and stage: the last 30 days are at most 30 x 24 x 6 rows whatever the tenant's "
             "size, and local midnight is an hour boundary, so the answer equals the verbatim query's",
        needs="table lead_pipeline_hourly and its triggers on leads (sql/01)",
    ),
    Benchmark("test3", "test3", "Test 3: activity timeline", "verbatim", TEST3, True),
    Benchmark(
        "test3_tuned", "test3", "Test 3 tuned: the time window as parameters", "tuned",
        """SELECT
  type,
  subject,
  created_at,
  custom_fields
FROM activities
WHERE tenant_id = $1
  AND created_at >= $2
  AND created_at <= $3
ORDER BY created_at DESC
LIMIT 50;""", True,
        note="$2 = (CURRENT_DATE - INTERVAL '7 days')::timestamptz and $3 = now(), computed by the session "
             "first: constants at plan time, so the planner prunes the months before planning them "
             "(PITFALLS 19) instead of planning every monthly partition and pruning at executor start; "
             "the upper bound also prunes the months created ahead (sql/05 keeps 6), which an open-ended "
             "range must plan and scan, empty. Same rows: created_at defaults to now(), nothing is "
             "stamped in the future",
        extra_params=("(CURRENT_DATE - INTERVAL '7 days')::timestamptz", "now()"),
    ),
    Benchmark("scenario2", "scenario2", "Scenario 2: count by two custom fields", "verbatim", SCENARIO2, False,
              owner_sql=SCENARIO2.rstrip(";") + "\n  AND tenant_id = $1;"),
    Benchmark(
        "scenario2_tuned", "scenario2", "Scenario 2 tuned: generated columns, index-only count", "tuned",
        "SELECT COUNT(*) FROM contacts\nWHERE cf_status = 'active' AND cf_priority = 'high';", False,
        note="index-only scan of (tenant_id, cf_status, cf_priority): the policy's tenant_id and both "
             "fields in one index condition",
        needs="contacts.cf_status, cf_priority (sql/04) and index (tenant_id, cf_status, cf_priority)",
        owner_sql="SELECT COUNT(*) FROM contacts\nWHERE cf_status = 'active' AND cf_priority = 'high'\n"
                  "  AND tenant_id = $1;",
    ),
    Benchmark(
        "scenario2_rollup", "scenario2", "Scenario 2 rollup: counts kept per segment", "tuned",
        "SELECT COALESCE(SUM(contact_count), 0) AS count FROM contact_segment_counts\n"
        "WHERE cf_status = 'active' AND cf_priority = 'high';", False,
        note="contact_segment_counts (sql/04 section 5, kept by statement triggers on contacts) holds one row "
             "per tenant, status and priority: the count is one row whatever the tenant's size",
        needs="table contact_segment_counts and its triggers on contacts (sql/04)",
        owner_sql="SELECT COALESCE(SUM(contact_count), 0) AS count FROM contact_segment_counts\n"
                  "WHERE cf_status = 'active' AND cf_priority = 'high'\n  AND tenant_id = $1;",
    ),
)

SWITCH_SQL = "SELECT set_config('app.current_tenant', $1, false);"
SWITCH_LOCAL_SQL = "BEGIN; SELECT set_config('app.current_tenant', $1, true); COMMIT;"
FLOOR_SQL = "SELECT 1;"


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    The same definition as numpy's default (``method="linear"``): rank ``(n - 1) * q / 100``.
    Raise LabError if there is no sample or ``q`` is outside 0..100.
    """
    if not samples:
        raise LabError("percentile of no samples")
    if not 0 <= q <= 100:
        raise LabError(f"percentile {q} outside 0..100")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


@dataclass(frozen=True)
class Stats:
    """Summary of one series of timings, in milliseconds."""

    n: int
    min_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def stats(samples: Sequence[float]) -> Stats:
    """p50/p95/p99 and friends of ``samples`` (ms). Raise LabError if there is no sample."""
    if not samples:
        raise LabError("no samples")
    return Stats(
        n=len(samples), min_ms=min(samples), p50_ms=percentile(samples, 50), p95_ms=percentile(samples, 95),
        p99_ms=percentile(samples, 99), max_ms=max(samples), mean_ms=sum(samples) / len(samples),
    )


# --------------------------------------------------------------------------------------------------
# Sessions: who is timing, under which tenant
# --------------------------------------------------------------------------------------------------

_WHOAMI = """
SELECT current_user::text, session_user::text, r.rolsuper, r.rolbypassrls,
       EXISTS (SELECT 1 FROM pg_class AS c
                WHERE c.oid IN (to_regclass('contacts'), to_regclass('leads'), to_regclass('activities'))
                  AND pg_has_role(current_user, c.relowner, 'USAGE')) AS owns_tables,
       current_setting('app.current_tenant', true), pg_backend_pid()
  FROM pg_roles AS r WHERE r.rolname = current_user
"""


def verify_session(conn: psycopg.Connection, *, tenant_id: str | None, role: str = "app_user") -> dict[str, Any]:
    """Check, inside the session, that it runs as ``role`` under RLS with the expected tenant.

    Returns what was seen: current_user, session_user, rolsuper, rolbypassrls, owns_tables, tenant, pid.
    Raise LabError if current_user is not ``role``, is a superuser, has BYPASSRLS, owns (or inherits the
    owner of) the tables, or the tenant setting is not ``tenant_id``.
    """
    row = conn.execute(_WHOAMI).fetchone()
    assert row is not None
    seen = dict(zip(("current_user", "session_user", "rolsuper", "rolbypassrls", "owns_tables", "tenant", "pid"),
                    row))
    problems = []
    if seen["current_user"] != role:
        problems.append(f"current_user is {seen['current_user']}, not {role}")
    if seen["rolsuper"]:
        problems.append("it is a superuser (sees through RLS)")
    if seen["rolbypassrls"]:
        problems.append("it has BYPASSRLS")
    if seen["owns_tables"]:
        problems.append("it owns the tables")
    if tenant_id is not None and (seen["tenant"] or "") != tenant_id:
        problems.append(f"app.current_tenant is {seen['tenant']!r}, not {tenant_id!r}")
    if problems:
        raise LabError("the benchmark session is not what it must be: " + "; ".join(problems))
    return seen


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def time_query(
    cur: psycopg.Cursor[Any],
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
    Returns (samples in ms, the last result's rows).
    """
    rows: Any = None
    for _ in range(warmup):
        cur.execute(sql_text, params)
        if cur.description is not None:
            cur.fetchall()
    samples: list[float] = []
    started = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        cur.execute(sql_text, params)
        rows = cur.fetchall() if cur.description is not None else None
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if budget_s is not None and len(samples) >= 5 and time.perf_counter() - started > budget_s:
            break
    return samples, rows


def _params_for(conn: psycopg.Connection, bm: Benchmark, tenant_id: str) -> list[Any] | None:
    """$1 = the tenant id (when the query takes it), then the benchmark's extra parameters."""
    params: list[Any] = [tenant_id] if bm.tenant_param else []
    for expr in bm.extra_params:
        params.append(conn.execute(f"SELECT {expr}").fetchone()[0])  # type: ignore[index]
    return params or None


def _raw_cursor(conn: psycopg.Connection) -> psycopg.RawCursor[Any]:
    """A cursor that sends ``$1`` placeholders to the server as they are (the lesson's text, verbatim)
    and receives every value as text, as psql's ``\\timing`` (the lesson's own measure) does.

    So a sample is the query, its round trip and the transfer of its rows, not the driver's conversion
    into Python objects (Test 3's 50 custom_fields parsed into dicts cost about a millisecond more on the
    course's 2-core machine than the database spends on the query).
    """
    from psycopg.types.string import TextLoader

    cur = psycopg.RawCursor(conn)
    for t in psycopg.postgres.types:
        cur.adapters.register_loader(t.oid, TextLoader)
    return cur


def _scalar(value: Any) -> Any:
    """A single-cell result (received as text) as the number it is, else as it is."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+\.\d+", value):
        return float(value)
    return value


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


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


@dataclass
class _Tenant:
    id: str
    slug: str
    contacts: int
    leads: int
    activities: int
    role: str  # 'largest' / 'smallest'


def _pick_tenants(conn: psycopg.Connection) -> list[_Tenant]:
    """The largest and the smallest tenant by contacts (admin connection, sees every tenant)."""
    rows = conn.execute(
        """
        SELECT t.id::text, t.slug,
               (SELECT count(*) FROM contacts AS c WHERE c.tenant_id = t.id),
               (SELECT count(*) FROM leads AS l WHERE l.tenant_id = t.id),
               (SELECT count(*) FROM activities AS a WHERE a.tenant_id = t.id)
          FROM tenants AS t
         ORDER BY 3 DESC, t.slug
        """
    ).fetchall()
    rows = [r for r in rows if r[2] > 0]
    if not rows:
        raise LabError("no tenant has contacts: load data first (`labhelpers seed`)")
    picked = [_Tenant(*rows[0], role="largest")]
    if len(rows) > 1:
        picked.append(_Tenant(*rows[-1], role="smallest"))
    return picked


def machine_info() -> dict[str, Any]:
    """The machine the figures come from: CPU model, cores, RAM, platform, load average."""
    import psutil

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model or platform.machine(),
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hostname": platform.node(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


_LEAKPROOF_FUNCS = (
    "pg_catalog.jsonb_contains(jsonb, jsonb)",
    "pg_catalog.timestamptz_lt_timestamp(timestamptz, timestamp)",
    "pg_catalog.timestamptz_le_timestamp(timestamptz, timestamp)",
    "pg_catalog.timestamptz_eq_timestamp(timestamptz, timestamp)",
    "pg_catalog.timestamptz_ge_timestamp(timestamptz, timestamp)",
    "pg_catalog.timestamptz_gt_timestamp(timestamptz, timestamp)",
    "pg_catalog.timestamptz_ne_timestamp(timestamptz, timestamp)",
)


def _server(conn: psycopg.Connection) -> dict[str, Any]:
    version = conn.execute("SELECT version()").fetchone()[0]  # type: ignore[index]
    settings = db.server_settings(conn)
    extra = dict(conn.execute(
        "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
        (["server_version", "data_checksums", "plan_cache_mode", "io_method", "max_connections"],),
    ).fetchall())
    leakproof = dict(conn.execute(
        "SELECT oid::regprocedure::text, proleakproof FROM pg_proc WHERE oid = ANY(%s::regprocedure[])",
        (list(_LEAKPROOF_FUNCS),),
    ).fetchall())
    sizes = dict(conn.execute(
        """
        SELECT t, pg_size_pretty(sum(pg_total_relation_size(r.oid))::bigint)
          FROM unnest(ARRAY['contacts', 'leads', 'activities']) AS t
          CROSS JOIN LATERAL (SELECT to_regclass(t) AS oid
                              UNION SELECT relid FROM pg_partition_tree(to_regclass(t))) AS r
         GROUP BY t
        """
    ).fetchall())
    return {"version": version, "settings": {**settings, **extra}, "leakproof": leakproof, "table_sizes": sizes}


def _checkpoint(conn: psycopg.Connection) -> bool:
    """CHECKPOINT before timing, so that writing back a fresh load's dirty pages does not run beside the
    timed queries (a superuser or pg_checkpoint member may; returns whether it happened)."""
    try:
        conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        log.warning("bench: no CHECKPOINT first (needs a superuser or pg_checkpoint): a fresh load's writeback "
                    "may show in the tails")
        return False
    return True


def _seed_info(conn: psycopg.Connection) -> dict[str, Any] | None:
    from . import datagen

    run = datagen.latest_run(conn)
    if run is None:
        return None
    return {"id": run.id, "scale": run.scale, "seed": run.seed, "status": run.status,
            "anchor": run.anchor.isoformat(), "rows": (run.stats or {}).get("rows"),
            "load_seconds": (run.stats or {}).get("total_seconds")}


def _explain(conn: psycopg.Connection, sql_text: str, params: Sequence[Any] | None) -> dict[str, Any] | None:
    try:
        from .explain import explain
    except ImportError:
        return None
    try:
        text, ordered = _percent_s(sql_text, params)
        plan = explain(conn, text, ordered, analyze=True)
    except Exception as e:  # a plan is evidence, not the measurement: never lose the run for it
        log.warning("bench: no plan for %s: %s", sql_text.splitlines()[0], e)
        if not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        return {"error": str(e).strip().splitlines()[0]}
    out: dict[str, Any] = {"summary": plan.summary(), "json": json.loads(plan.to_json())}
    try:
        out["execution_ms"] = plan.execution_ms
        out["planning_ms"] = plan.planning_ms
        out["indexes_used"] = list(plan.indexes_used)
        out["top"] = plan.root.label()
    except Exception:  # optional extras
        pass
    return out


def _record(bm: Benchmark | None, *, name: str, tenant: _Tenant, samples: list[float], rows: Any,
            session: Mapping[str, Any], sql_text: str, params: Sequence[Any] | None, lesson: str, variant: str,
            target_ms: float | None, title: str, note: str = "", criterion: bool = False) -> dict[str, Any]:
    st = stats(samples)
    if isinstance(rows, list) and len(rows) == 1 and len(rows[0]) == 1 and \
            not isinstance(_scalar(rows[0][0]), str):
        result = _scalar(rows[0][0])
        nrows = 1
    else:
        result = None
        nrows = len(rows) if isinstance(rows, list) else None
    rec: dict[str, Any] = {
        "name": name, "key": bm.key if bm else lesson, "lesson": lesson, "title": title, "variant": variant,
        "tenant": tenant.slug, "tenant_id": tenant.id, "tenant_role": tenant.role,
        "role": session.get("current_user"), "session": dict(session),
        "sql": sql_text, "params": list(params) if params else [],
        "rows_returned": nrows, "result_value": _jsonable(result),
        "target_ms": target_ms, "samples_ms": [round(s, 4) for s in samples], **asdict(st),
        "note": note, "criterion": criterion,
    }
    if target_ms is not None:
        rec["passed"] = st.p95_ms <= target_ms
        rec["margin"] = round(target_ms / st.p95_ms, 1) if st.p95_ms > 0 else None
    return rec


# Queries whose answer is fully determined (Test 1 has LIMIT without ORDER BY: any 20 matches are right).
_DETERMINISTIC = ("test2", "test3", "scenario2")


def _answer(rows: Any) -> str:
    """A fingerprint of a result set, insensitive to row order (for GROUP BY without ORDER BY)."""
    import hashlib

    if not isinstance(rows, list):
        return ""
    return hashlib.sha256("\n".join(sorted(repr(tuple(r)) for r in rows)).encode()).hexdigest()


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


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
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
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
    Returns the results (the content of results.json).
    Raise LabError if the database holds another scale, has no data, or a timed session is not app_user
    under RLS with the expected tenant.
    """
    from . import datagen

    admin_dsn = db.resolve_dsn(dsn)
    warmup = max(5, repeat // 10) if warmup is None else warmup
    with db.connect(admin_dsn, autocommit=True) as admin:
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
        scale_name = run.scale if run else "seed-tenants"
        checkpointed = _checkpoint(admin)
        tenants = _pick_tenants(admin)
        results: dict[str, Any] = {
            "version": RESULTS_VERSION,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "scale": scale_name, "seed_run": _seed_info(admin), "database": db.dbname_of(admin_dsn),
            "repeat": repeat, "warmup": warmup, "prepared_statements": False, "checkpoint_first": checkpointed,
            "timing": "client wall clock per execute + fetch (one round trip over localhost TCP), values received "
                      "as text as psql's \\timing does, ms",
            "machine": machine_info(), "server": _server(admin),
            "tenants": [asdict(t) for t in tenants],
            "targets_ms": TARGETS_MS, "margin_required": MARGIN,
            "benchmarks": [], "rls_overhead": [], "policy_variants": [], "leakproof": [],
        }
        anchor_age_days = None
        if run is not None:
            anchor_age_days = (dt.datetime.now(dt.timezone.utc) - run.anchor).total_seconds() / 86400
        results["data_age_days"] = None if anchor_age_days is None else round(anchor_age_days, 2)
        if anchor_age_days is not None and anchor_age_days > 2:
            log.warning("bench: the data was generated %.0f days ago: the 'last 7/30 days' windows hold fewer "
                        "rows than at seeding time (re-seed with --replace for fresh windows)", anchor_age_days)

    n_cold = min(COLD_CONNECTIONS, repeat) if cold_connections is None else cold_connections
    total_steps = len(tenants) * (len(BENCHMARKS) + 3) + (3 if variants else 0) + \
        (len(tenants) + 1 if n_cold > 0 else 0)
    step = 0

    def tick(what: str) -> None:
        nonlocal step
        step += 1
        if on_progress:
            on_progress("bench", step, total_steps)
        log.info("bench: %s", what)

    # 1. the timed sessions: app_user, one per tenant, warmed up
    for tenant in tenants:
        with db.connect(admin_dsn, role="app_user", autocommit=True) as conn:
            conn.prepare_threshold = None  # every run parsed, planned and executed: no plan cache
            conn.execute("SET statement_timeout = '120s'")
            conn.execute("SELECT set_config('app.current_tenant', %s, false)", (tenant.id,))
            before = verify_session(conn, tenant_id=tenant.id)
            cur = _raw_cursor(conn)
            answers: dict[str, str] = {}
            for bm in BENCHMARKS:
                params = _params_for(conn, bm, tenant.id)
                try:
                    samples, rows = time_query(cur, bm.sql, params, repeat=repeat, warmup=warmup)
                except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable) as e:
                    results["benchmarks"].append({
                        "name": f"{bm.key} [{tenant.slug}]", "key": bm.key, "lesson": bm.lesson, "title": bm.title,
                        "variant": bm.variant, "tenant": tenant.slug, "tenant_role": tenant.role,
                        "sql": bm.sql, "error": str(e).strip().splitlines()[0], "needs": bm.needs,
                        "target_ms": bm.target_ms, "criterion": False,
                    })
                    log.warning("bench: %s needs a schema change: %s", bm.key, bm.needs)
                    tick(f"{bm.key} [{tenant.slug}] skipped")
                    continue
                after = verify_session(conn, tenant_id=tenant.id)
                rec = _record(bm, name=f"{bm.key} [{tenant.slug}]", tenant=tenant, samples=samples, rows=rows,
                              session=after, sql_text=bm.sql, params=params, lesson=bm.lesson,
                              variant=bm.variant, target_ms=bm.target_ms, title=bm.title, note=bm.note)
                answers[bm.key] = _answer(rows)
                if bm.variant == "tuned" and bm.lesson in answers and bm.lesson in _DETERMINISTIC:
                    # a tuned query must give the lesson's answer, not just a faster one
                    rec["same_result_as_verbatim"] = answers[bm.key] == answers[bm.lesson]
                if plans:
                    rec["plan"] = _explain(conn, bm.sql, params)
                results["benchmarks"].append(rec)
                tick(f"{bm.key} [{tenant.slug}]: p95 {rec['p95_ms']:.2f} ms")
            # tenant switch: alternate between this tenant and another one, then back
            other = next((t.id for t in tenants if t.id != tenant.id), tenant.id)
            ids = [other, tenant.id]
            samples = []
            for i in range(warmup + repeat):
                t0 = time.perf_counter_ns()
                cur.execute(SWITCH_SQL, [ids[i % 2]])
                cur.fetchall()
                if i >= warmup:
                    samples.append((time.perf_counter_ns() - t0) / 1e6)
            conn.execute("SELECT set_config('app.current_tenant', %s, false)", (tenant.id,))
            after = verify_session(conn, tenant_id=tenant.id)
            results["benchmarks"].append(_record(
                None, name=f"switch [{tenant.slug}]", tenant=tenant, samples=samples, rows=None, session=after,
                sql_text=SWITCH_SQL, params=[ids[0]], lesson="switch", variant="verbatim",
                target_ms=TARGETS_MS["switch"], title="Tenant switch: set_config round trip (session)",
                note="one round trip; SET app.current_tenant cannot take a bind parameter (PITFALLS 8)"))
            tick(f"switch [{tenant.slug}]")
            # the pool-safe form: BEGIN; set_config(..., true); COMMIT (3 round trips)
            samples = []
            for i in range(warmup + repeat):
                t0 = time.perf_counter_ns()
                with conn.transaction():
                    conn.execute("SELECT set_config('app.current_tenant', %s, true)", (ids[i % 2],))
                if i >= warmup:
                    samples.append((time.perf_counter_ns() - t0) / 1e6)
            after = verify_session(conn, tenant_id=tenant.id)
            results["benchmarks"].append(_record(
                None, name=f"switch_local [{tenant.slug}]", tenant=tenant, samples=samples, rows=None,
                session=after, sql_text=SWITCH_LOCAL_SQL, params=[ids[0]], lesson="switch", variant="tuned",
                target_ms=TARGETS_MS["switch"],
                title="Tenant switch, pool-safe: BEGIN; set_config(..., true); COMMIT",
                note="transaction-scoped context (PITFALLS 7): three round trips"))
            tick(f"switch_local [{tenant.slug}]")
            # the floor: one round trip doing nothing
            samples, _ = time_query(cur, FLOOR_SQL, None, repeat=repeat, warmup=warmup)
            results["benchmarks"].append(_record(
                None, name=f"floor [{tenant.slug}]", tenant=tenant, samples=samples, rows=None, session=after,
                sql_text=FLOOR_SQL, params=None, lesson="floor", variant="floor", target_ms=None,
                title="Floor: SELECT 1 (one round trip)"))
            tick(f"floor [{tenant.slug}]")
            results.setdefault("sessions", []).append({"tenant": tenant.slug, "before": before, "after": after})

    _mark_criterion(results)

    # 2. the first query on a new connection, on the same data right after the warm series (so the data
    # is as much in shared buffers as for them): what a new backend pays, and what a pool changes
    results["cold"] = None
    if n_cold > 0:
        cold = _cold_first_queries(admin_dsn, tenants, BENCHMARKS, connections=n_cold, tick=tick)
        results["cold"] = {
            "connections": n_cold,
            "how": "each sample a new login as app_user (psycopg.connect, timed), set_config of the tenant "
                   "(timed), the query's first execute + fetch (timed) and a second one (timed), then "
                   "verify_session; on as many other new logins EXPLAIN (ANALYZE, BUFFERS, SUMMARY) first, "
                   "then again; round robin over the queries",
            "queries": [_cold_record(r, results) for r in cold],
            "connect": {t.slug: asdict(stats([s for r in cold if r.tenant == t.slug for s in r.samples_ms["connect"]]))
                        for t in tenants if any(r.tenant == t.slug for r in cold)},
            "pool": [_pool_first_checkouts(admin_dsn, tenants[0], bm, connections=n_cold, warm=warm)
                     for bm in BENCHMARKS if bm.key in POOL_KEYS for warm in (False, True)]
                    + [_pgbouncer_first_queries(admin_dsn, tenants[0], bm, connections=n_cold)
                       for bm in BENCHMARKS if bm.key in POOL_KEYS],
        }
        tick("first checkouts from a pool")

    # 3. RLS overhead, policy variants, LEAKPROOF
    if variants:
        results["rls_overhead"] = _rls_overhead(admin_dsn, tenants, results, repeat=repeat, warmup=warmup)
        tick("RLS overhead")
        results["policy_variants"] = _policy_variants(admin_dsn, tenants[0], repeat=min(repeat, 50),
                                                      warmup=min(warmup, 3))
        tick("policy variants")
        results["leakproof"] = _leakproof_off(admin_dsn, tenants[0], results, repeat=min(repeat, 50),
                                              warmup=min(warmup, 3))
        tick("LEAKPROOF decision")

    if hasattr(os, "getloadavg"):
        results["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(out_dir) if out_dir else DEFAULT_OUT / scale_name
    write_report(results, out, plot=plot)
    return results


def _mark_criterion(results: dict[str, Any]) -> None:
    """For the success criterion, each lesson benchmark counts once per tenant: the verbatim query when it
    meets the target with the course's margin, else the course's tuned version (the fix the course teaches)."""
    recs = [r for r in results["benchmarks"] if "p95_ms" in r and r.get("target_ms")]
    by = {}
    for r in recs:
        by.setdefault((r["lesson"], r["tenant"]), []).append(r)
    for (_lesson, _tenant), group in by.items():
        verbatim = [r for r in group if r["variant"] == "verbatim"]
        tuned = [r for r in group if r["variant"] == "tuned" and r.get("same_result_as_verbatim") is not False]
        chosen = None
        if verbatim and verbatim[0]["p95_ms"] * MARGIN <= verbatim[0]["target_ms"]:
            chosen = verbatim[0]
        elif tuned:
            chosen = min(tuned, key=lambda r: r["p95_ms"])
        elif verbatim:
            chosen = verbatim[0]
        if chosen is not None:
            chosen["criterion"] = True


# --------------------------------------------------------------------------------------------------
# The first query on a new connection
# --------------------------------------------------------------------------------------------------

# Fresh logins per query and tenant in `labhelpers bench` (at most `repeat`, so `--repeat 2` stays quick).
COLD_CONNECTIONS = 40
# The queries whose first checkout from a real pool is measured, with and without `warm_up_backend`.
POOL_KEYS = ("test3", "test3_tuned")
POOL_SIZE = 4


@dataclass(frozen=True)
class ColdFirstQuery:
    """One benchmark query run first on new connections, each a fresh login as ``app_user``.

    ``first`` is the client wall clock of the first execute + fetch after the tenant is set (what a new
    pool connection or a student's first ``\\timing`` pays); ``second`` the same query right after on the
    same connection. On other fresh logins ``EXPLAIN (ANALYZE, BUFFERS, SUMMARY)`` ran first, then again:
    PostgreSQL's own Planning Time and Execution Time, cold and warm, and the shared buffers hit while
    planning (catalog pages: the backend filling its relation and catalog caches) or read while executing
    (data pages that were not in shared buffers). Planning Time leaves out parse analysis and the rewriter
    (which adds the RLS policies), which fill caches too: on a third set of fresh logins ``PREPARE`` (parse,
    analyze, rewrite, no planning) is timed first and again (``parse_cold``, ``parse_warm``).
    """

    key: str
    lesson: str
    title: str
    variant: str
    tenant: str
    tenant_id: str
    tenant_role: str
    target_ms: float
    connections: int                 # fresh logins timed, one first execution each
    explain_connections: int         # fresh logins whose first statement after the tenant was EXPLAIN ANALYZE
    connect: Stats                   # psycopg.connect: TCP, startup, SCRAM, a new backend
    set_tenant: Stats                # set_config('app.current_tenant', ...), the session's first statement
    first: Stats
    second: Stats
    new_connection: Stats            # connect + set_tenant + first, per connection: a request without a pool
    planning_cold: Stats | None
    execution_cold: Stats | None
    planning_warm: Stats | None
    execution_warm: Stats | None
    parse_cold: Stats | None         # PREPARE round trip, first statement after the tenant on a new login
    parse_warm: Stats | None         # a second PREPARE of the same text on that connection
    planning_hit_cold: Stats | None  # shared buffer hits while planning, first EXPLAIN (blocks)
    planning_hit_warm: Stats | None
    planning_read_cold: int          # blocks read while planning, all cold EXPLAINs together
    execution_read_cold: int         # blocks read while executing, all cold EXPLAINs together
    rows_returned: int | None
    verified: dict[str, Any]         # what verify_session saw on every connection (distinct values)
    explain_cold: str                # one cold EXPLAIN as PostgreSQL printed it
    explain_warm: str                # the same connection's second EXPLAIN
    samples_ms: dict[str, list[float]]

    @property
    def passed(self) -> bool:
        """Whether the first execution's p95 is within the lesson's target."""
        return self.first.p95_ms <= self.target_ms

    def timing_lines(self, which: str = "cold") -> str:
        """PostgreSQL's own lines of the ``which`` ("cold" or "warm") EXPLAIN: the top plan node, then
        the Planning buffers, Planning Time and Execution Time."""
        text = self.explain_cold if which == "cold" else self.explain_warm
        lines = text.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("Planning")), len(lines))
        return "\n".join(lines[:1] + lines[start:])


def _fresh_session(app_dsn: str) -> tuple[psycopg.Connection, float]:
    """A new login (a new backend); returns it with the time ``psycopg.connect`` took, ms. The timeout
    comes with the startup packet, so no statement runs before the caller's."""
    t0 = time.perf_counter_ns()
    conn = psycopg.connect(app_dsn, autocommit=True, connect_timeout=10, options="-c statement_timeout=120s")
    ms = (time.perf_counter_ns() - t0) / 1e6
    conn.prepare_threshold = None
    return conn, ms


def _timed(cur: psycopg.RawCursor[Any], sql_text: str, params: Sequence[Any] | None) -> tuple[float, Any]:
    t0 = time.perf_counter_ns()
    cur.execute(sql_text, params)
    rows = cur.fetchall() if cur.description is not None else None
    return (time.perf_counter_ns() - t0) / 1e6, rows


_PLANNING_TIME = re.compile(r"^Planning Time: ([\d.]+) ms", re.M)
_EXECUTION_TIME = re.compile(r"^Execution Time: ([\d.]+) ms", re.M)


def _shared(line: str, what: str) -> int:
    """``shared hit=12 read=3`` -> 12 for "hit" (0 when absent)."""
    m = re.search(r"shared(?: \w+=\d+)*? " + what + r"=(\d+)", line)
    return int(m.group(1)) if m else 0


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


def _explain_fresh(app_dsn: str, bm: Benchmark, tenant: _Tenant, params: Sequence[Any] | None
                   ) -> tuple[str, str, dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS, SUMMARY) as the first statement after the tenant on a new login, then
    again; returns both texts and what verify_session saw afterwards."""
    conn, _ = _fresh_session(app_dsn)
    try:
        cur = _raw_cursor(conn)
        _timed(cur, SWITCH_SQL, [tenant.id])
        stmt = "EXPLAIN (ANALYZE, BUFFERS, SUMMARY) " + bm.sql.rstrip().rstrip(";")
        texts = ["\n".join(r[0] for r in _timed(cur, stmt, params)[1]) for _ in range(2)]
        return texts[0], texts[1], verify_session(conn, tenant_id=tenant.id)
    finally:
        conn.close()


def _parse_fresh(app_dsn: str, bm: Benchmark, tenant: _Tenant) -> tuple[float, float, dict[str, Any]]:
    """PREPARE (parse analysis and rewrite, no planning) first on a new login, then again: round trips, ms."""
    conn, _ = _fresh_session(app_dsn)
    try:
        cur = _raw_cursor(conn)
        _timed(cur, SWITCH_SQL, [tenant.id])
        text = bm.sql.rstrip().rstrip(";")
        cold, _ = _timed(cur, f"PREPARE lab_cold_1 AS {text}", None)
        warm, _ = _timed(cur, f"PREPARE lab_cold_2 AS {text}", None)
        return cold, warm, verify_session(conn, tenant_id=tenant.id)
    finally:
        conn.close()


def _first_on_fresh(app_dsn: str, bm: Benchmark, tenant: _Tenant, params: Sequence[Any] | None
                    ) -> tuple[dict[str, float], Any, dict[str, Any]]:
    """connect, set the tenant, the query twice, each timed; then verify_session (after, so that its own
    catalog reads do not warm the backend first: the role is the login's, fixed before the query)."""
    conn, connect_ms = _fresh_session(app_dsn)
    try:
        cur = _raw_cursor(conn)
        set_ms, _ = _timed(cur, SWITCH_SQL, [tenant.id])
        first_ms, rows = _timed(cur, bm.sql, params)
        second_ms, _ = _timed(cur, bm.sql, params)
        seen = verify_session(conn, tenant_id=tenant.id)
    finally:
        conn.close()
    return {"connect": connect_ms, "set_tenant": set_ms, "first": first_ms, "second": second_ms}, rows, seen


def _series(parsed: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], which: int, field: str) -> list[float]:
    """One figure of every (cold, warm) pair of parsed EXPLAINs: ``which`` 0 = cold, 1 = warm."""
    return [float(p[which][field]) for p in parsed if p[which][field] is not None]


def _stats_or_none(samples: Sequence[float]) -> Stats | None:
    return stats(samples) if samples else None


def _verified(seen: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    facts: dict[str, Any] = {k: sorted({s[k] for s in seen}, key=str)
                             for k in ("current_user", "session_user", "rolsuper", "rolbypassrls", "owns_tables",
                                       "tenant")}
    facts["checked"] = len(seen)
    facts["distinct_backends"] = len({s["pid"] for s in seen})
    return facts


def _cold_first_queries(admin_dsn: str, tenants: Sequence[_Tenant], benchmarks: Sequence[Benchmark], *,
                        connections: int, explain: bool = True,
                        tick: Callable[[str], None] | None = None) -> list[ColdFirstQuery]:
    app_dsn = db.role_dsn(admin_dsn, "app_user")
    out = []
    for tenant in tenants:
        # the parameters are computed once, by the administrator: on the fresh sessions nothing runs first
        with db.connect(admin_dsn, autocommit=True) as admin:
            params = {bm.key: _params_for(admin, bm, tenant.id) for bm in benchmarks}
        runs: dict[str, dict[str, list[Any]]] = {bm.key: {} for bm in benchmarks}
        # round robin: each round one new login per query, so drift in the machine's load spreads evenly
        for _ in range(connections):
            for bm in benchmarks:
                got = runs[bm.key]
                try:
                    times, rows, seen = _first_on_fresh(app_dsn, bm, tenant, params[bm.key])
                except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable):
                    got["missing"] = [True]
                    continue
                for k, v in times.items():
                    got.setdefault(k, []).append(v)
                got.setdefault("new_connection", []).append(times["connect"] + times["set_tenant"] + times["first"])
                got.setdefault("seen", []).append(seen)
                got["rows"] = [len(rows) if isinstance(rows, list) else None]
                if explain:
                    cold, warm, seen = _explain_fresh(app_dsn, bm, tenant, params[bm.key])
                    got.setdefault("explain", []).append((cold, warm))
                    got["seen"].append(seen)
                    parse_cold, parse_warm, seen = _parse_fresh(app_dsn, bm, tenant)
                    got.setdefault("parse_cold", []).append(parse_cold)
                    got.setdefault("parse_warm", []).append(parse_warm)
                    got["seen"].append(seen)
        for bm in benchmarks:
            got = runs[bm.key]
            if "first" not in got:
                log.warning("bench: %s needs a schema change: %s (no cold measurement)", bm.key, bm.needs)
                continue
            parsed = [(explain_timings(c), explain_timings(w)) for c, w in got.get("explain", [])]

            rec = ColdFirstQuery(
                key=bm.key, lesson=bm.lesson, title=bm.title, variant=bm.variant, tenant=tenant.slug,
                tenant_id=tenant.id, tenant_role=tenant.role, target_ms=bm.target_ms,
                connections=len(got["first"]), explain_connections=len(parsed),
                connect=stats(got["connect"]), set_tenant=stats(got["set_tenant"]),
                first=stats(got["first"]), second=stats(got["second"]), new_connection=stats(got["new_connection"]),
                planning_cold=_stats_or_none(_series(parsed, 0, "planning_ms")),
                execution_cold=_stats_or_none(_series(parsed, 0, "execution_ms")),
                planning_warm=_stats_or_none(_series(parsed, 1, "planning_ms")),
                execution_warm=_stats_or_none(_series(parsed, 1, "execution_ms")),
                parse_cold=_stats_or_none(got.get("parse_cold", [])),
                parse_warm=_stats_or_none(got.get("parse_warm", [])),
                planning_hit_cold=_stats_or_none(_series(parsed, 0, "planning_hit")),
                planning_hit_warm=_stats_or_none(_series(parsed, 1, "planning_hit")),
                planning_read_cold=int(sum(_series(parsed, 0, "planning_read"))),
                execution_read_cold=int(sum(_series(parsed, 0, "execution_read"))),
                rows_returned=got["rows"][0], verified=_verified(got["seen"]),
                explain_cold=got["explain"][0][0] if parsed else "", explain_warm=got["explain"][0][1] if parsed else "",
                samples_ms={k: [round(s, 4) for s in got[k]]
                            for k in ("connect", "set_tenant", "first", "second", "new_connection", "parse_cold",
                                      "parse_warm") if k in got}
                | {"planning_cold": _series(parsed, 0, "planning_ms"), "execution_cold": _series(parsed, 0, "execution_ms"),
                   "planning_warm": _series(parsed, 1, "planning_ms"), "execution_warm": _series(parsed, 1, "execution_ms")},
            )
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
        picked = _pick_tenants(admin)
        if tenants is not None:
            rows = admin.execute(
                "SELECT t.id::text, t.slug,"
                " (SELECT count(*) FROM contacts AS c WHERE c.tenant_id = t.id),"
                " (SELECT count(*) FROM leads AS l WHERE l.tenant_id = t.id),"
                " (SELECT count(*) FROM activities AS a WHERE a.tenant_id = t.id)"
                " FROM tenants AS t WHERE t.slug = ANY(%s)", (list(tenants),)).fetchall()
            found = {r[1]: r for r in rows}
            unknown = [s for s in tenants if s not in found]
            if unknown:
                raise LabError(f"no tenant {', '.join(unknown)}")
            roles = {t.slug: t.role for t in picked}
            picked = [_Tenant(*found[s], role=roles.get(s, "chosen")) for s in tenants]
    by_key = {bm.key: bm for bm in BENCHMARKS}
    unknown = [k for k in keys or () if k not in by_key]
    if unknown:
        raise LabError(f"no benchmark {', '.join(unknown)}; expected one of: {', '.join(by_key)}")
    chosen = [by_key[k] for k in keys] if keys else list(BENCHMARKS)
    db.connect(admin_dsn, role="app_user").close()  # LabError when the role is missing
    return _cold_first_queries(admin_dsn, picked, chosen, connections=connections, explain=explain)


def cold_table(records: Sequence[ColdFirstQuery]) -> list[dict[str, Any]]:
    """One row per record (ms): connect, first and second execution, EXPLAIN's planning and execution
    time cold and warm, the shared buffers planning hit cold and warm (p50); for a DataFrame."""

    def p50(s: Stats | None) -> float | None:
        return s.p50_ms if s is not None else None

    return [{
        "query": _short_title(r.title, r.variant), "tenant": r.tenant, "n": r.connections,
        "connect p50": r.connect.p50_ms, "first p50": r.first.p50_ms, "first p95": r.first.p95_ms,
        "second p50": r.second.p50_ms, "planning cold p50": p50(r.planning_cold),
        "planning warm p50": p50(r.planning_warm), "execution cold p50": p50(r.execution_cold),
        "execution warm p50": p50(r.execution_warm), "parse cold p50": p50(r.parse_cold),
        "parse warm p50": p50(r.parse_warm), "planning buffers cold": p50(r.planning_hit_cold),
        "planning buffers warm": p50(r.planning_hit_warm), "target": r.target_ms,
        "first p95 within target": r.passed,
    } for r in records]


def _short_title(title: str, variant: str) -> str:
    """"Test 3 tuned: the time window..." -> "Test 3 tuned"; a tuned title without "tuned" gets it."""
    head = title.split(":")[0]
    return head if variant != "tuned" or "tuned" in head or "rollup" in head else f"{head} (tuned)"


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
        text = bm.sql.rstrip().rstrip(";")
        try:
            if generic_explain:
                conn.execute("EXPLAIN (GENERIC_PLAN) " + text, prepare=False).fetchall()
            else:
                _explain_generic_before_16(conn, text)
        except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable):
            if not conn.autocommit:
                conn.rollback()
    if not conn.autocommit:
        conn.commit()


def _explain_generic_before_16(conn: psycopg.Connection, text: str) -> None:
    """PostgreSQL 15 has no GENERIC_PLAN: prepare, force a generic plan, EXPLAIN EXECUTE with NULLs."""
    n = max((int(m) for m in re.findall(r"\$(\d+)", text)), default=0)
    conn.execute("PREPARE lab_warm_up AS " + text, prepare=False)
    try:
        conn.execute("SET plan_cache_mode = force_generic_plan", prepare=False)
        args = f"({', '.join(['NULL'] * n)})" if n else ""
        conn.execute(f"EXPLAIN EXECUTE lab_warm_up{args}", prepare=False).fetchall()
    finally:
        conn.execute("RESET plan_cache_mode", prepare=False)
        conn.execute("DEALLOCATE lab_warm_up", prepare=False)


def _pool_first_checkouts(admin_dsn: str, tenant: _Tenant, bm: Benchmark, *, connections: int,
                          warm: bool, size: int = POOL_SIZE) -> dict[str, Any]:
    """The first query on each connection of a real psycopg_pool (``min_size = max_size = size``, opened
    and filled before timing), with and without `warm_up_backend` as its ``configure`` callback."""
    from psycopg_pool import ConnectionPool

    app_dsn = db.role_dsn(admin_dsn, "app_user")
    with db.connect(admin_dsn, autocommit=True) as admin:
        params = _params_for(admin, bm, tenant.id)
    warm_ms: list[float] = []

    def configure(conn: psycopg.Connection) -> None:
        t0 = time.perf_counter_ns()
        warm_up_backend(conn)
        warm_ms.append((time.perf_counter_ns() - t0) / 1e6)

    first: list[float] = []
    second: list[float] = []
    seen: list[dict[str, Any]] = []
    while len(first) < connections:
        with ConnectionPool(app_dsn, min_size=size, max_size=size, open=True,
                            configure=configure if warm else None,
                            kwargs={"autocommit": True, "prepare_threshold": None,
                                    "options": "-c statement_timeout=120s"}) as pool:
            pool.wait(timeout=60)
            held = [pool.getconn() for _ in range(size)]  # every connection of the pool, each once
            try:
                for conn in held[:connections - len(first)]:
                    cur = _raw_cursor(conn)
                    _timed(cur, SWITCH_SQL, [tenant.id])
                    first.append(_timed(cur, bm.sql, params)[0])
                    second.append(_timed(cur, bm.sql, params)[0])
                    seen.append(verify_session(conn, tenant_id=tenant.id))
            finally:
                for conn in held:
                    pool.putconn(conn)
    return {
        "key": bm.key, "title": bm.title, "variant": bm.variant, "tenant": tenant.slug, "target_ms": bm.target_ms,
        "pool": f"psycopg_pool.ConnectionPool(min_size={size}, max_size={size}"
                + (", configure=bench.warm_up_backend)" if warm else ")"),
        "warm_up": warm, "connections": len(first), "connect": None,
        "first": asdict(stats(first)), "second": asdict(stats(second)),
        "warm_up_ms": asdict(stats(warm_ms)) if warm_ms else None, "verified": _verified(seen),
        "samples_ms": {"first": [round(s, 4) for s in first], "second": [round(s, 4) for s in second],
                       "warm_up": [round(s, 4) for s in warm_ms]},
    }


def _pgbouncer_first_queries(admin_dsn: str, tenant: _Tenant, bm: Benchmark, *, connections: int,
                             pool_size: int = 2) -> dict[str, Any]:
    """New client logins through a real PgBouncer (transaction mode, `labhelpers.pooler.PgBouncer`), one
    after another: each connects (timed), sets the tenant for its transaction, runs the query twice (timed)
    and verify_session inside the same transaction. The server connections outlive the clients."""
    from . import pooler

    if pooler.pgbouncer_binary() is None:
        return {"key": bm.key, "title": bm.title, "tenant": tenant.slug, "skipped": "pgbouncer is not installed"}
    with db.connect(admin_dsn, autocommit=True) as admin:
        params = _params_for(admin, bm, tenant.id)
    connect: list[float] = []
    first: list[float] = []
    second: list[float] = []
    seen: list[dict[str, Any]] = []
    with pooler.PgBouncer(admin_dsn, pool_size=pool_size, pool_mode="transaction") as bouncer:
        client_dsn = bouncer.dsn(db.dbname_of(admin_dsn), "app_user")
        version = bouncer.version()
        for _ in range(connections):
            t0 = time.perf_counter_ns()
            conn = psycopg.connect(client_dsn, autocommit=False, **db.TRANSACTION_POOLING)  # type: ignore[arg-type]
            connect.append((time.perf_counter_ns() - t0) / 1e6)
            try:
                cur = _raw_cursor(conn)
                _timed(cur, "SELECT set_config('app.current_tenant', $1, true)", [tenant.id])  # BEGIN first
                first.append(_timed(cur, bm.sql, params)[0])
                second.append(_timed(cur, bm.sql, params)[0])
                seen.append(verify_session(conn, tenant_id=tenant.id))
                conn.commit()
            finally:
                conn.close()
    return {
        "key": bm.key, "title": bm.title, "variant": bm.variant, "tenant": tenant.slug, "target_ms": bm.target_ms,
        "pool": f"{version}, pool_mode=transaction, default_pool_size={pool_size}", "warm_up": False,
        "connections": len(first), "connect": asdict(stats(connect)),
        "first": asdict(stats(first)), "second": asdict(stats(second)), "warm_up_ms": None,
        "verified": _verified(seen),
        "samples_ms": {"connect": [round(s, 4) for s in connect], "first": [round(s, 4) for s in first],
                       "second": [round(s, 4) for s in second]},
    }


def _cold_record(r: ColdFirstQuery, results: Mapping[str, Any]) -> dict[str, Any]:
    """A `ColdFirstQuery` for results.json, beside the warm p50/p95 of the same query and tenant."""
    warm = next((b for b in results["benchmarks"] if b.get("key") == r.key and b.get("tenant") == r.tenant
                 and "p50_ms" in b), None)
    return {**asdict(r), "passed": r.passed,
            "margin": round(r.target_ms / r.first.p95_ms, 1) if r.first.p95_ms > 0 else None,
            "warm": {k: warm[k] for k in ("p50_ms", "p95_ms", "p99_ms")} if warm else None}


# --------------------------------------------------------------------------------------------------
# RLS overhead: app_user vs the owner with an explicit tenant predicate
# --------------------------------------------------------------------------------------------------


def _rls_overhead(admin_dsn: str, tenants: Sequence[_Tenant], results: Mapping[str, Any], *, repeat: int,
                  warmup: int) -> list[dict[str, Any]]:
    out = []
    for tenant in tenants:
        with db.connect(admin_dsn, autocommit=True) as owner:
            owner.prepare_threshold = None
            owner.execute("SET statement_timeout = '120s'")
            owner.execute("SELECT set_config('app.current_tenant', '', false)")
            who = owner.execute(_WHOAMI).fetchone()
            cur = _raw_cursor(owner)
            for bm in BENCHMARKS:
                app = next((r for r in results["benchmarks"]
                            if r.get("key") == bm.key and r.get("tenant") == tenant.slug and "p50_ms" in r), None)
                if app is None:
                    continue
                owner_sql = bm.owner_sql or bm.sql
                params = [tenant.id] + (_params_for(owner, bm, tenant.id) or [])[1 if bm.tenant_param else 0:]
                samples, _ = time_query(cur, owner_sql, params, repeat=repeat, warmup=warmup)
                st = stats(samples)
                rec = {
                    "query": bm.key, "title": bm.title, "tenant": tenant.slug, "owner_sql": owner_sql,
                    "owner_role": {"current_user": who[0], "rolsuper": who[2], "rolbypassrls": who[3]},  # type: ignore[index]
                    "app_user": {k: app[k] for k in ("p50_ms", "p95_ms", "p99_ms")},
                    "owner": {"p50_ms": st.p50_ms, "p95_ms": st.p95_ms, "p99_ms": st.p99_ms},
                    "owner_samples_ms": [round(s, 4) for s in samples],
                    "overhead_p50_ms": app["p50_ms"] - st.p50_ms,
                    "ratio_p50": app["p50_ms"] / st.p50_ms if st.p50_ms > 0 else None,
                }
                out.append(rec)
    return out


# --------------------------------------------------------------------------------------------------
# Toggles inside a rolled-back transaction: policy variants, LEAKPROOF
# --------------------------------------------------------------------------------------------------

POLICY_VARIANTS: tuple[tuple[str, str, str], ...] = (
    ("direct (the course's)", "",
     "tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid"),
    ("scalar subselect", "",
     "tenant_id = (SELECT NULLIF(current_setting('app.current_tenant', true), '')::uuid)"),
    ("STABLE sql function",
     "CREATE FUNCTION lab_bench_tenant_stable() RETURNS uuid LANGUAGE sql STABLE AS "
     "$$ SELECT NULLIF(current_setting('app.current_tenant', true), '')::uuid $$",
     "tenant_id = lab_bench_tenant_stable()"),
    ("(SELECT STABLE plpgsql function)",
     "CREATE FUNCTION lab_bench_tenant_stable_pl() RETURNS uuid LANGUAGE plpgsql STABLE AS "
     "$$ BEGIN RETURN NULLIF(current_setting('app.current_tenant', true), '')::uuid; END $$",
     "tenant_id = (SELECT lab_bench_tenant_stable_pl())"),
    ("STABLE plpgsql function, bare",
     "CREATE FUNCTION lab_bench_tenant_stable_pl() RETURNS uuid LANGUAGE plpgsql STABLE AS "
     "$$ BEGIN RETURN NULLIF(current_setting('app.current_tenant', true), '')::uuid; END $$",
     "tenant_id = lab_bench_tenant_stable_pl()"),
    ("plpgsql function (VOLATILE default)",
     "CREATE FUNCTION lab_bench_tenant_volatile() RETURNS uuid LANGUAGE plpgsql AS "
     "$$ BEGIN RETURN NULLIF(current_setting('app.current_tenant', true), '')::uuid; END $$",
     "tenant_id = lab_bench_tenant_volatile()"),
)
VARIANT_QUERIES: tuple[tuple[str, str], ...] = (
    ("count contacts (policy only)", "SELECT count(*) FROM contacts;"),
    ("scenario2_tuned", "SELECT COUNT(*) FROM contacts\nWHERE cf_status = 'active' AND cf_priority = 'high';"),
)


@contextmanager
def _as_app_user_in_rolled_back_txn(admin_dsn: str, tenant_id: str) -> Iterator[tuple[psycopg.Connection, Any]]:
    """An admin transaction, always rolled back, whose statements after ``yield`` run as app_user.

    The caller makes its catalog changes with the admin connection first (``conn.execute`` before calling
    ``switch()``), then calls ``switch()``: ``SET LOCAL ROLE app_user`` + the tenant, verified.
    """
    conn = db.connect(admin_dsn, autocommit=False)
    conn.prepare_threshold = None
    try:
        conn.execute("SET LOCAL statement_timeout = '300s'")
        conn.execute("SET LOCAL lock_timeout = '10s'")

        def switch() -> dict[str, Any]:
            conn.execute("SET LOCAL ROLE app_user")
            conn.execute("SELECT set_config('app.current_tenant', %s, true)", (tenant_id,))
            return verify_session(conn, tenant_id=tenant_id)

        yield conn, switch
    finally:
        conn.rollback()
        conn.close()


def _policy_variants(admin_dsn: str, tenant: _Tenant, *, repeat: int, warmup: int) -> list[dict[str, Any]]:
    out = []
    for name, create_fn, using in POLICY_VARIANTS:
        with _as_app_user_in_rolled_back_txn(admin_dsn, tenant.id) as (conn, switch):
            if create_fn:
                conn.execute(create_fn)
            conn.execute(f"ALTER POLICY contacts_tenant_isolation ON contacts USING ({using}) WITH CHECK ({using})")
            session = switch()
            cur = _raw_cursor(conn)
            for qname, q in VARIANT_QUERIES:
                samples, rows = time_query(cur, q, None, repeat=repeat, warmup=warmup, budget_s=20)
                st = stats(samples)
                plan = _explain(conn, q, None)
                out.append({
                    "variant": name, "policy_using": using, "function": create_fn or None, "query": qname,
                    "sql": q, "tenant": tenant.slug, "session": session, "result_value": _jsonable(_scalar(rows[0][0])),
                    **asdict(st), "samples_ms": [round(s, 4) for s in samples],
                    "plan_top": (plan or {}).get("top"), "plan_summary": (plan or {}).get("summary"),
                })
                log.info("bench: policy %s, %s: p50 %.2f ms", name, qname, st.p50_ms)
    return out


def _leakproof_off(admin_dsn: str, tenant: _Tenant, results: Mapping[str, Any], *, repeat: int,
                   warmup: int) -> list[dict[str, Any]]:
    """The verbatim queries with 04's LEAKPROOF marks taken back (in a rolled-back transaction)."""
    out = []
    with db.connect(admin_dsn, autocommit=True) as admin:
        marked = [f for f, lp in admin.execute(
            "SELECT oid::regprocedure::text, proleakproof FROM pg_proc WHERE oid = ANY(%s::regprocedure[])",
            (list(_LEAKPROOF_FUNCS),)).fetchall() if lp]
        is_super = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]  # type: ignore[index]
    if not marked or not is_super:
        return [{"note": "nothing to compare: no LEAKPROOF marks from sql/04 in this database" if not marked
                 else "not a superuser: cannot toggle LEAKPROOF"}]
    with _as_app_user_in_rolled_back_txn(admin_dsn, tenant.id) as (conn, switch):
        for f in marked:
            conn.execute(f"ALTER FUNCTION {f} NOT LEAKPROOF")
        session = switch()
        cur = _raw_cursor(conn)
        for bm in BENCHMARKS:
            if bm.variant != "verbatim":
                continue
            params = [tenant.id] if bm.tenant_param else None
            samples, _ = time_query(cur, bm.sql, params, repeat=repeat, warmup=warmup, budget_s=20)
            st = stats(samples)
            plan = _explain(conn, bm.sql, params)
            with_lp = next((r for r in results["benchmarks"]
                            if r.get("key") == bm.key and r.get("tenant") == tenant.slug and "p50_ms" in r), None)
            out.append({
                "query": bm.key, "title": bm.title, "tenant": tenant.slug, "session": session,
                "not_leakproof": {"p50_ms": st.p50_ms, "p95_ms": st.p95_ms, "p99_ms": st.p99_ms},
                "leakproof": {k: with_lp[k] for k in ("p50_ms", "p95_ms", "p99_ms")} if with_lp else None,
                "target_ms": bm.target_ms, "passed_not_leakproof": st.p95_ms <= bm.target_ms,
                "samples_ms": [round(s, 4) for s in samples], "functions": marked,
                "plan_top": (plan or {}).get("top"), "plan_summary": (plan or {}).get("summary"),
            })
    return out


# --------------------------------------------------------------------------------------------------
# Output: results.json, report.md, pictures; reading them back
# --------------------------------------------------------------------------------------------------


def _fmt(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def report_markdown(results: Mapping[str, Any]) -> str:
    """The report a student reads: the benchmark table, RLS overhead, policy variants, LEAKPROOF."""
    m, srv = results["machine"], results["server"]
    lines = [
        f"# Benchmark: scale {results['scale']}",
        "",
        f"{results['created_at']} on {m['cpu_model']}, {m['cores']} cores, {m['ram_gb']} GB RAM; "
        f"{srv['version'].split(',')[0]}. Each query: {results['warmup']} warm-up runs, then "
        f"{results['repeat']} timed runs as **app_user under RLS** with the tenant set "
        "(verified inside the session). Times: client wall clock per execute + fetch, values received as "
        "text (as psql's `\\timing`), ms. "
        f"Pass: p95 within the lesson's target; the course asks for {MARGIN:g}x margin. "
        f"Load average (1, 5, 15 min) at start {m.get('load_avg_1_5_15')}, at end {m.get('load_avg_at_end')}: "
        "other work on the machine shows up in the tail (p99, max).",
        "",
    ]
    if results.get("seed_run"):
        s = results["seed_run"]
        rows = s.get("rows") or {}
        lines.append(f"Data: seed run {s['id']} (scale {s['scale']}, seed {s['seed']}, anchor {s['anchor']}), "
                     + ", ".join(f"{k} {v:,}" for k, v in rows.items()) + ".")
        lines.append("")
    for t in results["tenants"]:
        lines.append(f"- {t['role']} tenant: **{t['slug']}** ({t['contacts']:,} contacts, {t['leads']:,} leads, "
                     f"{t['activities']:,} activities)")
    lines += ["", "| query | tenant | variant | rows | p50 | p95 | p99 | max | target | p95 vs target |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results["benchmarks"]:
        if "error" in r:
            lines.append(f"| {r['title']} | {r['tenant']} | {r['variant']} | - | - | - | - | - | "
                         f"{r['target_ms']:g} | needs schema: {r['needs']} |")
            continue
        target = r.get("target_ms")
        verdict = "-"
        if target:
            ok = r["passed"]
            verdict = ("PASS" if ok else "**MISS**") + f" ({r['margin']}x)" + (" *" if r.get("criterion") else "")
            if r.get("same_result_as_verbatim") is False:
                verdict += " DIFFERENT RESULT"
        rows = r.get("result_value") if r.get("result_value") is not None else r.get("rows_returned")
        lines.append(
            f"| {r['title']} | {r['tenant']} | {r['variant']} | {rows if rows is not None else '-'} | "
            f"{_fmt(r['p50_ms'])} | {_fmt(r['p95_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['max_ms'])} | "
            f"{f'{target:g}' if target else '-'} | {verdict} |"
        )
    lines += ["", "`*` counts for the success criterion (the verbatim query when it has the margin, else the "
              "course's tuned version). Margin = target / p95.", ""]
    misses = [r for r in results["benchmarks"] if r.get("variant") == "verbatim" and r.get("target_ms")
              and "p95_ms" in r and r["p95_ms"] * MARGIN > r["target_ms"]]
    if misses:
        lines.append("## Verbatim queries without the margin, and why")
        lines.append("")
        for r in misses:
            plan = (r.get("plan") or {}).get("summary", "").splitlines()
            lines.append(f"- **{r['title']}** [{r['tenant']}]: p95 {_fmt(r['p95_ms'])} ms "
                         f"(target {r['target_ms']:g} ms, {r['margin']}x). Plan: "
                         + "; ".join(p for p in plan[:3]))
        lines.append("")
    if results.get("rls_overhead"):
        lines += ["## RLS overhead: app_user vs the owner with an explicit tenant predicate", "",
                  "| query | tenant | app_user p50 | owner p50 | app_user p95 | owner p95 | ratio p50 |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in results["rls_overhead"]:
            ratio = f"{r['ratio_p50']:.2f}x" if r.get("ratio_p50") else "-"
            lines.append(f"| {r['title']} | {r['tenant']} | {_fmt(r['app_user']['p50_ms'])} | "
                         f"{_fmt(r['owner']['p50_ms'])} | {_fmt(r['app_user']['p95_ms'])} | "
                         f"{_fmt(r['owner']['p95_ms'])} | {ratio} |")
        lines.append("")
    if results.get("policy_variants"):
        lines += ["## Policy expression variants (contacts' tenant policy, rolled back after measuring)", "",
                  "| policy USING | query | n | p50 | p95 | result | plan |", "|---|---|---:|---:|---:|---:|---|"]
        for r in results["policy_variants"]:
            lines.append(f"| {r['variant']}: `{r['policy_using']}` | {r['query']} | {r['n']} | {_fmt(r['p50_ms'])} | "
                         f"{_fmt(r['p95_ms'])} | {r['result_value']} | {r.get('plan_top') or '-'} |")
        lines.append("")
    lp = [r for r in results.get("leakproof", []) if "query" in r]
    if lp:
        lines += ["## The LEAKPROOF decision of sql/04 (verbatim queries, marks taken back in a rolled-back "
                  "transaction)", "",
                  "| query | tenant | p95 not leakproof | p95 leakproof (as built) | target | plan without |",
                  "|---|---|---:|---:|---:|---|"]
        for r in lp:
            with_lp = _fmt(r["leakproof"]["p95_ms"]) if r.get("leakproof") else "-"
            lines.append(f"| {r['title']} | {r['tenant']} | {_fmt(r['not_leakproof']['p95_ms'])} | {with_lp} | "
                         f"{r['target_ms']:g} | {r.get('plan_top') or '-'} |")
        lines.append("")
    lines += _cold_markdown(results.get("cold"))
    settings = srv.get("settings", {})
    lines += ["## Server", "", ", ".join(f"{k} {v}" for k, v in settings.items()), ""]
    return "\n".join(lines)


def _cold_markdown(cold: Mapping[str, Any] | None) -> list[str]:
    """The report's section on the first query on a new connection (nothing when it was not measured)."""
    if not cold or not cold.get("queries"):
        return []
    qs = cold["queries"]
    checked = sum(r["verified"]["checked"] for r in qs)
    backends = sum(r["verified"]["distinct_backends"] for r in qs)
    users = sorted({u for r in qs for u in r["verified"]["current_user"]})
    lines = [
        "## The first query on a new connection", "",
        f"{cold['connections']} new logins per query and tenant, each as app_user with the tenant set, timing the "
        "query's first execute + fetch, then a second one on the same connection; on as many other new logins, "
        "`EXPLAIN (ANALYZE, BUFFERS, SUMMARY)` first and again (PostgreSQL's Planning Time and Execution Time; "
        "planning buffers = shared buffer hits while planning: the catalog pages a new backend reads to fill "
        "its relation and catalog caches); on as many more, `PREPARE` first and again (parse analysis and the "
        "rewriter, which adds the RLS policies: they fill caches too, and Planning Time leaves them out; a "
        f"round trip, client clock). {checked} sessions verified afterwards (current_user "
        f"{', '.join(users)}, no superuser, no BYPASSRLS, not the owner, the tenant set), {backends} distinct "
        "backends. Warm = the warm-up-then-repeat series above.", "",
    ]
    for slug, c in (cold.get("connect") or {}).items():
        sets = [x for r in qs if r["tenant"] == slug for x in r["samples_ms"]["set_tenant"]]
        reads = sum(r["execution_read_cold"] for r in qs if r["tenant"] == slug)
        catalog_reads = sum(r["planning_read_cold"] for r in qs if r["tenant"] == slug)
        lines.append(f"- {slug}: connect (`psycopg.connect`: TCP, SCRAM, a new backend) p50 {_fmt(c['p50_ms'])}, "
                     f"p95 {_fmt(c['p95_ms'])}, p99 {_fmt(c['p99_ms'])} ms over {c['n']} logins; the tenant switch "
                     f"as the session's first statement p50 {_fmt(percentile(sets, 50))}, p95 "
                     f"{_fmt(percentile(sets, 95))} ms (target 10); blocks read from outside shared buffers by all "
                     f"the cold EXPLAINs: {reads:,} while executing, {catalog_reads:,} while planning")
    lines += ["", "| query | tenant | first p50 | first p95 | first p99 | second p50 | warm p50 / p95 | "
              "connect + tenant + first p50 / p95 | parse + rewrite cold / warm p50 | planning cold / warm p50 | "
              "execution cold / warm p50 | planning buffers cold / warm | target | first p95 vs target |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]

    def pair(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, fmt: Callable[[float], str] = _fmt) -> str:
        return f"{fmt(a['p50_ms']) if a else '-'} / {fmt(b['p50_ms']) if b else '-'}"

    for r in qs:
        warm = r.get("warm")
        verdict = ("PASS" if r["passed"] else "**MISS**") + f" ({r['margin']}x)"
        lines.append(
            f"| {r['title']} | {r['tenant']} | {_fmt(r['first']['p50_ms'])} | {_fmt(r['first']['p95_ms'])} | "
            f"{_fmt(r['first']['p99_ms'])} | {_fmt(r['second']['p50_ms'])} | "
            f"{(_fmt(warm['p50_ms']) + ' / ' + _fmt(warm['p95_ms'])) if warm else '-'} | "
            f"{_fmt(r['new_connection']['p50_ms'])} / {_fmt(r['new_connection']['p95_ms'])} | "
            f"{pair(r.get('parse_cold'), r.get('parse_warm'))} | "
            f"{pair(r['planning_cold'], r['planning_warm'])} | {pair(r['execution_cold'], r['execution_warm'])} | "
            f"{pair(r['planning_hit_cold'], r['planning_hit_warm'], lambda v: f'{v:,.0f}')} | "
            f"{r['target_ms']:g} | {verdict} |")
    pools = [p for p in cold.get("pool") or [] if "first" in p]
    if pools:
        lines += ["", "Behind a pool: psycopg_pool, every connection of a pool checked out once (the pool filled "
                  "before timing, so no connect), and new client logins one after another through a real PgBouncer "
                  "(transaction mode: the tenant set for the transaction; the server connections outlive the "
                  "clients). app_user, the tenant set, verified in each session:", "",
                  "| query | tenant | pool | clients | server backends | connect p50 | first query p50 | p95 | max | "
                  "second p50 | warm-up per connection p50 |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in pools:
            wu = _fmt(p["warm_up_ms"]["p50_ms"]) if p.get("warm_up_ms") else "-"
            conn_p50 = _fmt(p["connect"]["p50_ms"]) if p.get("connect") else "-"
            lines.append(f"| {p['title']} | {p['tenant']} | `{p['pool']}` | {p['connections']} | "
                         f"{p['verified']['distinct_backends']} | {conn_p50} | {_fmt(p['first']['p50_ms'])} | "
                         f"{_fmt(p['first']['p95_ms'])} | {_fmt(p['first']['max_ms'])} | "
                         f"{_fmt(p['second']['p50_ms'])} | {wu} |")
    for p in cold.get("pool") or []:
        if "skipped" in p:
            lines.append(f"- {p['title']} behind PgBouncer: skipped ({p['skipped']})")
    lines.append("")
    return lines


def _plot_cold(results: Mapping[str, Any], tenant: Mapping[str, Any], plots: Any) -> Any:
    """Warm samples beside first-on-a-new-connection samples, for the criterion queries and verbatim Test 3."""
    cold = {r["key"]: r for r in (results.get("cold") or {}).get("queries", []) if r["tenant"] == tenant["slug"]}
    picked = [r for r in results["benchmarks"] if r.get("tenant") == tenant["slug"] and r.get("key") in cold
              and (r.get("criterion") or r.get("key") == "test3")]
    if not picked:
        return None
    samples: dict[str, list[float]] = {}
    targets: dict[str, float] = {}
    for r in picked:
        name = _short_title(r["title"], r["variant"])
        for label, xs in ((f"{name}, warm", r["samples_ms"]), (f"{name}, cold", cold[r["key"]]["samples_ms"]["first"])):
            samples[label] = xs
            targets[label] = r["target_ms"]
    return plots.plot_latencies(
        samples, targets=targets,
        title=f"Scale {results['scale']}, {tenant['slug']}, app_user: warm vs cold (first query, new connection)")


def write_report(results: Mapping[str, Any], out_dir: str | Path, *, plot: bool = True) -> Path:
    """Write results.json, report.md and latency-<tenant>.png into ``out_dir``; returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    (out / "report.md").write_text(report_markdown(results), encoding="utf-8")
    if plot:
        try:
            from . import plots
        except ImportError:
            plots = None  # type: ignore[assignment]
        if plots is not None:
            for tenant in results["tenants"]:
                recs = [r for r in results["benchmarks"] if r.get("tenant") == tenant["slug"] and "samples_ms" in r]
                if not recs:
                    continue
                samples = {r["title"].split(":")[0] + (" (tuned)" if r["variant"] == "tuned" and "tuned" not in
                                                       r["title"].split(":")[0] else ""): r["samples_ms"]
                           for r in recs}
                targets = {r["title"].split(":")[0] + (" (tuned)" if r["variant"] == "tuned" and "tuned" not in
                                                       r["title"].split(":")[0] else ""): r["target_ms"]
                           for r in recs if r.get("target_ms")}
                fig = plots.plot_latencies(
                    samples, targets=targets,
                    title=f"Scale {results['scale']}, tenant {tenant['slug']} ({tenant['role']}, "
                          f"{tenant['contacts']:,} contacts): app_user under RLS")
                fig.savefig(out / f"latency-{tenant['slug']}.png", dpi=110)
            if results.get("cold"):
                fig = _plot_cold(results, results["tenants"][0], plots)
                if fig is not None:
                    fig.savefig(out / f"cold-{results['tenants'][0]['slug']}.png", dpi=110)
    log.info("bench: results in %s", out)
    return out


def load_results(scale: str | None = None, *, database: str | None = None,
                 out_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The newest results.json (of ``scale``, or of any scale; of ``database`` if given), or None."""
    base = Path(out_dir) if out_dir else DEFAULT_OUT
    candidates = [base / scale / "results.json"] if scale else sorted(base.glob("*/results.json"))
    found = sorted((p for p in candidates if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in found:
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("bench: unreadable results file %s", path)
            continue
        if database is None or results.get("database") == database:
            return results
    return None


def latest_results(scale: str | None = None, *, database: str | None = None) -> dict[str, dict[str, Any]] | None:
    """The newest benchmark results as ``{name: {p95_ms, target_ms, ...}}``, for the success criterion.

    Only the records that count for the criterion are returned: per lesson benchmark and tenant, the
    verbatim query when it meets its target with the course's margin, else the course's tuned version.
    None when no benchmark ran yet (on ``database``, when given). (`load_results` gives the whole
    results.json.)
    """
    results = load_results(scale, database=database)
    if results is None:
        return None
    out: dict[str, dict[str, Any]] = {}
    for r in results.get("benchmarks", []):
        if r.get("criterion") and "p95_ms" in r:
            out[r["name"]] = {k: r.get(k) for k in ("title", "variant", "tenant", "role", "p50_ms", "p95_ms",
                                                     "p99_ms", "max_ms", "target_ms", "passed", "margin")}
            out[r["name"]]["scale"] = results.get("scale")
            out[r["name"]]["created_at"] = results.get("created_at")
    return out


def summary_table(results: Mapping[str, Any]) -> Any:
    """A rich Table of the benchmark records (what `labhelpers bench` prints)."""
    from rich.table import Table

    m = results["machine"]
    table = Table(title=f"scale {results['scale']}: app_user under RLS, {results['repeat']} runs, ms "
                        f"({m['cpu_model']}, {m['cores']} cores)")
    for col in ("query", "tenant", "variant", "p50", "p95", "p99", "max", "target", "verdict"):
        table.add_column(col, justify="right" if col in ("p50", "p95", "p99", "max", "target") else "left")
    for r in results["benchmarks"]:
        if "error" in r:
            table.add_row(r["title"], r["tenant"], r["variant"], "-", "-", "-", "-", f"{r['target_ms']:g}",
                          "[yellow]needs schema[/]")
            continue
        target = r.get("target_ms")
        if target:
            verdict = ("[green]PASS[/]" if r["passed"] else "[red]MISS[/]") + f" {r['margin']}x"
            verdict += " *" if r.get("criterion") else ""
        else:
            verdict = ""
        table.add_row(r["title"], r["tenant"], r["variant"], _fmt(r["p50_ms"]), _fmt(r["p95_ms"]),
                      _fmt(r["p99_ms"]), _fmt(r["max_ms"]), f"{target:g}" if target else "-", verdict)
    table.caption = "* counts for the success criterion; margin = target / p95"
    return table
