"""Running the course headless: prepare the database, execute the notebooks with papermill, summarize.

Every executed notebook is saved, failed ones too (papermill marks the failing cell), so a student or
an instructor can open exactly what went wrong.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import db
from .errors import LabError

__all__ = ["NOTEBOOK_DIR", "StepResult", "course_notebooks", "execute_notebook", "run_course"]

log = logging.getLogger("labhelpers")

NOTEBOOK_DIR = db.PROJECT_DIR / "notebooks"
DEFAULT_OUT = db.PROJECT_DIR / "runs" / "latest"


@dataclass
class StepResult:
    """One line of the summary: a preparation step or a notebook."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""
    output: Path | None = None


def course_notebooks(selected: Iterable[str] = ()) -> list[Path]:
    """The notebooks to run, in course order (``NN-topic.ipynb``); ``selected`` by path, name or prefix.

    Raise LabError if a selected notebook does not exist.
    """
    every = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]-*.ipynb"))
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


def execute_notebook(
    notebook: Path, out_dir: Path, parameters: dict[str, Any], *, timeout: float | None = None
) -> StepResult:
    """Execute one notebook with papermill; always save the executed copy in ``out_dir``."""
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
        )
    except PapermillExecutionError as e:
        detail = f"cell {e.exec_count or e.cell_index}: {e.ename}: {str(e.evalue).strip().splitlines()[0] if str(e.evalue).strip() else ''}"
        return StepResult(notebook.stem, False, time.perf_counter() - started, detail, output)
    except Exception as e:  # a dead kernel, a timeout, an unreadable notebook: still one summary line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return StepResult(notebook.stem, False, time.perf_counter() - started, f"{type(e).__name__}: {first}", output)
    return StepResult(notebook.stem, True, time.perf_counter() - started, "", output)


def _step(name: str, action: Callable[[], str]) -> StepResult:
    started = time.perf_counter()
    try:
        detail = action()
    except LabError as e:
        return StepResult(name, False, time.perf_counter() - started, str(e))
    return StepResult(name, True, time.perf_counter() - started, detail)


def run_course(
    *,
    dsn: str | None = None,
    notebooks: Iterable[str] = (),
    parameters: dict[str, Any] | None = None,
    out_dir: Path = DEFAULT_OUT,
    timeout: float | None = 600,
    on_result: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    """Prepare the database, then execute the notebooks in order; return one result per step.

    Preparation failing stops the run (nothing after it could pass); a failing notebook does not.
    """
    results: list[StepResult] = []

    def record(result: StepResult) -> bool:
        results.append(result)
        if on_result:
            on_result(result)
        return result.ok

    resolved: dict[str, str] = {}

    def prepare_database() -> str:
        resolved["dsn"] = db.resolve_dsn(dsn)
        with db.connect(resolved["dsn"]) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        return f"PostgreSQL {version} at {db.redact(resolved['dsn'])}"

    if not record(_step("database", prepare_database)):
        return results

    params = {"dsn": resolved["dsn"], **(parameters or {})}
    for notebook in course_notebooks(notebooks):
        record(execute_notebook(notebook, out_dir, params, timeout=timeout))
    return results
