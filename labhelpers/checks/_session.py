"""How the checks measure what a tenant sees: a real login as ``app_user``, verified unprivileged, with a
tenant set for one rolled-back transaction; and the tenants to measure with, read by the administrator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from .. import db, tenants
from ..errors import LabError

APP_ROLE = "app_user"


def admin_dsn(admin: psycopg.Connection[Any]) -> str:
    """The DSN ``admin`` was opened with: ``conn.info.dsn`` leaves the password out, so it is put back
    (a role login then replaces it with the lab's password for that role, see `db.role_dsn`)."""
    password = admin.info.password
    return make_conninfo(admin.info.dsn, password=password) if password else admin.info.dsn


@contextmanager
def app_session(admin: psycopg.Connection[Any], *, claim: str) -> Iterator[tuple[psycopg.Connection[Any], dict[str, Any]]]:
    """A login as ``app_user`` on the server and database of ``admin`` (autocommit, TimeZone UTC), and
    the evidence of who it is: ``{"current_user", "superuser", "bypassrls"}``.

    :param claim: what is measured, for the error (see `tenants.require_app_role`).
    Raise LabError if the role does not exist or cannot log in, or if RLS would not apply to it.
    """
    with db.connect(admin_dsn(admin), role=APP_ROLE, autocommit=True) as app:
        app.execute("SET TimeZone = 'UTC'")  # partitions are UTC months; the lesson's dates are UTC days
        who = tenants.require_app_role(app, claim=claim)
        yield app, {"current_user": who.user, "superuser": who.superuser, "bypassrls": who.bypassrls}


@contextmanager
def in_tenant(conn: psycopg.Connection[Any], tenant_id: str | None) -> Iterator[None]:
    """One transaction, rolled back, with the tenant set transaction-locally ('' when None)."""
    with conn.transaction(force_rollback=True):
        tenants.set_setting(conn, tenants.TENANT_SETTING, tenant_id or "", local=True)
        yield


def tenant_ids(admin: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(id, slug) of every tenant, read by the administrator. Raise LabError if there is no tenants table."""
    try:
        with admin.transaction():
            rows = admin.execute("SELECT id::text, slug FROM tenants ORDER BY slug").fetchall()
    except psycopg.errors.UndefinedTable:
        raise LabError("there is no tenants table yet: build the schema first (`labhelpers build`)") from None
    return [(str(i), str(s)) for i, s in rows]


def first_tenant(admin: psycopg.Connection[Any]) -> str:
    """The id of the first tenant by slug. Raise LabError if there is none."""
    found = tenant_ids(admin)
    if not found:
        raise LabError("no tenants: load the seed data first (`labhelpers build`)")
    return found[0][0]
