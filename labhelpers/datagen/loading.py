"""Loading: the tenants and their users, then the parts in parallel streams, then the derived data.

Every loading transaction starts with `_session_settings`: asynchronous commit, the registry's trigger
off (the generated values are audited afterwards instead, see `verify`), and for a superuser's bulk
load ``session_replication_role = replica``, so that no trigger fires at all; the rollups those
triggers keep are then recomputed in one statement each (`rebuild_rollups`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .._progress import ProgressFn, Tally
from ..errors import LabError
from .bookkeeping import TABLES, Part, SeedRun, mark_replaced, record_part
from .custom_fields import ENTITY, Pools
from .shapes import EPOCH_MS, GENERATED_ID_MARK, HISTORY_DAYS, SCENARIO_TENANTS, Shape, TenantSpec
from .statements import insert_sql, params, users_sql
from .streams import connect, run_streams

__all__ = ["Load", "delete_generated", "load_parts", "rebuild_rollups", "setup_tenants", "vacuum"]

# Derived tables kept by statement triggers, recomputed after a load that fired no trigger.
_ROLLUP_REBUILDS = ("lab_rebuild_lead_pipeline", "lab_rebuild_contact_segments")
# What `vacuum` vacuums and analyzes, those that exist (a partial build may lack the rollups).
_VACUUMED = ("activities", "contacts", "leads", "tenant_users", "tenants", "custom_field_definitions",
             "lead_pipeline_hourly", "contact_segment_counts")
_GENERATED_TABLES = ("tenant_users", "contacts", "leads", "activities")
_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Load:
    """What every loading transaction of a run needs: where, what, and how."""

    dsn: str
    shape: Shape
    seed: int
    anchor_ms: int
    run_id: int
    validate: bool  # keep the registry's validation trigger on
    replica: bool   # session_replication_role = replica: no trigger fires

    @property
    def anchor(self) -> dt.datetime:
        """The run's "now" (the newest a generated timestamp can be)."""
        return dt.datetime.fromtimestamp(self.anchor_ms / 1000, dt.timezone.utc)


def _session_settings(conn: psycopg.Connection, load: Load) -> None:
    """Per-transaction settings of a loading connection."""
    conn.execute("SET LOCAL synchronous_commit = off")
    if not load.validate:
        conn.execute("SET LOCAL lab.custom_fields_validation = 'off'")
    if load.replica:
        # Superuser only: no trigger fires (the foreign keys are dropped in bulk mode anyway), and no
        # transition table is captured for the registry's statement trigger.
        conn.execute("SET LOCAL session_replication_role = replica")


# ---- tenants and users ---------------------------------------------------------------------------


def setup_tenants(conn: psycopg.Connection, load: Load) -> None:
    """Tenants, their registry, partitions and users (one transaction, recorded as part 'setup')."""
    t0 = time.perf_counter()
    with conn.transaction():
        if conn.execute("SELECT 1 FROM lab_seed_parts WHERE run_id = %s AND part = 'setup'",
                        (load.run_id,)).fetchone():
            return
        _session_settings(conn, load)
        for tenant in load.shape.tenants:
            _add_tenant(conn, tenant)
        conn.execute("SELECT set_config('app.current_tenant', '', true)")
        _ensure_partitions(conn, load.anchor)
        cur = conn.execute(users_sql(), params(load.shape, seed=load.seed, anchor_ms=load.anchor_ms))
        record_part(conn, load.run_id, "setup", cur.rowcount, time.perf_counter() - t0)


def _add_tenant(conn: psycopg.Connection, t: TenantSpec) -> None:
    """Tenant ``t`` unless it exists (with the same slug), and its default custom field registry."""
    # The owner may be filtered by FORCE ROW LEVEL SECURITY when it is not a superuser.
    conn.execute("SELECT set_config('app.current_tenant', %s, true)", (t.id,))
    created = dt.datetime.fromtimestamp((EPOCH_MS + (t.no - 1) * 86_400_000) / 1000, dt.timezone.utc)
    conn.execute(
        "INSERT INTO tenants (id, slug, name, plan, status, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, 'active', %s, %s) ON CONFLICT DO NOTHING",
        (t.id, t.slug, t.name, t.plan, created, created),
    )
    owner = conn.execute("SELECT slug FROM tenants WHERE id = %s", (t.id,)).fetchone()
    if owner is None or owner[0] != t.slug:
        raise LabError(
            f"tenant slug {t.slug!r} is taken by another tenant id (or tenant {t.id} has another slug):"
            " rename it, or seed into a fresh database"
        )
    conn.execute("SELECT lab_define_default_custom_fields(%s)", (t.id,))


