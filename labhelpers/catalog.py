"""The catalog queries everyone needs, in one place: tenant tables and partitions, row security,
policies, keys, partition trees and bounds, sizes; and `describe`, a table the way psql's ``\\d+`` shows it.

Each function reads the catalog of the connection's database with the connection's rights (the
administrator's sees everything). Table names are bound as parameters and cast on the server
(``%s::regclass``, ``to_regclass(%s)``), never pasted into the SQL text; the fragments shared between
queries are composed with `psycopg.sql`. Results are DataFrames, one row per object, with the column
names the docstrings list, so the checks, the benchmark and the plots read the same facts the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from .errors import LabError

__all__ = [
    "TenantTable",
    "describe",
    "keys",
    "partition_bounds",
    "partition_sizes",
    "partition_tree",
    "policies",
    "range_end",
    "relations",
    "table_sizes",
    "tenant_tables",
]

Query = str | sql.SQL | sql.Composed


def _frame(conn: psycopg.Connection[Any], query: Query, params: Sequence[Any] | Mapping[str, Any]) -> pd.DataFrame:
    """The rows of ``query`` as a DataFrame whose columns are the query's column names."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        cols = [c.name for c in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=cols)


# --------------------------------------------------------------------------------------------------
# Tables that hold tenant rows, and their row security
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantTable:
    """A table (or partition) holding tenant rows.

    :param name: the table's name as ``regclass`` prints it (quoted where needed, so valid SQL as is).
    :param tenant_column: the column naming the tenant (``tenant_id``; ``id`` for ``tenants``).
    :param kind: ``table``, ``partitioned`` (a parent) or ``partition`` (a partition, leaf or not).
    :param parent: the partition's direct parent, else None.
    :param leaf: True when the rows live in it (not partitioned itself).
    """

    name: str
    tenant_column: str
    kind: str
    parent: str | None = None
    leaf: bool = True


def tenant_tables(conn: psycopg.Connection[Any], *, partitions: bool = True) -> list[TenantTable]:
    """Every table of the current schema that holds tenant rows: a ``tenant_id`` column, or ``tenants``.

    Read from the catalog, so tables and partitions created later are included.
    :param partitions: include partitions (at every level), not only top-level tables.
    Returns tables first (in name order), then partitions (in name order).
    """
    rows = conn.execute(
        """
        SELECT c.oid::regclass::text,
               CASE WHEN c.oid = to_regclass('tenants') THEN 'id' ELSE 'tenant_id' END,
               CASE WHEN c.relispartition THEN 'partition' WHEN c.relkind = 'p' THEN 'partitioned' ELSE 'table' END,
               (SELECT i.inhparent::regclass::text FROM pg_inherits AS i WHERE i.inhrelid = c.oid),
               c.relkind = 'r'
          FROM pg_class AS c
         WHERE c.relnamespace = current_schema()::regnamespace
           AND c.relkind IN ('r', 'p')
           AND (c.oid = to_regclass('tenants')
                OR EXISTS (SELECT 1 FROM pg_attribute AS a
                            WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
         ORDER BY c.relispartition, c.relname
        """
    ).fetchall()
    found = [TenantTable(name, col, kind, parent, leaf) for name, col, kind, parent, leaf in rows]
    return [t for t in found if partitions or t.kind != "partition"]


def relations(conn: psycopg.Connection[Any], tables: Sequence[str]) -> pd.DataFrame:
    """What ``pg_class`` says about each named relation: its kind, row security, owner and size estimate.

    :param tables: names, optionally schema-qualified; names that do not exist are left out.
    Returns a DataFrame in the order given: table (as regclass prints it), kind (``table``,
    ``partitioned table``, ``view``...), rls_enabled, rls_forced, owner, rows_estimate (None before the
    first ANALYZE).
    """
    return _frame(
        conn,
        """
        SELECT c.oid::regclass::text AS "table",
               CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
                              WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' ELSE c.relkind::text END AS kind,
               c.relrowsecurity AS rls_enabled,
               c.relforcerowsecurity AS rls_forced,
               pg_get_userbyid(c.relowner) AS owner,
               CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END AS rows_estimate
          FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, o)
          JOIN pg_class AS c ON c.oid = to_regclass(t.name)
         ORDER BY t.o
        """,
        (list(tables),),
    )


