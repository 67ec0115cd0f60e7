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

Results: ``results.json`` (samples, percentiles, plans, server and machine), ``report.md`` (the table a
student reads) and ``latency-<tenant>.png`` in ``runs/bench/<scale>/`` by default. `latest_results`
reads the newest results back (the benchmark criterion of `labhelpers.checks` uses it). No plotting
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
    "Benchmark",
    "Stats",
    "DEFAULT_OUT",
    "TARGETS_MS",
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

    total_steps = len(tenants) * (len(BENCHMARKS) + 3) + (3 if variants else 0)
    step = 0

    def tick(what: str) -> None:
        nonlocal step
        step += 1
        if on_progress:
            on_progress("bench", step, total_steps)
        log.info("bench: %s", what)

    # 1. the timed sessions: app_user, one per tenant
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

    # 2. RLS overhead, policy variants, LEAKPROOF
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
    settings = srv.get("settings", {})
    lines += ["## Server", "", ", ".join(f"{k} {v}" for k, v in settings.items()), ""]
    return "\n".join(lines)


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
