"""Tenant isolation, the heart of the course: every tenant table and partition against PITFALLS 1-7, 9, 12-15, 24, 31.

Every test acts as a real login of an application role (``labhelpers.db.connect(dsn, role=...)``) and first
asserts that it is not a superuser, has no BYPASSRLS and owns nothing: an isolation test run as the owner
or a superuser proves nothing (PITFALLS 1-2). Tables and partitions are discovered from the catalog, so
ones added later are covered; each test loops over all of them and reports every failing case at once.

The contract (sql/02-rls-policies.sql): unset or empty ``app.current_tenant`` -> zero rows, no error;
a malformed value -> an error (invalid_text_representation, 22P02), which fails closed; writes pinned to
the current tenant by WITH CHECK (42501); partitions not accessible directly (42501), also those created
later; app roles hold no privilege beyond SELECT, INSERT, UPDATE, DELETE (TRUNCATE ignores RLS); views run
as the caller; SECURITY DEFINER functions, trigger functions included, pin search_path with pg_temp last.
tests/mutants.py checks that realistic mistakes in the schema make these tests fail (`make mutants`).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.types.json import Jsonb

from isolation_helpers import (
    Problems,
    World,
    admin_one,
    admin_view,
    app,
    in_tenant,
    insert_stmt,
    key_match,
    load_world,
    new_version,
    row_exists,
    rowcount_or_state,
    sample_row,
    sqlstate_of,
)
from labhelpers import db, tenants
from labhelpers.checks import TenantTable

PRIVILEGE = errors.InsufficientPrivilege.sqlstate  # 42501: WITH CHECK violations and missing privileges
FK_VIOLATION = errors.ForeignKeyViolation.sqlstate  # 23503
BAD_UUID = errors.InvalidTextRepresentation.sqlstate  # 22P02
LESSON_TABLES = {"tenants", "tenant_users", "contacts", "leads", "activities"}
# Every table privilege but MAINTAIN (PostgreSQL 17+, added where the server has it); app roles need NEEDED.
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
NEEDED = {"SELECT", "INSERT", "UPDATE", "DELETE"}


@pytest.fixture(scope="module")
def world(shared_built_dsn: str) -> World:
    return load_world(shared_built_dsn)


def count_stmt(t: TenantTable, where: str = "") -> sql.Composable:
    return sql.SQL("SELECT count(*) FROM {} " + where).format(sql.SQL(t.name))


def writable(world: World) -> list[TenantTable]:
    """Top-level tables app_user may write: all but tenants (app_admin's) and derived, read-only tables."""
    return [t for t in world.tables if t.name not in world.read_only and t.name != "tenants"]


def foreign_keys(dsn: str, world: World) -> list[dict[str, Any]]:
    """Foreign keys between top-level tenant tables (not to ``tenants``), from the catalog."""
    with admin_view(dsn) as conn:
        rows = conn.execute(
            """SELECT c.conname::text, c.conrelid::regclass::text, c.confrelid::regclass::text,
                      ARRAY(SELECT a.attname::text FROM unnest(c.conkey) k JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k),
                      ARRAY(SELECT a.attname::text FROM unnest(c.confkey) k JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k)
                 FROM pg_constraint c
                WHERE c.contype = 'f' AND c.conparentid = 0 AND c.conrelid = ANY(%s::regclass[])
                  AND c.confrelid <> 'tenants'::regclass
                ORDER BY 1""",
            ([t.name for t in world.tables],),
        ).fetchall()
    return [dict(zip(("name", "table", "ref", "cols", "ref_cols"), r)) for r in rows]


# --------------------------------------------------------------------------------------------------
# Discovery and roles
# --------------------------------------------------------------------------------------------------


def test_discovery_finds_every_tenant_table_and_partition(world: World) -> None:
    assert LESSON_TABLES <= {t.name for t in world.tables}, "catalog discovery missed a lesson table"
    assert len(world.leaves) >= 4, "activities should have leaf partitions"
    assert all(p.tenant_column == "tenant_id" for p in world.partitions)
    assert len(world.tenants) >= 2, "isolation needs at least two tenants"


@pytest.mark.parametrize("role", db.APP_ROLES)
def test_app_roles_are_not_superuser_bypassrls_or_owner(shared_built_dsn: str, role: str) -> None:
    with app(shared_built_dsn, role) as conn:  # app() asserts it
        owner = conn.execute("SELECT relowner::regrole::text FROM pg_class WHERE oid = 'contacts'::regclass").fetchone()[0]  # type: ignore[index]
        assert owner != role


# --------------------------------------------------------------------------------------------------
# PITFALLS 4-6: unset, empty, malformed context
# --------------------------------------------------------------------------------------------------


def test_unset_and_empty_context_see_zero_rows_without_error(world: World) -> None:
    p = Problems()
    with app(world.dsn) as conn:
        everything = world.tables + world.partitions
        for label, prepare in (
            ("never set", []),
            ("set to ''", ["SELECT set_config('app.current_tenant', '', false)"]),
            ("after RESET", ["SELECT set_config('app.current_tenant', %(t)s, false)", "RESET app.current_tenant"]),
            ("after SET LOCAL ended", ["BEGIN", "SELECT set_config('app.current_tenant', %(t)s, true)", "COMMIT"]),
        ):
            for stmt in prepare:
                conn.execute(stmt, {"t": world.tenants[0].id} if "%(t)s" in stmt else None)
            for t in everything:
                got = rowcount_or_state(conn, count_stmt(t))
                if t.kind == "partition":
                    p.expect(got == PRIVILEGE, f"{label}: direct {t.name} gave {got}, expected no privilege (42501)")
                    continue
                try:
                    n = conn.execute(count_stmt(t)).fetchone()[0]  # type: ignore[index]
                except psycopg.Error as e:
                    p.expect(False, f"{label}: {t.name} raised {e.sqlstate} instead of zero rows")
                    continue
                p.expect(n == 0, f"{label}: {t.name} shows {n} rows with no tenant set (fail open, PITFALLS 6)")
            conn.execute("RESET ALL")
    p.check(minimum=len(world.tables) * 4)


def test_malformed_context_fails_closed(world: World) -> None:
    """'not-a-uuid' cannot name a tenant: the policy's ::uuid cast raises 22P02. An error is fail-closed; rows are not."""
    p = Problems()
    with app(world.dsn) as conn:
        for bad in ("not-a-uuid", " ", "11111111"):
            conn.execute("SELECT set_config('app.current_tenant', %s, false)", (bad,))
            for t in world.tables:
                try:
                    n = conn.execute(count_stmt(t)).fetchone()[0]  # type: ignore[index]
                    p.expect(n == 0, f"{bad!r}: {t.name} shows {n} rows")
                except psycopg.Error as e:
                    p.expect(e.sqlstate == BAD_UUID, f"{bad!r}: {t.name} raised {e.sqlstate}, expected 22P02 or zero rows")
    p.check(minimum=len(world.tables))


def test_tenants_table_shows_only_the_current_tenant(world: World) -> None:
    with app(world.dsn) as conn:
        for t in world.tenants:
            with in_tenant(conn, t.id):
                assert conn.execute("SELECT id::text FROM tenants").fetchall() == [(t.id,)]


# --------------------------------------------------------------------------------------------------
# Cross-tenant reads: by id, by filter, by join, COPY TO
# --------------------------------------------------------------------------------------------------


def test_cross_tenant_reads_see_nothing(world: World) -> None:
    p = Problems()
    with app(world.dsn) as conn:
        for me in world.tenants:
            for other in world.tenants:
                if other.id == me.id:
                    continue
                for t in world.tables:
                    theirs = sample_row(world.dsn, t, other.id)
                    cond, key = key_match(world, t, theirs)
                    with in_tenant(conn, me.id):
                        by_id = conn.execute(count_stmt(t, "WHERE ") + cond, key).fetchone()[0]  # type: ignore[index]
                        by_filter = conn.execute(
                            sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(sql.SQL(t.name), sql.Identifier(t.tenant_column)),
                            (other.id,),
                        ).fetchone()[0]  # type: ignore[index]
                    p.expect(by_id == 0, f"{me.slug} reads {other.slug}'s {t.name} row by id")
                    p.expect(by_filter == 0, f"{me.slug} reads {by_filter} {t.name} rows WHERE {t.tenant_column} = {other.slug}")
            for t in world.tables:
                expected = admin_one(world.dsn, sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
                    sql.SQL(t.name), sql.Identifier(t.tenant_column)), (me.id,))
                with in_tenant(conn, me.id):
                    own, foreign = conn.execute(
                        sql.SQL("SELECT count(*), count(*) FILTER (WHERE {c} IS DISTINCT FROM %s) FROM {t}").format(
                            c=sql.Identifier(t.tenant_column), t=sql.SQL(t.name)), (me.id,)
                    ).fetchone()  # type: ignore[misc]
                p.expect(foreign == 0, f"{me.slug} sees {foreign} foreign rows in {t.name}")
                p.expect(own == expected, f"{me.slug} sees {own} of its {expected} rows in {t.name}")
    p.check(minimum=len(world.tables) * len(world.tenants))