def policies(conn: psycopg.Connection[Any], tables: Sequence[str]) -> pd.DataFrame:
    """The row-level security policies of the named tables (each table's own: partitions have theirs).

    :param tables: names of existing tables, optionally schema-qualified.
    Returns a DataFrame ordered by table and policy: table, policy, permissive (bool), command
    (``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE`` or ``ALL``), using and with_check (the expressions,
    None when absent), roles (names in order; ``public`` for PUBLIC).
    """
    return _frame(
        conn,
        """
        SELECT p.polrelid::regclass::text AS "table", p.polname::text AS policy, p.polpermissive AS permissive,
               CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                             WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS command,
               pg_get_expr(p.polqual, p.polrelid) AS using, pg_get_expr(p.polwithcheck, p.polrelid) AS with_check,
               ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END
                       FROM unnest(p.polroles) AS r ORDER BY 1) AS roles
          FROM pg_policy AS p
         WHERE p.polrelid = ANY(%s::regclass[])
         ORDER BY 1, 2
        """,
        (list(tables),),
    )


def keys(conn: psycopg.Connection[Any], tables: Sequence[str]) -> pd.DataFrame:
    """The keys of the named tables: primary keys, unique constraints, foreign keys, and unique indexes
    that back no constraint.

    :param tables: names of existing tables, optionally schema-qualified.
    Returns a DataFrame ordered by table and key: table, key, kind (``primary key``, ``unique``,
    ``foreign key``, ``unique index``), columns (names in key order; ``(expression)`` for an expression
    column of an index), references and ref_columns (the referenced table and columns of a foreign key,
    else None).
    """
    return _frame(
        conn,
        """
        SELECT c.conrelid::regclass::text AS "table", c.conname::text AS key,
               CASE c.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique' WHEN 'f' THEN 'foreign key' END AS kind,
               ARRAY(SELECT a.attname::text FROM unnest(c.conkey) AS k JOIN pg_attribute AS a
                      ON a.attrelid = c.conrelid AND a.attnum = k) AS columns,
               c.confrelid::regclass::text AS "references",
               ARRAY(SELECT a.attname::text FROM unnest(c.confkey) AS k JOIN pg_attribute AS a
                      ON a.attrelid = c.confrelid AND a.attnum = k) AS ref_columns
          FROM pg_constraint AS c
         WHERE c.conrelid = ANY(%(t)s::regclass[]) AND c.contype IN ('p', 'u', 'f')
        UNION ALL
        SELECT i.indrelid::regclass::text, i.indexrelid::regclass::text, 'unique index',
               ARRAY(SELECT coalesce(a.attname::text, '(expression)') FROM unnest(i.indkey) AS k
                      LEFT JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k), NULL, NULL
          FROM pg_index AS i
         WHERE i.indrelid = ANY(%(t)s::regclass[]) AND i.indisunique
           AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)
         ORDER BY 1, 2
        """,
        {"t": list(tables)},
    )


# --------------------------------------------------------------------------------------------------
# Partitions: the tree, the ranges, the sizes
# --------------------------------------------------------------------------------------------------

# The lower and upper value of a range bound ``FOR VALUES FROM ('...') TO ('...')``, as timestamptz
# (the lab partitions by time; read in the session's TimeZone).
_LOWER = sql.SQL("substring({bound} FROM $$FROM \\('([^']+)'\\)$$)::timestamptz")
_UPPER = sql.SQL("substring({bound} FROM $$TO \\('([^']+)'\\)$$)::timestamptz")


def partition_tree(conn: psycopg.Connection[Any], table: str) -> pd.DataFrame:
    """Every partition of ``table``, at every level (empty for a table that is not partitioned).

    Returns a DataFrame ordered by level and name: name, level (1 for a direct partition), parent,
    bound (``FOR VALUES ...`` as ``\\d+`` prints it), is_leaf, rls_enabled, rls_forced, rows_estimate.
    """
    return _frame(
        conn,
        """
        SELECT t.relid::regclass::text AS name,
               t.level,
               t.parentrelid::regclass::text AS parent,
               pg_get_expr(c.relpartbound, c.oid) AS bound,
               t.isleaf AS is_leaf,
               c.relrowsecurity AS rls_enabled,
               c.relforcerowsecurity AS rls_forced,
               CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END AS rows_estimate
          FROM pg_partition_tree(%s::regclass) AS t
          JOIN pg_class AS c ON c.oid = t.relid
         WHERE t.level > 0
         ORDER BY t.level, c.relname
        """,
        (table,),
    )


