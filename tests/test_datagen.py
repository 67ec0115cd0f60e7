"""The data generator: shapes, determinism, realism, idempotence, interruption safety (real PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from labhelpers import datagen, db, stages
from labhelpers.cli import cli
from labhelpers.errors import LabError

ANCHOR = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
GEN = datagen.GENERATED_ID_MARK


def built(dsn: str) -> str:
    """Build the whole schema (stages 01..05 and the scenario tenants) in ``dsn``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        stages.build(conn)
    return dsn


@pytest.fixture
def schema_dsn(fresh_dsn: str) -> str:
    return built(fresh_dsn)


@pytest.fixture
def other_dsn(server_dsn: str) -> Iterator[str]:
    """A second fresh database with the schema (for comparing two loads)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    db.create_database(server_dsn, name)
    dsn = db.with_dbname(server_dsn, name)
    yield built(dsn)
    db.drop_database(server_dsn, name)


def count(conn: psycopg.Connection, query: str, *args: object) -> int:
    return conn.execute(query, args or None).fetchone()[0]  # type: ignore[index]


def rollup_drift(conn: psycopg.Connection) -> int:
    """Rows where a trigger-kept rollup (leads' pipeline, contacts' segments) disagrees with its table."""
    return count(conn, "SELECT (SELECT count(*) FROM lab_lead_pipeline_drift())"
                       " + (SELECT count(*) FROM lab_contact_segments_drift())")


def schema_objects(conn: psycopg.Connection) -> set[tuple[str, str]]:
    """Names and definitions of the keys and indexes of the tenant tables (to compare before/after)."""
    rows = conn.execute(
        """
        SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
         WHERE conrelid IN ('contacts'::regclass, 'leads'::regclass, 'activities'::regclass, 'tenant_users'::regclass)
        UNION ALL
        SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
         WHERE i.indrelid IN ('contacts'::regclass, 'leads'::regclass, 'activities'::regclass, 'tenant_users'::regclass)
        """
    ).fetchall()
    return set(rows)


# --------------------------------------------------------------------------------------------------
# Shapes (no database)
# --------------------------------------------------------------------------------------------------


def test_scales_have_the_promised_shapes() -> None:
    small = datagen.make_shape("small")
    assert [t.slug for t in small.tenants] == ["acme", "globex", "initech"]
    assert [t.contacts for t in small.tenants] == [10_000] * 3
    assert [t.id for t in small.tenants] == [t[0] for t in datagen.SCENARIO_TENANTS]
    medium = datagen.make_shape("medium")
    assert len(medium.tenants) == 10 and max(t.contacts for t in medium.tenants) == 100_000
    large = datagen.make_shape("large")
    sizes = [t.contacts for t in large.tenants]
    assert len(sizes) == 10 and sizes[0] == 1_000_000 and sizes == sorted(sizes, reverse=True)
    assert sizes[0] > sum(sizes[1:])  # a noisy neighbour: the largest tenant outweighs all others
    top = large.tenants[0]
    assert top.leads == 500_000 and top.activities == 4_000_000
    xl = datagen.make_shape("xl")
    assert xl.tenants[0].contacts + xl.tenants[0].leads + xl.tenants[0].activities >= 10_000_000
    tiny = datagen.make_shape("tiny")
    assert 100 <= tiny.rows["contacts"] <= 1_000 and len(tiny.tenants) == 4
    for shape in (tiny, small, medium, large, xl):
        assert len({t.id for t in shape.tenants}) == len(shape.tenants)
        assert len({t.slug for t in shape.tenants}) == len(shape.tenants)
        assert all(t.users >= 5 for t in shape.tenants)


def test_custom_shapes() -> None:
    shape = datagen.make_shape("large", tenants=5, contacts=2_000)
    assert shape.scale == "custom" and [t.contacts for t in shape.tenants][0] == 2_000
    assert len(shape.tenants) == 5
    assert datagen.make_shape("small", tenants=2).scale == "custom"
    with pytest.raises(LabError):
        datagen.make_shape("huge")
    with pytest.raises(LabError):
        datagen.make_shape("small", tenants=100)
    assert datagen.make_shape("small").key(1) != datagen.make_shape("small").key(2)
    assert datagen.make_shape("small").key(1) == datagen.make_shape("small").key(1)


@pytest.mark.parametrize("scale", ["tiny", "small", "large"])
def test_parts_cover_every_row_once(scale: str) -> None:
    shape = datagen.make_shape(scale)
    parts = datagen.plan_parts(shape, part_rows=7_777)
    for table in datagen.TABLES:
        mine = [p for p in parts if p.table == table]
        assert sum(p.rows for p in mine) == shape.rows[table]
        for t in shape.tenants:
            total = getattr(t, table)
            ranges = [p.bounds(total) for p in mine]
            covered = [n for lo, hi in ranges for n in range(lo, hi + 1)] if total < 50_000 else None
            if covered is not None:
                assert covered == list(range(1, total + 1))
            assert ranges[0][0] == 1 and ranges[-1][1] == total
            assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def test_tiny_satisfies_the_schema_and_looks_real(schema_dsn: str) -> None:
    # validate=True: the registry's trigger checks every custom_fields written, set-based.
    result = datagen.seed(schema_dsn, scale="tiny", anchor=ANCHOR, validate=True, bulk=False)
    assert result.action == "loaded" and result.run.complete
    shape = datagen.make_shape("tiny")
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        for table in ("contacts", "leads", "activities", "tenant_users"):
            n = count(conn, f"SELECT count(*) FROM {table} WHERE substr(id::text, 15, 9) = %s", GEN)
            assert n == shape.rows[table], table
        for t in shape.tenants:  # per tenant
            assert count(conn, "SELECT count(*) FROM contacts WHERE tenant_id = %s AND substr(id::text, 15, 9) = %s",
                         t.id, GEN) == t.contacts
        # every stored custom field matches the tenant's registry
        for table in ("contacts", "leads", "activities"):
            assert count(conn, f"SELECT count(*) FROM lab_custom_field_violations('{table}')") == 0
        # users of each role; leads in every stage, also in the last 30 days of the anchor
        assert {r[0] for r in conn.execute("SELECT DISTINCT role FROM tenant_users WHERE substr(id::text, 15, 9) = %s",
                                           (GEN,))} == {"admin", "manager", "user", "viewer"}
        stages_all = {r[0] for r in conn.execute("SELECT DISTINCT stage FROM leads")}
        assert stages_all == {"new", "qualified", "proposal", "negotiation", "won", "lost"}
        acme = shape.tenants[0].id
        recent = count(conn, "SELECT count(DISTINCT stage) FROM leads WHERE tenant_id = %s AND created_at >= %s "
                       "AND substr(id::text, 15, 9) = %s", acme, ANCHOR - dt.timedelta(days=30), GEN)
        assert recent >= 3
        # activities over 24 months, with the last 7 and 30 days populated, never after the anchor
        lo, hi, d7, d30 = conn.execute(
            "SELECT min(created_at), max(created_at), count(*) FILTER (WHERE created_at >= %(a)s - interval '7 days'),"
            " count(*) FILTER (WHERE created_at >= %(a)s - interval '30 days') FROM activities"
            " WHERE substr(id::text, 15, 9) = %(g)s", {"a": ANCHOR, "g": GEN}).fetchone()  # type: ignore[misc]
        assert hi <= ANCHOR and (ANCHOR - lo).days >= 700
        assert d7 > 0 and d30 > d7
        # hot custom fields on most rows, sparse ones on some, values from the registry
        hot = count(conn, "SELECT count(*) FROM contacts WHERE custom_fields ? 'status' AND substr(id::text, 15, 9) = %s",
                    GEN)
        assert hot == shape.rows["contacts"]
        tech = count(conn, "SELECT count(*) FROM contacts WHERE custom_fields @> '{\"industry\": \"tech\"}'"
                     " AND substr(id::text, 15, 9) = %s", GEN)
        assert 0.1 * shape.rows["contacts"] < tech < 0.35 * shape.rows["contacts"]
        sparse = count(conn, "SELECT count(*) FROM contacts WHERE EXISTS (SELECT 1 FROM jsonb_object_keys(custom_fields)"
                       " AS k WHERE k LIKE 'cf\\_%%') AND substr(id::text, 15, 9) = %s", GEN)
        assert 0.3 * shape.rows["contacts"] < sparse < shape.rows["contacts"]
        keys = count(conn, "SELECT count(DISTINCT k) FROM contacts, jsonb_object_keys(custom_fields) AS k")
        assert keys >= 50
        # leads: the custom value mirrors the column (the table's CHECK insists too)
        assert count(conn, "SELECT count(*) FROM leads WHERE (custom_fields->>'value')::numeric IS DISTINCT FROM value"
                     " AND substr(id::text, 15, 9) = %s", GEN) == 0
        # the generated ids are UUIDv7 whose timestamp is created_at
        assert count(conn, "SELECT count(*) FROM contacts WHERE substr(id::text, 15, 9) = %s"
                     " AND uuid_extract_timestamp(id) <> date_trunc('milliseconds', created_at)", GEN) == 0
        # the hand-written scenario rows are still there
        assert count(conn, "SELECT count(*) FROM contacts WHERE substr(id::text, 15, 9) <> %s", GEN) == 3_000
    # RLS: the app role sees its tenant's rows only
    with db.connect(schema_dsn, role="app_user", autocommit=True) as app:
        app.execute("SELECT set_config('app.current_tenant', %s, false)", (shape.tenants[3].id,))
        assert count(app, "SELECT count(*) FROM contacts") == shape.tenants[3].contacts
        assert count(app, "SELECT count(DISTINCT tenant_id) FROM activities") == 1


def test_same_seed_same_rows(schema_dsn: str, other_dsn: str) -> None:
    datagen.seed(schema_dsn, scale="tiny", seed=7, anchor=ANCHOR, bulk=True, jobs=2)
    datagen.seed(other_dsn, scale="tiny", seed=7, anchor=ANCHOR, bulk=False, jobs=1, part_rows=300)
    with psycopg.connect(schema_dsn) as a, psycopg.connect(other_dsn) as b:
        for table in ("tenant_users", "contacts", "leads", "activities"):
            assert datagen.checksum(a, table) == datagen.checksum(b, table), table
        # the rollups: rebuilt after a bulk load without triggers, kept by them otherwise
        for conn in (a, b):
            assert rollup_drift(conn) == 0


def test_another_seed_other_rows_and_replace(schema_dsn: str) -> None:
    datagen.seed(schema_dsn, scale="tiny", seed=1, anchor=ANCHOR)
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        first = datagen.checksum(conn, "contacts")
        hand_written = count(conn, "SELECT count(*) FROM contacts WHERE substr(id::text, 15, 9) <> %s", GEN)
    with pytest.raises(LabError, match="--replace"):
        datagen.seed(schema_dsn, scale="tiny", seed=2, anchor=ANCHOR)
    result = datagen.seed(schema_dsn, scale="tiny", seed=2, anchor=ANCHOR, replace=True)
    assert result.action == "loaded"
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        assert datagen.checksum(conn, "contacts") != first
        assert count(conn, "SELECT count(*) FROM contacts WHERE substr(id::text, 15, 9) = %s", GEN) == \
            datagen.make_shape("tiny").rows["contacts"]
        assert count(conn, "SELECT count(*) FROM contacts WHERE substr(id::text, 15, 9) <> %s", GEN) == hand_written
        assert [r.status for r in datagen.runs(conn)] == ["complete", "replaced"]


def test_second_seed_is_a_no_op(schema_dsn: str) -> None:
    first = datagen.seed(schema_dsn, scale="tiny", anchor=ANCHOR)
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        before = datagen.checksum(conn, "activities")
        total = count(conn, "SELECT count(*) FROM activities")
    again = datagen.seed(schema_dsn, scale="tiny")
    assert again.action == "unchanged" and again.run.id == first.run.id
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        assert datagen.checksum(conn, "activities") == before
        assert count(conn, "SELECT count(*) FROM activities") == total
        assert len(datagen.runs(conn)) == 1


def _kill_seed_backends(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return count(conn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                     " WHERE application_name = 'labhelpers seed' AND datname = current_database()"
                     " AND pid <> pg_backend_pid()")


@pytest.mark.parametrize("bulk", [True, False])
def test_killed_loader_leaves_an_incomplete_run_that_resumes(schema_dsn: str, other_dsn: str, bulk: bool) -> None:
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        objects_before = schema_objects(conn)
    killed = threading.Event()

    def kill_after_first_activities_part(task: str, done: int, total: int) -> None:
        if task == "activities" and 0 < done < total and not killed.is_set():
            killed.set()
            assert _kill_seed_backends(schema_dsn) >= 1  # the loaders, from another connection

    with pytest.raises((psycopg.OperationalError, LabError)):
        datagen.seed(schema_dsn, scale="small", anchor=ANCHOR, bulk=bulk, jobs=2, part_rows=8_000,
                      on_progress=kill_after_first_activities_part)
    assert killed.is_set()
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        run = datagen.latest_run(conn)
        assert run is not None and not run.complete and run.status == "loading"
        # never half a part: the rows present are exactly those of the parts recorded as done
        done = count(conn, "SELECT coalesce(sum(rows), 0) FROM lab_seed_parts WHERE run_id = %s"
                     " AND part LIKE 'activities:%%'", run.id)
        assert 0 < done < datagen.make_shape("small").rows["activities"]
        assert count(conn, "SELECT count(*) FROM activities WHERE substr(id::text, 15, 9) = %s", GEN) == done
        if bulk:
            assert run.saved_ddl  # what was dropped is recorded, so a re-run can rebuild it
    # The benchmark refuses an incomplete dataset.
    from labhelpers import bench

    with pytest.raises(LabError, match="incomplete"):
        bench.run_bench(schema_dsn, repeat=1, plot=False, variants=False)
    resumed = datagen.seed(schema_dsn, scale="small", anchor=ANCHOR)
    assert resumed.action == "resumed" and resumed.run.complete
    datagen.seed(other_dsn, scale="small", anchor=ANCHOR)  # the same run, never interrupted
    with psycopg.connect(schema_dsn, autocommit=True) as a, psycopg.connect(other_dsn, autocommit=True) as b:
        for table in ("tenant_users", "contacts", "leads", "activities"):
            assert datagen.checksum(a, table) == datagen.checksum(b, table), table
        assert schema_objects(a) == objects_before
        assert rollup_drift(a) == 0
        assert count(a, "SELECT count(*) FROM pg_constraint WHERE NOT convalidated"
                     " AND conrelid IN ('contacts'::regclass, 'leads'::regclass, 'activities'::regclass)") == 0


def test_killed_server_leaves_a_run_that_resumes(tmp_path: Path, free_tcp_port: int) -> None:
    """kill -9 of the postmaster in the middle of the load (a server of its own): after crash recovery
    the run is incomplete with whole parts only, and the same command completes it."""
    server = db.EmbeddedServer(tmp_path / "pgdata", free_tcp_port)
    server.up()
    try:
        dsn = built(server.dsn())
        killed = threading.Event()

        def kill_server(task: str, done: int, total: int) -> None:
            if task == "leads" and 0 < done < total and not killed.is_set():
                killed.set()
                os.kill(int((server.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]), signal.SIGKILL)

        with pytest.raises((psycopg.OperationalError, LabError)):
            datagen.seed(dsn, scale="tiny", anchor=ANCHOR, bulk=True, jobs=2, part_rows=100, on_progress=kill_server)
        assert killed.is_set()
        for _ in range(60):   # orphaned backends finish their statement and exit, then the server restarts
            try:
                server.up()
                break
            except LabError:
                time.sleep(0.5)
        with psycopg.connect(dsn, autocommit=True) as conn:
            run = datagen.latest_run(conn)
            assert run is not None and not run.complete and run.status == "loading"
            # The parts commit with synchronous_commit = off, so the crash may also take the last parts
            # that had reported done: they vanish whole, with their bookkeeping row.
            for table in ("contacts", "leads", "activities"):
                done = count(conn, "SELECT coalesce(sum(rows), 0) FROM lab_seed_parts WHERE run_id = %s"
                             " AND part LIKE %s", run.id, f"{table}:%")
                assert count(conn, f"SELECT count(*) FROM {table} WHERE substr(id::text, 15, 9) = %s", GEN) == done
            assert done < datagen.make_shape("tiny").rows["activities"]
        resumed = datagen.seed(dsn, scale="tiny", anchor=ANCHOR)
        assert resumed.action == "resumed" and resumed.run.complete
        with psycopg.connect(dsn, autocommit=True) as conn:
            for table in ("contacts", "leads", "activities"):
                assert count(conn, f"SELECT count(*) FROM {table} WHERE substr(id::text, 15, 9) = %s", GEN) == \
                    datagen.make_shape("tiny").rows[table], table
            assert rollup_drift(conn) == 0
            assert count(conn, "SELECT count(*) FROM pg_constraint WHERE NOT convalidated") == 0
    finally:
        if server.is_running():
            server.down()


def test_ctrl_c_then_rerun_completes(schema_dsn: str) -> None:
    def interrupt(task: str, done: int, total: int) -> None:
        if task == "leads" and done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        datagen.seed(schema_dsn, scale="tiny", anchor=ANCHOR, bulk=True, part_rows=100, on_progress=interrupt)
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        assert not datagen.latest_run(conn).complete  # type: ignore[union-attr]
        assert count(conn, "SELECT count(*) FROM activities WHERE substr(id::text, 15, 9) = %s", GEN) == \
            count(conn, "SELECT coalesce(sum(rows), 0) FROM lab_seed_parts WHERE part LIKE 'activities:%%'")
    assert datagen.seed(schema_dsn, scale="tiny", anchor=ANCHOR).action == "resumed"


def test_seed_builds_a_missing_schema_and_the_cli_is_idempotent(fresh_dsn: str) -> None:
    first = CliRunner().invoke(cli, ["seed", "--scale", "tiny", "--dsn", fresh_dsn])
    assert first.exit_code == 0, first.output
    assert "loaded scale tiny" in first.output
    again = CliRunner().invoke(cli, ["seed", "--scale", "tiny", "--dsn", fresh_dsn])
    assert again.exit_code == 0 and "nothing to do" in again.output
    other = CliRunner().invoke(cli, ["seed", "--scale", "small", "--dsn", fresh_dsn])
    assert other.exit_code == 1 and "--replace" in other.output
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        assert count(conn, "SELECT count(*) FROM lab_seed_runs") == 1
