"""lead_pipeline_hourly (sql/course-rollups.sql section 1): the rollup the triggers keep equal to leads, whatever is written.

Every write here is made as app_user (a real login, under RLS, as an admin of the tenant), the way the
application writes; after each statement the administrator checks ``lab_lead_pipeline_drift()`` (every
bucket where the rollup and a fresh GROUP BY over leads disagree) is empty, and that Test 2 answered from
the rollup equals the lesson's verbatim query.
"""

from __future__ import annotations

import random
import threading
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isolation_helpers import World, app, in_tenant, load_world
from labhelpers import bench, lesson

PRIVILEGE = "42501"
ROLLUP_TEST2 = next(b.sql for b in bench.BENCHMARKS if b.key == "test2_rollup")


def drift(dsn: str) -> list[Any]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT * FROM lab_lead_pipeline_drift()").fetchall()


def answers_of_test2(conn: psycopg.Connection[Any], tenant_id: str) -> tuple[list[Any], list[Any]]:
    """Test 2 as the lesson writes it and from the rollup, as the connected role (sorted by stage)."""
    cur = psycopg.RawCursor(conn)   # the lesson's $1 placeholders
    verbatim = sorted(cur.execute(lesson.TEST_2, (tenant_id,)).fetchall())
    rollup = sorted(cur.execute(ROLLUP_TEST2, (tenant_id,)).fetchall())
    return verbatim, rollup