def test_naive_joins_never_cross_tenants(world: World) -> None:
    """Join child to parent on the id only (forgetting tenant_id): every row still belongs to the tenant."""
    fks = foreign_keys(world.dsn, world)
    assert fks, "no foreign keys between tenant tables found"
    p = Problems()
    with app(world.dsn) as conn:
        for me in world.tenants:
            for fk in fks:
                on = sql.SQL(" AND ").join(
                    sql.SQL("c.{} = p.{}").format(sql.Identifier(a), sql.Identifier(b))
                    for a, b in zip(fk["cols"], fk["ref_cols"]) if a != "tenant_id"
                )
                q = sql.SQL(
                    "SELECT count(*), count(*) FILTER (WHERE c.tenant_id <> %(t)s OR p.tenant_id <> %(t)s) FROM {} c JOIN {} p ON {}"
                ).format(sql.SQL(fk["table"]), sql.SQL(fk["ref"]), on)
                with in_tenant(conn, me.id):
                    total, foreign = conn.execute(q, {"t": me.id}).fetchone()  # type: ignore[misc]
                p.expect(foreign == 0, f"{me.slug}: join {fk['table']} -> {fk['ref']} shows {foreign} foreign rows")
    p.check(minimum=len(fks))


def test_copy_to_shows_only_own_rows(world: World) -> None:
    p = Problems()
    with app(world.dsn) as conn:
        me = world.tenants[0]
        for t in world.tables:
            with in_tenant(conn, me.id):
                with conn.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
                        sql.Identifier(t.tenant_column), sql.SQL(t.name))) as cp:
                    seen = [bytes(r).decode().strip() for r in cp]
                with conn.cursor().copy(sql.SQL("COPY {} TO STDOUT").format(sql.SQL(t.name))) as cp:
                    n_table = sum(bytes(chunk).count(b"\n") for chunk in cp)
            p.expect(bool(seen) and set(seen) == {me.id}, f"COPY (SELECT) TO of {t.name} shows tenants {set(seen)}")
            if t.kind == "partitioned":
                # PostgreSQL 18 quirk: for an RLS-bound role, COPY <partitioned> TO reads ONLY the parent,
                # i.e. nothing (the superuser gets an error instead). Never more than the tenant's rows.
                p.expect(n_table in (0, len(seen)), f"COPY {t.name} TO gives {n_table} rows, the query {len(seen)}")
            else:
                p.expect(n_table == len(seen), f"COPY {t.name} TO gives {n_table} rows, the query {len(seen)}")
    p.check(minimum=len(world.tables))


# --------------------------------------------------------------------------------------------------
# Cross-tenant writes: INSERT, UPDATE (move), DELETE, upsert, COPY FROM (PITFALLS 9)
# --------------------------------------------------------------------------------------------------


def test_insert_for_another_tenant_violates_with_check(world: World) -> None:
    p = Problems()
    with app(world.dsn) as conn:
        for me in world.tenants:
            other = world.other(me)
            for t in writable(world):
                mine = sample_row(world.dsn, t, me.id)
                with in_tenant(conn, me.id, me.user("admin")):
                    ok = sqlstate_of(conn, *insert_stmt(t, new_version(world, t, mine, tenant_id=me.id)))
                    bad = sqlstate_of(conn, *insert_stmt(t, new_version(world, t, mine, tenant_id=other.id)))
                p.expect(ok is None, f"control: {me.slug} cannot insert its own {t.name} row ({ok})")
                p.expect(bad == PRIVILEGE, f"{me.slug} inserting a {t.name} row for {other.slug} gave {bad}, expected 42501")
        # tenants: app_user may not write it at all
        me = world.tenants[0]
        with in_tenant(conn, me.id, me.user("admin")):
            t = world.table("tenants")
            got = sqlstate_of(conn, *insert_stmt(t, new_version(world, t, sample_row(world.dsn, t, me.id), tenant_id=me.id)))
            p.expect(got == PRIVILEGE, f"app_user inserting into tenants gave {got}")
    p.check(minimum=len(writable(world)) * 2)


def test_app_admin_cannot_register_or_move_another_tenant(world: World) -> None:
    t = world.table("tenants")
    me, other = world.tenants[0], world.tenants[1]
    with app(world.dsn, "app_admin") as conn:
        with in_tenant(conn, me.id):
            row = new_version(world, t, sample_row(world.dsn, t, me.id), tenant_id=str(uuid.uuid4()))
            assert sqlstate_of(conn, *insert_stmt(t, row)) == PRIVILEGE
            assert sqlstate_of(conn, "UPDATE tenants SET id = %s WHERE id = %s", (str(uuid.uuid4()), me.id)) == PRIVILEGE
            assert rowcount_or_state(conn, "UPDATE tenants SET name = 'pwned' WHERE id = %s", (other.id,)) == 0
            assert rowcount_or_state(conn, "UPDATE tenants SET name = name WHERE id = %s", (me.id,)) == 1
    assert admin_one(world.dsn, "SELECT name FROM tenants WHERE id = %s", (other.id,)) != "pwned"


