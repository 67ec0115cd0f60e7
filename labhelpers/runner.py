"""Running the course headless: prepare the database, execute the notebooks with papermill, summarize.

Every executed notebook is saved, failed ones too (papermill marks the failing cell and puts a banner
at the top), so a student or an instructor can open exactly what went wrong. The kernel is papermill's
``python3``: jupyter_client starts it with the Python that runs papermill, so the project's venv.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import db
from .errors import LabError

__all__ = [
    "DEFAULT_OUT",
    "NOTEBOOK_DIR",
    "StepResult",
    "course_notebooks",
    "execute_notebook",
    "failure_of",
    "run_course",
]

log = logging.getLogger("labhelpers")

NOTEBOOK_DIR = db.PROJECT_DIR / "notebooks"
DEFAULT_OUT = db.PROJECT_DIR / "runs" / "latest"
DEFAULT_SCALE = "small"


@dataclass
class StepResult:
    """One line of the summary: a preparation step or a notebook.

    ``cell`` names the failing cell as JupyterLab shows it (``In [7]``) and ``error`` is its error in
    one line (``UndefinedTable: relation "x" does not exist``); ``detail`` is what the summary shows.
    """

    name: str
    ok: bool
    seconds: float
    detail: str = ""
    output: Path | None = None
    cell: str = ""
    error: str = ""


def course_notebooks(selected: Iterable[str] = (), *, directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks to run, in course order (``NN-topic.ipynb``); ``selected`` by path, name or prefix.

    Raise LabError if a selected notebook does not exist.
    """
    every = sorted(directory.glob("[0-9][0-9]-*.ipynb"))
    chosen: list[Path] = []
    for item in selected:
        path = Path(item)
        if path.suffix == ".ipynb" and path.exists():
            chosen.append(path.resolve())
            continue
        matches = [nb for nb in every if nb.stem == item or nb.name == item or nb.stem.startswith(f"{item}-")]
        if not matches:
            raise LabError(f"no notebook {item!r}; the course has: {', '.join(nb.stem for nb in every) or 'none'}")
        chosen.extend(matches)
    return chosen or every


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def failure_of(executed: Path) -> tuple[str, str]:
    """Find the failing cell of an executed notebook: ``("In [7]", "ErrorName: first line")``.

    Reads papermill's marks (``metadata.papermill.exception``). The error comes from the cell's error
    output, else from its stderr (IPython shows a ``UsageError`` there, without an error output).
    Returns ``("", "")`` if no cell is marked.
    """
    import nbformat

    try:
        nb = nbformat.read(str(executed), as_version=4)
    except Exception:  # unreadable or missing: nothing to point at
        return "", ""
    for cell in nb.cells:
        if cell.get("cell_type") != "code" or not cell.get("metadata", {}).get("papermill", {}).get("exception"):
            continue
        label = f"In [{cell.get('execution_count')}]" if cell.get("execution_count") else "a cell"
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                evalue = _first_line(out.get("evalue", ""))
                return label, f"{out.get('ename')}: {evalue}" if evalue else str(out.get("ename"))
        stderr = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stderr")
        errors = [ln.strip() for ln in stderr.splitlines() if "Error" in ln]
        return label, errors[-1] if errors else _first_line(stderr) or "the cell failed"
    return "", ""


