"""Criterion ``citus_ready``: every key of every tenant table carries the tenant, so the schema could be
distributed by ``tenant_id`` on Citus (``tenants`` itself would be a reference table)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import psycopg

from .. import catalog
from .results import CheckResult, first_rows

__all__ = ["REFERENCE_TABLES", "check_citus_ready"]

# Tables that Citus would make reference tables (replicated to every node): no tenant key needed.
REFERENCE_TABLES = ("tenants",)


def _includes_tenant(key: pd.Series) -> bool:
    """True if a key has ``tenant_id``, and a foreign key matches it with the referenced tenant key."""
    if "tenant_id" not in key["columns"]:
        return False
    if key["kind"] != "foreign key":
        return True
    ref_key = "id" if key["references"] in REFERENCE_TABLES else "tenant_id"
    return bool(list(key["ref_columns"])[list(key["columns"]).index("tenant_id")] == ref_key)


def check_citus_ready(admin: psycopg.Connection[Any]) -> CheckResult:
    """Criterion 7: every tenant table has a primary key, and its primary key, unique constraints, unique
    indexes and foreign keys all include the tenant key (``tenants`` itself is a reference table).

    Returns the result; evidence ``keys``: one row per key with its columns and verdict.
    """
    tables = [t for t in catalog.tenant_tables(admin, partitions=False) if t.name not in REFERENCE_TABLES]
    if not tables:
        return CheckResult("citus_ready", False, "no tenant tables found: build the schema first")
    names = [t.name for t in tables]
    frame = catalog.keys(admin, names)
    frame["includes_tenant"] = [_includes_tenant(k) for _, k in frame.iterrows()]
    no_pk = [t for t in names if not ((frame["table"] == t) & (frame["kind"] == "primary key")).any()]
    bad = frame[~frame["includes_tenant"]]
    passed = bad.empty and not no_pk
    if passed:
        summary = f"{len(tables)} tables, {len(frame)} keys: every PK, unique key and FK includes tenant_id"
    else:
        parts = first_rows(bad, lambda r: f"{r['table']}.{r['key']} ({r['kind']}: {', '.join(r['columns'])})")
        parts += [f"{t} has no primary key" for t in no_pk[:2]]
        summary = f"{len(bad) + len(no_pk)} keys without tenant_id: " + "; ".join(parts)
    return CheckResult("citus_ready", passed, summary, {"keys": frame, "tables_without_pk": no_pk})