def test_update_cannot_move_a_row_to_another_tenant(world: World) -> None:
    p = Problems()
    with app(world.dsn) as conn:
        for me in world.tenants:
            other = world.other(me)
            for t in writable(world):
                mine = sample_row(world.dsn, t, me.id)
                move = sql.SQL("UPDATE {} SET {} = %s WHERE id = %s").format(sql.SQL(t.name), sql.Identifier(t.tenant_column))
                with in_tenant(conn, me.id, me.user("admin")):
                    control = rowcount_or_state(conn, sql.SQL("UPDATE {} SET id = id WHERE id = %s").format(sql.SQL(t.name)), (mine["id"],))
                    got = sqlstate_of(conn, move, (other.id, mine["id"]))
                p.expect(control == 1, f"control: {me.slug} cannot update its own {t.name} row ({control})")
                p.expect(got == PRIVILEGE, f"{me.slug} moving a {t.name} row to {other.slug} gave {got}, expected 42501")
    p.check(minimum=len(writable(world)))


def test_update_and_delete_of_another_tenants_row_affect_nothing(world: World) -> None:
    p = Problems()
    with app(world.dsn) as conn:
        for me in world.tenants:
            other = world.other(me)
            for t in writable(world):
                theirs = sample_row(world.dsn, t, other.id)
                with in_tenant(conn, me.id, me.user("admin")):
                    upd = rowcount_or_state(conn, sql.SQL("UPDATE {} SET id = id WHERE id = %s").format(sql.SQL(t.name)), (theirs["id"],))
                    dele = rowcount_or_state(conn, sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.SQL(t.name)), (theirs["id"],))
                    everything = rowcount_or_state(conn, sql.SQL("DELETE FROM {} WHERE {} = %s").format(
                        sql.SQL(t.name), sql.Identifier(t.tenant_column)), (other.id,))
                p.expect(upd == 0, f"{me.slug} updating {other.slug}'s {t.name} row: {upd}")
                p.expect(dele == 0, f"{me.slug} deleting {other.slug}'s {t.name} row: {dele}")
                p.expect(everything == 0, f"{me.slug} deleting all of {other.slug}'s {t.name}: {everything}")
                p.expect(row_exists(world.dsn, t, theirs) is not None, f"{other.slug}'s {t.name} row is gone")
    p.check(minimum=len(writable(world)))


def test_upsert_cannot_touch_another_tenants_row(world: World) -> None:
    p = Problems()
    with app(world.dsn) as conn:
        for me in world.tenants:
            other = world.other(me)
            for t in writable(world):
                theirs = sample_row(world.dsn, t, other.id)
                touch = f" ON CONFLICT ({', '.join(world.pk[t.name])}) DO UPDATE SET id = EXCLUDED.id"
                with in_tenant(conn, me.id, me.user("admin")):
                    # their key, their tenant: WITH CHECK rejects the proposed row before any conflict
                    as_them = new_version(world, t, theirs, tenant_id=other.id, keep_id=True)
                    got = sqlstate_of(conn, *insert_stmt(t, as_them, touch))
                    # their id, my tenant: no conflict (the key includes tenant_id): a new row of mine
                    mine = new_version(world, t, sample_row(world.dsn, t, me.id), tenant_id=me.id)
                    mine["id"] = theirs["id"]
                    if "created_at" in theirs:
                        mine["created_at"] = theirs["created_at"]
                    n = rowcount_or_state(conn, *insert_stmt(t, mine, touch))
                p.expect(got == PRIVILEGE, f"{me.slug} upserting {other.slug}'s {t.name} key gave {got}, expected 42501")
                p.expect(n == 1, f"{me.slug} upserting its own row with {other.slug}'s {t.name} id gave {n}")
                p.expect(row_exists(world.dsn, t, theirs) == theirs, f"{other.slug}'s {t.name} row changed")
    p.check(minimum=len(writable(world)))


def test_copy_from_is_refused_under_rls(world: World) -> None:
    """COPY FROM is not supported for a role subject to RLS (0A000): nothing is loaded, foreign rows least of all."""
    p = Problems()
    me = world.tenants[0]
    other = world.other(me)
    with app(world.dsn) as conn:
        for t in world.tables:
            row = new_version(world, t, sample_row(world.dsn, t, other.id), tenant_id=other.id)
            cols = list(row)
            with admin_view(world.dsn) as admin:
                with admin.cursor().copy(sql.SQL("COPY (SELECT {c} FROM jsonb_populate_record(NULL::{t}, {r}::jsonb)) TO STDOUT").format(
                        c=sql.SQL(", ").join(map(sql.Identifier, cols)), t=sql.SQL(t.name),
                        r=sql.Literal(Jsonb(row)))) as cp:
                    line = b"".join(bytes(c) for c in cp)
            before = admin_one(world.dsn, count_stmt(t))
            for who in (me, other):
                try:
                    with in_tenant(conn, who.id, who.user("admin")):
                        with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
                                sql.SQL(t.name), sql.SQL(", ").join(map(sql.Identifier, cols)))) as cp:
                            cp.write(line)
                    state = None
                except psycopg.Error as e:
                    state = e.sqlstate
                p.expect(state in (errors.FeatureNotSupported.sqlstate, PRIVILEGE),
                         f"COPY {t.name} FROM a {other.slug} row in {who.slug}'s context gave {state}")
            p.expect(admin_one(world.dsn, count_stmt(t)) == before, f"COPY FROM changed {t.name}")
    p.check(minimum=len(world.tables))


# --------------------------------------------------------------------------------------------------
# Keys: foreign keys, UNIQUE (PITFALLS 13-15)
# --------------------------------------------------------------------------------------------------


def test_foreign_keys_cannot_reference_another_tenants_rows(world: World) -> None:
    """Every FK includes tenant_id: pointing at another tenant's row fails exactly like pointing at nothing (23503)."""
    fks = foreign_keys(world.dsn, world)
    p = Problems()
    with app(world.dsn) as conn:
        for me in world.tenants:
            other = world.other(me)
            for fk in fks:
                child, parent = world.table(fk["table"]), world.table(fk["ref"])
                p.expect("tenant_id" in fk["cols"], f"{fk['name']} does not include tenant_id (PITFALLS 14)")
                mine = sample_row(world.dsn, child, me.id)
                theirs = sample_row(world.dsn, parent, other.id)
                own_target = sample_row(world.dsn, parent, me.id)
                pairs = [(a, b) for a, b in zip(fk["cols"], fk["ref_cols"]) if a != "tenant_id"]
                setter = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(a)) for a, _ in pairs)
                upd = sql.SQL("UPDATE {} SET {} WHERE id = %s").format(sql.SQL(child.name), setter)
                with in_tenant(conn, me.id, me.user("admin")):
                    control = sqlstate_of(conn, upd, (*[own_target[b] for _, b in pairs], mine["id"]))
                    foreign = sqlstate_of(conn, upd, (*[theirs[b] for _, b in pairs], mine["id"]))
                    nowhere = sqlstate_of(conn, upd, (*[str(uuid.uuid4()) for _ in pairs], mine["id"]))
                    ins = new_version(world, child, mine, tenant_id=me.id)
                    ins.update({a: theirs[b] for a, b in pairs})
                    inserted = sqlstate_of(conn, *insert_stmt(child, ins))
                p.expect(control is None, f"control: {fk['name']} to an own {parent.name} row failed ({control})")
                p.expect(foreign == FK_VIOLATION, f"{fk['name']}: {me.slug} -> {other.slug}'s {parent.name} gave {foreign}")
                p.expect(inserted == FK_VIOLATION, f"{fk['name']}: insert referencing {other.slug} gave {inserted}")
                p.expect(foreign == nowhere, f"{fk['name']}: error differs for a foreign vs a missing row (covert channel, PITFALLS 15)")
    p.check(minimum=len(fks))


