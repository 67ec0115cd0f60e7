"""Every query the lesson shows runs as written against the built schema, AS app_user, and returns rows.

The lesson's placeholder 'tenant-1-uuid' becomes acme's fixed id; its ``$1`` stays ``$1`` (sent with
psycopg's RawCursor, so the benchmark text is byte-for-byte the lesson's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from labhelpers import db, lesson

ACME = lesson.TENANTS["acme"]
GLOBEX = lesson.TENANTS["globex"]

TEST_1, TEST_2, TEST_3 = lesson.TEST_1, lesson.TEST_2, lesson.TEST_3
STEP_4 = "EXPLAIN (ANALYZE, BUFFERS) \n" + lesson.STEP_4
SCENARIO_1 = lesson.with_tenant(lesson.SCENARIO_1, ACME)
SCENARIO_2 = lesson.SCENARIO_2
SCENARIO_3 = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)\n" + lesson.SCENARIO_3


@pytest.fixture
def app(shared_built_dsn: str) -> Iterator[psycopg.Connection]:
    """A real app_user login (not SET ROLE) with acme as the session's tenant."""
    with db.connect(shared_built_dsn, role="app_user", autocommit=True) as conn:
        who = conn.execute(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert who == ("app_user", False, False), "isolation claims need a role that RLS applies to"
        conn.execute(f"SET app.current_tenant = '{ACME}'")  # the lesson's Step 2, as written
        yield conn


def raw(conn: psycopg.Connection, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.RawCursor(conn) as cur:
        cur.execute(query, params or None)
        return cur.fetchall()


def relations(plan: Any) -> set[str]:
    """Every "Relation Name" in a JSON plan."""
    found: set[str] = set()
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            found.add(plan["Relation Name"])
        for v in plan.values():
            found |= relations(v)
    elif isinstance(plan, list):
        for v in plan:
            found |= relations(v)
    return found


def test_step_2_select_star_shows_only_the_tenant(app: psycopg.Connection) -> None:
    rows = app.execute("SELECT * FROM contacts;").fetchall()
    assert rows
    tenant_col = [c.name for c in app.execute("SELECT * FROM contacts LIMIT 0").description].index("tenant_id")
    assert {str(r[tenant_col]) for r in rows} == {ACME}


def test_benchmark_1_contact_search(app: psycopg.Connection) -> None:
    rows = raw(app, TEST_1, ACME)
    assert 0 < len(rows) <= 20


def test_benchmark_2_lead_pipeline_has_every_stage(app: psycopg.Connection) -> None:
    rows = raw(app, TEST_2, ACME)
    stages = {r[0]: (r[1], r[2]) for r in rows}
    assert set(stages) == {"new", "qualified", "proposal", "negotiation", "won", "lost"}
    assert all(count > 0 and total > 0 for count, total in stages.values())


def test_benchmark_3_activity_timeline(app: psycopg.Connection) -> None:
    rows = raw(app, TEST_3, ACME)
    assert len(rows) == 50
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)


def test_benchmarks_with_another_tenants_id_return_nothing(app: psycopg.Connection) -> None:
    assert raw(app, TEST_1, GLOBEX) == []
    assert raw(app, TEST_2, GLOBEX) == []


def test_step_4_explain_prunes_to_january_2024(app: psycopg.Connection) -> None:
    plan_text = "\n".join(r[0] for r in app.execute(STEP_4).fetchall())
    scanned = set(re.findall(r" on (activities\w*)", plan_text))
    assert scanned and all(name.startswith("activities_2024_01") for name in scanned), plan_text
    rows = app.execute(STEP_4.replace("EXPLAIN (ANALYZE, BUFFERS)", "")).fetchall()
    assert rows


def test_scenario_1_isolation(app: psycopg.Connection) -> None:
    assert app.execute(SCENARIO_1).fetchall() == [(0,)]
    # The same query with no tenant set: fail closed, no error.
    app.execute("RESET app.current_tenant")
    assert app.execute("SELECT COUNT(*) FROM contacts").fetchone() == (0,)


def test_scenario_2_custom_fields_count(app: psycopg.Connection) -> None:
    (count,) = app.execute(SCENARIO_2).fetchone()  # type: ignore[misc]
    assert count > 0
    assert app.execute("SELECT COUNT(*) FROM contacts WHERE cf_status = 'active' AND cf_priority = 'high'").fetchone() == (count,)


def test_scenario_3_partition_pruning(app: psycopg.Connection) -> None:
    (doc,) = app.execute(SCENARIO_3).fetchone()  # type: ignore[misc]
    plan = doc if isinstance(doc, list) else json.loads(doc)
    scanned = relations(plan)
    assert scanned and all(name.startswith("activities_2024_01") for name in scanned), scanned
    (count,) = app.execute(SCENARIO_3.split("\n", 1)[1]).fetchone()  # type: ignore[misc]
    assert count > 0


def test_the_jsonb_and_time_predicates_can_use_indexes_under_rls(app: psycopg.Connection) -> None:
    """PITFALLS 11: as app_user, @> and CURRENT_DATE - interval become index conditions (04's decision)."""
    # The seed is small, so plain scans are cheaper; switch them off to see what is POSSIBLE. Without
    # LEAKPROOF, @> and the cross-type >= could not appear in an Index Cond at all, whatever the costs.
    app.execute("SET enable_seqscan = off")
    app.execute("SET enable_indexscan = off")
    try:
        plan = "\n".join(r[0] for r in app.execute("EXPLAIN " + SCENARIO_2).fetchall())
        assert "Index Cond: (custom_fields @>" in plan, plan
        plan = "\n".join(r[0] for r in raw(app, "EXPLAIN " + TEST_2, ACME))
        conds = [line for line in plan.splitlines() if "Index Cond" in line]
        assert any("created_at >=" in line for line in conds), plan
    finally:
        app.execute("RESET enable_seqscan")
        app.execute("RESET enable_indexscan")