def insert_lead(conn: psycopg.Connection[Any], tenant_id: str, stage: str, value: str, created: str) -> str:
    """Insert one lead (created at the SQL expression ``created``); return its id.

    Like every writer, it writes value twice: the column (which the rollup sums) and custom_fields->'value'
    (which the lesson's Test 2 sums); a CHECK keeps them equal.
    """
    row = conn.execute(
        f"""INSERT INTO leads (tenant_id, title, stage, value, custom_fields, closed_at, created_at)
            VALUES (%(t)s, 'rollup test', %(s)s, %(v)s, jsonb_build_object('value', %(v)s),
                    CASE WHEN %(s)s::text IN ('won', 'lost') THEN now() END, {created})
            RETURNING id::text""",
        {"t": tenant_id, "s": stage, "v": Decimal(value)},
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def world(built_dsn: str) -> World:
    return load_world(built_dsn)


def test_the_build_fills_the_rollup_and_test2_agrees(world: World) -> None:
    assert drift(world.dsn) == []
    with app(world.dsn) as conn:
        for t in world.tenants:
            with in_tenant(conn, t.id):
                verbatim, rollup = answers_of_test2(conn, t.id)
                assert rollup == verbatim, t.slug
    with psycopg.connect(world.dsn) as admin:
        assert admin.execute("SELECT count(*) FROM lead_pipeline_hourly").fetchone()[0] > 0  # type: ignore[index]
        assert admin.execute("SELECT count(*) FROM lead_pipeline_hourly WHERE lead_count <= 0").fetchone()[0] == 0  # type: ignore[index]


def test_every_kind_of_write_keeps_the_rollup_exact(world: World) -> None:
    me = world.tenants[0]
    window = "CURRENT_DATE - INTERVAL '30 days'"   # Test 2's bound: local midnight, an hour boundary
    with app(world.dsn) as conn:
        conn.autocommit = False
        conn.execute("SELECT set_config('app.current_tenant', %s, false), set_config('app.current_user_id', %s, false)",
                     (me.id, me.user("admin")))
        steps: list[tuple[str, Any]] = [
            ("insert inside the window", lambda: insert_lead(conn, me.id, "proposal", "100.50", "now() - interval '2 days'")),
            ("insert exactly on the bound", lambda: insert_lead(conn, me.id, "new", "7", f"({window})::timestamptz")),
            ("insert just before the bound", lambda: insert_lead(conn, me.id, "new", "9", f"({window})::timestamptz - interval '1 microsecond'")),
            ("insert two in one bucket", lambda: [insert_lead(conn, me.id, "qualified", v, "date_trunc('hour', now()) + interval '1 minute'") for v in ("1", "2")]),
            ("move stage", lambda: conn.execute("UPDATE leads SET stage = 'won', closed_at = now() WHERE title = 'rollup test' AND stage = 'proposal'")),
            ("change value", lambda: conn.execute("UPDATE leads SET value = value + 1000, custom_fields = custom_fields || jsonb_build_object('value', value + 1000) "
                "WHERE title = 'rollup test' AND stage = 'qualified'")),
            ("move across hours", lambda: conn.execute("UPDATE leads SET created_at = created_at - interval '3 hours' WHERE title = 'rollup test' AND stage = 'won'")),
            ("update nothing relevant", lambda: conn.execute("UPDATE leads SET title = 'rollup test' WHERE title = 'rollup test'")),
            ("bulk update of the tenant", lambda: conn.execute(
                "UPDATE leads SET value = value * 2, custom_fields = custom_fields || jsonb_build_object('value', value * 2) "
                "WHERE stage = 'negotiation'")),
            ("delete one", lambda: conn.execute("DELETE FROM leads WHERE title = 'rollup test' AND value = 7")),
            ("delete a whole stage", lambda: conn.execute("DELETE FROM leads WHERE stage = 'lost'")),
        ]
        for name, step in steps:
            step()
            conn.commit()
            assert drift(world.dsn) == [], f"after '{name}'"
            verbatim, rollup = answers_of_test2(conn, me.id)
            assert rollup == verbatim, f"Test 2 after '{name}'"
            conn.commit()


def test_emptied_buckets_disappear(world: World) -> None:
    """Deleting every lead of a tenant leaves no rollup rows for it (no zero-count stages in Test 2)."""
    me = world.tenants[0]
    with app(world.dsn) as conn:
        conn.execute("SELECT set_config('app.current_tenant', %s, false), set_config('app.current_user_id', %s, false)",
                     (me.id, me.user("admin")))
        assert conn.execute("DELETE FROM leads").rowcount > 0
        assert conn.execute("SELECT count(*) FROM lead_pipeline_hourly").fetchone()[0] == 0  # type: ignore[index]
    assert drift(world.dsn) == []


def test_cascades_and_truncate_reach_the_rollup(world: World) -> None:
    gone = world.tenants[-1]
    with psycopg.connect(world.dsn, autocommit=True) as admin:
        admin.execute("DELETE FROM tenants WHERE id = %s", (gone.id,))   # cascades to its leads
        assert admin.execute("SELECT count(*) FROM lead_pipeline_hourly WHERE tenant_id = %s", (gone.id,)).fetchone()[0] == 0  # type: ignore[index]
        assert drift(world.dsn) == []
        admin.execute("TRUNCATE leads CASCADE")
        assert admin.execute("SELECT count(*) FROM lead_pipeline_hourly").fetchone()[0] == 0  # type: ignore[index]
        assert drift(world.dsn) == []


@pytest.mark.parametrize("role", ["app_user", "app_readonly", "app_admin"])
def test_app_roles_read_the_rollup_of_their_tenant_but_never_write_it(world: World, role: str) -> None:
    me, other = world.tenants[0], world.tenants[1]
    with app(world.dsn, role) as conn:
        assert conn.execute("SELECT count(*) FROM lead_pipeline_hourly").fetchone()[0] == 0, "no tenant, no rows"  # type: ignore[index]
        with in_tenant(conn, me.id, me.user("admin")):
            tenants_seen = conn.execute("SELECT DISTINCT tenant_id::text FROM lead_pipeline_hourly").fetchall()
            assert tenants_seen == [(me.id,)]
            for stmt in (
                "INSERT INTO lead_pipeline_hourly VALUES (%(t)s, date_trunc('hour', now(), 'UTC'), 'won', 1, 1)",
                "UPDATE lead_pipeline_hourly SET lead_count = lead_count + 1 WHERE tenant_id = %(t)s",
                "DELETE FROM lead_pipeline_hourly WHERE tenant_id = %(t)s",
            ):
                for tenant in (me.id, other.id):
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        with conn.transaction():
                            conn.execute(stmt, {"t": tenant})


def test_concurrent_writers_to_one_bucket_both_count(world: World) -> None:
    """Two transactions adding a lead to the same tenant, hour and stage: the second waits, then adds."""
    me = world.tenants[0]
    with app(world.dsn) as a, app(world.dsn) as b:
        when = "timestamptz '2026-01-15 10:30:00+00'"   # one fixed bucket (now() could cross an hour)
        bucket = "FROM lead_pipeline_hourly WHERE stage = 'new' AND hour = '2026-01-15 10:00:00+00'"
        for c in (a, b):
            c.autocommit = False
            c.execute("SELECT set_config('app.current_tenant', %s, false), set_config('app.current_user_id', %s, false)",
                      (me.id, me.user("admin")))
            c.commit()
        before = a.execute(f"SELECT coalesce(sum(lead_count), 0) {bucket}").fetchone()[0]  # type: ignore[index]
        a.commit()
        insert_lead(a, me.id, "new", "5", when)                  # a holds the bucket's row lock
        done = threading.Event()

        def second() -> None:
            insert_lead(b, me.id, "new", "6", when)
            b.commit()
            done.set()

        th = threading.Thread(target=second)
        th.start()
        assert not done.wait(1.0), "the second writer should wait for the first one's bucket"
        a.commit()
        th.join(30)
        assert done.is_set()
        after = a.execute(f"SELECT sum(lead_count) {bucket}").fetchone()[0]  # type: ignore[index]
        assert after == before + 2
    assert drift(world.dsn) == []


# One database for every example: the invariant (no drift) holds in any state, so no reset is needed.
STAGES = ("new", "qualified", "proposal", "negotiation", "won", "lost")
ops = st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(STAGES), st.integers(0, 24 * 40), st.integers(1, 3)),
    st.tuples(st.just("restage"), st.sampled_from(STAGES), st.sampled_from(STAGES), st.integers(1, 5)),
    st.tuples(st.just("shift"), st.sampled_from(STAGES), st.integers(-48, 48), st.integers(1, 5)),
    st.tuples(st.just("revalue"), st.sampled_from(STAGES), st.integers(0, 10_000), st.integers(1, 5)),
    st.tuples(st.just("delete"), st.sampled_from(STAGES), st.just(0), st.integers(1, 5)),
)