def test_unique_keys_are_per_tenant(world: World) -> None:
    """The same email (or any unique value) and even the same id in two tenants is allowed (PITFALLS 13, 15).

    Both rows are written in one transaction, so a global unique index would see the first and refuse.
    """
    p = Problems()
    with app(world.dsn) as conn:
        for me in world.tenants:
            other = world.other(me)
            for t in writable(world):
                mine, theirs = sample_row(world.dsn, t, me.id), sample_row(world.dsn, t, other.id)
                first = new_version(world, t, theirs, tenant_id=other.id)
                second = new_version(world, t, mine, tenant_id=me.id)
                second.update({c: first[c] for c in world.unique_text[t.name]})
                second["id"] = first["id"]
                with conn.transaction(force_rollback=True):
                    conn.execute("SELECT set_config(%s, %s, true), set_config(%s, %s, true)",
                                 ("app.current_tenant", other.id, "app.current_user_id", other.user("admin")))
                    a = sqlstate_of(conn, *insert_stmt(t, first))
                    conn.execute("SELECT set_config(%s, %s, true), set_config(%s, %s, true)",
                                 ("app.current_tenant", me.id, "app.current_user_id", me.user("admin")))
                    b = sqlstate_of(conn, *insert_stmt(t, second))
                p.expect(a is None, f"control: {other.slug} cannot insert a new {t.name} row: {a}")
                p.expect(b is None, f"{me.slug} cannot reuse {other.slug}'s id and {world.unique_text[t.name]} in {t.name}: {b}")
    p.check(minimum=len(writable(world)))
    with admin_view(world.dsn) as admin:
        global_unique = admin.execute(
            """SELECT i.indexrelid::regclass::text FROM pg_index i
                WHERE i.indisunique AND i.indrelid = ANY(%s::regclass[]) AND i.indrelid <> 'tenants'::regclass
                  AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid
                                    AND a.attnum = ANY(i.indkey) AND a.attname = 'tenant_id')""",
            ([t.name for t in world.tables + world.partitions],),
        ).fetchall()
    assert global_unique == [], f"unique indexes without tenant_id reveal other tenants' values: {global_unique}"


# --------------------------------------------------------------------------------------------------
# Partitions (PITFALLS 3)
# --------------------------------------------------------------------------------------------------


def test_partitions_cannot_be_used_directly(world: World) -> None:
    p = Problems()
    me = world.tenants[0]
    with app(world.dsn) as conn:
        for part in world.partitions:
            name = sql.SQL(part.name)
            for label, stmt in (
                ("SELECT", sql.SQL("SELECT count(*) FROM {}").format(name)),
                ("INSERT", sql.SQL("INSERT INTO {} (tenant_id) VALUES (%s)").format(name)),
                ("UPDATE", sql.SQL("UPDATE {} SET subject = subject").format(name)),
                ("DELETE", sql.SQL("DELETE FROM {}").format(name)),
            ):
                with in_tenant(conn, me.id, me.user("admin")):
                    got = sqlstate_of(conn, stmt, (me.id,) if label == "INSERT" else None)
                p.expect(got == PRIVILEGE, f"{label} on partition {part.name} gave {got}, expected 42501")
            with in_tenant(conn, me.id):
                try:
                    with conn.cursor().copy(sql.SQL("COPY {} TO STDOUT").format(name)) as cp:
                        got = f"{sum(1 for _ in cp)} chunks"
                except psycopg.Error as e:
                    got = e.sqlstate
            p.expect(got == PRIVILEGE, f"COPY partition {part.name} TO gave {got}")
    p.check(minimum=len(world.partitions) * 5)


def test_partitions_enforce_rls_even_when_granted(built_dsn: str) -> None:
    """Defence in depth: grant app_user direct access to every partition; RLS on each still isolates."""
    world = load_world(built_dsn)
    with psycopg.connect(built_dsn, autocommit=True) as admin:
        for part in world.partitions:
            admin.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO app_user").format(sql.SQL(part.name)))
    me, other = world.tenants[0], world.tenants[1]
    parent = world.table("activities")
    p = Problems()
    with app(built_dsn) as conn:
        total = 0
        for part in world.partitions:
            with in_tenant(conn, None):
                unset = conn.execute(count_stmt(part)).fetchone()[0]  # type: ignore[index]
            with in_tenant(conn, me.id):
                n, foreign = conn.execute(
                    sql.SQL("SELECT count(*), count(*) FILTER (WHERE tenant_id <> %s) FROM {}").format(sql.SQL(part.name)),
                    (me.id,)).fetchone()  # type: ignore[misc]
            p.expect(unset == 0, f"{part.name}: {unset} rows with no tenant set")
            p.expect(foreign == 0, f"{part.name}: {foreign} rows of other tenants")
            total += n if part.leaf else 0
        p.expect(total == admin_one(built_dsn, "SELECT count(*) FROM activities WHERE tenant_id = %s", (me.id,)),
                 "the leaves do not add up to the tenant's activities")
        with admin_view(built_dsn) as a:
            homes = a.execute(
                "SELECT DISTINCT ON (tableoid) tableoid::regclass::text, to_jsonb(x) FROM activities x WHERE tenant_id = %s ORDER BY tableoid, id",
                (other.id,)).fetchall()
        for leaf, row in homes:
            row = new_version(world, parent, dict(row), tenant_id=other.id)
            with in_tenant(conn, me.id, me.user("admin")):
                got = sqlstate_of(conn, *insert_stmt(TenantTable(leaf, "tenant_id", "partition"), row))
            p.expect(got == PRIVILEGE, f"{me.slug} inserting a {other.slug} row directly into {leaf} gave {got}")
    p.check(minimum=len(world.partitions))


def test_pg_stats_shows_app_user_nothing(world: World) -> None:
    """Statistics hold real values (most common emails, custom fields): app_user must not read them (PITFALLS 3)."""
    tables = [t.name.split(".")[-1] for t in world.tables + world.partitions]
    with psycopg.connect(world.dsn) as admin:
        assert admin.execute("SELECT count(*) FROM pg_stats WHERE tablename = ANY(%s)", (tables,)).fetchone()[0] > 0  # type: ignore[index]
    with app(world.dsn) as conn:
        for tid in (None, world.tenants[0].id):
            with in_tenant(conn, tid):
                leaked = conn.execute(
                    "SELECT tablename::text, count(*) FROM pg_stats WHERE schemaname = current_schema() AND tablename = ANY(%s) GROUP BY 1",
                    (tables,)).fetchall()
                assert leaked == [], f"pg_stats shows app_user values of {leaked}"
                ext = conn.execute("SELECT count(*) FROM pg_stats_ext WHERE tablename = ANY(%s)", (tables,)).fetchone()[0]  # type: ignore[index]
                assert ext == 0
                assert sqlstate_of(conn, "SELECT count(*) FROM pg_statistic") == PRIVILEGE


