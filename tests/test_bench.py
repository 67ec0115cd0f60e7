"""The benchmark's mechanics: percentiles, the timed session's role and tenant, results on disk.

No timing assertions: these tests check what is measured and how, never how fast.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from labhelpers import bench, checks, datagen, db, pooler, stages
from labhelpers.cli import cli
from labhelpers.errors import LabError

ACME = "11111111-1111-7111-8111-111111111111"
DATA = Path(__file__).parent / "data" / "bench"


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
# Typed results: results.json as the code before the typed records wrote it
# --------------------------------------------------------------------------------------------------

# Written by `run_bench` as of commit 83c9d44 (results as dicts), repeat 3, warmup 1: "tiny" on the whole
# schema and the tiny dataset (cold_connections 2, PgBouncer installed), "partial" on stages 01-03 and the
# seed tenants only (tuned queries skipped for their missing columns, cold_connections 1, no variants).
OLD_RUNS = ("tiny", "partial")


def _old_run(name: str) -> tuple[str, str]:
    results = gzip.decompress((DATA / f"{name}-results.json.gz").read_bytes()).decode()
    report = gzip.decompress((DATA / f"{name}-report.md.gz").read_bytes()).decode()
    return results, report


@pytest.mark.parametrize("name", OLD_RUNS)
def test_results_of_the_old_code_round_trip(name: str, tmp_path: Path) -> None:
    text, report = _old_run(name)
    old = json.loads(text)
    typed = bench.BenchResults.from_json(old)
    # the same fields, values and order: results.json is written exactly as before
    assert typed.to_json() == old
    assert json.dumps(typed.to_json(), indent=1, default=str) == text
    # the report read from the typed results is the old code's, byte for byte
    assert bench.report_markdown(typed) == report
    # read back from disk, typed and as the JSON the success criterion reads
    (tmp_path / typed.scale).mkdir()
    (tmp_path / typed.scale / "results.json").write_text(text)
    assert bench.load_typed(out_dir=tmp_path) == typed
    assert bench.load_results(typed.scale, out_dir=tmp_path) == old
    assert {r.name for r in typed.criterion_records} == {
        r["name"] for r in old["benchmarks"] if r.get("criterion") and "p95_ms" in r}
    # the records that count for the criterion are the ones the old code chose
    unmarked = [dataclasses.replace(r, criterion=False) for r in typed.benchmarks]
    assert bench.run.mark_criterion(unmarked) == typed.benchmarks


def test_every_record_kind_round_trips() -> None:
    text, _ = _old_run("partial")
    old = json.loads(text)
    old["leakproof"] = [{"note": "not a superuser: cannot toggle LEAKPROOF"}]
    old["cold"]["pool"].append({"key": "test3", "title": "Test 3", "tenant": "acme",
                                "skipped": "pgbouncer is not installed"})
    typed = bench.BenchResults.from_json(old)
    kinds = {type(r) for r in typed.benchmarks} | {type(r) for r in typed.leakproof}
    kinds |= {type(p) for p in typed.cold.pool} if typed.cold else set()
    assert kinds == {bench.BenchRecord, bench.SkippedBenchmark, bench.LeakproofSkipped, bench.PoolFirstQueries,
                     bench.PoolSkipped}
    assert typed.to_json() == old
    assert "Test 3 behind PgBouncer: skipped (pgbouncer is not installed)" in bench.report_markdown(typed)
    # keys only some records have are left out, not written as null
    floor = next(r for r in typed.timed if r.lesson == "floor").to_json()
    assert "passed" not in floor and "margin" not in floor and "same_result_as_verbatim" not in floor


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
        assert seen.current_user == "app_user" and not seen.rolsuper and not seen.rolbypassrls
        assert seen.tenant == ACME and not seen.owns_tables
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
    assert results.scale == "small" and results.repeat == 3
    assert results.checkpoint_first is True   # a superuser flushes dirty pages (a fresh load) before timing
    assert [t.slug for t in results.tenants] == ["acme", "initech"] or len(results.tenants) == 2
    timed = results.timed
    lessons = {r.lesson for r in timed}
    assert {"test1", "test2", "test3", "scenario2", "switch", "floor"} <= lessons
    for r in timed:
        # every timed session was app_user, not superuser, not bypassrls, not owner, with the tenant set
        s = r.session
        assert s.current_user == "app_user" and s.session_user == "app_user"
        assert s.rolsuper is False and s.rolbypassrls is False and s.owns_tables is False
        assert s.tenant == r.tenant_id
        assert len(r.samples_ms) == 3
        assert r.stats.p95_ms == pytest.approx(bench.percentile(r.samples_ms, 95), rel=1e-3, abs=1e-3)
        if r.target_ms:
            assert r.passed == (r.stats.p95_ms <= r.target_ms)
    verbatim = {r.key: r for r in timed if r.variant == "verbatim" and r.tenant == "acme"}
    assert verbatim["test1"].sql == bench.TEST1 and verbatim["test1"].params == [ACME]
    assert verbatim["test1"].rows_returned == 20
    assert verbatim["scenario2"].params == []  # RLS alone picks the tenant, as in the lesson
    # the same count through the tuned query: same answer
    tuned = {r.key: r for r in timed if r.tenant == "acme"}
    assert tuned["scenario2"].result_value == tuned["scenario2_tuned"].result_value > 0
    # each tuned query whose answer is determined gives the verbatim query's answer (checked by the bench)
    for key in ("test2_tuned", "test2_rollup", "test3_tuned", "scenario2_tuned", "scenario2_rollup"):
        assert tuned[key].same_result_as_verbatim is True, key
    # one record per lesson benchmark and tenant counts for the success criterion
    crit = [r for r in timed if r.criterion]
    assert len(crit) == len({(r.lesson, r.tenant) for r in timed if r.target_ms})
    # plans were taken in the timed session
    plan = verbatim["test2"].plan
    assert isinstance(plan, bench.PlanRecord) and plan.summary
    # RLS overhead, policy variants, LEAKPROOF
    assert results.rls_overhead and all(r.owner_role.rolsuper for r in results.rls_overhead)
    variants = {r.variant for r in results.policy_variants}
    assert len(variants) == len(bench.POLICY_VARIANTS)
    for v in results.policy_variants:
        assert v.session.current_user == "app_user" and v.session.tenant == results.tenants[0].id
        assert v.result_value == results.policy_variants[0].result_value or v.query != "count contacts (policy only)"
    # the files
    out = tmp_path / "small"
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["benchmarks"][0]["samples_ms"] == results.benchmarks[0].samples_ms
    report = (out / "report.md").read_text()
    assert "app_user under RLS" in report and "Test 2" in report
    assert (out / "latency-acme.png").stat().st_size > 10_000
    # the first query on new connections (min(40, repeat) = 3 logins per query and tenant), and from a pool
    cold = results.cold
    assert cold is not None and cold.connections == 3 and len(cold.queries) == len(bench.BENCHMARKS) * 2
    for q in cold.queries:
        assert q.verified.current_user == ["app_user"] and q.verified.distinct_backends == 9
        assert len(q.samples_ms["first"]) == 3 and q.warm is not None and q.warm.p50_ms is not None
        assert q.passed == (q.first.p95_ms <= q.target_ms)
    pooled = [p for p in cold.pool if isinstance(p, bench.PoolFirstQueries)]
    assert {(p.key, p.warm_up) for p in pooled} == {(k, w) for k in bench.POOL_KEYS for w in (False, True)}
    bouncer = [p for p in cold.pool if isinstance(p, bench.PoolSkipped) or "PgBouncer" in p.pool]
    assert len(bouncer) == len(bench.POOL_KEYS)  # one series through a real PgBouncer per query, or why not
    assert all(isinstance(p, bench.PoolSkipped) for p in bouncer) == (pooler.pgbouncer_binary() is None)
    for p in pooled:
        assert p.connections == 3 and p.verified.current_user == ["app_user"]
        assert p.verified.tenant == [results.tenants[0].id]
        assert (p.warm_up_ms is not None) == p.warm_up  # configure ran on every connection of the pool
        assert not p.warm_up or (p.warm_up_ms is not None and p.warm_up_ms.n >= 3)
    assert "## The first query on a new connection" in report and "configure=bench.warm_up_backend" in report
    assert (out / "cold-acme.png").stat().st_size > 10_000
    # read back for the success criterion
    monkeypatch.setattr(bench.results, "DEFAULT_OUT", tmp_path)
    latest = bench.latest_results("small")
    assert latest and all({"p95_ms", "target_ms"} <= set(v) for v in latest.values())
    assert bench.latest_results("xl") is None
    # the criterion counts only results measured on the database it is checking
    assert bench.latest_results(database=results.database) == latest
    assert bench.latest_results(database="another_database") is None
    with psycopg.connect(seeded_dsn) as admin:
        assert checks.check_benchmarks(admin).passed is not None
    with psycopg.connect(db.with_dbname(seeded_dsn, "postgres")) as elsewhere:
        assert checks.check_benchmarks(elsewhere).passed is None


@pytest.fixture
def tiny_dsn(fresh_dsn: str) -> str:
    """The whole schema and the tiny dataset (4 tenants, 550 contacts)."""
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        stages.build(conn)
    datagen.seed(fresh_dsn, scale="tiny")
    return fresh_dsn


def test_cold_first_queries_at_tiny_scale(tiny_dsn: str) -> None:
    recs = bench.cold_first_queries(tiny_dsn, keys=["test3", "test3_tuned", "test1"], connections=3)
    assert sorted((r.key, r.tenant_role) for r in recs) == sorted(
        (k, role) for k in ("test3", "test3_tuned", "test1") for role in ("largest", "smallest"))
    for r in recs:
        # N fresh logins timed, N more for EXPLAIN, N more for PREPARE; every one verified as app_user under
        # RLS with the tenant set
        assert r.connections == 3 and r.explain_connections == 3
        v = r.verified
        assert v.current_user == ["app_user"] and v.session_user == ["app_user"]
        assert v.rolsuper == [False] and v.rolbypassrls == [False] and v.owns_tables == [False]
        assert v.tenant == [r.tenant_id] and v.checked == 9 and v.distinct_backends == 9
        assert all(len(r.samples_ms[k]) == 3 for k in ("connect", "set_tenant", "first", "second", "parse_cold"))
        # PostgreSQL's own split, cold and warm, from every EXPLAIN; parse and rewrite from every PREPARE
        for s in (r.planning_cold, r.execution_cold, r.planning_warm, r.execution_warm, r.planning_hit_cold,
                  r.parse_cold, r.parse_warm):
            assert s is not None and s.n == 3
        assert "Planning Time:" in r.explain_cold and "Execution Time:" in r.explain_warm
        lines = r.timing_lines("cold").splitlines()
        assert lines[0].startswith("Limit") and lines[-2].startswith("Planning Time:")
        assert lines[-1].startswith("Execution Time:")
    # a count, not a time: a new backend reads catalog pages while planning, the same backend again far fewer
    t3 = next(r for r in recs if r.key == "test3" and r.tenant_role == "largest")
    assert t3.planning_hit_cold is not None and t3.planning_hit_warm is not None
    assert t3.planning_hit_cold.min_ms > t3.planning_hit_warm.max_ms
    assert bench.cold_table(recs)[0]["n"] == 3
    with pytest.raises(LabError, match="no benchmark"):
        bench.cold_first_queries(tiny_dsn, keys=["test9"], connections=1)
    with pytest.raises(LabError, match="no tenant"):
        bench.cold_first_queries(tiny_dsn, tenants=["nobody"], connections=1)


def test_warm_up_backend_plans_without_a_tenant(tiny_dsn: str) -> None:
    with db.connect(tiny_dsn, role="app_user", autocommit=False) as conn:
        bench.warm_up_backend(conn)  # no tenant set: EXPLAIN (GENERIC_PLAN) reads no rows
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        conn.execute("SELECT set_config('app.current_tenant', %s, false)", (ACME,))
        cur = psycopg.RawCursor(conn)
        text = "\n".join(r[0] for r in cur.execute("EXPLAIN (ANALYZE, BUFFERS, SUMMARY) " + bench.TEST3.rstrip(";"),
                                                   [ACME]).fetchall())
    figures = bench.explain_timings(text)
    assert figures["planning_ms"] is not None and figures["execution_ms"] is not None


def test_explain_timings_reads_postgres_text() -> None:
    text = """Limit  (cost=12.85..19.55 rows=50 width=139) (actual time=0.162..0.194 rows=50.00 loops=1)
  Buffers: shared hit=32 read=4
  ->  Append  (cost=12.85..10248.78 rows=76378 width=139) (actual time=0.160..0.190 rows=50.00 loops=1)
        Buffers: shared hit=32 read=4
