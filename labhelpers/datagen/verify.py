"""What a load is checked and measured by: the registry audit, checksums (determinism), table sizes."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..errors import LabError
from .custom_fields import ENTITY
from .shapes import GENERATED_ID_MARK, Shape

__all__ = ["audit", "checksum", "table_bytes"]

_CHECKSUM_TABLES = ("tenant_users", "contacts", "leads", "activities")


def checksum(conn: psycopg.Connection, table: str, *, generated_only: bool = True) -> str:
    """md5 of every (generated) row of ``table`` in id order: equal seeds and anchors give equal sums.

    Raise LabError if the table is not one of tenant_users, contacts, leads, activities.
    """
    if table not in _CHECKSUM_TABLES:
        raise LabError(f"no checksum for table {table!r}")
    where = sql.SQL("WHERE substr(t.id::text, 15, 9) = {}").format(sql.Literal(GENERATED_ID_MARK)) \
        if generated_only else sql.SQL("")
    q = sql.SQL("SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.tenant_id, t.id), '')) FROM {} AS t {}"
                ).format(sql.Identifier(table), where)
    return str(conn.execute(q).fetchone()[0])  # type: ignore[index]


def audit(conn: psycopg.Connection, shape: Shape, *, sample: int = 20_000) -> dict[str, int]:
    """Check a random sample of about ``sample`` generated rows per table against the registry.

    Returns the number of problems per table (0 expected).
    """
    out: dict[str, int] = {}
    for table, entity in ENTITY.items():
        total = max(1, conn.execute(
            "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_class AS c"
            " WHERE c.oid = to_regclass(%s) OR c.oid IN (SELECT relid FROM pg_partition_tree(to_regclass(%s)))",
            (table, table)).fetchone()[0])  # type: ignore[index]
        pct = min(100.0, 100.0 * sample / total)
        q = sql.SQL(
            "SELECT count(*) FROM (SELECT tenant_id, custom_fields FROM {} TABLESAMPLE BERNOULLI (%s) REPEATABLE (7)"
            " WHERE substr(id::text, 15, 9) = %s AND tenant_id = ANY(%s::uuid[])) AS s"
            " CROSS JOIN LATERAL lab_custom_field_problems(s.tenant_id, %s, s.custom_fields) AS p"
        ).format(sql.Identifier(table))
        row = conn.execute(q, (pct, GENERATED_ID_MARK, [t.id for t in shape.tenants], entity)).fetchone()
        out[table] = row[0]  # type: ignore[index]
    return out


def table_bytes(conn: psycopg.Connection) -> dict[str, int]:
    """Bytes of each generated table (partitions included), and of its indexes as ``<table>_indexes``."""
    rows = conn.execute(
        """
        SELECT t, sum(pg_table_size(r.oid))::bigint, sum(pg_indexes_size(r.oid))::bigint
          FROM unnest(ARRAY['tenant_users', 'contacts', 'leads', 'activities']) AS t
          CROSS JOIN LATERAL (SELECT to_regclass(t) AS oid
                              UNION SELECT relid FROM pg_partition_tree(to_regclass(t))) AS r
         GROUP BY t
        """
    ).fetchall()
    return {t: int(h) for t, h, _ in rows} | {f"{t}_indexes": int(i) for t, _, i in rows}