def _security_profile(conn: psycopg.Connection[Any], table: str) -> dict[str, Any]:
    """What secures ``table``: RLS flags, its policies (own name written <t>), the app roles' table privileges."""
    enabled, forced = conn.execute(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()  # type: ignore[misc]
    policies = conn.execute(
        """SELECT replace(p.polname::text, left(c.relname, 46), '<t>'), p.polpermissive, p.polcmd::text,
                  p.polroles::regrole[]::text, pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
             FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE p.polrelid = %s::regclass ORDER BY 1""",
        (table,)).fetchall()
    privileges = conn.execute(
        "SELECT r, x FROM unnest(%s::text[]) r, unnest(%s::text[]) x WHERE has_table_privilege(r, %s::regclass, x) ORDER BY 1, 2",
        (list(db.APP_ROLES), list(TABLE_PRIVILEGES), table)).fetchall()
    return {"rls enabled": enabled, "rls forced": forced, "policies": policies, "app role privileges": privileges}


def test_partitions_created_later_are_secured_like_every_partition(world: World) -> None:
    """lab_ensure_activity_partitions (05; bonus 1 schedules it) adding a month that does not exist yet: every
    table it creates has what every partition has (RLS enabled+forced, the same policies, no privileges for
    the app roles). The build re-secures every partition it finds, so only a month added LATER shows a
    function that forgot to secure what it creates (PITFALLS 3)."""
    ref_leaf = world.leaves[0].name
    ref_month = next(t.name for t in world.partitions if not t.leaf)
    p = Problems()
    with psycopg.connect(world.dsn) as conn, conn.transaction(force_rollback=True):  # the shared copy keeps its months
        start = conn.execute(
            """SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => lab_activity_partitions_ahead() + 1))
                      AT TIME ZONE 'UTC'""").fetchone()[0]  # type: ignore[index]
        created = [r[0] for r in conn.execute(
            "SELECT * FROM lab_ensure_activity_partitions(%s, %s + interval '1 day')", (start, start)).fetchall()]
        assert created, f"lab_ensure_activity_partitions created nothing for the month of {start}"
        leaves = {n for (n,) in conn.execute(
            "SELECT relid::regclass::text FROM pg_partition_tree('activities') WHERE isleaf").fetchall()}
        expected = {True: _security_profile(conn, ref_leaf), False: _security_profile(conn, ref_month)}
        for ref in expected.values():
            assert ref["rls enabled"] and ref["rls forced"] and ref["policies"] and not ref["app role privileges"], ref
        for name in created:
            got = _security_profile(conn, name)
            for what, want in expected[name in leaves].items():
                p.expect(got[what] == want, f"new partition {name}: {what} {got[what]}, every partition has {want}")
    p.check(minimum=len(created) * 4)
    assert any(n in leaves for n in created), "no new leaf partition was created"


# --------------------------------------------------------------------------------------------------
# Privileges (PITFALLS 31): TRUNCATE ignores RLS
# --------------------------------------------------------------------------------------------------

def test_app_roles_hold_exactly_the_privileges_they_need(world: World) -> None:
    """The privilege itself, from the catalog (has_table_privilege: grants to PUBLIC and memberships count),
    not a TRUNCATE that happens to fail for another reason: app roles hold at most SELECT, INSERT, UPDATE,
    DELETE on a tenant table, nothing on a partition; app_user all four on the tables it writes, app_readonly
    SELECT only, and every role reads every tenant table."""
    with admin_view(world.dsn) as conn:
        privileges = list(TABLE_PRIVILEGES)
        if conn.info.server_version >= 170000:
            privileges.append("MAINTAIN")
        held: dict[tuple[str, str], set[str]] = {}
        for role, table, priv in conn.execute(
            """SELECT r, t, x FROM unnest(%s::text[]) r, unnest(%s::text[]) t, unnest(%s::text[]) x
                WHERE has_table_privilege(r, t::regclass, x)""",
            (list(db.APP_ROLES), [t.name for t in world.tables + world.partitions], privileges),
        ).fetchall():
            held.setdefault((role, table), set()).add(priv)
    p = Problems()
    writes = {t.name for t in writable(world)}
    for role in db.APP_ROLES:
        for t in world.tables + world.partitions:
            got = held.get((role, t.name), set())
            if t.kind == "partition":
                p.expect(not got, f"{role} holds {sorted(got)} on partition {t.name}: no direct access (PITFALLS 3)")
                continue
            p.expect(not got - NEEDED, f"{role} holds {sorted(got - NEEDED)} on {t.name}: TRUNCATE ignores RLS (PITFALLS 31)")
            p.expect("SELECT" in got, f"{role} cannot read {t.name}")
            if role == "app_user" and t.name in writes:
                p.expect(got == NEEDED, f"app_user holds {sorted(got)} on {t.name}, expected exactly {sorted(NEEDED)}")
            if role == "app_readonly" or t.name in world.read_only:
                p.expect(got == {"SELECT"}, f"{role} holds {sorted(got)} on read-only {t.name}")
    p.check(minimum=len(db.APP_ROLES) * len(world.tables + world.partitions))


def test_truncate_is_refused_on_every_table_and_partition(world: World) -> None:
    """The attack: as each app role in a tenant, TRUNCATE every table and partition on its own (CASCADE could
    fail on some other table for another reason). TRUNCATE ignores RLS, so it must fail for lack of the
    privilege (42501) every time; each attempt is rolled back."""
    me = world.tenants[0]
    p = Problems()
    for role in db.APP_ROLES:
        with app(world.dsn, role) as conn:
            for t in world.tables + world.partitions:
                with in_tenant(conn, me.id, me.user("admin")):
                    got = sqlstate_of(conn, sql.SQL("TRUNCATE {}").format(sql.SQL(t.name)))
                p.expect(got == PRIVILEGE, f"{role} in {me.slug}: TRUNCATE {t.name} gave {got or 'success'}, expected 42501 "
                                           f"(it would empty every tenant's rows)")
    p.check(minimum=len(db.APP_ROLES) * len(world.tables + world.partitions))


# --------------------------------------------------------------------------------------------------
# Views (PITFALLS 12) and privilege escalation
# --------------------------------------------------------------------------------------------------


def test_views_run_as_the_caller(built_dsn: str) -> None:
    with psycopg.connect(built_dsn, autocommit=True) as admin:
        # Every schema but the system ones (a reporting schema leaks as well as the lab's), objects of
        # extensions aside.
        unsafe = admin.execute(
            """SELECT c.oid::regclass::text, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                                              AND d.deptype = 'e')
                  AND (c.relkind = 'm' OR (c.relkind = 'v' AND NOT coalesce(
                       (SELECT option_value::boolean FROM pg_options_to_table(c.reloptions) WHERE option_name = 'security_invoker'), false)))"""
        ).fetchall()
        assert unsafe == [], f"views without security_invoker / materialized views leak: {unsafe}"
        # Why it matters: a view made by the owner without security_invoker runs as the owner.
        superuser = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]  # type: ignore[index]
        admin.execute("CREATE VIEW leaky_contacts AS SELECT * FROM contacts")
        admin.execute("GRANT SELECT ON leaky_contacts TO app_user")
    with app(built_dsn) as conn:
        leaked = conn.execute("SELECT count(*) FROM leaky_contacts").fetchone()[0]  # type: ignore[index]
        if superuser:
            assert leaked > 0, "expected the owner's view to leak (PITFALLS 12 demonstration)"
    with psycopg.connect(built_dsn, autocommit=True) as admin:
        admin.execute("ALTER VIEW leaky_contacts SET (security_invoker = true)")
    with app(built_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM leaky_contacts").fetchone()[0] == 0  # type: ignore[index]


def test_app_user_cannot_escalate(world: World) -> None:
    me = world.tenants[0]
    p = Problems()
    with app(world.dsn) as conn:
        owner = conn.execute("SELECT relowner::regrole::text FROM pg_class WHERE oid = 'contacts'::regclass").fetchone()[0]  # type: ignore[index]
        part = world.leaves[0].name
        attempts = {
            "SET ROLE owner": sql.SQL("SET ROLE {}").format(sql.Identifier(owner)),
            "SET ROLE postgres": "SET ROLE postgres",
            "SET ROLE app_admin": "SET ROLE app_admin",
            "SET SESSION AUTHORIZATION": sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(owner)),
            "DISABLE ROW LEVEL SECURITY": "ALTER TABLE contacts DISABLE ROW LEVEL SECURITY",
            "NO FORCE ROW LEVEL SECURITY": "ALTER TABLE contacts NO FORCE ROW LEVEL SECURITY",
            "DISABLE RLS on a partition": sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(sql.SQL(part)),
            "GRANT on a partition": sql.SQL("GRANT SELECT ON {} TO app_user").format(sql.SQL(part)),
            "CREATE POLICY": "CREATE POLICY p_all ON contacts FOR SELECT USING (true)",
            "DROP POLICY": "DROP POLICY contacts_tenant_isolation ON contacts",
            "session_replication_role": "SET session_replication_role = replica",
            "row_security = off": "SET row_security = off; SELECT count(*) FROM contacts",
            "CREATE FUNCTION in the schema": "CREATE FUNCTION leak() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM contacts'",
            "CREATE TABLE in the schema": "CREATE TABLE mine (x int)",
            "LEAKPROOF function": "CREATE FUNCTION pg_temp.lp(jsonb, jsonb) RETURNS bool LANGUAGE sql LEAKPROOF AS 'SELECT true'",
            "ALTER FUNCTION ... LEAKPROOF": "ALTER FUNCTION pg_catalog.jsonb_exists(jsonb, text) LEAKPROOF",
            "ALTER ROLE BYPASSRLS": "ALTER ROLE app_user BYPASSRLS",
            "TRUNCATE (bypasses RLS)": "TRUNCATE contacts CASCADE",
            "read pg_authid": "SELECT rolpassword FROM pg_authid",
        }
        for label, stmt in attempts.items():
            with in_tenant(conn, me.id, me.user("admin")):
                got = sqlstate_of(conn, stmt)
            p.expect(got == PRIVILEGE, f"{label}: {got}, expected 42501")
        # A function app_user can create (in pg_temp) runs as app_user: SECURITY DEFINER gains nothing.
        with in_tenant(conn, None):
            conn.execute("CREATE FUNCTION pg_temp.leak() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM contacts'")
            p.expect(conn.execute("SELECT pg_temp.leak()").fetchone()[0] == 0, "a temp SECURITY DEFINER function sees rows")  # type: ignore[index]
    p.check(minimum=10)
    assert admin_one(world.dsn, "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = 'contacts'::regclass")


