"""labhelpers.explain: golden plans captured from PostgreSQL 18, each with a partial expectation.

The goldens (``tests/data/plans/<name>.json``) are real EXPLAIN output written by
``tests/data/plans/capture.py``; ``<name>.expect.json`` lists the derived figures that matter for that
shape (pev2's approach: a raw plan and a partial expectation). The live tests run `explain()` on the
session's test server (``fresh_dsn`` from conftest.py).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from labhelpers.errors import LabError
from labhelpers.explain import PRUNING_STATUSES, Plan, explain

PLANS = Path(__file__).parent / "data" / "plans"
NAMES = sorted(p.name[: -len(".expect.json")] for p in PLANS.glob("*.expect.json"))
CATALOG: dict[str, list[str]] = json.loads((PLANS / "catalog.json").read_text())


def load(name: str, **kw: Any) -> Plan:
    return Plan.from_json((PLANS / f"{name}.json").read_text(), partitions=kw.pop("partitions", CATALOG), **kw)


def check_value(actual: Any, expected: Any, where: str) -> None:
    if isinstance(expected, dict) and "gt" in expected:
        assert actual is not None and actual > expected["gt"], f"{where}: {actual!r} is not > {expected['gt']}"
    elif expected is None:
        assert actual is None or actual != actual, f"{where}: expected nothing, got {actual!r}"  # None or NaN
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-3), f"{where}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_every_golden_has_an_expectation() -> None:
    goldens = {p.stem for p in PLANS.glob("*.json")} - {"catalog"} - {p.stem for p in PLANS.glob("*.expect.json")}
    goldens = {g for g in goldens if not g.endswith(".expect")}
    assert goldens == set(NAMES)
    assert len(NAMES) >= 12


@pytest.mark.parametrize("name", NAMES)
def test_golden_plan(name: str) -> None:
    exp = json.loads((PLANS / f"{name}.expect.json").read_text())
    plan = load(name)
    df = plan.nodes
    assert plan.analyzed is exp["analyzed"]
    if "node_count" in exp:
        assert len(df) == exp["node_count"]
    for nid, fields in exp.get("nodes", {}).items():
        row = df.loc[int(nid)]
        for col, want in fields.items():
            check_value(row[col], want, f"{name} node {nid} {col}")
    if exp.get("exclusive_sum_is_root"):
        # every millisecond is charged to exactly one node: nothing lost, nothing counted twice
        assert df["exclusive_ms"].sum() == pytest.approx(plan.root.inclusive_ms, abs=0.01)
    if "slowest_node" in exp:
        slow = plan.slowest_node()
        assert (None if slow is None else int(slow["id"])) == exp["slowest_node"]
    if "worst_misestimate" in exp:
        worst = plan.worst_misestimate()
        if exp["worst_misestimate"] is None:
            assert worst is None
        else:
            assert worst is not None
            if "id" in exp["worst_misestimate"]:
                assert int(worst["id"]) == exp["worst_misestimate"]["id"]
            assert worst["misestimate_direction"] == exp["worst_misestimate"]["direction"]
    if "indexes_used" in exp:
        assert plan.indexes_used == exp["indexes_used"]
    if "seq_scans" in exp:
        assert sorted(set(plan.seq_scans()["relation"])) == exp["seq_scans"]
    if "spills" in exp:
        assert [int(i) for i in plan.spills()["id"]] == exp["spills"]
    if "pruning" in exp:
        summary = plan.pruning_summary()
        assert sorted(summary.index) == sorted(exp["pruning"])
        for table, counts in exp["pruning"].items():
            for status in [*PRUNING_STATUSES, "total"]:
                assert summary.loc[table, status] == counts.get(status, 0), f"{name} {table} {status}"
    if "triggers" in exp:
        assert len(plan.triggers) == len(exp["triggers"])
        for got, prefix in zip(plan.triggers, exp["triggers"]):
            assert got["name"].startswith(prefix)
            assert got["calls"] > 0 and got["time_ms"] > 0
    assert plan.summary()  # never fails on any shape
    assert not plan.table().empty


def test_exclusive_time_is_never_negative_and_buffers_add_up() -> None:
    for name in NAMES:
        plan = load(name)
        df = plan.nodes
        if plan.analyzed:
            assert (df["exclusive_ms"] >= 0).all(), name
        if df["shared_hit"].notna().any() and plan.analyzed and name != "insert_trigger":
            # exclusive shared hits over all nodes = the top node's inclusive ones (no double counting)
            assert df["shared_hit_excl"].sum() == pytest.approx(df.loc[0, "shared_hit"], abs=2), name


def test_partitions_lists_each_partition_once_in_bound_order() -> None:
    parts = load("pruning_generic_plan").partitions()
    assert list(parts["partition"]) == CATALOG["activities"]
    assert set(parts.loc[parts["status"] == "scanned", "partition"]) == {"activities_2026_05", "activities_2026_06"}


def test_partitions_without_catalog_know_only_what_explain_shows() -> None:
    plan = load("pruning_now", partitions={})
    parts = plan.partitions()
    assert (parts["status"] == "pruned at executor start").sum() == 12  # the count, not the names
    assert (parts["status"] == "scanned").sum() == 1
    # plan-time pruning leaves no trace without the catalog
    assert set(load("pruning_plan_time", partitions={}).partitions()["status"]) == {"scanned"}


def test_partitions_accepts_a_flat_list() -> None:
    plan = load("pruning_plan_time", partitions={})
    summary = plan.pruning_summary(CATALOG["activities"])
    assert summary.loc["activities", "pruned at plan time"] == 11


def test_both_kinds_of_pruning_on_one_table_are_not_guessed() -> None:
    plan = load("pruning_now", partitions={})
    # pretend the table had 3 more partitions, pruned by the planner: which went when is unknown
    leaves = CATALOG["activities"] + ["activities_x1", "activities_x2", "activities_x3"]
    summary = plan.pruning_summary({"activities": leaves})
    assert summary.loc["activities", "pruned (plan time or executor start)"] == 15
    assert summary.loc["activities", "scanned"] == 1


def test_from_json_reads_psql_output_and_objects() -> None:
    raw = json.loads((PLANS / "nested_loop.json").read_text())
    text = json.dumps(raw, indent=2)
    psql = "                QUERY PLAN\n-----------------------------------\n" + "\n".join(
        f" {line} +" for line in text.splitlines()
    ) + "\n(1 row)\n"
    for source in (raw, raw[0], text, text.encode(), psql):
        plan = Plan.from_json(source)
        assert plan.nodes.loc[2, "loops"] == 50
    assert json.loads(plan.to_json()) == raw


@pytest.mark.parametrize("bad", ["", "not json", "[]", '{"Plan": 3}', "[1, 2]", '{"x": 1}'])
def test_from_json_rejects_non_plans_with_a_lab_error(bad: str) -> None:
    with pytest.raises(LabError):
        Plan.from_json(bad)


def test_node_types_read_like_psql() -> None:
    types = set()
    for name in NAMES:
        types |= set(load(name).nodes["node_type"])
    assert {"Parallel Seq Scan", "Partial HashAggregate", "Finalize GroupAggregate", "HashAggregate",
            "Insert", "Delete", "Gather Merge"} <= types


# -------------------------------------------------------------------------------------------- live
def test_explain_live_under_the_callers_tenant_context(fresh_dsn: str) -> None:
    import psycopg

    t1, t2 = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute(
            """
            CREATE TABLE events (tenant_id uuid NOT NULL, at date NOT NULL, n int) PARTITION BY RANGE (at);
            CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
            CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
            CREATE TABLE events_3 PARTITION OF events FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
            """
        )
        conn.execute(
            "INSERT INTO events SELECT CASE WHEN g %% 2 = 0 THEN %s::uuid ELSE %s::uuid END,"
            " date '2024-01-01' + (g %% 90), g FROM generate_series(1, 3000) g",
            (t1, t2),
        )
        conn.execute("SELECT set_config('app.current_tenant', %s, false)", (t1,))
        conn.execute("SET enable_seqscan = off")
        who = conn.execute("SELECT current_user").fetchone()
        plan = explain(
            conn,
            "SELECT count(*) FROM events WHERE tenant_id = current_setting('app.current_tenant')::uuid"
            " AND at >= %s AND at < %s;",
            ("2024-02-01", "2024-03-01"),
        )
        # ran in the caller's session: same role, its tenant setting applied, its settings reported
        assert conn.execute("SELECT current_user").fetchone() == who
        assert plan.analyzed and plan.execution_ms is not None
        assert plan.settings.get("enable_seqscan") == "off"
        scan = plan.nodes[plan.nodes["relation"] == "events_2"].iloc[0]
        row = conn.execute("SELECT count(*) FROM events_2 WHERE tenant_id = %s", (t1,)).fetchone()
        assert row is not None and scan["actual_rows_total"] == pytest.approx(row[0])
        assert plan.catalog_partitions == {"events": ["events_1", "events_2", "events_3"]}
        summary = plan.pruning_summary()
        assert summary.loc["events", "scanned"] == 1
        assert summary.loc["events", "pruned at plan time"] == 2

        # without ANALYZE a DELETE does not run; with rollback=True an INSERT is undone
        before = conn.execute("SELECT count(*) FROM events").fetchone()
        assert not explain(conn, "DELETE FROM events", analyze=False).analyzed
        ins = explain(conn, "INSERT INTO events VALUES (%s, '2024-01-05', 1)", (t1,), rollback=True)
        assert ins.nodes.loc[0, "node_type"] == "Insert"
        assert conn.execute("SELECT count(*) FROM events").fetchone() == before


def test_explain_live_rejects_an_empty_query(fresh_dsn: str) -> None:
    import psycopg

    with psycopg.connect(fresh_dsn) as conn, pytest.raises(LabError):
        explain(conn, "  ;  ")


def test_cli_explain_prints_the_node_table_and_writes_the_picture(fresh_dsn: str, tmp_path: Path) -> None:
    import psycopg
    from click.testing import CliRunner

    from labhelpers.cli import cli

    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 20000) g")
    png = tmp_path / "plan.png"
    result = CliRunner().invoke(cli, ["explain", "SELECT count(*) FROM t WHERE id > 10", "--dsn", fresh_dsn,
                                      "--png", str(png)])
    assert result.exit_code == 0, result.output
    assert "Seq Scan on t" in result.output and "excl ms" in result.output
    assert "large sequential scans: t (20,000 rows)" in result.output
    assert png.stat().st_size > 10_000
    # a write is explained, not applied
    result = CliRunner().invoke(cli, ["explain", "DELETE FROM t", "--dsn", fresh_dsn])
    assert result.exit_code == 0, result.output
    with psycopg.connect(fresh_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (20000,)
    bad = CliRunner().invoke(cli, ["explain", "SELEC 1", "--dsn", fresh_dsn])
    assert bad.exit_code == 1 and "PostgreSQL error" in bad.output
