"""Bulk mode: drop the keys and indexes of the loaded tables before loading, rebuild them after.

The way ``pg_restore`` and ``pgbench -i`` do it: building an index once over all rows is much cheaper
than maintaining it row by row. The definitions are captured as statements (``pg_get_constraintdef``,
``pg_get_indexdef``) and kept in the run (``lab_seed_runs.saved_ddl``) before anything is dropped, so
an interrupted load can always rebuild them. Each entry: kind, table, name, create, drop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from .._progress import ProgressFn, Tally
from .bookkeeping import save_ddl
from .streams import connect, run_streams

__all__ = ["drop_keys", "restore_keys"]

log = logging.getLogger("labhelpers")

Ddl = dict[str, Any]

_CONSTRAINTS = """
SELECT c.contype, c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
  FROM pg_constraint AS c
 WHERE c.conrelid = ANY(SELECT to_regclass(x) FROM unnest(%s::text[]) AS x)
   AND c.contype IN ('p', 'u', 'f')
   AND c.conparentid = 0
 ORDER BY CASE c.contype WHEN 'p' THEN 0 WHEN 'u' THEN 1 ELSE 2 END, c.conrelid, c.conname
"""
# Foreign keys of other tables that point at these (they must go before the keys they need).
_REFERENCING = """
SELECT 'f', c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
  FROM pg_constraint AS c
 WHERE c.contype = 'f' AND c.conparentid = 0
   AND c.confrelid = ANY(SELECT to_regclass(x) FROM unnest(%s::text[]) AS x)
   AND c.conrelid <> ALL(SELECT to_regclass(x) FROM unnest(%s::text[]) AS x)
 ORDER BY 2, 3
"""
_INDEXES = """
SELECT i.indrelid::regclass::text, c.relname, pg_get_indexdef(i.indexrelid)
  FROM pg_index AS i
  JOIN pg_class AS c ON c.oid = i.indexrelid
 WHERE i.indrelid = ANY(SELECT to_regclass(x) FROM unnest(%s::text[]) AS x)
   AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k WHERE k.conindid = i.indexrelid)
   AND NOT EXISTS (SELECT 1 FROM pg_inherits AS h WHERE h.inhrelid = i.indexrelid)
 ORDER BY pg_relation_size(i.indrelid) DESC, c.relname
