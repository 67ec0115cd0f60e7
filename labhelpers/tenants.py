"""Tenant context: who the policies think we are.

The policies read ``app.current_tenant`` (and ``app.current_user_id`` for role-based rules). Two ways to
set them, and the difference matters behind a connection pool (PITFALLS 7):

- ``use_tenant(conn, t)``: for the whole session, like the lesson's ``SET app.current_tenant``. Fine on a
  connection you own (a notebook); behind a pool the next client inherits it.
- ``with tenant(conn, t):``: for one transaction only (``set_config(..., true)``); when it ends the
  setting reads ``''`` again, which the policies treat as "no tenant": zero rows. Pool-safe, also
  behind a transaction pooler such as PgBouncer (its docstring says what it guards against).

Behind a transaction pooler, connect with ``db.connect(..., transaction_pooling=True)``: server-side
prepared statements and a transaction pooler do not mix (PITFALLS 26), whatever sets the tenant.
Every statement here that sets or reads the context runs unprepared and reads back what is in force.

Values are always bound as parameters through ``set_config`` (``SET`` cannot take one, PITFALLS 8).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import pq

from .errors import LabError

__all__ = [
    "Identity", "Tenant", "current_tenant", "demonstrate_pool_leak", "find_tenant", "require_app_role",
    "set_setting", "tenant", "use_tenant", "whoami",
]

log = logging.getLogger("labhelpers")

TENANT_SETTING = "app.current_tenant"
USER_SETTING = "app.current_user_id"


@dataclass(frozen=True)
class Tenant:
    """A row of ``tenants``: its id, slug and name."""

    id: uuid.UUID
    slug: str
    name: str


def find_tenant(conn: psycopg.Connection, t: str | uuid.UUID | Tenant) -> Tenant:
    """Look a tenant up by slug or UUID.

    Works as the administrator and as an application role: under RLS an app role cannot read other
    tenants' rows, so the lookup goes through ``lab_find_tenant()`` (SECURITY DEFINER, created by the
    RLS stage), the way a login page resolves a subdomain. Raise LabError if there is no such tenant.
    """
    if isinstance(t, Tenant):
        return t
    key = str(t).strip()
    has_lookup = conn.execute(
        "SELECT to_regprocedure('lab_find_tenant(text)') IS NOT NULL", prepare=False
    ).fetchone()[0]  # type: ignore[index]
    query = (
        "SELECT id, slug, name FROM lab_find_tenant(%(k)s)"
        if has_lookup
        else "SELECT id, slug, name FROM tenants WHERE slug = %(k)s OR id::text = lower(%(k)s)"
    )
    try:
        row = conn.execute(query, {"k": key}, prepare=False).fetchone()
    except psycopg.errors.UndefinedTable:
        raise LabError("there is no tenants table yet: build the schema first (`labhelpers build`)") from None
    if row is None:
        raise LabError(f"unknown tenant {key!r}: give a slug or UUID from the tenants table")
    return Tenant(*row)


# ---- who am I, for RLS ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who a session is for row-level security: the facts that decide whether policies apply."""

    user: str
    superuser: bool
    bypassrls: bool
    owns_tables: bool
    tenant: str | None

    @property
    def rls_applies(self) -> bool:
        """True if policies filter this session's rows on tables without FORCE (PITFALLS 1-2)."""
        return not (self.superuser or self.bypassrls or self.owns_tables)

    def __str__(self) -> str:
        if self.superuser or self.bypassrls:
            kind = "superuser" if self.superuser else "BYPASSRLS"
            rls = "row-level security never applies, not even FORCEd"
        elif self.owns_tables:
            kind, rls = "table owner", "row-level security applies only where it is FORCEd"
        else:
            kind, rls = "application role", "row-level security applies"
        return f"{self.user}, {kind}: {rls}; tenant {self.tenant or 'not set'}"

    def _repr_markdown_(self) -> str:
        return f"**{self.user}**, " + str(self).split(", ", 1)[1]