def partition_bounds(conn: psycopg.Connection[Any], table: str) -> pd.DataFrame:
    """Every leaf partition of ``table`` with the range [lo, hi) of its nearest RANGE-partitioned level
    (its own bound, or its parent's for a hash partition of a month).

    Returns a DataFrame ordered by partition: partition, lo, hi (timestamps; None where no level of
    the leaf has a range bound, e.g. a DEFAULT partition).
    """
    bound_of_range_level = sql.SQL(
        "(SELECT {value} FROM pg_partition_ancestors(leaf.relid) AS anc JOIN tree AS a ON a.relid = anc.relid"
        " WHERE a.bound LIKE 'FOR VALUES FROM%%' LIMIT 1)"
    )
    bound = sql.SQL("a.bound")
    query = sql.SQL(
        """
        WITH tree AS (
            SELECT t.relid, t.isleaf, pg_get_expr(c.relpartbound, c.oid) AS bound
              FROM pg_partition_tree(%(t)s::regclass) AS t JOIN pg_class AS c ON c.oid = t.relid
        )
        SELECT leaf.relid::regclass::text AS partition, {lo} AS lo, {hi} AS hi
          FROM tree AS leaf
         WHERE leaf.isleaf
         ORDER BY 1
        """
    ).format(lo=bound_of_range_level.format(value=_LOWER.format(bound=bound)),
             hi=bound_of_range_level.format(value=_UPPER.format(bound=bound)))
    return _frame(conn, query, {"t": table})


def range_end(conn: psycopg.Connection[Any], table: str) -> dt.datetime | None:
    """The upper bound of the last range partition directly under ``table`` (where the next one starts),
    or None when it has none."""
    query = sql.SQL(
        "SELECT max({upper}) FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass"
    ).format(upper=_UPPER.format(bound=sql.SQL("pg_get_expr(c.relpartbound, c.oid)")))
    row = conn.execute(query, (table,)).fetchone()
    return None if row is None else row[0]


_SIZES = sql.SQL(
    "pg_relation_size({r})::bigint AS heap_bytes, pg_table_size({r})::bigint AS table_bytes,"
    " pg_indexes_size({r})::bigint AS index_bytes, pg_total_relation_size({r})::bigint AS total_bytes"
)
"""Sizes of relation {r}: heap_bytes (the main fork), table_bytes (with TOAST, free space and
visibility maps), index_bytes, total_bytes (table and indexes)."""
# The partition tree of {table} with {table} itself at level 0 (pg_partition_tree is empty for a plain table).
_TREE = sql.SQL(
    "SELECT relid, parentrelid, level, isleaf FROM pg_partition_tree({table})"
    " UNION SELECT {table}, NULL, 0, true WHERE NOT EXISTS (SELECT FROM pg_partition_tree({table}))"
)


def partition_sizes(conn: psycopg.Connection[Any], table: str) -> pd.DataFrame:
    """The on-disk size of ``table`` and of each of its partitions, at every level.

    A partitioned table (or partition) stores nothing itself: its rows are 0 bytes, the leaves hold it all.
    Returns a DataFrame ordered by level and name: name, level (0 for ``table`` itself), parent, is_leaf,
    heap_bytes, table_bytes, index_bytes, total_bytes. A table that is not partitioned is its only row.
    """
    query = sql.SQL(
        """
        SELECT t.relid::regclass::text AS name, t.level, t.parentrelid::regclass::text AS parent,
               t.isleaf AS is_leaf, {sizes}
          FROM ({tree}) AS t
          JOIN pg_class AS c ON c.oid = t.relid
         ORDER BY t.level, c.relname
        """
    ).format(sizes=_SIZES.format(r=sql.SQL("t.relid")), tree=_TREE.format(table=sql.SQL("%(t)s::regclass")))
    return _frame(conn, query, {"t": table})


def table_sizes(conn: psycopg.Connection[Any], tables: Sequence[str]) -> pd.DataFrame:
    """The on-disk size of each named table, partitions included (a partitioned table's is its leaves').

    :param tables: names, optionally schema-qualified; names that do not exist are left out.
    Returns a DataFrame indexed by table, in the order given: heap_bytes, table_bytes, index_bytes,
    total_bytes (see `partition_sizes`).
    """
    query = sql.SQL(
        """
        SELECT t.name AS "table", sum(s.heap_bytes)::bigint AS heap_bytes, sum(s.table_bytes)::bigint AS table_bytes,
               sum(s.index_bytes)::bigint AS index_bytes, sum(s.total_bytes)::bigint AS total_bytes
          FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, o)
          CROSS JOIN LATERAL (SELECT {sizes} FROM ({tree}) AS p) AS s
         WHERE to_regclass(t.name) IS NOT NULL
         GROUP BY t.name, t.o
         ORDER BY t.o
        """
    ).format(sizes=_SIZES.format(r=sql.SQL("p.relid")), tree=_TREE.format(table=sql.SQL("to_regclass(t.name)")))
    return _frame(conn, query, (list(tables),)).set_index("table")


