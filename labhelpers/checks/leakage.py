"""Criterion ``zero_leakage``: as app_user, no tenant context shows another tenant's row, on any table or
partition, and no context (unset or empty) shows nothing at all."""

from __future__ import annotations

from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from .. import catalog
from ._session import app_session, in_tenant, tenant_ids
from .results import CheckResult, first_rows

__all__ = ["check_zero_leakage"]

_NO_TENANT = ("(unset)", "(empty)")


def _count(app: psycopg.Connection[Any], table: catalog.TenantTable, label: str, tenant_id: str | None) -> tuple[int, int, str]:
    """(own rows, foreign rows, access) that ``app`` sees in ``table`` in one context."""
    stmt = sql.SQL(
        "SELECT count(*) FILTER (WHERE {c}::text = %(t)s), count(*) FILTER (WHERE {c}::text IS DISTINCT FROM %(t)s) FROM {tbl}"
    ).format(c=sql.Identifier(table.tenant_column), tbl=sql.SQL(table.name))  # regclass text: quoted as needed
    try:
        if label == "(unset)":
            # A truly unset setting needs a transaction where it was never set.
            with app.transaction(force_rollback=True):
                own, foreign = app.execute(stmt, {"t": tenant_id or ""}).fetchone()  # type: ignore[misc]
        else:
            with in_tenant(app, tenant_id):
                own, foreign = app.execute(stmt, {"t": tenant_id or ""}).fetchone()  # type: ignore[misc]
    except psycopg.errors.InsufficientPrivilege:
        return 0, 0, "no privilege"
    return own, foreign, "read"


def check_zero_leakage(admin: psycopg.Connection[Any]) -> CheckResult:
    """Criterion 4: as app_user, for each tenant's context, no table or partition shows a row of another
    tenant; with the context unset or empty, nothing is visible at all.

    A partition app_user has no privilege on counts as not leaking (it cannot be read directly).
    :param admin: a connection to the lab database (used to list tenants and tables).
    Returns the result; evidence ``counts``: one row per (context, table) with own rows, foreign rows.
    """
    tables = catalog.tenant_tables(admin)
    tenants = tenant_ids(admin)
    if not tenants:
        return CheckResult("zero_leakage", False, "no tenants to test with: load the seed data first")
    contexts: list[tuple[str, str | None]] = [(slug, tid) for tid, slug in tenants] + [("(unset)", None), ("(empty)", "")]
    rows = []
    with app_session(admin, claim="a measurement of zero_leakage") as (app, role):
        for label, tid in contexts:
            for t in tables:
                own, foreign, access = _count(app, t, label, tid)
                rows.append({"context": label, "table": t.name, "kind": t.kind, "access": access,
                             "own_rows": own, "foreign_rows": foreign})
    counts = pd.DataFrame(rows)
    leaks = counts[(counts["foreign_rows"] > 0)]
    unset_visible = counts[counts["context"].isin(_NO_TENANT) & (counts["own_rows"] > 0)]
    seen_own = int(counts[~counts["context"].isin(_NO_TENANT)]["own_rows"].sum())
    passed = leaks.empty and unset_visible.empty and seen_own > 0
    if passed:
        summary = (f"{len(tenants)} tenant contexts + unset + empty x {len(tables)} tables/partitions: "
                   f"0 foreign rows ({seen_own} own rows seen)")
    elif seen_own == 0:
        summary = "app_user saw no rows at all in any tenant context: nothing was really tested"
    else:
        summary = f"{int(leaks['foreign_rows'].sum())} foreign rows visible: " + ", ".join(
            first_rows(leaks, lambda r: f"{r['context']} sees {r['foreign_rows']} in {r['table']}"))
    return CheckResult("zero_leakage", passed, summary, {"counts": counts, "role": role})