def execute_notebook(
    notebook: Path, out_dir: Path, parameters: dict[str, Any], *, timeout: float | None = None
) -> StepResult:
    """Execute one notebook with papermill; always save the executed copy in ``out_dir``.

    :param parameters: injected after the cell tagged ``parameters`` (at the top if there is none).
    :param timeout: seconds allowed per cell (None: no limit).
    :returns: the result; a failure names the failing cell and its error, never raises.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / notebook.name
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters,
            cwd=str(notebook.parent),
            execution_timeout=timeout,
            progress_bar=False,
            kernel_name="python3",
            # ipykernel 7 warns on every start that local TCP is unencrypted: noise in a summary.
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except PapermillExecutionError as e:
        cell, error = failure_of(output)
        if not error:
            error = f"{e.ename}: {_first_line(e.evalue)}"
            cell = f"In [{e.exec_count}]" if e.exec_count else f"cell {e.cell_index}"
        return StepResult(notebook.stem, False, time.perf_counter() - started, f"{cell}: {error}", output,
                          cell, error)
    except Exception as e:  # a dead kernel, a timeout, an unreadable notebook: still one summary line
        cell, _ = failure_of(output)
        error = f"{type(e).__name__}: {_first_line(str(e))}"
        return StepResult(notebook.stem, False, time.perf_counter() - started,
                          f"{cell}: {error}" if cell else error, output, cell, error)
    return StepResult(notebook.stem, True, time.perf_counter() - started, "", output)


def _step(name: str, action: Callable[[], str]) -> StepResult:
    started = time.perf_counter()
    try:
        detail = action()
    except LabError as e:
        return StepResult(name, False, time.perf_counter() - started, str(e), error=str(e))
    except Exception as e:  # a preparation bug or a PostgreSQL error: one line, and the run stops
        log.debug("step %s failed", name, exc_info=True)
        error = f"{type(e).__name__}: {_first_line(str(e))}"
        return StepResult(name, False, time.perf_counter() - started, error, error=error)
    return StepResult(name, True, time.perf_counter() - started, detail)


def _available(module: str) -> bool:
    return importlib.util.find_spec(f"labhelpers.{module}") is not None


def run_course(
    *,
    dsn: str | None = None,
    notebooks: Iterable[str] = (),
    parameters: dict[str, Any] | None = None,
    scale: str = DEFAULT_SCALE,
    out_dir: Path = DEFAULT_OUT,
    timeout: float | None = 600,
    prepare: bool = True,
    replace: bool = False,
    notebook_dir: Path = NOTEBOOK_DIR,
    on_start: Callable[[str], None] | None = None,
    on_result: Callable[[StepResult], None] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> list[StepResult]:
    """Prepare the database, then execute the notebooks in order; return one result per step.

    Steps: ``database`` (resolve the DSN, start the embedded server if needed, check it answers), then,
    when ``prepare``, ``schema`` (every SQL stage, `stages.build`) and ``data`` (the tenants at ``scale``,
    `datagen.seed`), then one step per notebook with the parameters ``dsn`` and ``scale`` plus
    ``parameters``. A failing preparation step stops the run (nothing after it could pass); a failing
    notebook does not.

    :param notebooks: names, numbers or paths (`course_notebooks`); empty for the whole course.
    :param out_dir: where the executed notebooks are saved, failed ones included.
    :param timeout: seconds allowed per cell.
    :param replace: let the data step replace generated data of another scale or seed (`datagen.seed`).
    :param on_start: called with a step's name before it runs (progress).
    :param on_result: called with each result as soon as it is known.
    :param on_progress: the data step's progress, ``(task, done, total)`` (see `datagen.rich_progress`).
    Raise LabError if a selected notebook does not exist.
    """
    selected = course_notebooks(notebooks, directory=notebook_dir)
    scale = str((parameters or {}).get("scale", scale))
    results: list[StepResult] = []

    def record(name: str, run: Callable[[], StepResult]) -> bool:
        if on_start:
            on_start(name)
        result = run()
        results.append(result)
        if on_result:
            on_result(result)
        return result.ok

    resolved: dict[str, str] = {}

    def check_database() -> str:
        resolved["dsn"] = db.resolve_dsn(dsn)
        with db.connect(resolved["dsn"]) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        return f"PostgreSQL {version} at {db.redact(resolved['dsn'])}"

    def build_schema() -> str:
        from . import stages

        with db.connect(resolved["dsn"], autocommit=True) as conn:
            done = stages.build(conn)
        return f"{len(done)} stage files" if isinstance(done, (list, tuple)) else "built"

    def seed_data() -> str:
        from . import datagen

        return datagen.seed(resolved["dsn"], scale=scale, replace=replace, on_progress=on_progress).summary()

    if not record("database", lambda: _step("database", check_database)):
        return results
    if prepare:
        for name, action, module in (("schema", build_schema, "stages"), ("data", seed_data, "datagen")):
            if not _available(module):
                log.warning("labhelpers.%s is not there yet: skipping the %s step", module, name)
                continue
            if not record(name, lambda name=name, action=action: _step(name, action)):  # type: ignore[misc]
                return results

    params = {"dsn": resolved["dsn"], "scale": scale, **(parameters or {})}
    for notebook in selected:
        record(notebook.stem, lambda nb=notebook: execute_notebook(nb, out_dir, params, timeout=timeout))  # type: ignore[misc]
    return results
