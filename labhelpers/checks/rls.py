"""Criterion ``rls``: row-level security on every tenant table and partition, and application roles it
applies to (not superuser, no BYPASSRLS, owning nothing)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pandas as pd
import psycopg

from .. import catalog, db
from ._session import APP_ROLE
from .results import CheckResult, first_rows, text_or_none

__all__ = ["app_role_facts", "check_rls"]

_SETTING_READ = re.compile(r"current_setting\('app\.current_tenant'(::text)?,\s*true\)")
_COMMANDS = ("SELECT", "INSERT", "UPDATE", "DELETE")


def app_role_facts(conn: psycopg.Connection[Any], roles: Sequence[str] = db.APP_ROLES) -> pd.DataFrame:
    """For each existing application role: superuser? BYPASSRLS? how many objects of this database it owns,
    and whether it is a member of a role that owns a tenant table (which would let it act as the owner).

    Returns a DataFrame indexed by role.
    """
    rows = conn.execute(
        """
        SELECT r.rolname AS role, r.rolsuper AS superuser, r.rolbypassrls AS bypassrls, r.rolcanlogin AS login,
               (SELECT count(*) FROM pg_class AS c WHERE c.relowner = r.oid)
               + (SELECT count(*) FROM pg_proc AS p WHERE p.proowner = r.oid)
               + (SELECT count(*) FROM pg_namespace AS n WHERE n.nspowner = r.oid) AS owns,
               EXISTS (SELECT 1 FROM pg_class AS c
                        WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
                          AND pg_has_role(r.oid, c.relowner, 'USAGE')) AS acts_as_owner
          FROM pg_roles AS r
         WHERE r.rolname = ANY(%s)
         ORDER BY r.rolname
        """,
        (list(roles),),
    ).fetchall()
    return pd.DataFrame(
        rows, columns=["role", "superuser", "bypassrls", "login", "owns", "acts_as_owner"]
    ).set_index("role")


def _pins_tenant(expr: str | None, column: str) -> bool:
    """True if a policy expression compares the tenant column with the fail-closed setting read."""
    if not expr:
        return False
    return bool(_SETTING_READ.search(expr)) and "NULLIF" in expr and re.search(rf"\b{re.escape(column)}\b", expr) is not None


def _table_problems(table: catalog.TenantTable, enabled: bool, forced: bool, policies: pd.DataFrame) -> list[str]:
    """What is wrong with one table's row security, given its flags and its permissive policies."""
    problems: list[str] = []
    if not enabled:
        problems.append("RLS not enabled")
    if not forced:
        problems.append("RLS not forced")
    for cmd in _COMMANDS:
        if policies[policies["command"].isin([cmd, "ALL"])].empty:
            problems.append(f"no permissive policy for {cmd}")
    for _, p in policies.iterrows():
        using, check = text_or_none(p["using"]), text_or_none(p["with_check"])
        if p["command"] in ("SELECT", "UPDATE", "DELETE", "ALL") and not _pins_tenant(using, table.tenant_column):
            problems.append(f"permissive {p['policy']} USING ({using}) does not pin the tenant")
        if p["command"] in ("INSERT", "UPDATE", "ALL"):
            if check is None:
                problems.append(f"permissive {p['policy']} has no WITH CHECK")
            elif not _pins_tenant(check, table.tenant_column):
                problems.append(f"permissive {p['policy']} WITH CHECK ({check}) does not pin the tenant")
    return problems


def _role_problems(roles: pd.DataFrame) -> list[str]:
    """What makes an application role one that RLS does not (reliably) apply to."""
    problems = [
        f"{role}: {what}"
        for role, r in roles.iterrows()
        for what, bad in (("superuser", r["superuser"]), ("BYPASSRLS", r["bypassrls"]),
                          (f"owns {r['owns']} objects", r["owns"] > 0), ("can act as a table owner", r["acts_as_owner"]))
        if bad
    ]
    if APP_ROLE not in roles.index:
        problems.append(f"{APP_ROLE} does not exist")
    return problems


def check_rls(admin: psycopg.Connection[Any]) -> CheckResult:
    """Criterion 1: every tenant table and partition has RLS enabled and forced, policies that pin the
    tenant for every command (fail closed), WITH CHECK on writes, no permissive ``true``; the app roles are
    neither superuser nor BYPASSRLS and own nothing.

    :param admin: a connection to the lab database (catalog reads only).
    Returns the result; evidence ``tables`` (one row per table/partition), ``policies``, ``roles``.
    """
    tables = catalog.tenant_tables(admin)
    if not tables:
        return CheckResult("rls", False, "no tenant tables found: build the schema first")
    names = [t.name for t in tables]
    flags = catalog.relations(admin, names).set_index("table")
    policies = catalog.policies(admin, names)
    rows = []
    for t in tables:
        enabled, forced = (bool(flags.at[t.name, "rls_enabled"]), bool(flags.at[t.name, "rls_forced"])) \
            if t.name in flags.index else (False, False)
        mine = policies[policies["table"] == t.name]
        permissive = mine[mine["permissive"].astype(bool)]  # astype: no policy at all gives an object column
        rows.append(
            {"table": t.name, "kind": t.kind, "rls_enabled": enabled, "rls_forced": forced, "policies": len(mine),
             "permissive": len(permissive), "problems": "; ".join(_table_problems(t, enabled, forced, permissive))}
        )
    frame = pd.DataFrame(rows)
    roles = app_role_facts(admin)
    role_problems = _role_problems(roles)
    bad = frame[frame["problems"] != ""]
    passed = bad.empty and not role_problems
    n_parts = int((frame["kind"] == "partition").sum())
    if passed:
        summary = (f"{len(frame) - n_parts} tables and {n_parts} partitions: RLS enabled+forced, "
                   f"fail-closed tenant policies with WITH CHECK; app roles unprivileged")
    else:
        first = first_rows(bad, lambda r: f"{r['table']}: {r['problems']}") + role_problems[:2]
        summary = f"{len(bad)} of {len(frame)} tables/partitions wrong; " + " | ".join(first)
    return CheckResult("rls", passed, summary, {"tables": frame, "policies": policies, "roles": roles})