@pytest.fixture(scope="module")
def shared_world(shared_built_dsn: str) -> World:
    return load_world(shared_built_dsn)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(ops, min_size=1, max_size=8), seed=st.integers(0, 2**16))
def test_any_sequence_of_writes_keeps_the_rollup_exact(shared_world: World, sequence: list[Any], seed: int) -> None:
    rng = random.Random(seed)
    me = shared_world.tenants[rng.randrange(len(shared_world.tenants))]
    pick = "id IN (SELECT id FROM leads WHERE stage = %(s)s ORDER BY id LIMIT %(n)s)"
    with app(shared_world.dsn) as conn:
        with conn.transaction():   # one transaction: statements see each other's rollup changes
            conn.execute("SELECT set_config('app.current_tenant', %s, true), set_config('app.current_user_id', %s, true)",
                          (me.id, me.user("admin")))
            for op, stage, amount, n in sequence:
                args = {"s": stage, "n": n, "a": amount, "t": me.id}
                if op == "insert":
                    for _ in range(n):
                        insert_lead(conn, me.id, stage, str(rng.randrange(0, 10**6)), f"now() - interval '{amount} hours'")
                elif op == "restage":
                    args["to"] = amount   # the stage to move to
                    conn.execute(f"UPDATE leads SET stage = %(to)s, closed_at = CASE WHEN %(to)s IN ('won', 'lost') THEN now() END "
                                 f"WHERE {pick}", args)
                elif op == "shift":
                    conn.execute(f"UPDATE leads SET created_at = created_at + %(a)s * interval '1 hour' WHERE {pick}", args)
                elif op == "revalue":
                    conn.execute(f"UPDATE leads SET value = %(a)s, custom_fields = custom_fields || jsonb_build_object('value', %(a)s::numeric) "
                                 f"WHERE {pick}", args)
                else:
                    conn.execute(f"DELETE FROM leads WHERE {pick}", args)
            verbatim, rollup = answers_of_test2(conn, me.id)
            assert rollup == verbatim, sequence
    assert drift(shared_world.dsn) == [], sequence
