"""Demonstrations the notebooks run: the same query as several roles, statements tried and rolled back.

Each runs the SQL it is given, as written, and reports what PostgreSQL did (result, or error class and
SQLSTATE); nothing here is kept unless asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.sql

from .. import db, tenants
from ..tenants import whoami

__all__ = ["compare_roles", "find_tenant_as_admin", "show", "try_statements", "what_if"]


def find_tenant_as_admin(dsn: str | None, tenant: Any) -> Any:
    """Look a tenant up as the administrator: an application role cannot read other tenants' rows."""
    if isinstance(tenant, tenants.Tenant):
        return tenant
    with db.connect(dsn, autocommit=True) as admin:
        return tenants.find_tenant(admin, tenant)


def compare_roles(
    dsn: str | None,
    query: str,
    *,
    tenant: str | None,
    roles: Iterable[str | None] = (None, "app_user"),
    table: str = "contacts",
) -> Any:
    """Run the same query as several roles, each in a session of its own; one row per role.

    :param dsn: the administrator's DSN (as in `db.resolve_dsn`).
    :param query: SQL returning one value (e.g. ``SELECT count(*) FROM contacts``).
    :param tenant: slug or UUID to set for the session (``use_tenant``), ``""`` to set it empty (what
        ``RESET`` or a finished ``SET LOCAL`` leaves behind), or None to leave it unset.
    :param roles: None for the administrator; a role of `db.APP_ROLES` logs in as that role; any other
        role name is taken with ``SET ROLE`` by the administrator (e.g. a non-superuser table owner).
    :param table: the table whose ownership the owns_table column reports.
    :returns: a pandas DataFrame with columns role, superuser, bypassrls, owns_table, tenant (slug,
        ``(not set)`` or ``(empty)``), result;
        when the query fails, result holds the error (a fail-closed policy must never error).
    Raise LabError if the server or an application role is unreachable.
    """
    import pandas as pd

    found = find_tenant_as_admin(dsn, tenant) if tenant else None
    rows = []
    for role in roles:
        login = role if role in db.APP_ROLES else None
        with db.connect(dsn, role=login, autocommit=True) as conn:
            if role is not None and login is None:
                conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(role)))
            if tenant == "":
                tenants.set_setting(conn, tenants.TENANT_SETTING, "", local=False)
            elif found is not None:
                tenants.use_tenant(conn, found)
            who = whoami(conn, table=table)
            try:
                result: Any = conn.execute(query).fetchone()[0]  # type: ignore[index]
            except psycopg.Error as e:
                result = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
            context = "(empty)" if tenant == "" else found.slug if found is not None else "(not set)"
            rows.append({
                "role": who.user, "superuser": who.superuser, "bypassrls": who.bypassrls,
                "owns_table": who.owns_tables, "tenant": context, "result": result,
            })
    return pd.DataFrame(rows)


def show(parts: Any, *, skip_empty: bool = True) -> None:
    """Display several tables under their names, e.g. ``show(stages.describe(conn, "contacts"))``.

    :param parts: a mapping name -> DataFrame (or anything Jupyter can display).
    :param skip_empty: leave out empty DataFrames (a table without policies has no ``policies`` part).
    """
    from IPython.display import Markdown, display

    for name, part in parts.items():
        if skip_empty and getattr(part, "empty", False):
            continue
        display(Markdown(f"**{name}**"), part)


def try_statements(conn: psycopg.Connection, *statements: str, keep: bool = False) -> Any:
    """Run statements one by one in a transaction that is rolled back; report what each did.

    For showing what the database refuses (a cross-tenant foreign key, a row for another tenant): each
    statement runs in its own savepoint, so one refusal does not stop the next; nothing is kept unless
    ``keep``. A statement may return one value (``INSERT ... RETURNING id``) which is shown.

    :returns: a pandas DataFrame with columns statement, outcome (``ok``, ``ok: <value>`` or
        ``<ErrorClass>: <message>``) and sqlstate.
    """
    import pandas as pd

    rows = []
    with conn.transaction(force_rollback=not keep):
        for stmt in statements:
            text = " ".join(stmt.split())
            try:
                with conn.transaction():
                    cur = conn.execute(stmt)
                    value = cur.fetchone() if cur.description else None
                outcome = "ok" if value is None else f"ok: {value[0]}"
                if cur.description is None and cur.rowcount >= 0:
                    outcome += f" ({cur.rowcount} row{'s' if cur.rowcount != 1 else ''})"
                rows.append({"statement": text, "outcome": outcome, "sqlstate": ""})
            except psycopg.Error as e:
                message = e.diag.message_primary or str(e).strip().splitlines()[0]
                rows.append({"statement": text, "outcome": f"{type(e).__name__}: {message}",
                             "sqlstate": e.sqlstate or ""})
    return pd.DataFrame(rows)


@contextmanager
def what_if(
    conn: psycopg.Connection, *statements: str, role: str | None = "app_user", tenant: Any = None
) -> Iterator[psycopg.Connection]:
    """Try a change, look at its effect as another role, and undo it: one transaction, always rolled back.

    The ``statements`` run first, as the administrator (e.g. ``ALTER FUNCTION ... NOT LEAKPROOF``); then
    the session becomes ``role`` with ``SET LOCAL ROLE`` (RLS applies to it as to a real login) and the
    tenant is set for the transaction. Inside the block, run queries or `explain` on ``conn``. Nothing
    is ever committed, so an interrupted notebook leaves the database as it was (other sessions may
    wait on the locks the statements take, until the block ends).

    :param conn: the administrator's connection (autocommit; a transaction is opened here).
    :param role: the role to become after the statements, or None to stay the administrator.
    :param tenant: slug, UUID or `tenants.Tenant` to set for the transaction, or None.
    Raise LabError if the tenant is unknown.
    """
    from psycopg import sql as _sql

    found = tenants.find_tenant(conn, tenant) if tenant is not None else None
    with conn.transaction(force_rollback=True):
        for stmt in statements:
            conn.execute(stmt)
        if role is not None:
            conn.execute(_sql.SQL("SET LOCAL ROLE {}").format(_sql.Identifier(role)))
        if found is not None:
            tenants.set_setting(conn, tenants.TENANT_SETTING, str(found.id), local=True)
        yield conn