# --------------------------------------------------------------------------------------------------
# describe(): what psql's \d+ shows, as DataFrames
# --------------------------------------------------------------------------------------------------

_STORAGE = {"p": "plain", "e": "external", "m": "main", "x": "extended"}
_CONTYPE = {"p": "primary key", "u": "unique", "f": "foreign key", "c": "check", "x": "exclusion", "n": "not null", "t": "trigger"}


def _columns(conn: psycopg.Connection[Any], oid: int) -> pd.DataFrame:
    frame = _frame(
        conn,
        """
        SELECT a.attname AS name,
               format_type(a.atttypid, a.atttypmod) AS type,
               NOT a.attnotnull AS nullable,
               CASE a.attgenerated
                   WHEN 's' THEN 'generated always as (' || pg_get_expr(d.adbin, d.adrelid) || ') stored'
                   WHEN 'v' THEN 'generated always as (' || pg_get_expr(d.adbin, d.adrelid) || ')'
                   ELSE pg_get_expr(d.adbin, d.adrelid)
               END AS "default",
               a.attstorage AS storage,
               col_description(a.attrelid, a.attnum) AS description
          FROM pg_attribute AS a
          LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum
        """,
        (oid,),
    )
    frame["storage"] = frame["storage"].map(lambda s: _STORAGE.get(s, s))
    return frame


def _indexes(conn: psycopg.Connection[Any], oid: int) -> pd.DataFrame:
    return _frame(
        conn,
        """
        SELECT c.relname AS name,
               pg_get_indexdef(i.indexrelid) AS definition,
               i.indisprimary AS primary,
               i.indisunique AS unique,
               i.indisvalid AS valid,
               CASE WHEN c.relkind = 'I'   -- a partitioned index: the sum of its partitions
                    THEN (SELECT coalesce(sum(pg_relation_size(t.relid)), 0)
                            FROM pg_partition_tree(i.indexrelid) AS t)
                    ELSE pg_relation_size(i.indexrelid)
               END::bigint AS size_bytes
          FROM pg_index AS i
          JOIN pg_class AS c ON c.oid = i.indexrelid
         WHERE i.indrelid = %s
         ORDER BY i.indisprimary DESC, c.relname
        """,
        (oid,),
    )


def _constraints(conn: psycopg.Connection[Any], oid: int) -> pd.DataFrame:
    frame = _frame(
        conn,
        """
        SELECT conname AS name, contype AS type, pg_get_constraintdef(oid) AS definition
          FROM pg_constraint
         WHERE conrelid = %s
         ORDER BY contype, conname
        """,
        (oid,),
    )
    frame["type"] = frame["type"].map(lambda t: _CONTYPE.get(t, t))
    return frame


def describe(conn: psycopg.Connection[Any], table: str) -> dict[str, pd.DataFrame]:
    """Describe a table the way psql's ``\\d+`` does, one DataFrame per part.

    :param conn: any connection that may read the catalogs (the administrator's sees everything).
    :param table: a table name, optionally schema-qualified.
    :returns: ``columns`` (name, type, nullable, default, storage, description), ``indexes`` (name,
        definition, primary, unique, valid, size_bytes; a partitioned index's size sums its
        partitions), ``constraints`` (name, type, definition), ``policies`` (name, permissive, roles,
        command, using, with_check), ``rls`` (one row: kind, rls_enabled, rls_forced, owner,
        rows_estimate) and ``partitions`` (name, level, parent, bound, is_leaf, rls_enabled,
        rls_forced, rows_estimate; empty for a plain table).
    Raise LabError if the table does not exist.
    """
    row = conn.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()
    if row is None or row[0] is None:
        raise LabError(f"no table {table!r}")
    oid = row[0]
    pols = policies(conn, [table])
    pols["permissive"] = pols["permissive"].map({True: "PERMISSIVE", False: "RESTRICTIVE"})
    return {
        "columns": _columns(conn, oid),
        "indexes": _indexes(conn, oid),
        "constraints": _constraints(conn, oid),
        "policies": pols.rename(columns={"policy": "name"})[["name", "permissive", "roles", "command", "using", "with_check"]],
        "rls": relations(conn, [table]).drop(columns="table"),
        "partitions": partition_tree(conn, table),
    }
