"""Running ``EXPLAIN (ANALYZE, BUFFERS, SETTINGS, FORMAT JSON)`` on the caller's connection."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from ..errors import LabError
from .plan import Plan

__all__ = ["explain"]

log = logging.getLogger("labhelpers")

_LEAF_PARTITIONS = sql.SQL("""
    WITH named AS (
        SELECT to_regclass(quote_ident(r)) AS oid FROM unnest(%s::text[]) AS r
    ), roots AS (
        SELECT DISTINCT pg_partition_root(c.oid) AS root
        FROM named n JOIN pg_class c ON c.oid = n.oid
        WHERE c.relispartition
    )
    SELECT r.root::regclass::text, t.relid::regclass::text
    FROM roots r, pg_partition_tree(r.root) t JOIN pg_class c ON c.oid = t.relid
    WHERE t.isleaf
    ORDER BY 1, pg_get_expr(c.relpartbound, c.oid) ~ '^DEFAULT', pg_get_expr(c.relpartbound, c.oid), 2
""")
"""Partitioned table -> leaf partitions in bound order (DEFAULT last), for the relations named in a plan."""


def explain(
    conn: psycopg.Connection[Any],
    query: str | sql.Composable,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    analyze: bool = True,
    buffers: bool = True,
    settings: bool = True,
    rollback: bool = False,
    partitions: Mapping[str, Sequence[str]] | None = None,
) -> Plan:
    """Run ``EXPLAIN (ANALYZE, BUFFERS, SETTINGS, FORMAT JSON)`` on ``query`` and return its `Plan`.

    Runs on ``conn`` as it is: its role, its ``app.current_tenant``, its transaction (never switched here).
    With ``analyze`` the statement really runs; use ``analyze=False`` for one that must not, or
    ``rollback=True`` to run it inside a savepoint that is rolled back.

    :param conn: a psycopg 3 connection.
    :param query: the statement (text or `psycopg.sql.Composable`), with ``%s``/``%(name)s`` placeholders
        if ``params`` is given. A trailing semicolon is ignored.
    :param params: bound on the server, as in `psycopg.Connection.execute`.
    :param analyze: run the statement and collect actual times and rows.
    :param buffers: collect buffer counts.
    :param settings: include non-default planner settings.
    :param rollback: run inside a transaction/savepoint that is rolled back (for INSERT/UPDATE/DELETE).
    :param partitions: partitioned table -> leaf partitions; default: read from the catalog for the
        partitions that appear in the plan.
    Returns the parsed `Plan`, with ``query`` set to the statement's text.
    Raise LabError if the query is empty; psycopg errors (syntax, permissions) propagate unchanged.
    """
    opts = [o for o, on in (("ANALYZE", analyze), ("BUFFERS", buffers), ("SETTINGS", settings)) if on]
    head = sql.SQL("EXPLAIN ({}) ").format(sql.SQL(", ").join(sql.SQL(o) for o in [*opts, "FORMAT JSON"]))
    if isinstance(query, str):
        shown = query.strip().rstrip(";").strip()
        if not shown:
            raise LabError("nothing to explain: the query is empty")
        body: sql.Composable = sql.SQL(shown)  # the caller's statement, as written
    else:
        body, shown = query, query.as_string(conn)
    log.debug("explain: %s", shown)
    if rollback:
        with conn.transaction(force_rollback=True):
            row = conn.execute(sql.Composed([head, body]), params).fetchone()
    else:
        row = conn.execute(sql.Composed([head, body]), params).fetchone()
    if row is None:
        raise LabError("EXPLAIN returned no row")
    plan = Plan.from_json(row[0], query=shown)
    if partitions is not None:
        plan.catalog_partitions = {k: list(v) for k, v in partitions.items()}
    else:
        try:
            plan.catalog_partitions = _catalog_partitions(conn, plan)
        except Exception as e:  # noqa: BLE001  (the catalog is a bonus; a failing lookup must not lose the plan)
            log.warning("could not read partitions from the catalog: %s", e)
    return plan


def _catalog_partitions(conn: psycopg.Connection[Any], plan: Plan) -> dict[str, list[str]]:
    """Partitioned table -> leaf partitions (bound order), for every partition named in the plan."""
    rels = sorted({n.raw["Relation Name"] for n in plan.node_list if n.raw.get("Relation Name")})
    if not rels:
        return {}
    with conn.transaction():  # a savepoint inside the caller's transaction: a failure here leaves it intact
        rows = conn.execute(_LEAF_PARTITIONS, (rels,)).fetchall()
    out: dict[str, list[str]] = {}
    for root, leaf in rows:
        out.setdefault(root, []).append(leaf)
    return out
