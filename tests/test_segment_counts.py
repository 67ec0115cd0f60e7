"""contact_segment_counts (sql/course-rollups.sql section 2): Scenario 2's count, kept equal to contacts by triggers.

Every write is made as app_user (a real login, under RLS, as an admin of the tenant); after each one
the administrator checks ``lab_contact_segments_drift()`` (every segment where the rollup and a fresh
GROUP BY over contacts disagree) is empty, and that Scenario 2 from the rollup equals the lesson's
verbatim query.
"""

from __future__ import annotations

import random
from typing import Any

import psycopg
import pytest

from isolation_helpers import World, app, in_tenant, load_world
from labhelpers import bench, lesson

ROLLUP_SCENARIO2 = next(b.sql for b in bench.BENCHMARKS if b.key == "scenario2_rollup")
STATUSES = ("active", "inactive", "prospect", "churned")
PRIORITIES = ("low", "medium", "high", "urgent")


def drift(dsn: str) -> list[Any]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT * FROM lab_contact_segments_drift()").fetchall()


def scenario2(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """Scenario 2 as the lesson writes it and from the rollup, as the connected role and tenant."""
    verbatim = conn.execute(lesson.SCENARIO_2).fetchone()[0]  # type: ignore[index]
    rollup = conn.execute(ROLLUP_SCENARIO2).fetchone()[0]  # type: ignore[index]
    return verbatim, rollup


def as_admin_of(conn: psycopg.Connection[Any], world: World, n: int = 0) -> Any:
    me = world.tenants[n]
    conn.execute("SELECT set_config('app.current_tenant', %s, false), set_config('app.current_user_id', %s, false)",
                 (me.id, me.user("admin")))
    return me


def insert_contact(conn: psycopg.Connection[Any], fields: dict[str, str], name: str = "segment test") -> None:
    conn.execute("INSERT INTO contacts (tenant_id, last_name, custom_fields) VALUES "
                 "(NULLIF(current_setting('app.current_tenant'), '')::uuid, %s, %s::jsonb)",
                 (name, psycopg.types.json.Jsonb(fields)))


@pytest.fixture
def world(built_dsn: str) -> World:
    return load_world(built_dsn)


def test_the_build_fills_the_rollup_and_scenario2_agrees(world: World) -> None:
    assert drift(world.dsn) == []
    with app(world.dsn) as conn:
        for t in world.tenants:
            with in_tenant(conn, t.id):
                verbatim, rollup = scenario2(conn)
                assert rollup == verbatim, t.slug
    with psycopg.connect(world.dsn) as admin:
        total, contacts = admin.execute(
            "SELECT (SELECT sum(contact_count) FROM contact_segment_counts), (SELECT count(*) FROM contacts)").fetchone()  # type: ignore[misc]
        assert total == contacts > 0
        assert admin.execute("SELECT count(*) FROM contact_segment_counts WHERE contact_count <= 0").fetchone()[0] == 0  # type: ignore[index]


def test_every_kind_of_write_keeps_the_rollup_exact(world: World) -> None:
    with app(world.dsn) as conn:
        as_admin_of(conn, world)
        steps: list[tuple[str, Any]] = [
            ("insert a Scenario 2 match", lambda: insert_contact(conn, {"status": "active", "priority": "high"})),
            ("insert without the fields", lambda: insert_contact(conn, {})),
            ("insert with one field", lambda: insert_contact(conn, {"priority": "high"})),
            ("move into the segment", lambda: conn.execute(
                "UPDATE contacts SET custom_fields = custom_fields || '{\"status\": \"active\", \"priority\": \"high\"}'"
                " WHERE last_name = 'segment test' AND custom_fields = '{}'")),
            ("move out of the segment", lambda: conn.execute(
                "UPDATE contacts SET custom_fields = custom_fields || '{\"priority\": \"low\"}'"
                " WHERE id IN (SELECT id FROM contacts WHERE cf_status = 'active' AND cf_priority = 'high' LIMIT 3)")),
            ("remove a field", lambda: conn.execute(
                "UPDATE contacts SET custom_fields = custom_fields - 'status' WHERE id IN"
                " (SELECT id FROM contacts WHERE cf_status = 'inactive' ORDER BY id LIMIT 2)")),
            ("update nothing relevant", lambda: conn.execute("UPDATE contacts SET first_name = 'Segment'")),
            ("delete one", lambda: conn.execute(
                "DELETE FROM contacts WHERE id = (SELECT id FROM contacts WHERE last_name = 'segment test' LIMIT 1)")),
            ("delete a whole segment", lambda: conn.execute("DELETE FROM contacts WHERE cf_status = 'prospect'")),
        ]
        for name, step in steps:
            step()
            assert drift(world.dsn) == [], f"after '{name}'"
            verbatim, rollup = scenario2(conn)
            assert rollup == verbatim, f"Scenario 2 after '{name}'"


def test_emptied_segments_disappear_and_cascades_and_truncate_reach_the_rollup(world: World) -> None:
    with app(world.dsn) as conn:
        me = as_admin_of(conn, world)
        assert conn.execute("DELETE FROM contacts").rowcount > 0
        assert conn.execute("SELECT count(*) FROM contact_segment_counts").fetchone()[0] == 0  # type: ignore[index]
    gone = world.tenants[-1]
    with psycopg.connect(world.dsn, autocommit=True) as admin:
        assert admin.execute("SELECT count(*) FROM contact_segment_counts WHERE tenant_id = %s", (me.id,)).fetchone()[0] == 0  # type: ignore[index]
        admin.execute("DELETE FROM tenants WHERE id = %s", (gone.id,))   # cascades to its contacts
        assert admin.execute("SELECT count(*) FROM contact_segment_counts WHERE tenant_id = %s", (gone.id,)).fetchone()[0] == 0  # type: ignore[index]
        assert drift(world.dsn) == []
        admin.execute("TRUNCATE contacts CASCADE")
        assert admin.execute("SELECT count(*) FROM contact_segment_counts").fetchone()[0] == 0  # type: ignore[index]
        assert drift(world.dsn) == []


@pytest.mark.parametrize("role", ["app_user", "app_readonly", "app_admin"])
def test_app_roles_read_the_counts_of_their_tenant_but_never_write_them(world: World, role: str) -> None:
    me, other = world.tenants[0], world.tenants[1]
    with app(world.dsn, role) as conn:
        assert conn.execute("SELECT count(*) FROM contact_segment_counts").fetchone()[0] == 0, "no tenant, no rows"  # type: ignore[index]
        with in_tenant(conn, me.id, me.user("admin")):
            assert conn.execute("SELECT DISTINCT tenant_id::text FROM contact_segment_counts").fetchall() == [(me.id,)]
            for stmt in (
                "INSERT INTO contact_segment_counts VALUES (%(t)s, 'active', 'high', 1000)",
                "UPDATE contact_segment_counts SET contact_count = contact_count + 1 WHERE tenant_id = %(t)s",
                "DELETE FROM contact_segment_counts WHERE tenant_id = %(t)s",
            ):
                for tenant in (me.id, other.id):
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        with conn.transaction():
                            conn.execute(stmt, {"t": tenant})


@pytest.mark.parametrize("seed", range(6))
def test_random_sequences_of_writes_keep_the_rollup_exact(world: World, seed: int) -> None:
    """Random inserts, re-segmenting updates and deletes, several per transaction (each sees the others)."""
    rng = random.Random(seed)
    with app(world.dsn) as conn:
        as_admin_of(conn, world, rng.randrange(len(world.tenants)))
        with conn.transaction():
            for _ in range(12):
                op = rng.choice(("insert", "update", "delete"))
                status, priority = rng.choice(STATUSES + ("",)), rng.choice(PRIORITIES + ("",))
                fields = {k: v for k, v in (("status", status), ("priority", priority)) if v}
                n = rng.randint(1, 5)
                pick = f"id IN (SELECT id FROM contacts ORDER BY md5(id::text || '{seed}') LIMIT {n})"
                if op == "insert":
                    for _ in range(n):
                        insert_contact(conn, fields)
                elif op == "update":
                    conn.execute(f"UPDATE contacts SET custom_fields = (custom_fields - 'status' - 'priority') || %s::jsonb"
                                 f" WHERE {pick}", (psycopg.types.json.Jsonb(fields),))
                else:
                    conn.execute(f"DELETE FROM contacts WHERE {pick}")
            verbatim, rollup = scenario2(conn)
            assert rollup == verbatim
    assert drift(world.dsn) == []
