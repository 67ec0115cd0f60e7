"""The runner and `labhelpers run`: papermill executes fixture notebooks, one per behaviour.

Fixtures in tests/data/notebooks: ``ok`` (passes; %sql shares the session), ``broken_sql`` (a failing
``%%sql`` cell), ``no_parameters`` (no cell tagged ``parameters``), ``unreachable`` (a LabError).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner

from labhelpers import runner
from labhelpers.errors import LabError
from labhelpers.cli import cli

FIXTURES = Path(__file__).resolve().parent / "data" / "notebooks"


def outputs_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("evalue", ""))
        parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


def test_ok_notebook_passes_in_the_projects_python(fresh_dsn: str, tmp_path: Path) -> None:
    result = runner.execute_notebook(FIXTURES / "ok.ipynb", tmp_path, {"dsn": fresh_dsn})
    assert result.ok, result.detail
    executed = nbformat.read(str(result.output), as_version=4)
    setup_cell = next(c for c in executed.cells if "notebook.setup" in c.source)
    # papermill's python3 kernel is the venv's python (jupyter_client swaps "python" for sys.executable)
    assert sys.executable in outputs_text(setup_cell)


def test_failing_sql_cell_fails_the_notebook_and_the_copy_is_saved_marked(fresh_dsn: str, tmp_path: Path) -> None:
    result = runner.execute_notebook(FIXTURES / "broken_sql.ipynb", tmp_path, {"dsn": fresh_dsn})
    assert not result.ok
    assert result.error.startswith("UndefinedTable:") and "no_such_table" in result.error
    assert result.cell == "In [4]"
    assert result.output == tmp_path / "broken_sql.ipynb" and result.output.exists()
    executed = nbformat.read(str(result.output), as_version=4)
    failed = [c for c in executed.cells if c.get("metadata", {}).get("papermill", {}).get("exception")]
    assert len(failed) == 1 and "no_such_table" in failed[0].source
    assert any(o.get("output_type") == "error" and o.get("ename") == "UndefinedTable" for o in failed[0].outputs)
    # papermill's banner at the top, and the cell after the failure never ran
    assert "papermill-error-cell-tag" in executed.cells[0].metadata.get("tags", [])
    after = next(c for c in executed.cells if "must not run" in c.source)
    assert after.execution_count is None and not after.outputs


def test_notebook_without_parameters_cell_gets_them_injected(fresh_dsn: str, tmp_path: Path) -> None:
    result = runner.execute_notebook(FIXTURES / "no_parameters.ipynb", tmp_path, {"dsn": fresh_dsn})
    assert result.ok, result.detail
    executed = nbformat.read(str(result.output), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and fresh_dsn in injected[0].source


def test_lab_error_fails_the_cell_as_one_line(tmp_path: Path) -> None:
    result = runner.execute_notebook(FIXTURES / "unreachable.ipynb", tmp_path, {})
    assert not result.ok
    assert result.error.startswith("LabError: cannot connect to")
    assert "labhelpers db up" in result.error
    executed = nbformat.read(str(result.output), as_version=4)
    error = next(o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error")
    assert len(error.traceback) == 1  # the sentence, not a traceback


def test_run_course_runs_every_notebook_even_after_a_failure(fresh_dsn: str, tmp_path: Path) -> None:
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(FIXTURES / "broken_sql.ipynb", course / "01-broken.ipynb")
    shutil.copy(FIXTURES / "ok.ipynb", course / "02-ok.ipynb")
    started: list[str] = []
    results = runner.run_course(dsn=fresh_dsn, notebook_dir=course, out_dir=tmp_path / "out", prepare=False,
                                on_start=started.append)
    assert [r.name for r in results] == ["database", "01-broken", "02-ok"] == started
    assert [r.ok for r in results] == [True, False, True]
    assert (tmp_path / "out" / "01-broken.ipynb").exists() and (tmp_path / "out" / "02-ok.ipynb").exists()


def test_run_course_replaces_another_scale_only_when_asked(fresh_dsn: str, tmp_path: Path) -> None:
    course = tmp_path / "course"   # no notebooks: only the database, schema and data steps
    course.mkdir()

    def run(scale: str, **kw: bool) -> list[runner.StepResult]:
        return runner.run_course(dsn=fresh_dsn, notebook_dir=course, out_dir=tmp_path / "out", scale=scale, **kw)

    assert [(r.name, r.ok) for r in run("tiny")] == [("database", True), ("schema", True), ("data", True)]
    refused = run("small")[-1]
    assert refused.name == "data" and not refused.ok and "--replace" in refused.detail
    replaced = run("small", replace=True)[-1]
    assert replaced.ok and "loaded scale small" in replaced.detail, replaced.detail


def test_run_course_stops_when_the_database_is_unreachable(tmp_path: Path) -> None:
    results = runner.run_course(dsn="postgresql://postgres:x@127.0.0.1:1/none", notebook_dir=FIXTURES,
                                out_dir=tmp_path)
    assert len(results) == 1 and results[0].name == "database" and not results[0].ok
    assert "cannot connect" in results[0].detail


def test_unknown_notebook_is_a_lab_error() -> None:
    with pytest.raises(LabError, match="no notebook '99'"):
        runner.course_notebooks(["99"])


def test_cli_run_prints_a_summary_and_exits_1_on_failure(fresh_dsn: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [
        "run", "--dsn", fresh_dsn, "--no-prepare", "--out", str(tmp_path),
        str(FIXTURES / "ok.ipynb"), str(FIXTURES / "broken_sql.ipynb"), "-p", "tenant", "globex",
    ])
    assert result.exit_code == 1, result.output
    assert "Summary" in result.output and "FAILED" in result.output
    assert "In [4]" in result.output and "UndefinedTable" in result.output
    assert "2 of 3 steps passed" in result.output
    executed = nbformat.read(str(tmp_path / "ok.ipynb"), as_version=4)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'tenant = "globex"' in injected.source and 'scale = "small"' in injected.source