"""
_KINDS = {"p": "primary key", "u": "unique", "f": "foreign key"}


def drop_keys(conn: psycopg.Connection, run_id: int, tables: Sequence[str]) -> list[Ddl]:
    """Capture the keys and indexes of ``tables`` into run ``run_id``, then drop them (one transaction)."""
    with conn.transaction():
        ddl = _capture_ddl(conn, tables)
        save_ddl(conn, run_id, ddl)
        for item in reversed(ddl):
            conn.execute(item["drop"])
    log.info("seed: bulk mode: dropped %d keys and indexes (kept in lab_seed_runs.saved_ddl)", len(ddl))
    return ddl


def _capture_ddl(conn: psycopg.Connection, tables: Sequence[str]) -> list[Ddl]:
    """The keys and indexes of ``tables`` as statements to recreate them, in a safe order.

    Order: primary keys and unique constraints, then foreign keys (they need the referenced keys), then
    the other indexes.
    """
    regs = [f"public.{t}" if "." not in t else t for t in tables]
    constraints = [*conn.execute(_CONSTRAINTS, (regs,)), *conn.execute(_REFERENCING, (regs, regs))]
    ddl = [_constraint_ddl(conn, *row) for row in constraints]
    for rel, name, definition in conn.execute(_INDEXES, (regs,)):
        # pg_get_indexdef says "ON ONLY parent" for a partitioned index; the rebuild must cascade.
        ddl.append({"kind": "index", "table": rel, "name": name, "create": definition.replace(" ON ONLY ", " ON ", 1),
                    "drop": sql.SQL("DROP INDEX IF EXISTS {}").format(_index_name(rel, name)).as_string(conn)})
    return ddl


def _constraint_ddl(conn: psycopg.Connection, contype: str, rel: str, name: str, definition: str) -> Ddl:
    # ``rel`` is regclass output and ``definition`` pg_get_constraintdef's: SQL quoted by the server.
    table, constraint = sql.SQL(rel), sql.Identifier(name)
    create = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(table, constraint, sql.SQL(definition))
    drop = sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(table, constraint)
    return {"kind": _KINDS[contype], "table": rel, "name": name, "create": create.as_string(conn),
            "drop": drop.as_string(conn)}


def _schema_of(rel: str) -> str | None:
    """The schema of regclass text ``rel``, if it names one (tables outside the search path)."""
    return rel.split(".")[0] if "." in rel else None


def _index_name(rel: str, name: str) -> sql.Composable:
    """Index ``name`` qualified with the schema of its table ``rel`` where ``rel`` names one."""
    schema = _schema_of(rel)
    return sql.SQL("{}.{}").format(sql.SQL(schema), sql.Identifier(name)) if schema else sql.Identifier(name)


# ---- the rebuild ---------------------------------------------------------------------------------


def restore_keys(dsn: str, ddl: Sequence[Mapping[str, Any]], *, jobs: int,
                 on_progress: ProgressFn | None = None) -> dict[str, float]:
    """Recreate what bulk mode dropped, idempotently (a resumed run skips what exists); return the
    seconds each key and index took.

    1. primary and unique keys, in parallel (each builds its index);
    2. foreign keys as NOT VALID, one by one (instant: no scan);
    3. the other indexes and the VALIDATE CONSTRAINT of each foreign key, in parallel, the costliest
       first. VALIDATE takes only a SHARE UPDATE EXCLUSIVE lock, so it runs beside index builds, and it
       checks every existing row with one anti-join: the keys end up exactly as valid as if created
       with the rows in place.
    """
    keys = [d for d in ddl if d["kind"] in ("primary key", "unique")]
    fkeys = [d for d in ddl if d["kind"] == "foreign key"]
    indexes = [d for d in ddl if d["kind"] == "index"]
    tally = Tally(on_progress, {"keys+indexes": len(keys) + 2 * len(fkeys) + len(indexes)})
    timings: dict[str, float] = {}

    def done(item: Mapping[str, Any], seconds: float | None) -> None:
        if seconds is not None:
            timings[item["name"]] = timings.get(item["name"], 0.0) + seconds
        tally.add("keys+indexes")

    run_streams(dsn, keys, _build, jobs=jobs, on_done=done)
    with connect(dsn) as conn:
        for item in fkeys:
            done(item, _add_not_valid(conn, item))
        sizes = _table_sizes(conn, {d["table"] for d in ddl})
    validations = [{**d, "validate": True} for d in fkeys if not d["create"].rstrip().endswith("NOT VALID")]

    def cost(item: Mapping[str, Any]) -> float:
        weight = 3.0 if " USING gin " in item["create"] else 1.5 if item.get("validate") else 1.0
        return -weight * float(sizes.get(item["table"], 0) or 0)

    run_streams(dsn, sorted([*indexes, *validations], key=cost), _build, jobs=jobs, on_done=done)
    return timings


def _build(conn: psycopg.Connection, item: Mapping[str, Any]) -> float | None:
    """Create ``item`` (or validate it, for a foreign key marked so) unless that is done; the seconds taken."""
    if item.get("validate"):
        row = conn.execute("SELECT convalidated FROM pg_constraint WHERE conrelid = to_regclass(%s)"
                           " AND conname = %s", (item["table"], item["name"])).fetchone()
        if row is None or row[0]:
            return None
        return _timed(conn, sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
            sql.SQL(item["table"]), sql.Identifier(item["name"])).as_string(conn))
    if _exists(conn, item):
        return None
    return _timed(conn, item["create"])


def _add_not_valid(conn: psycopg.Connection, item: Mapping[str, Any]) -> float | None:
    """Add foreign key ``item`` without checking the rows (VALIDATE does that later), unless it exists."""
    if _exists(conn, item):
        return None
    create = item["create"]
    if not create.rstrip().endswith("NOT VALID"):
        create += " NOT VALID"
    return _timed(conn, create)


def _timed(conn: psycopg.Connection, stmt: str) -> float:
    t0 = time.perf_counter()
    conn.execute(stmt)
    seconds = time.perf_counter() - t0
    log.info("seed: %s in %.1f s", stmt.split(" (")[0][:120], seconds)
    return seconds


def _exists(conn: psycopg.Connection, item: Mapping[str, Any]) -> bool:
    """True if the key or index of ``item`` exists (by name, in its table's schema)."""
    if item["kind"] == "index":
        schema = _schema_of(item["table"])
        row = conn.execute(
            "SELECT 1 FROM pg_class AS c JOIN pg_namespace AS s ON s.oid = c.relnamespace"
            " WHERE c.relname = %s AND c.relkind IN ('i', 'I')"
            " AND (%s::text IS NULL AND s.nspname = ANY(current_schemas(false)) OR s.nspname = %s)",
            (item["name"], schema, schema),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(%s) AND conname = %s",
            (item["table"], item["name"]),
        ).fetchone()
    return row is not None


def _table_sizes(conn: psycopg.Connection, tables: set[str]) -> dict[str, int]:
    """Bytes of each table, its partitions included."""
    return dict(conn.execute(
        "SELECT t, coalesce((SELECT sum(pg_relation_size(relid)) FROM pg_partition_tree(to_regclass(t))),"
        " pg_relation_size(to_regclass(t))) FROM unnest(%s::text[]) AS t",
        (list(tables),)).fetchall())