def test_security_definer_functions_pin_their_search_path(world: World) -> None:
    """Every SECURITY DEFINER function in every schema runs with its owner's rights, trigger functions included
    (no app role may call them, yet any write fires them): each pins search_path, with pg_temp listed last
    (unlisted, the caller's temporary schema is searched FIRST for tables)."""
    with admin_view(world.dsn) as conn:
        found = conn.execute(
            """SELECT p.oid::regprocedure::text, p.prorettype = 'trigger'::regtype,
                      (SELECT substr(c, 13) FROM unnest(p.proconfig) c WHERE starts_with(c, 'search_path='))
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                                              AND d.deptype = 'e')"""
        ).fetchall()
    assert any(trigger for _, trigger, _ in found), "no SECURITY DEFINER trigger function found (01 and 04 have them)"
    p = Problems()
    for fn, _, path in found:
        items = [i.strip().strip('"') for i in path.split(",")] if path is not None else []
        p.expect(path is not None, f"{fn} is SECURITY DEFINER without SET search_path")
        p.expect(path is None or items[-1] == "pg_temp", f"{fn}: search_path = {path}: pg_temp must be listed, last")
    p.check(minimum=len(found))


def _definer_triggers(world: World) -> list[tuple[str, str, list[str]]]:
    """(table, function, the derived tables it writes) for every SECURITY DEFINER trigger function on a tenant table."""
    with admin_view(world.dsn) as conn:
        rows = conn.execute(
            """SELECT DISTINCT t.tgrelid::regclass::text, p.oid::regprocedure::text, p.prosrc
                 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                WHERE p.prosecdef AND NOT t.tgisinternal AND t.tgrelid = ANY(%s::regclass[]) ORDER BY 1, 2""",
            ([t.name for t in world.tables],)).fetchall()
    return [(table, fn, sorted(n for n in world.read_only if re.search(rf"\b{re.escape(n)}\b", src)))
            for table, fn, src in rows]


def test_definer_triggers_ignore_the_callers_temporary_tables(world: World) -> None:
    """The attack on a SECURITY DEFINER trigger function without a safe search_path: app_user creates a
    temporary table named like the rollup the function writes, with a trigger of its own running a pg_temp
    function, then writes a row. The rollup trigger runs as its owner; if it resolves the rollup's name to
    the temporary table, app_user's function runs as the owner and counts every tenant's contacts."""
    triggers = _definer_triggers(world)
    assert triggers, "no SECURITY DEFINER trigger on a tenant table found (the rollups of 01 and 04 have them)"
    schema = sql.Identifier(str(admin_one(world.dsn, "SELECT current_schema()")))
    me = world.tenants[0]
    p = Problems()
    with app(world.dsn) as conn:
        for table, fn, targets in triggers:
            p.expect(bool(targets), f"{fn}: cannot tell which derived table it writes")
            t = world.table(table)
            row = new_version(world, t, sample_row(world.dsn, t, me.id), tenant_id=me.id)
            with in_tenant(conn, me.id, me.user("admin")):  # rolled back: the temporary objects go with it
                conn.execute("CREATE TEMP TABLE loot (who text, n bigint)")
                conn.execute("GRANT ALL ON pg_temp.loot TO PUBLIC")
                conn.execute(sql.SQL("CREATE FUNCTION pg_temp.steal() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                                     "INSERT INTO pg_temp.loot SELECT current_user, count(*) FROM {}.contacts; "
                                     "RETURN NULL; END $$").format(schema))
                for target in targets:
                    shadow = sql.Identifier(target)
                    conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}.{} INCLUDING ALL)").format(shadow, schema, shadow))
                    conn.execute(sql.SQL("GRANT ALL ON pg_temp.{} TO PUBLIC").format(shadow))
                    conn.execute(sql.SQL("CREATE TRIGGER steal AFTER INSERT OR UPDATE OR DELETE ON pg_temp.{} "
                                         "FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.steal()").format(shadow))
                err = sqlstate_of(conn, *insert_stmt(t, row))
                loot = conn.execute("SELECT who, n FROM pg_temp.loot").fetchall()
            p.expect(err is None, f"control: app_user cannot insert a {table} row ({err})")
            p.expect(loot == [], f"{fn} (fired by {table}) wrote to app_user's temporary {', '.join(targets)}: "
                                 f"app_user's code ran as {loot[0][0] if loot else '?'} and counted "
                                 f"{loot[0][1] if loot else '?'} contacts of every tenant")
    p.check(minimum=len(triggers) * 2)


