"""The success criteria (labhelpers.checks, `labhelpers check`): all pass on the built schema, and each one
FAILS when the thing it measures is broken in a copy. That is how we know the checks are not hard-coded."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from click.testing import CliRunner

from labhelpers import checks
from labhelpers.cli import cli

ALL = list(checks.CRITERIA)


@pytest.fixture
def no_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    """Benchmark results on this machine (or their absence) must not decide these tests."""
    fake = types.ModuleType("labhelpers.bench")
    fake.latest_results = lambda *a, **k: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "labhelpers.bench", fake)
    import labhelpers

    monkeypatch.setattr(labhelpers, "bench", fake, raising=False)


def by_name(dsn: str) -> dict[str, checks.CheckResult]:
    return {r.name: r for r in checks.run_checks(dsn)}


def admin(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


@contextmanager
def broken(dsn: str, *statements: str) -> Iterator[psycopg.Connection]:
    """An administrator's connection inside a transaction where ``statements`` ran, always rolled back
    (for checks that only read the catalog: the shared copy stays intact)."""
    with psycopg.connect(dsn) as conn:
        with conn.transaction(force_rollback=True):
            for s in statements:
                conn.execute(s)
            yield conn


def test_every_criterion_passes_on_the_built_schema(shared_built_dsn: str, no_bench: None) -> None:
    results = checks.run_checks(shared_built_dsn)
    assert [r.name for r in results] == ALL
    status = {r.name: r.status for r in results}
    assert status == {**{n: "PASS" for n in ALL}, "benchmarks": "SKIP"}, [(r.name, r.summary) for r in results]
    for r in results:
        assert r.summary and "\n" not in r.summary
        json.dumps(r.to_dict())  # JSON-ready evidence
    got = {r.name: r for r in results}
    assert got["zero_leakage"].evidence["role"]["current_user"] == "app_user"
    counts = got["zero_leakage"].evidence["counts"]
    assert set(counts["table"]) >= {"contacts", "activities"} and (counts["kind"] == "partition").sum() > 0
    assert (got["custom_fields"].evidence["fields"]["fields"] >= 100).all()


def test_rls_fails_without_force_on_one_partition(built_dsn: str, no_bench: None) -> None:
    part = "activities_2024_01_h1"
    admin(built_dsn, f"ALTER TABLE {part} NO FORCE ROW LEVEL SECURITY")
    r = checks.check_rls(psycopg.connect(built_dsn, autocommit=True))
    assert r.passed is False and part in r.summary
    tables = r.evidence["tables"]
    assert tables.loc[tables["table"] == part, "problems"].item() == "RLS not forced"


def test_rls_fails_for_a_partition_created_without_rls(built_dsn: str) -> None:
    admin(built_dsn, "CREATE TABLE activities_2031_01 PARTITION OF activities "
                     "FOR VALUES FROM ('2031-01-01 00:00:00+00') TO ('2031-02-01 00:00:00+00')")
    with psycopg.connect(built_dsn, autocommit=True) as conn:
        r = checks.check_rls(conn)
    assert r.passed is False and "activities_2031_01" in r.summary


def test_a_permissive_true_policy_fails_rls_and_leaks(built_dsn: str) -> None:
    admin(built_dsn, "CREATE POLICY contacts_everyone ON contacts AS PERMISSIVE FOR SELECT USING (true)")
    with psycopg.connect(built_dsn, autocommit=True) as conn:
        rls = checks.check_rls(conn)
        leak = checks.check_zero_leakage(conn)
    assert rls.passed is False and "contacts_everyone" in rls.summary
    assert leak.passed is False
    counts = leak.evidence["counts"]
    assert counts.loc[counts["table"] == "contacts", "foreign_rows"].max() > 0
    assert counts.loc[counts["table"] != "contacts", "foreign_rows"].max() == 0


def test_rls_fails_when_an_app_role_owns_a_table(built_dsn: str) -> None:
    admin(built_dsn, "CREATE TABLE scratch (x int)", "ALTER TABLE scratch OWNER TO app_user")
    with psycopg.connect(built_dsn, autocommit=True) as conn:
        r = checks.check_rls(conn)
    assert r.passed is False and "app_user" in r.summary


@pytest.mark.parametrize(
    "breakage",
    [
        "DROP INDEX contacts_custom_fields_gin; DROP INDEX contacts_custom_fields_ops_gin",
        # PITFALLS 11: without LEAKPROOF, @> stays a filter for app_user (the GIN is still there)
        "ALTER FUNCTION pg_catalog.jsonb_contains(jsonb, jsonb) NOT LEAKPROOF",
    ],
)
def test_jsonb_check_fails_when_the_index_cannot_serve_app_user(built_dsn: str, breakage: str) -> None:
    with psycopg.connect(built_dsn, autocommit=True) as conn:
        assert checks.check_jsonb_indexes(conn).passed is True
        conn.execute(breakage)
        r = checks.check_jsonb_indexes(conn)
    assert r.passed is False, r.summary
    assert "Scenario 2" in r.summary


def test_pruning_check_fails_when_pruning_is_off(built_dsn: str) -> None:
    with psycopg.connect(built_dsn, autocommit=True) as conn:
        assert checks.check_partition_pruning(conn).passed is True
        conn.execute(f"ALTER DATABASE {conn.info.dbname} SET enable_partition_pruning = off")
    with psycopg.connect(built_dsn, autocommit=True) as conn:
        r = checks.check_partition_pruning(conn)
    assert r.passed is False and "outside the range" in r.summary


def test_custom_fields_check_fails_when_registry_rows_are_deleted(built_dsn: str) -> None:
    admin(built_dsn, "DELETE FROM custom_field_definitions WHERE entity = 'lead' AND key LIKE 'cf_0%' "
                     "AND tenant_id = (SELECT id FROM tenants ORDER BY slug DESC LIMIT 1)")
    with psycopg.connect(built_dsn, autocommit=True) as conn:
        r = checks.check_custom_fields(conn)
    assert r.passed is False and "lead" in r.summary
    fields = r.evidence["fields"]
    assert (fields["fields"] < 100).sum() == 1


def test_citus_check_fails_for_a_key_without_tenant_id(built_dsn: str) -> None:
    admin(built_dsn, "CREATE TABLE notes (tenant_id uuid NOT NULL REFERENCES tenants (id), id uuid PRIMARY KEY, body text)")
    with psycopg.connect(built_dsn, autocommit=True) as conn:
        r = checks.check_citus_ready(conn)
    assert r.passed is False and "notes" in r.summary
    keys = r.evidence["keys"]
    assert keys.loc[keys["table"] == "notes", "includes_tenant"].tolist() == [True, False] or \
        not keys.loc[(keys["table"] == "notes") & (keys["kind"] == "primary key"), "includes_tenant"].item()


def test_citus_check_fails_for_a_single_column_foreign_key(built_dsn: str) -> None:
    admin(built_dsn, "CREATE UNIQUE INDEX contacts_id_only ON contacts (id)",
          "ALTER TABLE leads ADD CONSTRAINT leads_contact_only_fkey FOREIGN KEY (contact_id) REFERENCES contacts (id)")
    with psycopg.connect(built_dsn, autocommit=True) as conn:
        r = checks.check_citus_ready(conn)
    assert r.passed is False
    assert "contacts_id_only" in r.summary or "leads_contact_only_fkey" in r.summary


def test_rls_reports_a_policy_without_with_check_instead_of_crashing(shared_built_dsn: str) -> None:
    """A permissive UPDATE policy without WITH CHECK: pandas reads the missing expression as NaN; the check
    must say FAIL, not raise TypeError."""
    with broken(shared_built_dsn, "CREATE POLICY contacts_loose ON contacts AS PERMISSIVE FOR UPDATE "
                "USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid)") as conn:
        r = checks.check_rls(conn)
    assert r.passed is False and "contacts_loose has no WITH CHECK" in r.summary


def test_run_checks_turns_a_crashing_check_into_a_fail(shared_built_dsn: str, monkeypatch: pytest.MonkeyPatch,
                                                       no_bench: None) -> None:
    def broken(conn: object) -> checks.CheckResult:
        raise TypeError("expected string or bytes-like object, got 'float'")

    monkeypatch.setitem(checks.CHECKS, "views", broken)
    got = by_name(shared_built_dsn)
    assert got["views"].status == "FAIL" and "TypeError" in got["views"].summary
    assert got["rls"].status == "PASS"


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        # PITFALLS 31: GRANT ALL hands out TRUNCATE (which ignores RLS), REFERENCES and TRIGGER
        ("GRANT ALL ON activities TO app_user", "app_user on activities: TRUNCATE"),
        ("GRANT TRUNCATE ON lead_pipeline_hourly TO app_admin", "app_admin on lead_pipeline_hourly: TRUNCATE"),
        ("GRANT TRUNCATE ON contacts TO PUBLIC", "on contacts: TRUNCATE"),
        ("GRANT SELECT ON activities_2024_01_h1 TO app_readonly", "app_readonly on activities_2024_01_h1: SELECT on a partition"),
        ("GRANT SELECT ON contacts TO app_readonly WITH GRANT OPTION", "WITH GRANT OPTION on SELECT"),
    ],
)
def test_privileges_check_fails_for_a_privilege_beyond_the_four(shared_built_dsn: str, breakage: str,
                                                               expected: str) -> None:
    with broken(shared_built_dsn) as conn:
        assert checks.check_privileges(conn).passed is True
        conn.execute(breakage)
        r = checks.check_privileges(conn)
    assert r.passed is False and expected in r.summary, r.summary
    frame = r.evidence["privileges"]
    assert set(frame["role"]) == {"app_user", "app_readonly", "app_admin"}


def test_views_check_fails_for_an_owners_view_in_any_schema(shared_built_dsn: str) -> None:
    with broken(shared_built_dsn, "CREATE SCHEMA reporting",
                "CREATE VIEW reporting.all_contacts AS SELECT * FROM contacts",
                "GRANT SELECT ON reporting.all_contacts TO app_readonly") as conn:
        r = checks.check_views(conn)
        assert r.passed is False and "reporting.all_contacts" in r.summary and "app_readonly" in r.summary
        conn.execute("ALTER VIEW reporting.all_contacts SET (security_invoker = on)")
        assert checks.check_views(conn).passed is True
        conn.execute("CREATE MATERIALIZED VIEW lead_totals AS SELECT tenant_id, count(*) FROM leads GROUP BY 1")
        r = checks.check_views(conn)
    assert r.passed is False and "lead_totals: materialized view" in r.summary


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        # a trigger function no app role may call still runs as its owner whenever a trigger fires
        ("ALTER FUNCTION lab_maintain_lead_pipeline() RESET search_path", "lab_maintain_lead_pipeline(): no SET search_path"),
        ("ALTER FUNCTION lab_find_tenant(text) SET search_path = pg_temp, public, pg_catalog", "pg_temp is not last"),
        ("ALTER FUNCTION lab_find_tenant(text) SET search_path = public, pg_catalog", "pg_temp is not listed"),
        ("CREATE SCHEMA ops; CREATE FUNCTION ops.purge() RETURNS void LANGUAGE sql SECURITY DEFINER AS 'SELECT'",
         "ops.purge(): no SET search_path"),
    ],
)
def test_definer_functions_check_fails_without_a_safe_search_path(shared_built_dsn: str, breakage: str,
                                                                 expected: str) -> None:
    with broken(shared_built_dsn) as conn:
        before = checks.check_definer_functions(conn)
        assert before.passed is True and before.evidence["functions"]["trigger"].sum() >= 2
        conn.execute(breakage)
        r = checks.check_definer_functions(conn)
    assert r.passed is False and expected in r.summary, r.summary


def test_new_partitions_check_fails_when_the_function_forgets_to_secure_them(shared_built_dsn: str) -> None:
    """The build secures every partition it finds; only a month made later shows the function's mistake."""
    with broken(shared_built_dsn) as conn:
        ok = checks.check_new_partitions(conn)
        assert ok.passed is True and len(ok.evidence["created"]) >= 2, ok.summary
        src = conn.execute("SELECT pg_get_functiondef(%s::regprocedure)", (checks.ENSURE_PARTITIONS,)).fetchone()[0]
        conn.execute(src.replace("PERFORM lab_secure_partition(leaf_name::regclass);", "NULL;"))
        r = checks.check_new_partitions(conn)
        assert checks.check_rls(conn).passed is True, "the check must not leave its partitions behind"
    assert r.passed is False and "_h0" in r.summary and "RLS not enabled" in r.summary, r.summary
    assert r.evidence["created"] == ok.evidence["created"]