def _ensure_partitions(conn: psycopg.Connection, anchor: dt.datetime) -> None:
    """Monthly partitions of activities for the whole history, where stage 05 made it partitioned
    (05 covers 24 months back from when it ran; the anchor may be elsewhere)."""
    if conn.execute("SELECT to_regprocedure('lab_ensure_activity_partitions(timestamptz,timestamptz)')"
                    " IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        conn.execute("SELECT count(*) FROM lab_ensure_activity_partitions(%s, %s)",
                     (anchor - (HISTORY_DAYS + 1) * _DAY, anchor + 32 * _DAY))


# ---- the parts -----------------------------------------------------------------------------------


def load_parts(load: Load, pools: Mapping[str, Pools], parts: Sequence[Part], *, jobs: int, bulk: bool,
               on_progress: ProgressFn | None, done: Sequence[Part] = ()) -> None:
    """Load ``parts`` on ``jobs`` streams; ``done`` are the parts loaded before (for the progress).

    In bulk mode (no keys) every part may run at once; otherwise table by table, since the foreign keys
    need the referenced rows committed first.
    """
    tally = Tally(on_progress, {t: sum(p.rows for p in [*parts, *done] if p.table == t) for t in TABLES},
                  {t: sum(p.rows for p in done if p.table == t) for t in TABLES})
    tally.show()

    def work(conn: psycopg.Connection, part: Part) -> int:
        return _load_part(conn, load, pools[ENTITY[part.table]], part)

    def loaded(part: Part, rows: int) -> None:
        tally.add(part.table, rows)

    for batch in ([parts] if bulk else [[p for p in parts if p.table == t] for t in TABLES]):
        run_streams(load.dsn, batch, work, jobs=jobs, on_done=loaded)


def _load_part(conn: psycopg.Connection, load: Load, pools: Pools, part: Part) -> int:
    """Generate the rows of ``part`` and record it, in one transaction. Raise LabError on a wrong count."""
    t0 = time.perf_counter()
    with conn.transaction():
        _session_settings(conn, load)
        cur = conn.execute(insert_sql(part.table, pools),
                           params(load.shape, seed=load.seed, anchor_ms=load.anchor_ms, part=part, pools=pools))
        if cur.rowcount != part.rows:
            raise LabError(f"part {part.name} wrote {cur.rowcount} rows, expected {part.rows}: generator bug")
        record_part(conn, load.run_id, part.name, cur.rowcount, time.perf_counter() - t0)
    return cur.rowcount


# ---- after the load ------------------------------------------------------------------------------


def rebuild_rollups(conn: psycopg.Connection) -> None:
    """Recompute the trigger-kept rollups of sql/course-rollups.sql (the leads' pipeline, section 1; the
    contacts' segments, section 2), those that exist: after a load during which no trigger fired."""
    for rebuild in _ROLLUP_REBUILDS:
        exists = conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (f"{rebuild}()",)).fetchone()
        if exists and exists[0]:
            conn.execute(sql.SQL("SELECT {}()").format(sql.Identifier(rebuild)))


def vacuum(dsn: str, *, jobs: int, on_progress: ProgressFn | None = None) -> float:
    """``VACUUM (ANALYZE)`` the loaded tables in parallel: the visibility map (index-only scans) and the
    planner's statistics. Returns the seconds taken."""
    t0 = time.perf_counter()
    with connect(dsn) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NOT NULL", (list(_VACUUMED),))]
    tally = Tally(on_progress, {"vacuum": len(tables)})

    def vac(conn: psycopg.Connection, table: str) -> None:
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))

    run_streams(dsn, tables, vac, jobs=jobs, on_done=lambda _table, _: tally.add("vacuum"))
    return time.perf_counter() - t0


# ---- replacing a dataset ------------------------------------------------------------------------


def delete_generated(conn: psycopg.Connection, old: SeedRun) -> None:
    """Remove the rows of run ``old``, keeping every other row, and mark it replaced (one transaction).

    The tables are emptied with TRUNCATE and the rows that were not generated are put back: much faster
    than DELETE when the generated rows are most of the table.
    """
    gen_tenants = [t["id"] for t in old.shape if t["no"] > len(SCENARIO_TENANTS)]
    with conn.transaction():
        conn.execute("SET LOCAL lab.custom_fields_validation = 'off'")
        for table in _GENERATED_TABLES:
            conn.execute(sql.SQL(
                "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT * FROM {} WHERE substr(id::text, 15, 9) <> %s"
            ).format(sql.Identifier(f"keep_{table}"), sql.Identifier(table)), (GENERATED_ID_MARK,))
        conn.execute("TRUNCATE activities, leads, contacts, tenant_users")
        for table in _GENERATED_TABLES:
            cols = [r[0] for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
                " AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", (table,)).fetchall()]
            collist = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
            conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                sql.Identifier(table), collist, collist, sql.Identifier(f"keep_{table}")))
        conn.execute("DELETE FROM custom_field_definitions WHERE tenant_id = ANY(%s::uuid[])", (gen_tenants,))
        conn.execute("DELETE FROM tenants WHERE id = ANY(%s::uuid[])", (gen_tenants,))
        mark_replaced(conn, old.id)
