"""Regenerate the golden EXPLAIN plans in this folder from a live PostgreSQL 18 server.

The goldens are real ``EXPLAIN (ANALYZE, BUFFERS, SETTINGS, FORMAT JSON)`` output, never hand-written.
This script builds a small CRM-like schema in its own database (dropped and recreated), loads
deterministic data, runs one query per plan shape the tests need, and writes ``<name>.json`` (the raw
EXPLAIN output, exactly as the server returned it) next to itself, plus ``catalog.json``: the leaf
partitions of each partitioned table (what `Plan.partitions()` needs to tell plan-time pruning apart).

The hand-written partial expectations (``<name>.expect.json``) are not touched: after a re-capture,
run ``pytest tests/test_explain.py`` and adjust an expectation only if the plan shape really changed.

Usage (any superuser DSN; the default is the scratch embedded server)::

    python tests/data/plans/capture.py --dsn postgresql://postgres:@/postgres?host=/tmp/h1pg
    python tests/data/plans/capture.py --only sort_spill --only nested_loop

Partitions of ``activities`` are the 12 months before the current one, the current month and the next,
so the ``now()`` query prunes at executor start whatever the day you capture.

``--two-level`` captures instead the ``pruning_two_level_*`` goldens from the course database itself
(built with ``labhelpers build``; DSN as `labhelpers.db.resolve_dsn` finds it, or ``--course-dsn``): there
``activities`` is partitioned by month and each month 4 ways by HASH(tenant_id) (about 41 x 4 leaves).
The plans are taken as ``app_user`` in tenant ``acme`` (RLS on), with `labhelpers.explain.explain`, and
their leaf list (bound order, as `explain` reads it) goes to ``two_level/catalog.json``: a subfolder,
because ``catalog.json`` here describes the single-level ``activities`` of the capture database::

    python tests/data/plans/capture.py --two-level
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
DBNAME = "labhelpers_plans"
TENANT_A = "11111111-1111-1111-1111-111111111111"
TENANT_B = "22222222-2222-2222-2222-222222222222"
TENANT_C = "33333333-3333-3333-3333-333333333333"

# Settings applied to every capture: deterministic enough, and parallel plans possible on a small box.
BASE_SETTINGS = {
    "jit": "off",
    "max_parallel_workers_per_gather": "0",
    "random_page_cost": "1.1",
}


def month_starts() -> list[dt.date]:
    """First days of 14 months: 12 back, the current one, the next (13 partitions of ``activities``)."""
    today = dt.date.today()
    y, m = today.year, today.month
    out = []
    for k in range(-12, 2):
        mm = m - 1 + k
        out.append(dt.date(y + mm // 12, mm % 12 + 1, 1))
    return out


def build_schema(conn: psycopg.Connection) -> None:
    """Create and fill the capture schema (deterministic: fixed seeds, generate_series)."""
    months = month_starts()
    conn.execute("SELECT setseed(0.42)")
    conn.execute(
        """
        CREATE TABLE tenants (id uuid PRIMARY KEY, slug text UNIQUE NOT NULL);
        CREATE TABLE contacts (
            tenant_id uuid NOT NULL REFERENCES tenants, id int NOT NULL, name text NOT NULL,
            custom_fields jsonb NOT NULL DEFAULT '{}', PRIMARY KEY (tenant_id, id));
        CREATE TABLE leads (
            tenant_id uuid NOT NULL, id int NOT NULL, contact_id int NOT NULL, stage text NOT NULL,
            value numeric(12,2) NOT NULL, created_at timestamptz NOT NULL, PRIMARY KEY (tenant_id, id),
            FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id));
        CREATE TABLE activities (
            tenant_id uuid NOT NULL, id bigint NOT NULL, type text NOT NULL, subject text NOT NULL,
            created_at timestamptz NOT NULL, PRIMARY KEY (tenant_id, id, created_at))
            PARTITION BY RANGE (created_at);
        CREATE TABLE audit (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), what text);
        CREATE FUNCTION audit_lead() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO audit (what) VALUES ('lead ' || NEW.id); RETURN NEW; END $$;
        """
    )
    for lo, hi in zip(months, months[1:] + [None]):
        if hi is None:
            break
        conn.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF activities FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(f"activities_{lo:%Y_%m}"), sql.Literal(lo.isoformat()), sql.Literal(hi.isoformat())
            )
        )
    conn.execute(
        "INSERT INTO tenants VALUES (%s, 'acme'), (%s, 'globex'), (%s, 'initech')", (TENANT_A, TENANT_B, TENANT_C)
    )
    conn.execute(
        """
        INSERT INTO contacts
        SELECT t.id, g, 'contact ' || g,
               jsonb_build_object('industry', (ARRAY['tech','retail','health','finance','energy',
                                                     'media','travel','food','auto','legal'])[1 + g % 10],
                                  'priority', CASE WHEN g % 7 = 0 THEN 'high' ELSE 'normal' END,
                                  'score', g % 100)
        FROM tenants t, generate_series(1, 60000) g
        """
    )
    conn.execute(
        """
        INSERT INTO leads
        SELECT c.tenant_id, (c.id - 1) * 2 + k, c.id,
               (ARRAY['new','qualified','proposal','won','lost'])[1 + (c.id + k) % 5],
               round((random() * 10000)::numeric, 2),
               now() - (random() * interval '365 days')
        FROM contacts c, generate_series(1, 2) k
        """
    )
    conn.execute(
        """
        INSERT INTO activities
        SELECT t.id, g, (ARRAY['call','email','meeting'])[1 + g %% 3], 'activity ' || g,
               now() - (g %% 390) * interval '1 day' + (g %% 86400) * interval '1 second'
        FROM tenants t, generate_series(1, 100000) g
        WHERE now() - (g %% 390) * interval '1 day' >= %s::date
        """,
        (months[0].isoformat(),),
    )
    conn.execute("CREATE INDEX leads_contact ON leads (tenant_id, contact_id)")
    conn.execute("CREATE INDEX contacts_cf ON contacts USING gin (custom_fields jsonb_path_ops)")
    conn.execute("CREATE INDEX activities_created ON activities (created_at)")
    conn.execute("CREATE TRIGGER leads_audit AFTER INSERT ON leads FOR EACH ROW EXECUTE FUNCTION audit_lead()")
    conn.execute("VACUUM ANALYZE")


def _month(k: int) -> str:
    return month_starts()[k].isoformat()


def captures() -> dict[str, dict[str, Any]]:
    """The plan shapes: name -> {sql, settings, prepare (optional), analyze, rollback}."""
    parallel = {
        "max_parallel_workers_per_gather": "2",
        "parallel_setup_cost": "0",
        "parallel_tuple_cost": "0",
        "min_parallel_table_scan_size": "0",
    }
    return {
        "nested_loop": {
            "doc": "Nested Loop, inner Index Scan repeated once per outer row (loops > 1)",
            "sql": f"""SELECT c.name, l.stage, l.value FROM contacts c
                       JOIN leads l ON l.tenant_id = c.tenant_id AND l.contact_id = c.id
                       WHERE c.tenant_id = '{TENANT_A}' AND c.id <= 50""",
            "settings": {"enable_hashjoin": "off", "enable_mergejoin": "off"},
        },
        "parallel_agg": {
            "doc": "Gather Merge with 2 workers launched over a Parallel Seq Scan and partial aggregates",
            "sql": "SELECT stage, count(*), sum(value) FROM leads GROUP BY stage ORDER BY stage",
            "settings": parallel,
        },
        "parallel_seqscan": {
            "doc": "Gather over a Parallel Seq Scan with a selective filter (rows removed by filter)",
            "sql": "SELECT id, stage FROM leads WHERE value > 9990",
            "settings": parallel,
        },
        "cte_materialized": {
            "doc": "A MATERIALIZED CTE read by two CTE Scans (the CTE's time must not be counted twice)",
            "sql": """WITH per_contact AS MATERIALIZED (
                          SELECT tenant_id, contact_id, count(*) AS n, sum(value) AS total
                          FROM leads GROUP BY tenant_id, contact_id)
                      SELECT a.contact_id, a.total, b.total AS next_total
                      FROM per_contact a JOIN per_contact b
                        ON b.tenant_id = a.tenant_id AND b.contact_id = a.contact_id + 1
                      WHERE a.total > 15000""",
        },
        "initplan_subplan": {
            "doc": "An InitPlan (uncorrelated scalar subquery, run once) and a SubPlan (correlated, run per row)",
            "sql": f"""SELECT c.id, c.name,
                          (SELECT count(*) FROM leads l
                           WHERE l.tenant_id = c.tenant_id AND l.contact_id = c.id) AS n_leads
                       FROM contacts c
                       WHERE c.tenant_id = '{TENANT_A}' AND c.id <= 300
                         AND c.id > (SELECT min(contact_id) + 100 FROM leads WHERE stage = 'won')""",
        },
        "pruning_plan_time": {
            "doc": "Constants on the partition key: the planner keeps 2 of 13 partitions",
            "sql": f"""SELECT count(*) FROM activities
                       WHERE created_at >= '{_month(3)}' AND created_at < '{_month(5)}'""",
        },
        "pruning_now": {
            "doc": "now() is stable, not constant: pruning at executor start (Subplans Removed)",
            "sql": "SELECT count(*) FROM activities WHERE created_at >= now() - interval '20 days'",
        },
        "pruning_generic_plan": {
            "doc": "A generic prepared plan: the parameter is known only at executor start (Subplans Removed)",
            "settings": {"plan_cache_mode": "force_generic_plan"},
            "prepare": "PREPARE recent(timestamptz, timestamptz) AS "
            "SELECT type, count(*) FROM activities WHERE created_at >= $1 AND created_at < $2 GROUP BY type",
            "sql": f"EXECUTE recent('{_month(6)}', '{_month(8)}')",
        },
        "pruning_never_executed": {
            "doc": "The bound comes from a subquery (an InitPlan): pruning during execution, partitions never executed",
            "sql": """SELECT count(*) FROM activities
                      WHERE created_at >= (SELECT max(created_at) - interval '10 days' FROM leads)""",
        },
        "bitmap_scan": {
            "doc": "Bitmap Index Scan on a GIN jsonb_path_ops index feeding a Bitmap Heap Scan",
            "sql": """SELECT count(*) FROM contacts WHERE custom_fields @> '{"industry": "tech", "priority": "high"}'""",
        },
        "bitmap_and": {
            "doc": "BitmapAnd of the GIN index and the primary key (EXPLAIN reports 0 rows for BitmapAnd)",
            "sql": f"""SELECT count(*) FROM contacts WHERE custom_fields @> '{{"industry": "tech"}}'
                       AND tenant_id = '{TENANT_A}' AND id <= 400""",
            "settings": {"enable_seqscan": "off", "enable_indexscan": "off", "enable_indexonlyscan": "off"},
        },
        "sort_spill": {
            "doc": "A Sort with a tiny work_mem: external merge on disk, temp buffers",
            "sql": "SELECT id, value FROM leads ORDER BY value DESC, id",
            "settings": {"work_mem": "64kB"},
        },
        "insert_trigger": {
            "doc": "An INSERT with an AFTER trigger (Triggers section), rolled back",
            "sql": f"""INSERT INTO leads SELECT tenant_id, id + 1000000, contact_id, stage, value, created_at
                       FROM leads WHERE tenant_id = '{TENANT_B}' AND contact_id <= 20""",
            "rollback": True,
        },
        "no_analyze_delete": {
            "doc": "EXPLAIN without ANALYZE (a statement that must not run): estimates only",
            "sql": f"DELETE FROM activities WHERE tenant_id = '{TENANT_C}' AND created_at < '{_month(2)}'",
            "analyze": False,
        },
    }


def capture_one(conn: psycopg.Connection, spec: dict[str, Any]) -> Any:
    """Run one capture in its own transaction (rolled back) and return the parsed EXPLAIN JSON."""
    analyze = spec.get("analyze", True)
    opts = "ANALYZE, BUFFERS, SETTINGS, FORMAT JSON" if analyze else "BUFFERS, SETTINGS, FORMAT JSON"
    with conn.transaction(force_rollback=True):
        for k, v in {**BASE_SETTINGS, **spec.get("settings", {})}.items():
            conn.execute("SELECT set_config(%s, %s, true)", (k, v))
        if "prepare" in spec:
            conn.execute("DEALLOCATE ALL")
            conn.execute(spec["prepare"])
        row = conn.execute(f"EXPLAIN ({opts}) {spec['sql']}").fetchone()
    assert row is not None
    return row[0]


def catalog(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Leaf partitions of every partitioned table, in partition-bound order."""
    out: dict[str, list[str]] = {}
    roots = conn.execute("SELECT oid::regclass::text FROM pg_class WHERE relkind = 'p' AND NOT relispartition")
    for (root,) in roots.fetchall():
        leaves = conn.execute(
            """SELECT t.relid::regclass::text FROM pg_partition_tree(%s::regclass) t
               JOIN pg_class c ON c.oid = t.relid
               WHERE t.isleaf ORDER BY pg_get_expr(c.relpartbound, c.oid)""",
            (root,),
        ).fetchall()
        out[root] = [r[0] for r in leaves]
    return out