# --------------------------------------------------------------------------------------------------
# Pools (PITFALLS 7)
# --------------------------------------------------------------------------------------------------


def _tenant_obj(t: Any) -> tenants.Tenant:
    return tenants.Tenant(uuid.UUID(t.id), t.slug, t.slug)


def test_session_set_leaks_through_a_pool_transaction_scoped_does_not(world: World) -> None:
    me = world.tenants[0]
    seen = tenants.demonstrate_pool_leak(db.role_dsn(world.dsn, "app_user"), _tenant_obj(me))
    expected = admin_one(world.dsn, "SELECT count(*) FROM contacts WHERE tenant_id = %s", (me.id,))
    assert seen == {"session_set": expected, "transaction_set": 0}


def test_tenant_block_leaves_the_pooled_connection_clean(world: World) -> None:
    from psycopg_pool import ConnectionPool

    me = world.tenants[0]
    with ConnectionPool(db.role_dsn(world.dsn, "app_user"), min_size=1, max_size=1, open=True,
                        kwargs={"autocommit": True}) as pool:
        with pool.connection() as c:
            assert c.execute("SELECT current_user").fetchone()[0] == "app_user"  # type: ignore[index]
            with tenants.tenant(c, _tenant_obj(me), user=me.user("admin")):
                assert c.execute("SELECT count(*) FROM contacts").fetchone()[0] > 0  # type: ignore[index]
        with pool.connection() as c:
            assert c.execute("SELECT current_setting('app.current_tenant', true)").fetchone()[0] in ("", None)  # type: ignore[index]
            assert c.execute("SELECT current_setting('app.current_user_id', true)").fetchone()[0] in ("", None)  # type: ignore[index]
            for t in world.tables:
                assert c.execute(count_stmt(t)).fetchone()[0] == 0, t.name  # type: ignore[index]


# --------------------------------------------------------------------------------------------------
# Roles inside a tenant (02, section 5): app.current_user_id
# --------------------------------------------------------------------------------------------------

OWNED = ("contacts", "leads", "activities")  # rows with owner_id: users change their own
ADMIN_ONLY = ("tenant_users", "custom_field_definitions")


def _row_owned_by(dsn: str, table: str, tenant_id: str, owner: str | None, *, not_owner: str | None = None) -> dict[str, Any]:
    cond = "owner_id = %s" if owner else "owner_id <> %s AND (assigned_to IS DISTINCT FROM %s OR true)"
    q = sql.SQL("SELECT to_jsonb(t) FROM {} t WHERE tenant_id = %s AND " + cond + " ORDER BY id LIMIT 1").format(sql.SQL(table))
    row = admin_one(dsn, q, (tenant_id, owner or not_owner, not_owner) if not owner else (tenant_id, owner))
    assert row is not None
    return dict(row)


def _write_matrix(conn: psycopg.Connection[Any], world: World, table: str, tenant_id: str, user: str | None,
                  row: dict[str, Any], *, owner_for_insert: str | None) -> dict[str, Any]:
    t = world.table(table)
    new = new_version(world, t, row, tenant_id=tenant_id)
    if owner_for_insert is not None and "owner_id" in new:
        new["owner_id"] = owner_for_insert
    with in_tenant(conn, tenant_id, user):
        return {
            "read": conn.execute(count_stmt(t)).fetchone()[0],  # type: ignore[index]
            "insert": sqlstate_of(conn, *insert_stmt(t, new)),
            "update": rowcount_or_state(conn, sql.SQL("UPDATE {} SET id = id WHERE id = %s").format(sql.SQL(table)), (row["id"],)),
            "delete": rowcount_or_state(conn, sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.SQL(table)), (row["id"],)),
        }


def _tenant_count(dsn: str, table: str, tenant_id: str) -> int:
    return int(admin_one(dsn, sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(sql.SQL(table)), (tenant_id,)))


@pytest.mark.parametrize("who", ["viewer", "unset", "empty", "other tenant's admin", "unknown id", "malformed"])
def test_no_writes_without_a_writing_user(world: World, who: str) -> None:
    """Reads need only the tenant; every write needs an active user of this tenant allowed to make it."""
    me, other = world.tenants[0], world.tenants[1]
    user = {"viewer": me.user("viewer"), "unset": None, "empty": "", "other tenant's admin": other.user("admin"),
            "unknown id": str(uuid.uuid4()), "malformed": "nobody"}[who]
    p = Problems()
    with app(world.dsn) as conn:
        for table in OWNED + ADMIN_ONLY:
            row = sample_row(world.dsn, world.table(table), me.id)
            try:
                got = _write_matrix(conn, world, table, me.id, user, row, owner_for_insert=user if user else None)
            except psycopg.Error as e:  # a malformed user id may raise on every statement: fail closed
                p.expect(who == "malformed" and e.sqlstate == BAD_UUID, f"{who} on {table}: {e.sqlstate}")
                continue
            p.expect(got["read"] == _tenant_count(world.dsn, table, me.id), f"{who} cannot read all of {table}")
            p.expect(got["insert"] in (PRIVILEGE, BAD_UUID), f"{who} inserted into {table}: {got['insert']}")
            p.expect(got["update"] in (0, BAD_UUID), f"{who} updated {table}: {got['update']}")
            p.expect(got["delete"] in (0, BAD_UUID), f"{who} deleted from {table}: {got['delete']}")
    p.check(minimum=len(OWNED + ADMIN_ONLY))


def test_plain_user_changes_only_own_or_assigned_rows(world: World) -> None:
    me = world.tenants[0]
    u1, u2 = me.user("user", 0), me.user("user", 1)
    p = Problems()
    with app(world.dsn) as conn:
        for table in OWNED:
            t = world.table(table)
            own = _row_owned_by(world.dsn, table, me.id, u1)
            theirs = _row_owned_by(world.dsn, table, me.id, u2)
            got_own = _write_matrix(conn, world, table, me.id, u1, own, owner_for_insert=u1)
            got_theirs = _write_matrix(conn, world, table, me.id, u1, theirs, owner_for_insert=u2)
            p.expect(got_own["insert"] is None, f"user cannot insert an own {table} row: {got_own['insert']}")
            p.expect(got_own["update"] == 1 and got_own["delete"] == 1, f"user cannot change its own {table} row: {got_own}")
            p.expect(got_theirs["insert"] == PRIVILEGE, f"user inserted a {table} row owned by another: {got_theirs['insert']}")
            if table == "activities" and theirs.get("assigned_to") == u1:
                continue
            p.expect(got_theirs["update"] == 0 and got_theirs["delete"] == 0, f"user changed another's {table} row: {got_theirs}")
            with in_tenant(conn, me.id, u1):
                give_away = sqlstate_of(conn, sql.SQL("UPDATE {} SET owner_id = %s WHERE id = %s").format(sql.SQL(t.name)),
                                        (u2, own["id"]))
            p.expect(give_away == PRIVILEGE, f"user gave its {table} row away: {give_away}")
        # activities assigned to the user (owned by someone else) are its to change
        assigned = admin_one(world.dsn, "SELECT id::text FROM activities WHERE tenant_id = %s AND assigned_to = %s AND owner_id <> %s LIMIT 1",
                             (me.id, u1, u1))
        assert assigned is not None, "the seed assigns tasks to users"
        with in_tenant(conn, me.id, u1):
            p.expect(rowcount_or_state(conn, "UPDATE activities SET subject = subject || '!' WHERE id = %s", (assigned,)) == 1,
                     "user cannot update an activity assigned to it")
        for table in ADMIN_ONLY:
            got = _write_matrix(conn, world, table, me.id, u1, sample_row(world.dsn, world.table(table), me.id), owner_for_insert=None)
            p.expect(got["insert"] == PRIVILEGE and got["update"] == 0 and got["delete"] == 0, f"user changed {table}: {got}")
    p.check(minimum=10)