Planning:
  Buffers: shared hit=15047 read=7 dirtied=1
Planning Time: 25.240 ms
Execution Time: 0.429 ms"""
    assert bench.explain_timings(text) == {
        "planning_ms": 25.24, "execution_ms": 0.429, "planning_hit": 15047, "planning_read": 7,
        "execution_hit": 32, "execution_read": 4}
    bare = bench.explain_timings("Result  (actual time=0.001..0.001 rows=1 loops=1)\nPlanning Time: 0.010 ms\n"
                                 "Execution Time: 0.002 ms")
    assert bare["planning_hit"] == 0 and bare["execution_read"] == 0 and bare["planning_ms"] == 0.01


def test_bench_refuses_another_scale(seeded_dsn: str, tmp_path: Path) -> None:
    with pytest.raises(LabError, match="labhelpers seed --scale large"):
        bench.run_bench(seeded_dsn, scale="large", repeat=1, out_dir=tmp_path)


def test_cli_bench(seeded_dsn: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", "--dsn", seeded_dsn, "--repeat", "2", "--no-variants",
                                      "--out", str(tmp_path)])
    assert result.exit_code in (0, 1), result.output  # 1 only if a criterion query missed (no timing asserted)
    assert (tmp_path / "results.json").exists() and (tmp_path / "report.md").exists()
    assert "Test 1" in result.output
