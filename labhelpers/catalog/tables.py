"""Tenant tables and their partitions, row security, policies and keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg

from ._frame import frame as _frame

__all__ = ["TenantTable", "keys", "policies", "relations", "tenant_tables"]


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
