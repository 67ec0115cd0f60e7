"""Shared by the isolation tests: what the administrator knows, and how an app role acts.

Everything is read from the catalog and the seed data, never hard-coded, so tables and partitions added
later are covered. The administrator's reads see every tenant: as a superuser directly, and as a
non-superuser owner (FORCE ROW LEVEL SECURITY filters the owner too) by lifting FORCE inside a
transaction that is always rolled back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from labhelpers import checks, db
from labhelpers.checks import TenantTable

TENANT = "app.current_tenant"
USER = "app.current_user_id"


# --------------------------------------------------------------------------------------------------
# The administrator's view
# --------------------------------------------------------------------------------------------------


@contextmanager
def admin_view(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An administrator's connection inside a transaction that sees every tenant's rows, rolled back after."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction(force_rollback=True):
            su = conn.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()[0]  # type: ignore[index]
            if not su:
                for t in checks.tenant_tables(conn):
                    conn.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(sql.SQL(t.name)))
            yield conn


@dataclass
class TenantInfo:
    """A seeded tenant and its users by role (``user`` lists both plain users)."""

    id: str
    slug: str
    users: dict[str, list[str]] = field(default_factory=dict)

    def user(self, role: str, n: int = 0) -> str:
        return self.users[role][n]


@dataclass
class World:
    """What the administrator knows about a built database."""

    dsn: str
    tenants: list[TenantInfo]
    tables: list[TenantTable]        # top-level tenant tables (parents and plain tables)
    partitions: list[TenantTable]    # every partition, at every level
    columns: dict[str, list[str]]    # insertable (non-generated) columns per table
    unique_text: dict[str, list[str]]  # per table: the last text column of each non-primary unique key
    pk: dict[str, list[str]]         # primary key columns per table
    read_only: set[str]              # tables no application role may write (derived data, e.g. rollups)

    def table(self, name: str) -> TenantTable:
        return next(t for t in self.tables if t.name == name)

    @property
    def leaves(self) -> list[TenantTable]:
        return [p for p in self.partitions if p.leaf]

    def other(self, t: TenantInfo) -> TenantInfo:
        return next(o for o in self.tenants if o.id != t.id)


def load_world(dsn: str) -> World:
    """Read tenants, users, tenant tables, partitions and keys as the administrator."""
    with admin_view(dsn) as conn:
        everything = checks.tenant_tables(conn)
        tenants = [TenantInfo(str(i), s) for i, s in conn.execute("SELECT id, slug FROM tenants ORDER BY slug").fetchall()]
        for t in tenants:
            for role, uid in conn.execute(
                "SELECT role, id::text FROM tenant_users WHERE tenant_id = %s AND status = 'active' ORDER BY id",
                (t.id,),
            ).fetchall():
                t.users.setdefault(role, []).append(uid)
        names = [t.name for t in everything]
        columns: dict[str, list[str]] = {}
        for rel, col in conn.execute(
            """SELECT attrelid::regclass::text, attname::text FROM pg_attribute
                WHERE attrelid = ANY(%s::regclass[]) AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
                ORDER BY attrelid, attnum""",
            (names,),
        ).fetchall():
            columns.setdefault(rel, []).append(col)
        unique_text: dict[str, list[str]] = {n: [] for n in names}
        pk: dict[str, list[str]] = {}
        for rel, kind, cols, types in conn.execute(
            """SELECT c.conrelid::regclass::text, c.contype::text,
                      ARRAY(SELECT a.attname::text FROM unnest(c.conkey) k JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k),
                      ARRAY(SELECT format_type(a.atttypid, NULL) FROM unnest(c.conkey) k JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k)
                 FROM pg_constraint c WHERE c.conrelid = ANY(%s::regclass[]) AND c.contype IN ('p', 'u')""",
            (names,),
        ).fetchall():
            if kind == "p":
                pk[rel] = list(cols)
            else:
                # The last text column of each unique key is enough to make a copy unique (and, unlike
                # e.g. custom_field_definitions.entity, is free-form).
                text_cols = [c for c, ty in zip(cols, types) if ty == "text"]
                if text_cols and text_cols[-1] not in unique_text[rel]:
                    unique_text[rel].append(text_cols[-1])
        read_only = {n for (n,) in conn.execute(
            """SELECT t FROM unnest(%s::text[]) AS t
                WHERE NOT EXISTS (SELECT 1 FROM unnest(%s::text[]) AS r
                                   WHERE has_table_privilege(r, t::regclass, 'INSERT, UPDATE, DELETE'))""",
            (names, list(db.APP_ROLES)),
        ).fetchall()}
    return World(
        dsn, tenants, [t for t in everything if t.kind != "partition"], [t for t in everything if t.kind == "partition"],
        columns, unique_text, pk, read_only,
    )


def key_match(world: World, table: TenantTable, row: dict[str, Any]) -> tuple[sql.Composable, tuple[Any, ...]]:
    """A condition matching ``row`` by its table's primary key, and its parameters."""
    key = world.pk[table.name]
    cond = sql.SQL("({}) = ({})").format(sql.SQL(", ").join(map(sql.Identifier, key)),
                                         sql.SQL(", ").join(sql.Placeholder() * len(key)))
    return cond, tuple(row[c] for c in key)