TWO_LEVEL = {
    "pruning_two_level_plan_time": (
        "Constant bounds: one month kept by the planner, its other hash leaves removed at executor start (RLS)",
        "SELECT count(*) FROM activities WHERE created_at >= '2024-01-01' AND created_at < '2024-02-01'",
    ),
    "pruning_two_level_executor_start": (
        "now() and the RLS tenant setting are stable: pruning at executor start (Subplans Removed)",
        "SELECT count(*) FROM activities WHERE created_at >= now() - interval '7 days'",
    ),
    "pruning_two_level_run_time": (
        "The bound comes from a subquery: tenant hash pruned at executor start, months never executed",
        "SELECT count(*) FROM activities WHERE created_at >= (SELECT max(created_at) - interval '3 days' FROM leads)",
    ),
}
"""Two-level goldens: name -> (doc, sql), captured from the course database as app_user in tenant acme."""


def capture_two_level(dsn: str | None, only: list[str]) -> None:
    """Capture `TWO_LEVEL` from the course database (month RANGE, then HASH(tenant_id) leaves)."""
    from labhelpers import db, tenants
    from labhelpers.explain import explain

    catalog_out: dict[str, list[str]] = {}
    with db.connect(dsn, role="app_user", autocommit=True) as conn:
        tenants.use_tenant(conn, "acme")
        for name, (doc, query) in TWO_LEVEL.items():
            if only and name not in only:
                continue
            plan = explain(conn, query)
            catalog_out.update(plan.catalog_partitions)
            (HERE / f"{name}.json").write_text(json.dumps([plan.raw], indent=2) + "\n")
            print(f"{name}: {doc}")
    if catalog_out:
        (HERE / "two_level").mkdir(exist_ok=True)
        (HERE / "two_level" / "catalog.json").write_text(json.dumps(catalog_out, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default=os.environ.get("LAB_CAPTURE_DSN", "postgresql://postgres:@/postgres?host=/tmp/h1pg"))
    ap.add_argument("--only", action="append", default=[], help="capture only these names (repeatable)")
    ap.add_argument("--keep-schema", action="store_true", help="reuse the existing capture database")
    ap.add_argument("--two-level", action="store_true",
                    help="capture the pruning_two_level_* goldens from the course database instead")
    ap.add_argument("--course-dsn", default=None, help="course database DSN for --two-level (default: as labhelpers finds it)")
    args = ap.parse_args()

    if args.two_level:
        capture_two_level(args.course_dsn, args.only)
        return

    if not args.keep_schema:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DBNAME)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DBNAME)))
    with psycopg.connect(make_conninfo(args.dsn, dbname=DBNAME), autocommit=True) as conn:
        if not args.keep_schema:
            build_schema(conn)
        (HERE / "catalog.json").write_text(json.dumps(catalog(conn), indent=2) + "\n")
        for name, spec in captures().items():
            if args.only and name not in args.only:
                continue
            plan = capture_one(conn, spec)
            (HERE / f"{name}.json").write_text(json.dumps(plan, indent=2) + "\n")
            print(f"{name}: {spec['doc']}")


if __name__ == "__main__":
    main()
