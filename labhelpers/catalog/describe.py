"""`describe`: a table the way psql's ``\\d+`` shows it, as DataFrames."""

from __future__ import annotations

from typing import Any

import pandas as pd
import psycopg

from ..errors import LabError
from ._frame import frame as _frame
from .partitions import partition_tree
from .tables import policies, relations

__all__ = ["describe"]


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
