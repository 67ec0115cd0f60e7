"""The benchmark's mechanics: percentiles, the timed session's role and tenant, results on disk.

No timing assertions: these tests check what is measured and how, never how fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from labhelpers import bench, checks, datagen, db, stages
from labhelpers.cli import cli
from labhelpers.errors import LabError

ACME = "11111111-1111-7111-8111-111111111111"


# --------------------------------------------------------------------------------------------------
# Percentiles on known samples
# --------------------------------------------------------------------------------------------------


def test_percentiles_of_known_samples() -> None:
    samples = [float(i) for i in range(1, 101)]  # 1..100
    assert bench.percentile(samples, 50) == pytest.approx(50.5)
    assert bench.percentile(samples, 95) == pytest.approx(95.05)
    assert bench.percentile(samples, 99) == pytest.approx(99.01)
    assert bench.percentile(samples, 0) == 1.0 and bench.percentile(samples, 100) == 100.0
    assert bench.percentile([3.0], 95) == 3.0
    assert bench.percentile([5.0, 1.0], 50) == 3.0  # order does not matter
    s = bench.stats([4.0, 1.0, 2.0, 3.0])
    assert (s.n, s.min_ms, s.max_ms, s.mean_ms, s.p50_ms) == (4, 1.0, 4.0, 2.5, 2.5)
    with pytest.raises(LabError):
        bench.percentile([], 50)
    with pytest.raises(LabError):
        bench.percentile([1.0], 101)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=300),
       st.floats(min_value=0, max_value=100))
def test_percentile_matches_numpy(samples: list[float], q: float) -> None:
    assert bench.percentile(samples, q) == pytest.approx(float(np.percentile(samples, q)), rel=1e-9, abs=1e-9)


# --------------------------------------------------------------------------------------------------
# Against a database
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def seeded_dsn(fresh_dsn: str) -> str:
    """The whole schema and the small dataset (3 tenants x 10k contacts)."""
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        stages.build(conn)
    datagen.seed(fresh_dsn, scale="small")
    return fresh_dsn


def test_verify_session_refuses_what_sees_through_rls(seeded_dsn: str) -> None:
    with db.connect(seeded_dsn, role="app_user", autocommit=True) as app:
        app.execute("SELECT set_config('app.current_tenant', %s, false)", (ACME,))
        seen = bench.verify_session(app, tenant_id=ACME)
        assert seen["current_user"] == "app_user" and not seen["rolsuper"] and not seen["rolbypassrls"]
        assert seen["tenant"] == ACME and not seen["owns_tables"]
        with pytest.raises(LabError, match="app.current_tenant"):
            bench.verify_session(app, tenant_id="22222222-2222-7222-8222-222222222222")
    with db.connect(seeded_dsn, autocommit=True) as admin:
        admin.execute("SELECT set_config('app.current_tenant', %s, false)", (ACME,))
        with pytest.raises(LabError, match="superuser"):
            bench.verify_session(admin, tenant_id=ACME)


def _schema_fingerprint(dsn: str) -> tuple[object, ...]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        policies = conn.execute("SELECT tablename, policyname, qual, with_check FROM pg_policies ORDER BY 1, 2").fetchall()
        funcs = conn.execute("SELECT proname FROM pg_proc WHERE proname LIKE 'lab_bench%'").fetchall()
        leak = conn.execute("SELECT oid::regprocedure::text, proleakproof FROM pg_proc WHERE proname IN"
                            " ('jsonb_contains', 'timestamptz_ge_timestamp') ORDER BY 1").fetchall()
    return tuple(policies), tuple(funcs), tuple(leak)


def test_bench_at_small_scale(seeded_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _schema_fingerprint(seeded_dsn)
    results = bench.run_bench(seeded_dsn, scale="small", repeat=3, warmup=1, out_dir=tmp_path / "small")
    # the schema is exactly as before: variants were made in transactions that were rolled back
    assert _schema_fingerprint(seeded_dsn) == before
    assert results["scale"] == "small" and results["repeat"] == 3
    assert results["checkpoint_first"] is True   # a superuser flushes dirty pages (a fresh load) before timing
    assert [t["slug"] for t in results["tenants"]] == ["acme", "initech"] or len(results["tenants"]) == 2
    timed = [r for r in results["benchmarks"] if "samples_ms" in r]
    lessons = {r["lesson"] for r in timed}
    assert {"test1", "test2", "test3", "scenario2", "switch", "floor"} <= lessons
    for r in timed:
        # every timed session was app_user, not superuser, not bypassrls, not owner, with the tenant set
        s = r["session"]
        assert s["current_user"] == "app_user" and s["session_user"] == "app_user"
        assert s["rolsuper"] is False and s["rolbypassrls"] is False and s["owns_tables"] is False
        assert s["tenant"] == r["tenant_id"]
        assert len(r["samples_ms"]) == 3
        assert r["p95_ms"] == pytest.approx(bench.percentile(r["samples_ms"], 95), rel=1e-3, abs=1e-3)
        if r.get("target_ms"):
            assert r["passed"] == (r["p95_ms"] <= r["target_ms"])
    verbatim = {r["key"]: r for r in timed if r["variant"] == "verbatim" and r["tenant"] == "acme"}
    assert verbatim["test1"]["sql"] == bench.TEST1 and verbatim["test1"]["params"] == [ACME]
    assert verbatim["test1"]["rows_returned"] == 20
    assert verbatim["scenario2"]["params"] == []  # RLS alone picks the tenant, as in the lesson
    # the same count through the tuned query: same answer
    tuned = {r["key"]: r for r in timed if r["tenant"] == "acme"}
    assert tuned["scenario2"]["result_value"] == tuned["scenario2_tuned"]["result_value"] > 0
    # each tuned query whose answer is determined gives the verbatim query's answer (checked by the bench)
    for key in ("test2_tuned", "test2_rollup", "test3_tuned", "scenario2_tuned", "scenario2_rollup"):
        assert tuned[key]["same_result_as_verbatim"] is True, key
    # one record per lesson benchmark and tenant counts for the success criterion
    crit = [r for r in timed if r.get("criterion")]
    assert len(crit) == len({(r["lesson"], r["tenant"]) for r in timed if r.get("target_ms")})
    # plans were taken in the timed session
    assert verbatim["test2"]["plan"] and "summary" in verbatim["test2"]["plan"]
    # RLS overhead, policy variants, LEAKPROOF
    assert results["rls_overhead"] and all(r["owner_role"]["rolsuper"] for r in results["rls_overhead"])
    variants = {r["variant"] for r in results["policy_variants"]}
    assert len(variants) == len(bench.POLICY_VARIANTS)
    for r in results["policy_variants"]:
        assert r["session"]["current_user"] == "app_user" and r["session"]["tenant"] == results["tenants"][0]["id"]
        assert r["result_value"] == results["policy_variants"][0]["result_value"] or r["query"] != "count contacts (policy only)"
    # the files
    out = tmp_path / "small"
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["benchmarks"][0]["samples_ms"] == results["benchmarks"][0]["samples_ms"]
    report = (out / "report.md").read_text()
    assert "app_user under RLS" in report and "Test 2" in report
    assert (out / "latency-acme.png").stat().st_size > 10_000
    # read back for the success criterion
    monkeypatch.setattr(bench, "DEFAULT_OUT", tmp_path)
    latest = bench.latest_results("small")
    assert latest and all({"p95_ms", "target_ms"} <= set(v) for v in latest.values())
    assert bench.latest_results("xl") is None
    # the criterion counts only results measured on the database it is checking
    assert bench.latest_results(database=results["database"]) == latest
    assert bench.latest_results(database="another_database") is None
    with psycopg.connect(seeded_dsn) as admin:
        assert checks.check_benchmarks(admin).passed is not None
    with psycopg.connect(db.with_dbname(seeded_dsn, "postgres")) as elsewhere:
        assert checks.check_benchmarks(elsewhere).passed is None


def test_bench_refuses_another_scale(seeded_dsn: str, tmp_path: Path) -> None:
    with pytest.raises(LabError, match="labhelpers seed --scale large"):
        bench.run_bench(seeded_dsn, scale="large", repeat=1, out_dir=tmp_path)


def test_cli_bench(seeded_dsn: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", "--dsn", seeded_dsn, "--repeat", "2", "--no-variants",
                                      "--out", str(tmp_path)])
    assert result.exit_code in (0, 1), result.output  # 1 only if a criterion query missed (no timing asserted)
    assert (tmp_path / "results.json").exists() and (tmp_path / "report.md").exists()
    assert "Test 1" in result.output
