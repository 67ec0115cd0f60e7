"""The objects outside the policies: criteria ``privileges`` (what the application roles may do to tenant
tables), ``views`` (they must run as the caller) and ``definer_functions`` (a pinned ``search_path``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from .. import catalog, db
from ._session import APP_ROLE
from .results import CheckResult, problems_result, text_or_none

__all__ = [
    "APP_TABLE_PRIVILEGES", "app_privileges", "check_definer_functions", "check_privileges", "check_views",
    "search_path_problem",
]

# Every table privilege PostgreSQL has (MAINTAIN since 17); the application roles need the first four.
_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN")
APP_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")

# Schemas a student or the lab may put objects in: all but the system ones (pg_toast, pg_temp_N...).
_USER_SCHEMA = sql.SQL("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'")


def _not_extension(catalog_table: str, oid: str) -> sql.Composable:
    """Objects that belong to an extension (pg_stat_statements' views, say) are the extension's business."""
    return sql.SQL(
        "NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = {catalog}::regclass"
        " AND d.objid = {oid} AND d.deptype = 'e')"
    ).format(catalog=sql.Literal(catalog_table), oid=sql.SQL(oid))


def app_privileges(conn: psycopg.Connection[Any], roles: Sequence[str] = db.APP_ROLES) -> pd.DataFrame:
    """The table privileges each existing application role holds on every tenant table and partition,
    counting grants to PUBLIC and to roles it is a member of (``has_table_privilege``).

    Returns a DataFrame, one row per (table, role): table, kind, role, privileges (list, in the order
    SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER, MAINTAIN), grantable (the privileges
    it holds WITH GRANT OPTION).
    """
    tables = catalog.tenant_tables(conn)
    privileges = [p for p in _TABLE_PRIVILEGES if p != "MAINTAIN" or conn.info.server_version >= 170000]
    rows = conn.execute(
        """
        SELECT t.name, r.rolname::text,
               ARRAY(SELECT x.p FROM unnest(%(p)s::text[]) WITH ORDINALITY AS x(p, o)
                      WHERE has_table_privilege(r.oid, t.name::regclass, x.p) ORDER BY x.o),
               ARRAY(SELECT x.p FROM unnest(%(p)s::text[]) WITH ORDINALITY AS x(p, o)
                      WHERE has_table_privilege(r.oid, t.name::regclass, x.p || ' WITH GRANT OPTION') ORDER BY x.o)
          FROM unnest(%(t)s::text[]) WITH ORDINALITY AS t(name, o)
         CROSS JOIN pg_roles AS r
         WHERE r.rolname = ANY(%(r)s)
         ORDER BY t.o, r.rolname
        """,
        {"p": privileges, "t": [t.name for t in tables], "r": list(roles)},
    ).fetchall()
    kind = {t.name: t.kind for t in tables}
    return pd.DataFrame(
        [(name, kind[name], role, list(held), list(grantable)) for name, role, held, grantable in rows],
        columns=["table", "kind", "role", "privileges", "grantable"],
    )


def _privilege_problems(row: pd.Series) -> str:
    """What one (table, role) row of `app_privileges` holds that is too much ('' when nothing)."""
    found = []
    if row["kind"] == "partition" and row["privileges"]:
        found.append(f"{', '.join(row['privileges'])} on a partition (no direct access: use the parent)")
    else:
        beyond = [p for p in row["privileges"] if p not in APP_TABLE_PRIVILEGES]
        if beyond:
            found.append(", ".join(beyond) + (" (TRUNCATE bypasses RLS)" if "TRUNCATE" in beyond else ""))
    if row["grantable"]:
        found.append(f"WITH GRANT OPTION on {', '.join(row['grantable'])}")
    return "; ".join(found)


def check_privileges(admin: psycopg.Connection[Any]) -> CheckResult:
    """Every application role holds at most SELECT, INSERT, UPDATE and DELETE on each tenant table, none
    of them with GRANT OPTION, and nothing at all on a partition (reached through its parent).

    TRUNCATE bypasses row-level security entirely: a role that holds it empties every tenant's rows
    (PITFALLS 31); a ``GRANT ALL`` hands it out, with REFERENCES and TRIGGER. Privileges are what the
    catalog says the role may do, measured with ``has_table_privilege`` (PUBLIC and memberships count),
    not by a TRUNCATE that may fail for another reason.
    :param admin: a connection to the lab database (catalog reads only).
    Returns the result; evidence ``privileges``: one row per (table, role) with what it holds and why
    that is too much.
    """
    tables = catalog.tenant_tables(admin)
    if not tables:
        return CheckResult("privileges", False, "no tenant tables found: build the schema first")
    frame = app_privileges(admin)
    if APP_ROLE not in set(frame["role"]):
        return CheckResult("privileges", False, f"{APP_ROLE} does not exist: build the RLS stage first",
                           {"privileges": frame})
    frame["problems"] = [_privilege_problems(r) for _, r in frame.iterrows()]
    n_parts = sum(1 for t in tables if t.kind == "partition")
    ok = (f"{len(tables) - n_parts} tables x {frame['role'].nunique()} app roles: at most SELECT, INSERT, UPDATE, "
          f"DELETE (no TRUNCATE); {n_parts} partitions: no direct access")
    return problems_result("privileges", frame, ok=ok, bad="table/role pairs hold too much",
                           line=lambda r: f"{r['role']} on {r['table']}: {r['problems']}")


def check_views(admin: psycopg.Connection[Any]) -> CheckResult:
    """Every view, in every schema, is ``security_invoker`` (it reads the tables as the caller, under the
    caller's row-level security), and there is no materialized view (it has no RLS and shows whatever
    its owner saw to everyone allowed to read it). PITFALLS 12.

    Objects of extensions are not judged. Returns the result; evidence ``views``: one row per view with
    its owner, whether it is security_invoker, and the application roles that may read it.
    """
    query = sql.SQL(
        """
        SELECT c.oid::regclass::text, n.nspname::text,
               CASE c.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END,
               pg_get_userbyid(c.relowner)::text,
               coalesce((SELECT o.option_value::boolean FROM pg_options_to_table(c.reloptions) AS o
                          WHERE o.option_name = 'security_invoker'), false),
               ARRAY(SELECT r.rolname::text FROM pg_roles AS r
                      WHERE r.rolname = ANY(%(r)s) AND has_table_privilege(r.oid, c.oid, 'SELECT') ORDER BY 1)
          FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('v', 'm') AND {user_schema} AND {not_extension}
         ORDER BY 1
        """
    ).format(user_schema=_USER_SCHEMA, not_extension=_not_extension("pg_class", "c.oid"))
    rows = admin.execute(query, {"r": list(db.APP_ROLES)}).fetchall()
    frame = pd.DataFrame(
        [(v, s, k, o, bool(i), list(rb)) for v, s, k, o, i, rb in rows],
        columns=["view", "schema", "kind", "owner", "security_invoker", "readable_by"],
    )
    frame["problems"] = [
        "materialized view: no row-level security, shows what its owner saw" if r["kind"] == "materialized view"
        else ("" if r["security_invoker"] else f"runs as its owner {r['owner']} (no security_invoker)")
        for _, r in frame.iterrows()
    ]
    ok = ("no views or materialized views in any schema" if frame.empty else
          f"{len(frame)} views in {frame['schema'].nunique()} schemas, all security_invoker; no materialized views")
    return problems_result("views", frame, ok=ok, bad="views bypass the caller's RLS",
                           line=lambda r: f"{r['view']}: {r['problems']}"
                           + (f", readable by {', '.join(r['readable_by'])}" if r["readable_by"] else ""))


def search_path_problem(setting: str | None) -> str | None:
    """What makes a SECURITY DEFINER function's ``search_path`` unsafe, or None when it is safe.

    :param setting: the value of its ``SET search_path`` (from ``pg_proc.proconfig``), None when unset.
    Safe means pinned, with ``pg_temp`` listed explicitly and last: a schema that is not listed is
    searched FIRST for tables when it is the session's temporary schema, so without ``pg_temp`` at the
    end a caller's temporary table (and its triggers, running as the owner) stands in for the real one.
    """
    if setting is None:
        return "no SET search_path: the caller's search_path and temporary tables decide what its names mean"
    items = [item.strip().strip('"') for item in setting.split(",")]
    if "pg_temp" not in items:
        return f"search_path = {setting}: pg_temp is not listed, so the caller's temporary tables are searched first"
    if items[-1] != "pg_temp":
        return f"search_path = {setting}: pg_temp is not last, so the caller's temporary tables come before the lab's"
    return None


def check_definer_functions(admin: psycopg.Connection[Any]) -> CheckResult:
    """Every SECURITY DEFINER function in every schema (trigger functions included: they run as their
    owner whoever fires them) pins ``search_path`` with ``pg_temp`` last (see `search_path_problem`).

    Objects of extensions are not judged. Returns the result; evidence ``functions``: one row per
    SECURITY DEFINER function with its owner, search_path and the application roles that may call it.
    """
    query = sql.SQL(
        """
        SELECT p.oid::regprocedure::text, n.nspname::text, p.prorettype = 'trigger'::regtype,
               pg_get_userbyid(p.proowner)::text,
               (SELECT substr(c, length('search_path=') + 1) FROM unnest(p.proconfig) AS c
                 WHERE starts_with(c, 'search_path=')),
               ARRAY(SELECT r.rolname::text FROM pg_roles AS r
                      WHERE r.rolname = ANY(%(r)s) AND has_function_privilege(r.oid, p.oid, 'EXECUTE') ORDER BY 1)
          FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
         WHERE p.prosecdef AND {user_schema} AND {not_extension}
         ORDER BY 1
        """
    ).format(user_schema=_USER_SCHEMA, not_extension=_not_extension("pg_proc", "p.oid"))
    rows = admin.execute(query, {"r": list(db.APP_ROLES)}).fetchall()
    frame = pd.DataFrame(
        [(f, s, bool(t), o, sp, list(ex)) for f, s, t, o, sp, ex in rows],
        columns=["function", "schema", "trigger", "owner", "search_path", "executable_by"],
    )
    frame["problems"] = [search_path_problem(text_or_none(sp)) or "" for sp in frame["search_path"]]
    ok = ("no SECURITY DEFINER functions" if frame.empty else
          f"{len(frame)} SECURITY DEFINER functions ({int(frame['trigger'].sum())} trigger functions): "
          f"each pins search_path with pg_temp last")
    return problems_result("definer_functions", frame, ok=ok, bad="SECURITY DEFINER functions are unsafe",
                           line=lambda r: f"{r['function']}: {r['problems']}", evidence="functions")