def whoami(conn: psycopg.Connection, *, table: str = "contacts") -> Identity:
    """Describe the session: role, superuser, BYPASSRLS, whether it owns ``table``, the tenant setting."""
    row = conn.execute(
        """
        SELECT r.rolname, r.rolsuper, r.rolbypassrls,
               coalesce((SELECT c.relowner = r.oid FROM pg_class c
                         WHERE c.oid = to_regclass(%s)), false),
               nullif(current_setting('app.current_tenant', true), '')
        FROM pg_roles r WHERE r.rolname = current_user
        """,
        (table,), prepare=False,
    ).fetchone()
    assert row is not None
    return Identity(*row)


def require_app_role(conn: psycopg.Connection, *, claim: str = "an isolation claim") -> Identity:
    """The session's identity, or LabError if RLS cannot apply to it (PITFALLS 1-2).

    The one guard for everything that claims isolation or measures RLS (checks, benchmarks, tests):
    a superuser, a BYPASSRLS role or the tables' owner proves nothing.
    """
    who = whoami(conn)
    if not who.rls_applies:
        kind = "a superuser" if who.superuser else "BYPASSRLS" if who.bypassrls else "the tables' owner"
        raise LabError(f"{who.user} is {kind}: {claim} made as it proves nothing; connect as app_user")
    return who


# ---- setting the context -------------------------------------------------------------------------


def _user_id(conn: psycopg.Connection, user: str | uuid.UUID | None) -> str:
    if user is None:
        return ""
    try:
        return str(uuid.UUID(str(user)))
    except ValueError:
        pass
    row = conn.execute("SELECT id FROM tenant_users WHERE email = %s", (str(user),), prepare=False).fetchone()
    if row is None:
        raise LabError(f"unknown user {user!r} in this tenant")
    return str(row[0])


# pg_catalog-qualified (a function of the same name earlier in search_path cannot stand in), and the
# setting in force read back in the same statement: the target list is evaluated left to right.
_SET_AND_READ = (
    "SELECT pg_catalog.set_config(%(name)s, %(value)s, %(local)s),"
    " pg_catalog.current_setting(%(name)s, true)"
)


def set_setting(conn: psycopg.Connection, name: str, value: str, *, local: bool) -> None:
    """Set one context setting and verify, in the same round trip, that it is the one in force.

    Never a server-side prepared statement (``prepare=False``): behind a transaction pooler a prepared
    statement's name resolves on whatever server connection the transaction lands on, so another
    client's statement of the same name could run in its place (PITFALLS 26). Raise LabError (and
    leave the transaction to be rolled back) if the database reports anything else in force.
    """
    row = conn.execute(_SET_AND_READ, {"name": name, "value": value, "local": local}, prepare=False).fetchone()
    if row is None or row[0] != value or row[1] != value:
        got = None if row is None else row[1]
        raise LabError(f"{name} should be {value!r} but the server reports {got!r}: refusing to continue")


def _set(conn: psycopg.Connection, t: Tenant, user: str | uuid.UUID | None, *, local: bool) -> None:
    set_setting(conn, TENANT_SETTING, str(t.id), local=local)
    try:
        # Resolved after the tenant is set, so an e-mail is looked up inside this tenant only.
        user_id = _user_id(conn, user)
    except LabError:
        set_setting(conn, TENANT_SETTING, "", local=local)  # no half-switch
        raise
    set_setting(conn, USER_SETTING, user_id, local=local)