@pytest.mark.parametrize("role", ["manager", "admin"])
def test_managers_change_every_record_admins_also_users_and_fields(world: World, role: str) -> None:
    me = world.tenants[0]
    uid = me.user(role)
    p = Problems()
    with app(world.dsn) as conn:
        for table in OWNED:
            row = _row_owned_by(world.dsn, table, me.id, me.user("user", 1))
            got = _write_matrix(conn, world, table, me.id, uid, row, owner_for_insert=me.user("user", 0))
            p.expect(got["insert"] is None and got["update"] == 1 and got["delete"] == 1, f"{role} on {table}: {got}")
        for table in ADMIN_ONLY:
            row = sample_row(world.dsn, world.table(table), me.id)
            if table == "tenant_users":
                row = dict(admin_one(world.dsn, "SELECT to_jsonb(u) FROM tenant_users u WHERE tenant_id = %s AND id = %s",
                                     (me.id, me.user("viewer"))))
            got = _write_matrix(conn, world, table, me.id, uid, row, owner_for_insert=None)
            if role == "admin":
                p.expect(got["insert"] is None and got["update"] == 1 and got["delete"] == 1, f"admin on {table}: {got}")
            else:
                p.expect(got["insert"] == PRIVILEGE and got["update"] == 0 and got["delete"] == 0, f"manager on {table}: {got}")
    p.check(minimum=5)


def test_disabled_user_cannot_write(built_dsn: str) -> None:
    world = load_world(built_dsn)
    me = world.tenants[0]
    manager = me.user("manager")
    with psycopg.connect(built_dsn, autocommit=True) as admin:
        admin.execute("UPDATE tenant_users SET status = 'disabled' WHERE tenant_id = %s AND id = %s", (me.id, manager))
    with app(built_dsn) as conn:
        for table in OWNED:
            got = _write_matrix(conn, world, table, me.id, manager, sample_row(built_dsn, world.table(table), me.id),
                                owner_for_insert=manager)
            assert got["insert"] == PRIVILEGE and got["update"] == 0 and got["delete"] == 0, (table, got)


def test_app_readonly_cannot_write_at_all(world: World) -> None:
    me = world.tenants[0]
    p = Problems()
    with app(world.dsn, "app_readonly") as conn:
        for t in world.tables:
            row = sample_row(world.dsn, t, me.id)
            with in_tenant(conn, me.id, me.user("admin")):
                n = conn.execute(count_stmt(t)).fetchone()[0]  # type: ignore[index]
                ins = sqlstate_of(conn, *insert_stmt(t, new_version(world, t, row, tenant_id=me.id)))
                cond, key = key_match(world, t, row)
                first = sql.Identifier(world.pk[t.name][0])
                upd = sqlstate_of(conn, sql.SQL("UPDATE {} SET {} = {} WHERE ").format(sql.SQL(t.name), first, first) + cond, key)
                dele = sqlstate_of(conn, sql.SQL("DELETE FROM {} WHERE ").format(sql.SQL(t.name)) + cond, key)
                foreign = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} <> %s").format(
                    sql.SQL(t.name), sql.Identifier(t.tenant_column)), (me.id,)).fetchone()[0]  # type: ignore[index]
            p.expect(n > 0, f"app_readonly cannot read {t.name}")
            p.expect(foreign == 0, f"app_readonly sees {foreign} foreign rows in {t.name}")
            p.expect((ins, upd, dele) == (PRIVILEGE,) * 3, f"app_readonly writes {t.name}: {ins, upd, dele}")
    p.check(minimum=len(world.tables))


def test_app_admin_writes_only_inside_its_tenant(world: World) -> None:
    p = Problems()
    with app(world.dsn, "app_admin") as conn:
        for me in world.tenants:
            other = world.other(me)
            for t in writable(world):
                row = sample_row(world.dsn, t, me.id)
                with in_tenant(conn, me.id):  # no user id: app_admin is not bound by the per-user rules
                    own = sqlstate_of(conn, *insert_stmt(t, new_version(world, t, row, tenant_id=me.id)))
                    bad = sqlstate_of(conn, *insert_stmt(t, new_version(world, t, row, tenant_id=other.id)))
                    theirs = sample_row(world.dsn, t, other.id)
                    dele = rowcount_or_state(conn, sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.SQL(t.name)), (theirs["id"],))
                p.expect(own is None, f"app_admin cannot insert its own {t.name}: {own}")
                p.expect(bad == PRIVILEGE, f"app_admin inserted a {t.name} row for {other.slug}: {bad}")
                p.expect(dele == 0, f"app_admin deleted {other.slug}'s {t.name} row: {dele}")
        with in_tenant(conn, None):
            for t in world.tables:
                p.expect(conn.execute(count_stmt(t)).fetchone()[0] == 0, f"app_admin sees {t.name} with no tenant")  # type: ignore[index]
    p.check(minimum=len(writable(world)))


# --------------------------------------------------------------------------------------------------
# Tenant lookup for an app role (labhelpers.tenants.find_tenant -> lab_find_tenant)
# --------------------------------------------------------------------------------------------------


def test_app_user_can_resolve_a_tenant_slug_but_not_enumerate(world: World) -> None:
    """tenants.find_tenant documents a SECURITY DEFINER lab_find_tenant(text) made by the RLS stage: with it,
    an app role resolves one slug or id (like a login page resolving a subdomain) and nothing more."""
    me = world.tenants[0]
    with app(world.dsn) as conn:
        assert conn.execute("SELECT to_regprocedure('lab_find_tenant(text)') IS NOT NULL").fetchone()[0], (  # type: ignore[index]
            "lab_find_tenant(text) does not exist: app roles cannot resolve a tenant by slug (sql/02 should create it)"
        )
        found = tenants.find_tenant(conn, me.slug)
        assert (str(found.id), found.slug) == (me.id, me.slug)
        assert tenants.find_tenant(conn, me.id).slug == me.slug
        for probe in ("%", "", "' OR true --", "*"):
            assert conn.execute("SELECT count(*) FROM lab_find_tenant(%s)", (probe,)).fetchone()[0] == 0  # type: ignore[index]
        assert conn.execute("SELECT count(*) FROM tenants").fetchone()[0] == 0, "the lookup must not set a tenant"  # type: ignore[index]
