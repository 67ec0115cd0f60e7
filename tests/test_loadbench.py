"""The loading comparison: every method loads what it says, the rates follow from the measurements,
the scratch database is gone afterwards (real PostgreSQL, a few thousand rows; no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from labhelpers import db
from labhelpers.bench import load
from labhelpers.cli import cli
from labhelpers.errors import LabError


def scratch_exists(server_dsn: str) -> bool:
    with psycopg.connect(db.with_dbname(server_dsn, "postgres"), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (load.SCRATCH_DB,)).fetchone() \
            is not None


def test_every_method_loads_its_rows_and_reports_rates(server_dsn: str, tmp_path: Path) -> None:
    results = load.compare_loads(server_dsn, rows=3000, jobs=2, out_dir=tmp_path)
    methods = {m.key: m for m in results.methods}
    assert set(methods) == {
        "pgbench_client", "pgbench_server", "insert_select_1", "insert_select_2", "insert_select_indexes_during",
        "insert_select_indexes_after", "copy_binary_1", "copy_binary_2", "copy_freeze", "course_seed"}
    saved = json.loads((tmp_path / "results.json").read_text())
    for m, j in zip(results.methods, saved["methods"]):
        assert m.error is None, m
        assert m.load_s > 0 and m.bytes > 0
        # the rates as results.json holds them (rounded) follow from the measurements
        assert j["rows_per_s"] == round(m.rows / m.load_s)
        assert j["mb_per_s"] == round(m.bytes / 1e6 / m.load_s, 1)
        assert m.vacuum_s is not None and m.total_s is not None and m.total_s >= m.load_s
    for key in ("insert_select_1", "insert_select_2", "copy_binary_1", "copy_freeze"):
        assert methods[key].rows == 3000
        # ~300-byte contacts-shaped rows from both generators (server and Python): comparable loads
        assert 200 < methods[key].bytes / 3000 < 600
    assert methods["insert_select_2"].streams == 2
    assert methods["insert_select_indexes_after"].index_s is not None
    assert methods["insert_select_indexes_during"].index_s is None
    assert methods["pgbench_client"].rows == 100_011  # scale 1: accounts, tellers, branches
    seed = methods["course_seed"]
    assert 2700 <= seed.rows <= 3300 and "labhelpers seed" in seed.method
    assert not scratch_exists(server_dsn)
    assert [m["key"] for m in saved["methods"]] == [m.key for m in results.methods]
    assert load.LoadComparison.from_json(saved) == results  # results.json reads back as what was measured
    report = (tmp_path / "report.md").read_text()
    assert report.count("\n| ") == len(results.methods) + 1  # header + one row per method
    assert "pgbench -i -s 1, client-side generate" in report


def test_an_app_role_cannot_run_it(server_dsn: str, built_dsn: str, tmp_path: Path) -> None:
    with pytest.raises(LabError, match="needs a superuser"):
        load.compare_loads(db.role_dsn(built_dsn, "app_user"), rows=100, out_dir=tmp_path)


def test_cli_bench_load(server_dsn: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["bench-load", "--dsn", server_dsn, "--rows", "500", "--jobs", "1",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "pgbench -i -s 1" in result.output and "labhelpers seed" in result.output
    assert (tmp_path / "report.md").exists()
    bad = CliRunner().invoke(cli, ["bench-load", "--dsn", "postgresql://nobody@127.0.0.1:1/x", "--rows", "500"])
    assert bad.exit_code == 1 and "cannot connect" in bad.output and "Traceback" not in bad.output
