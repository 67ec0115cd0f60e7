"""Partitions: the tree, the range bounds, the sizes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from ._frame import frame as _frame

__all__ = ["partition_bounds", "partition_sizes", "partition_tree", "range_end", "table_sizes"]


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
