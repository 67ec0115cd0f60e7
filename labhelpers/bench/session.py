"""Who is timing, under which tenant: the measured sessions and the check each one passes.

Every measured session is ``app_user`` under RLS with the tenant set, and `verify_session` records
that it was (PITFALLS 1-2: numbers taken as a superuser or the owner measure a query no application
runs). It is built on `labhelpers.tenants.whoami`, the one identity check, and adds what a benchmark
record keeps besides: the session user, the backend, and ownership of the tables through inherited
roles too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from .. import db, tenants
from ..errors import LabError
from .records import SessionCheck
from .timing import timed_login

__all__ = ["app_session", "fresh_session", "rolled_back_as_app_user", "verify_session"]

# The tables the benchmark times, owned by current_user or by a role it inherits from.
_OWNS_AND_BACKEND = """
SELECT session_user::text, pg_backend_pid(),
       EXISTS (SELECT 1 FROM pg_class AS c
                WHERE c.oid IN (to_regclass('contacts'), to_regclass('leads'), to_regclass('activities'))
                  AND pg_has_role(current_user, c.relowner, 'USAGE'))
"""


def verify_session(conn: psycopg.Connection, *, tenant_id: str | None, role: str = "app_user") -> SessionCheck:
    """Check, inside the session, that it runs as ``role`` under RLS with the expected tenant.

    Returns what was seen: current_user, session_user, rolsuper, rolbypassrls, owns_tables, tenant, pid.
    Raise LabError if current_user is not ``role``, is a superuser, has BYPASSRLS, owns (or inherits the
    owner of) the tables, or the tenant setting is not ``tenant_id``.
    """
    who = tenants.whoami(conn)
    row = conn.execute(_OWNS_AND_BACKEND, prepare=False).fetchone()
    assert row is not None
    seen = SessionCheck(current_user=who.user, session_user=row[0], rolsuper=who.superuser,
                        rolbypassrls=who.bypassrls, owns_tables=row[2], tenant=who.tenant, pid=row[1])
    problems = []
    if seen.current_user != role:
        problems.append(f"current_user is {seen.current_user}, not {role}")
    if seen.rolsuper:
        problems.append("it is a superuser (sees through RLS)")
    if seen.rolbypassrls:
        problems.append("it has BYPASSRLS")
    if seen.owns_tables:
        problems.append("it owns the tables")
    if tenant_id is not None and (seen.tenant or "") != tenant_id:
        problems.append(f"app.current_tenant is {seen.tenant!r}, not {tenant_id!r}")
    if problems:
        raise LabError("the benchmark session is not what it must be: " + "; ".join(problems))
    return seen


@contextmanager
def app_session(admin_dsn: str, tenant_id: str) -> Iterator[psycopg.Connection]:
    """A login as ``app_user`` (autocommit, nothing prepared: every run parsed, planned and executed),
    with a statement timeout and the tenant set for the session."""
    with db.connect(admin_dsn, role="app_user", autocommit=True) as conn:
        conn.prepare_threshold = None
        conn.execute("SET statement_timeout = '120s'")
        tenants.set_setting(conn, tenants.TENANT_SETTING, tenant_id, local=False)
        yield conn


def fresh_session(app_dsn: str) -> tuple[psycopg.Connection, float]:
    """A new login (a new backend); returns it with the time the login took, ms. The timeout comes
    with the startup packet, so no statement runs before the caller's."""
    conn, ms = timed_login(app_dsn, autocommit=True, options="-c statement_timeout=120s")
    conn.prepare_threshold = None
    return conn, ms


@contextmanager
def rolled_back_as_app_user(admin_dsn: str, tenant_id: str
                            ) -> Iterator[tuple[psycopg.Connection, Callable[[], SessionCheck]]]:
    """An admin transaction, always rolled back, whose statements after ``switch()`` run as app_user.

    The caller makes its catalog changes with the admin connection first, then calls ``switch()``:
    ``SET LOCAL ROLE app_user`` + the tenant for the transaction, verified.
    """
    conn = db.connect(admin_dsn, autocommit=False)
    conn.prepare_threshold = None
    try:
        conn.execute("SET LOCAL statement_timeout = '300s'")
        conn.execute("SET LOCAL lock_timeout = '10s'")

        def switch() -> SessionCheck:
            conn.execute("SET LOCAL ROLE app_user")
            tenants.set_setting(conn, tenants.TENANT_SETTING, tenant_id, local=True)
            return verify_session(conn, tenant_id=tenant_id)

        yield conn, switch
    finally:
        conn.rollback()
        conn.close()