@pytest.mark.parametrize(
    ("setting", "safe"),
    [
        (None, False),
        ("public, pg_catalog, pg_temp", True),
        ('"$user", public, pg_temp', True),
        ("pg_temp, public", False),
        ("public, pg_catalog", False),  # pg_temp not listed: searched first
        ('""', False),                 # empty: pg_temp still searched first
    ],
)
def test_search_path_problem(setting: str | None, safe: bool) -> None:
    assert (checks.search_path_problem(setting) is None) is safe


def _fake_bench(monkeypatch: pytest.MonkeyPatch, results: object) -> None:
    fake = types.ModuleType("labhelpers.bench")
    fake.latest_results = lambda *a, **k: results  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "labhelpers.bench", fake)
    import labhelpers

    monkeypatch.setattr(labhelpers, "bench", fake, raising=False)


def test_benchmarks_skip_pass_and_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_bench(monkeypatch, None)
    r = checks.check_benchmarks()
    assert r.passed is None and r.status == "SKIP" and "labhelpers bench" in r.summary
    _fake_bench(monkeypatch, {"contact_search": {"p95_ms": 12.0, "target_ms": 50, "role": "app_user"},
                              "tenant_switch": {"p95_ms": 0.4, "target_ms": 10, "role": "app_user"}})
    assert checks.check_benchmarks().passed is True
    _fake_bench(monkeypatch, {"contact_search": {"p95_ms": 80.0, "target_ms": 50, "role": "app_user"}})
    r = checks.check_benchmarks()
    assert r.passed is False and "contact_search" in r.summary
    _fake_bench(monkeypatch, {"contact_search": {"p95_ms": 1.0, "target_ms": 50, "role": "postgres"}})
    assert checks.check_benchmarks().passed is False


def test_cli_check(shared_built_dsn: str, no_bench: None) -> None:
    out = CliRunner().invoke(cli, ["check", "--dsn", shared_built_dsn])
    assert out.exit_code == 0, out.output
    assert "PASS" in out.output and "SKIP" in out.output and "FAIL" not in out.output
    out = CliRunner().invoke(cli, ["check", "--json", "--dsn", shared_built_dsn])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert [d["name"] for d in data] == ALL
    assert {d["status"] for d in data} == {"PASS", "SKIP"}


def test_cli_check_exits_1_on_a_failure(built_dsn: str, no_bench: None) -> None:
    admin(built_dsn, "ALTER TABLE contacts NO FORCE ROW LEVEL SECURITY")
    out = CliRunner().invoke(cli, ["check", "--dsn", built_dsn])
    assert out.exit_code == 1, out.output
    assert "FAIL" in out.output and "Traceback" not in out.output
