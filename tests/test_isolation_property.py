"""Property: whatever a client does, it sees and changes only the current tenant's rows.

Hypothesis draws sequences of tenant switches (session-level and transaction-scoped, including unset,
empty and a fresh connection) and operations (SELECT, INSERT, UPDATE in place, UPDATE moving the row to
another tenant, DELETE) on every tenant table, through the parent and through partitions directly.
As app_user:

- a statement that succeeds returns (``RETURNING``) only rows of the current tenant, and none when no
  tenant is set; errors are allowed only if they fail closed (42501 privilege / WITH CHECK, 22P02,
  23503 foreign key, 23514 check / partition constraint, 23505 duplicate, 0A000);
- afterwards, as the administrator: every row written by that transaction (``xmin``) belongs to the
  tenant current when it ran, and no other tenant lost or gained rows.

Run twice: as shipped (partitions not directly accessible), and with app_user granted direct access to
every partition, so that the partitions' own RLS is what isolates.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg import sql

from isolation_helpers import World, admin_view, assert_unprivileged, insert_stmt, load_world, new_version
from labhelpers import db
from labhelpers.checks import TenantTable

FAIL_CLOSED = {"42501", "22P02", "23503", "23514", "23505", "0A000"}
SAMPLES = 4


@dataclass(repr=False)
class Lab:
    dsn: str
    world: World
    targets: list[TenantTable]                 # top-level tables and leaf partitions
    parent_of: dict[str, TenantTable]          # target name -> its top-level table
    samples: dict[tuple[str, str], list[dict[str, Any]]]  # (target, tenant id) -> rows

    admin: psycopg.Connection[Any] | None = None  # kept open when it is a superuser

    def __repr__(self) -> str:
        return f"<Lab {len(self.targets)} targets>"


def _connect(dsn: str) -> psycopg.Connection[Any]:
    conn = db.connect(dsn, role="app_user", autocommit=True)
    assert_unprivileged(conn, "app_user")
    return conn


def _prepare(dsn: str, *, grant_partitions: bool) -> Lab:
    world = load_world(dsn)
    leaves = world.leaves
    with psycopg.connect(dsn, autocommit=True) as admin:
        if grant_partitions:
            for part in world.partitions:
                admin.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO app_user").format(sql.SQL(part.name)))
    parent_of = {t.name: t for t in world.tables}
    with admin_view(dsn) as conn:
        for leaf in leaves:
            root = conn.execute("SELECT pg_partition_root(%s::regclass)::regclass::text", (leaf.name,)).fetchone()[0]  # type: ignore[index]
            parent_of[leaf.name] = world.table(root)
        samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
        # a handful of leaves with rows (all of them would make examples needlessly slow)
        with_rows = [r[0] for r in conn.execute(
            "SELECT DISTINCT tableoid::regclass::text FROM activities ORDER BY 1").fetchall()]
        chosen_leaves = [leaf for leaf in leaves if leaf.name in with_rows[:: max(1, len(with_rows) // 6)]]
        # derived, read-only tables (the pipeline rollup) have their own tests: test_pipeline_rollup.py
        entities = [t for t in world.tables if t.name not in world.read_only]
        targets = entities + chosen_leaves + [leaves[-1]]  # plus an (empty) future leaf
        for target in targets:
            for t in world.tenants:
                rows = conn.execute(
                    sql.SQL("SELECT to_jsonb(x) FROM {} x WHERE {} = %s ORDER BY id LIMIT %s").format(
                        sql.SQL(target.name), sql.Identifier(target.tenant_column)), (t.id, SAMPLES)).fetchall()
                samples[(target.name, t.id)] = [dict(r[0]) for r in rows]
    return Lab(dsn, world, targets, parent_of, samples)


@pytest.fixture(params=["shipped", "partitions granted"])
def lab(built_dsn: str, request: pytest.FixtureRequest) -> Iterator[Lab]:
    prepared = _prepare(built_dsn, grant_partitions=request.param == "partitions granted")
    with psycopg.connect(built_dsn, autocommit=True) as admin:
        if admin.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()[0]:  # type: ignore[index]
            prepared.admin = admin
        yield prepared


# ---- the strategy ------------------------------------------------------------------------------------

TENANT = st.one_of(st.integers(0, 2), st.sampled_from(["", None]))  # index, empty, unset/RESET
op = st.one_of(
    st.tuples(st.just("session"), TENANT),
    st.tuples(st.just("reconnect")),
    st.tuples(
        st.sampled_from(["in session", "in transaction"]),
        TENANT,                                                   # the transaction's tenant (ignored in session)
        st.sampled_from(["select", "insert", "update", "move", "delete"]),
        st.integers(0, 10_000),                                   # which target
        st.integers(0, 2),                                        # the tenant of the row to insert / move to / touch
    ),
)


def _tenant_id(lab: Lab, t: int | str | None) -> str | None:
    if isinstance(t, int):
        return lab.world.tenants[t % len(lab.world.tenants)].id
    return t


def _set(conn: psycopg.Connection[Any], tenant_id: str | None, *, local: bool) -> None:
    if tenant_id is None:
        if not local:
            conn.execute("RESET app.current_tenant")
            conn.execute("RESET app.current_user_id")
        return
    conn.execute("SELECT set_config('app.current_tenant', %s, %s)", (tenant_id, local))
    user = _admin_user.get(tenant_id, "")
    conn.execute("SELECT set_config('app.current_user_id', %s, %s)", (user, local))


_admin_user: dict[str, str] = {}


def _statement(lab: Lab, kind: str, target: TenantTable, row_tenant: str) -> tuple[Any, Any]:
    col = sql.Identifier(target.tenant_column)
    name = sql.SQL(target.name)
    pool = [r for (tn, _), rows in lab.samples.items() if tn == target.name for r in rows]
    ids = [r["id"] for r in pool] or [str(uuid.uuid4())]
    if kind == "select":
        return sql.SQL("SELECT {}::text FROM {} LIMIT 500").format(col, name), None
    if kind == "update":
        return sql.SQL("UPDATE {} SET id = id WHERE id = ANY(%s::uuid[]) RETURNING {}::text").format(name, col), (ids,)
    if kind == "move":
        return (sql.SQL("UPDATE {} SET {} = %s WHERE id = ANY(%s::uuid[]) RETURNING {}::text").format(name, col, col),
                (row_tenant, ids))
    if kind == "delete":
        return sql.SQL("DELETE FROM {} WHERE id = ANY(%s::uuid[]) RETURNING {}::text").format(name, col), (ids,)
    base = (lab.samples.get((target.name, row_tenant)) or pool or [None])[0]
    if base is None:
        return sql.SQL("SELECT {}::text FROM {} WHERE false").format(col, name), None
    parent = lab.parent_of[target.name]
    row = new_version(lab.world, parent, base, tenant_id=row_tenant)
    stmt, params = insert_stmt(target, row, f" RETURNING {target.tenant_column}::text")
    return stmt, params


@contextmanager
def _admin(lab: Lab) -> Iterator[psycopg.Connection[Any]]:
    """The administrator over every tenant: one kept connection for a superuser, else `admin_view`."""
    if lab.admin is not None:
        yield lab.admin
    else:
        with admin_view(lab.dsn) as conn:
            yield conn


def _tenant_counts(lab: Lab, table: TenantTable) -> dict[str, int]:
    with _admin(lab) as conn:
        return dict(conn.execute(sql.SQL("SELECT {}::text, count(*) FROM {} GROUP BY 1").format(
            sql.Identifier(table.tenant_column), sql.SQL(table.name))).fetchall())


def _written_by(lab: Lab, xid: str) -> set[str]:
    """Tenants of every row (in every tenant table) whose xmin is ``xid``, as the administrator sees them."""
    found: set[str] = set()
    with _admin(lab) as conn:
        for t in lab.world.tables:
            found |= {r[0] for r in conn.execute(sql.SQL("SELECT DISTINCT {}::text FROM {} WHERE xmin::text = %s").format(
                sql.Identifier(t.tenant_column), sql.SQL(t.name)), (xid,)).fetchall()}
    return found


def _run(lab: Lab, ops: list[tuple[Any, ...]]) -> None:
    for t in lab.world.tenants:
        _admin_user[t.id] = t.user("admin")
    conn = _connect(lab.dsn)
    session: str | None = None
    try:
        for step in ops:
            if step[0] == "session":
                session = _tenant_id(lab, step[1])
                _set(conn, session, local=False)
                continue
            if step[0] == "reconnect":
                conn.close()
                conn = _connect(lab.dsn)
                session = None
                continue
            where, txn_tenant, kind, which, row_t = step
            target = lab.targets[which % len(lab.targets)]
            # A transaction that sets nothing (None) runs under the session's tenant, as PostgreSQL does.
            sets_local = where == "in transaction" and txn_tenant is not None
            current = _tenant_id(lab, txn_tenant) if sets_local else session
            current = current or None  # '' means no tenant
            row_tenant = _tenant_id(lab, row_t) or ""
            stmt, params = _statement(lab, kind, target, row_tenant)
            parent = lab.parent_of[target.name]
            before = _tenant_counts(lab, parent) if kind in ("delete", "move", "insert") else None
            xid = None
            try:
                with conn.transaction():
                    if where == "in transaction":
                        _set(conn, _tenant_id(lab, txn_tenant), local=True)
                    xid = conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]  # type: ignore[index]
                    cur = conn.execute(stmt, params)
                    rows = [r[0] for r in cur.fetchall()] if cur.description else []
                event(f"{kind}: ok, {len(rows)} rows")
            except psycopg.Error as e:
                assert e.sqlstate in FAIL_CLOSED, f"{step} on {target.name}: unexpected error {e.sqlstate}: {e}"
                event(f"{kind}: {e.sqlstate}")
                rows, xid = [], None
            foreign = [r for r in rows if r != current]
            assert not foreign, f"{step} on {target.name} in tenant {current}: returned rows of {set(foreign)}"
            if xid is not None and kind != "select":
                landed = _written_by(lab, xid)
                assert landed <= ({current} if current else set()), (
                    f"{step} on {target.name} in tenant {current}: rows written in tenants {landed}")
            if before is not None:
                after = _tenant_counts(lab, parent)
                changed = {k for k in set(before) | set(after) if before.get(k, 0) != after.get(k, 0)}
                assert changed <= ({current} if current else set()), (
                    f"{step} on {target.name} in tenant {current}: row counts changed in {changed}")
            # the context after the operation: a transaction-scoped tenant is gone, the session's remains
            seen = conn.execute("SELECT nullif(current_setting('app.current_tenant', true), '')").fetchone()[0]  # type: ignore[index]
            assert seen == (session or None), f"after {step}: tenant {seen}, expected {session}"
    finally:
        conn.close()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=12))
def test_no_operation_sequence_crosses_tenants(lab: Lab, ops: list[tuple[Any, ...]]) -> None:
    _run(lab, ops)