def use_tenant(
    conn: psycopg.Connection, t: str | uuid.UUID | Tenant, *, user: str | uuid.UUID | None = None
) -> Tenant:
    """Set the tenant (and optionally the acting user, by id or e-mail) for the rest of the session.

    Not pool-safe: use ``with tenant(...)`` for connections that are shared. Returns the tenant.
    Raise LabError if the tenant or user is unknown.
    """
    if conn.info.transaction_status == pq.TransactionStatus.IDLE and not conn.autocommit:
        # Commit the setting at once: a later rollback must not silently undo it.
        with conn.transaction():
            found = find_tenant(conn, t)
            _set(conn, found, user, local=False)
    else:
        found = find_tenant(conn, t)
        _set(conn, found, user, local=False)
    log.info("session tenant: %s", found.slug)
    return found


@contextmanager
def _unprepared(conn: psycopg.Connection) -> Iterator[None]:
    """No statement of the block is prepared or runs as an earlier prepared one (PITFALLS 26)."""
    saved = conn.prepare_threshold
    conn.prepare_threshold = None
    try:
        yield
    finally:
        conn.prepare_threshold = saved


@contextmanager
def tenant(
    conn: psycopg.Connection, t: str | uuid.UUID | Tenant, *, user: str | uuid.UUID | None = None
) -> Iterator[Tenant]:
    """Run the block in one transaction with the tenant set for that transaction only (pool-safe).

    Safe behind a transaction pooler (PgBouncer ``pool_mode = transaction``), where consecutive
    transactions of one client may run on different server connections:

    - the setting is ``set_config(..., true)``: it ends with the transaction, and the next client of
      the server connection inherits nothing;
    - no statement of the block is a server-side prepared statement, so none can be swapped for
      another client's statement of the same name; still, connect with
      ``db.connect(..., transaction_pooling=True)`` behind such a pooler, so that nothing outside the
      block prepares either (psycopg's ``DEALLOCATE ALL`` after a rollback deletes other clients'
      statements);
    - the setting is verified when set (``set_config`` returns it) and again before the commit: if
      anything in the block changed the tenant in force, the transaction is rolled back.

    Raise LabError if the tenant or user is unknown, or if the tenant in force is not the one asked for.
    """
    with _unprepared(conn), conn.transaction():
        found = find_tenant(conn, t)
        _set(conn, found, user, local=True)
        yield found
        now = conn.execute("SELECT pg_catalog.current_setting(%s, true)", (TENANT_SETTING,)).fetchone()
        if now is None or now[0] != str(found.id):
            raise LabError(
                f"the tenant in force changed inside the block (now {None if now is None else now[0]!r},"
                f" not {found.slug}): rolled back"
            )


def current_tenant(conn: psycopg.Connection) -> str | None:
    """The tenant the policies see right now (a UUID string), or None when unset or empty."""
    value = conn.execute(
        "SELECT pg_catalog.current_setting('app.current_tenant', true)", prepare=False
    ).fetchone()[0]  # type: ignore[index]
    return value or None


def demonstrate_pool_leak(dsn: str, t: str | uuid.UUID | Tenant, *, table: str = "contacts") -> dict[str, int]:
    """Show why session-level tenant context leaks behind a pool, and that the transaction-scoped one does not.

    ``dsn`` must log in as an application role (RLS applies). With a pool of one connection, client A
    sets the tenant for the session and returns the connection; client B, who set nothing, then
    counts rows. Returns the counts client B saw in each case: ``{"session_set": n, "transaction_set": 0}``.
    """
    from psycopg import sql
    from psycopg_pool import ConnectionPool

    count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
    seen: dict[str, int] = {}
    for mode in ("session_set", "transaction_set"):
        # reset=None: like most pools (and PgBouncer in transaction mode), nothing cleans sessions up.
        with ConnectionPool(dsn, min_size=1, max_size=1, open=True, kwargs={"autocommit": True}) as pool:
            with pool.connection() as client_a:
                if mode == "session_set":
                    use_tenant(client_a, t)
                else:
                    with tenant(client_a, t):
                        client_a.execute(count)
            with pool.connection() as client_b:
                seen[mode] = client_b.execute(count).fetchone()[0]  # type: ignore[index]
    return seen
