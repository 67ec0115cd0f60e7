"""The course notebooks and the notebook entry point `labhelpers.notebook.setup`.

- The ``%sql`` magic runs on the connection labhelpers returns (one session: settings, tenant, RLS),
  and SQL errors raise, so a cell fails (in JupyterLab and under papermill).
- The notebooks in git are clean (no outputs), each has a ``parameters`` cell with the agreed names,
  and the whole course executes headless through `runner.run_course`, the path `labhelpers run` and
  grading use.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import psycopg
import pytest

from labhelpers import db, notebook, runner
from labhelpers.errors import LabError

NOTEBOOKS = runner.NOTEBOOK_DIR
COURSE = [
    "00-setup",
    "01-foundation-schema",
    "02-row-level-security",
    "03-jsonb-custom-fields",
    "04-partitioning",
    "05-benchmarks",
    "06-testing-scenarios",
]
PARAMETERS = {"dsn", "scale", "tenant", "repeat"}


def course() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))


# --------------------------------------------------------------------------------------------------
# %sql shares the labhelpers connection
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def ip() -> Iterator[Any]:
    """An in-process IPython shell (the one IPython's own tests use)."""
    from IPython.testing.globalipapp import get_ipython

    shell = get_ipython()
    yield shell
    shell.set_custom_exc((), None)
    conn = shell.user_ns.pop("conn", None)
    if conn is not None:
        conn.close()


def run_cell(ip: Any, source: str) -> Any:
    result = ip.run_cell(source, store_history=True)
    return result


def test_sql_magic_runs_on_the_same_session(ip: Any, fresh_dsn: str) -> None:
    ip.user_ns["dsn"] = fresh_dsn
    assert run_cell(ip, "from labhelpers import notebook\nconn = notebook.setup(dsn)").success
    conn = ip.user_ns["conn"]
    assert conn.autocommit
    conn.execute("SELECT set_config('app.current_tenant', 'set-in-python', false)")
    res = run_cell(ip, "%sql SELECT current_setting('app.current_tenant', true) AS t, pg_backend_pid() AS pid")
    assert res.success, res.error_in_exec
    row = res.result.DataFrame().iloc[0]
    assert row["t"] == "set-in-python"
    assert row["pid"] == conn.info.backend_pid
    # and the other way round: a session setting made in %sql is seen by Python
    assert run_cell(ip, "%sql SELECT set_config('app.current_tenant', 'set-in-sql', false)").success
    assert conn.execute("SELECT current_setting('app.current_tenant')").fetchone()[0] == "set-in-sql"


def test_sql_magic_sends_postgresql_syntax_unchanged(ip: Any, fresh_dsn: str) -> None:
    ip.user_ns["dsn"] = fresh_dsn
    run_cell(ip, "from labhelpers import notebook\nconn = notebook.setup(dsn)")
    res = run_cell(ip, """%%sql
CREATE TABLE t (id int PRIMARY KEY, doc jsonb);
INSERT INTO t VALUES (1, '{"status":"active","n":1}'), (2, '{"status": "lost"}');
-- comments, casts, LIKE patterns and dollar quoting pass through as written
DO $$ BEGIN PERFORM 1; END $$;
SELECT count(*) AS n FROM t WHERE doc @> '{"status":"active"}' AND doc->>'status' LIKE 'act%' AND id::text = '1'
""")
    assert res.success, res.error_in_exec
    assert res.result.DataFrame()["n"].tolist() == [1]
    # committed: another session sees the table
    with psycopg.connect(fresh_dsn) as other:
        assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 2


def test_sql_errors_raise_so_the_cell_fails(ip: Any, fresh_dsn: str) -> None:
    ip.user_ns["dsn"] = fresh_dsn
    run_cell(ip, "from labhelpers import notebook\nconn = notebook.setup(dsn)")
    res = run_cell(ip, "%sql SELECT * FROM no_such_table")
    assert not res.success
    assert isinstance(res.error_in_exec, psycopg.errors.UndefinedTable)
    res = run_cell(ip, "%%sql\nSELECT 1;\nSELECT 1/0")
    assert isinstance(res.error_in_exec, psycopg.errors.DivisionByZero)
    # autocommit: a failed statement leaves no aborted transaction behind
    assert run_cell(ip, "%sql SELECT 1 AS one").success
    assert ip.user_ns["conn"].info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_sql_cells_without_a_result_pass(ip: Any, fresh_dsn: str) -> None:
    ip.user_ns["dsn"] = fresh_dsn
    run_cell(ip, "from labhelpers import notebook\nconn = notebook.setup(dsn)")
    assert run_cell(ip, "%sql CREATE TABLE t (id int)").success
    assert run_cell(ip, "%%sql\nALTER TABLE t ADD COLUMN x int;\nDROP TABLE t;").success


def test_rerunning_setup_replaces_the_connection(ip: Any, fresh_dsn: str) -> None:
    ip.user_ns["dsn"] = fresh_dsn
    run_cell(ip, "from labhelpers import notebook\nfirst = notebook.setup(dsn)\nsecond = notebook.setup(dsn)")
    first, second = ip.user_ns["first"], ip.user_ns["second"]
    assert first.closed and not second.closed
    res = run_cell(ip, "%sql SELECT pg_backend_pid() AS pid")
    assert res.result.DataFrame()["pid"].tolist() == [second.info.backend_pid]


def test_lab_errors_show_as_one_sentence_and_fail(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    res = run_cell(ip, "from labhelpers import notebook\nnotebook.setup('postgresql://u:p@127.0.0.1:1/x')")
    assert isinstance(res.error_in_exec, LabError)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "LabError: cannot connect" in text and "Traceback" not in text


def test_check_environment_names_the_missing_package() -> None:
    with pytest.raises(LabError, match="package no_such_module_xyz is missing.*make install"):
        notebook.check_environment(modules=["no_such_module_xyz"])


def test_setup_outside_ipython_returns_an_autocommit_connection(fresh_dsn: str) -> None:
    with notebook.setup(fresh_dsn) as conn:
        assert conn.autocommit
        who = notebook.whoami(conn)
        assert who.superuser and not who.rls_applies and who.tenant is None


def test_sql_magic_under_rls_sees_only_the_tenant(ip: Any, fresh_dsn: str) -> None:
    stages_mod = pytest.importorskip("labhelpers.stages")
    with db.connect(fresh_dsn, autocommit=True) as admin:
        stages_mod.build(admin)  # every stage, then data/seed-tenants.sql (the three scenario tenants)
        tenants_total = admin.execute("SELECT count(DISTINCT tenant_id) FROM contacts").fetchone()[0]
    assert tenants_total >= 2
    ip.user_ns["dsn"] = fresh_dsn
    assert run_cell(ip, "from labhelpers import notebook, tenants\n"
                        "conn = notebook.setup(dsn, role='app_user', tenant='acme')").success
    res = run_cell(ip, "%sql SELECT count(DISTINCT tenant_id) AS n FROM contacts")
    assert res.success, res.error_in_exec
    assert res.result.DataFrame()["n"].tolist() == [1]
    run_cell(ip, "%sql SELECT set_config('app.current_tenant', '', false)")
    res = run_cell(ip, "%sql SELECT count(*) AS n FROM contacts")
    assert res.result.DataFrame()["n"].tolist() == [0]  # fail closed


# --------------------------------------------------------------------------------------------------
# The course notebooks as files
# --------------------------------------------------------------------------------------------------


def test_the_course_has_its_notebooks_in_order() -> None:
    assert [p.stem for p in course()] == COURSE


@pytest.mark.parametrize("name", COURSE)
def test_notebook_is_committed_clean_with_a_parameters_cell(name: str) -> None:
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, f"{name}: a cell has outputs; clear them before committing"
            assert cell.execution_count is None, f"{name}: execution_count must be null"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: exactly one cell must be tagged 'parameters'"
    assigned = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert PARAMETERS <= assigned, f"{name}: parameters cell lacks {PARAMETERS - assigned}"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is tagged[0], f"{name}: the parameters cell must be the first code cell"
    setup_cell = next(c for c in nb.cells if c.cell_type == "code" and c is not first_code)
    assert "setup(" in setup_cell.source, f"{name}: the second code cell must call notebook.setup"


@pytest.mark.parametrize("name", COURSE)
def test_solution_markers_are_balanced(name: str) -> None:
    nb = nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)
    for cell in nb.cells:
        markers = re.findall(r"^\s*(?:--|#)\s*(BEGIN|END) SOLUTION\s*$", cell.source, flags=re.M)
        assert markers == ["BEGIN", "END"] * (len(markers) // 2), f"{name}: unbalanced markers in {cell.source[:80]!r}"


def _normalized(sql_text: str) -> str:
    """Comments dropped, whitespace collapsed, case folded (keyword case is a style choice of the file)."""
    no_comments = re.sub(r"--[^\n]*", "", sql_text)
    return " ".join(no_comments.split()).rstrip(";").strip().lower()


@pytest.mark.parametrize("name", COURSE)
def test_sql_cells_marked_as_from_a_stage_file_match_it(name: str) -> None:
    """A ``%%sql`` cell that says ``-- from sql/NN-....sql`` runs that file's statements, word for word."""
    from labhelpers import stages

    nb = nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)
    for cell in nb.cells:
        match = re.match(r"%%sql\s*\n\s*-- from (\S+\.sql)", cell.source)
        if cell.cell_type != "code" or not match:
            continue
        source = db.PROJECT_DIR / match.group(1)
        assert source.exists(), f"{name}: {match.group(1)} does not exist"
        in_file = {_normalized(st.text) for st in stages.split_statements(source.read_text())}
        body = cell.source.split("\n", 1)[1]
        for st in stages.split_statements(body):
            text = _normalized(st.text)
            if text:
                assert text in in_file, f"{name}: not in {match.group(1)} (word for word): {text[:120]}"


@pytest.mark.slow
def test_the_whole_course_runs_headless(fresh_dsn: str, tmp_path: Path) -> None:
    """What CI and grading rely on: every notebook passes at the small scale on a fresh database."""
    results = runner.run_course(dsn=fresh_dsn, out_dir=tmp_path, scale="small", timeout=600)
    failed = [r for r in results if not r.ok]
    report = "\n".join(f"{r.name}: {r.cell} {r.error or r.detail} (executed copy: {r.output})" for r in failed)
    assert not failed, f"notebooks failed:\n{report}"
    assert [r.name for r in results if r.output] == COURSE