def admin_one(dsn: str, query: str | sql.Composable, params: Any = None) -> Any:
    """First column of the first row, read by the administrator over every tenant."""
    with admin_view(dsn) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _key_of(dsn: str, table: TenantTable) -> list[str]:
    """The primary key columns of ``table`` (of its parent for a partition), from the catalog."""
    rel = table.parent if table.kind == "partition" and table.parent else table.name
    return [str(c) for c in admin_one(dsn, """SELECT ARRAY(
        SELECT a.attname::text FROM pg_constraint AS c
         CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
         WHERE c.conrelid = %s::regclass AND c.contype = 'p' ORDER BY k.ord)""", (rel,))] or ["id"]


def sample_row(dsn: str, table: TenantTable, tenant_id: str) -> dict[str, Any]:
    """One row of ``tenant_id`` in ``table`` (as a JSON-ready dict), read by the administrator."""
    q = sql.SQL("SELECT to_jsonb(t) FROM {} AS t WHERE {} = %s ORDER BY {} LIMIT 1").format(
        sql.SQL(table.name), sql.Identifier(table.tenant_column),
        sql.SQL(", ").join(map(sql.Identifier, _key_of(dsn, table))),
    )
    row = admin_one(dsn, q, (tenant_id,))
    assert row is not None, f"the seed data has no row of tenant {tenant_id} in {table.name}"
    return dict(row)


def row_exists(dsn: str, table: TenantTable, row: dict[str, Any]) -> Any:
    """The row (to_jsonb) with the same primary key, as the administrator sees it now, or None."""
    key = _key_of(dsn, table)
    q = sql.SQL("SELECT to_jsonb(t) FROM {} AS t WHERE ({}) = ({})").format(
        sql.SQL(table.name), sql.SQL(", ").join(map(sql.Identifier, key)),
        sql.SQL(", ").join(sql.Placeholder() * len(key)),
    )
    return admin_one(dsn, q, tuple(row[c] for c in key))


def new_version(world: World, table: TenantTable, row: dict[str, Any], *, tenant_id: str, keep_id: bool = False) -> dict[str, Any]:
    """A copy of ``row`` for ``tenant_id`` with a new id and unique text values changed, insertable columns only."""
    out = {c: row.get(c) for c in world.columns[table.name]}
    tag = uuid.uuid4().hex[:8]
    if not keep_id and "id" in out:
        out["id"] = str(uuid.uuid4())
    out[table.tenant_column] = tenant_id
    for c in world.unique_text[table.name]:
        if out.get(c) is not None:
            out[c] = f"x{tag}{out[c]}"
    if table.name == "tenants":
        out["slug"] = f"t{tag}"
    return out


def insert_stmt(table: TenantTable, row: dict[str, Any], suffix: str = "") -> tuple[sql.Composable, tuple[Any, ...]]:
    """INSERT of ``row`` (a dict of column -> JSON value) through jsonb_populate_record, plus ``suffix``."""
    cols = sql.SQL(", ").join(map(sql.Identifier, row))
    stmt = sql.SQL("INSERT INTO {t} ({cols}) SELECT {cols} FROM jsonb_populate_record(NULL::{t}, %s::jsonb)").format(
        t=sql.SQL(table.name), cols=cols
    ) + sql.SQL(suffix)
    return stmt, (Jsonb(row),)


# --------------------------------------------------------------------------------------------------
# The application's view
# --------------------------------------------------------------------------------------------------


def assert_unprivileged(conn: psycopg.Connection[Any], role: str) -> None:
    """``conn`` is logged in as ``role``: not superuser, no BYPASSRLS, owns nothing, cannot act as an owner."""
    who = conn.execute("SELECT current_user::text, session_user::text").fetchone()
    assert who == (role, role), f"expected to be {role}, am {who}"
    facts = checks.app_role_facts(conn, [role]).loc[role]
    assert not facts["superuser"], f"{role} is a superuser: RLS is ignored (PITFALLS 1)"
    assert not facts["bypassrls"], f"{role} has BYPASSRLS: RLS is ignored (PITFALLS 1)"
    assert facts["owns"] == 0, f"{role} owns {facts['owns']} objects: an owner may ignore RLS (PITFALLS 2)"
    assert not facts["acts_as_owner"], f"{role} is a member of a table owner's role"


@contextmanager
def app(dsn: str, role: str = "app_user") -> Iterator[psycopg.Connection[Any]]:
    """A real login as ``role`` (autocommit), checked to be unprivileged."""
    conn = db.connect(dsn, role=role, autocommit=True)
    try:
        assert_unprivileged(conn, role)
        yield conn
    finally:
        conn.close()


@contextmanager
def in_tenant(conn: psycopg.Connection[Any], tenant_id: str | None, user_id: str | None = None) -> Iterator[None]:
    """One transaction, always rolled back, with tenant and user set for it only (None: left unset)."""
    with conn.transaction(force_rollback=True):
        if tenant_id is not None:
            conn.execute("SELECT set_config(%s, %s, true)", (TENANT, tenant_id))
        if user_id is not None:
            conn.execute("SELECT set_config(%s, %s, true)", (USER, user_id))
        yield


def sqlstate_of(conn: psycopg.Connection[Any], stmt: Any, params: Any = None) -> str | None:
    """Run ``stmt`` in a savepoint; return the SQLSTATE it failed with, or None if it succeeded."""
    try:
        with conn.transaction():
            conn.execute(stmt, params)
    except psycopg.Error as e:
        return e.sqlstate
    return None


def rowcount_or_state(conn: psycopg.Connection[Any], stmt: Any, params: Any = None) -> int | str:
    """Rows affected by ``stmt`` (in a savepoint), or the SQLSTATE it failed with."""
    try:
        with conn.transaction():
            return conn.execute(stmt, params).rowcount
    except psycopg.Error as e:
        return str(e.sqlstate)


class Problems:
    """Collects failures over many tables and traps, then fails once with all of them."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.checked = 0

    def expect(self, ok: bool, message: str) -> None:
        self.checked += 1
        if not ok:
            self.items.append(message)

    def check(self, *, minimum: int = 1) -> None:
        assert self.checked >= minimum, f"only {self.checked} cases were checked: discovery found too little"
        if self.items:
            pytest.fail(f"{len(self.items)} of {self.checked} cases failed:\n" + "\n".join(self.items), pytrace=False)
