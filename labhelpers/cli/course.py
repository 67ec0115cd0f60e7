"""`labhelpers build`, `run`, `explain`, `check`: the course's stages, notebooks, plans and criteria.

Each command imports the library module it calls when it runs, so `labhelpers --help` starts
without loading pandas or matplotlib.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .. import db
from ._base import cli, dsn_option


@cli.command("build")
@dsn_option
@click.option("--through", type=click.Choice(["01", "02", "03", "04", "05", "rollups", "seed"]), default=None,
              help="Stop after this stage (default: every stage and the seed data).")
def build_cmd(dsn: str | None, through: str | None) -> None:
    """Apply sql/01..05, the course's rollups and data/seed-tenants.sql in order; running it again changes nothing.

    A failing statement is reported with its file, line and PostgreSQL error, and the build stops
    (the failing file leaves nothing half-applied).

    Example: labhelpers build --through 02
    """
    from .. import stages

    with db.connect(dsn) as conn:
        done = stages.build(conn, through=through)
    for stage in done:
        click.echo(f"applied {stage.key}  {stage.path.relative_to(db.PROJECT_DIR)}")


# --------------------------------------------------------------------------------------------------
# labhelpers run
# --------------------------------------------------------------------------------------------------


@cli.command("run")
@dsn_option
@click.argument("notebooks", nargs=-1)
@click.option("-p", "--parameter", "parameters", nargs=2, multiple=True, metavar="NAME VALUE",
              help="A notebook parameter (repeatable), e.g. -p tenant globex.")
@click.option("--scale", default="small", show_default=True, metavar="SCALE",
              help="Data scale to seed and pass to the notebooks (small, medium, large).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where executed notebooks are saved (default runs/latest).")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds allowed per cell.")
@click.option("--no-prepare", is_flag=True, help="Do not build the schema or seed data first.")
@click.option("--replace", is_flag=True,
              help="If the database holds generated data of another scale or seed, replace it (generated rows only).")
def run_cmd(dsn: str | None, notebooks: tuple[str, ...], parameters: tuple[tuple[str, str], ...],
            scale: str, out_dir: Path | None, timeout: float, no_prepare: bool, replace: bool) -> None:
    """Run the whole course headless and end with a summary (the README's first command).

    Prepares the database (schema, data at --scale), then executes each notebook with papermill,
    saving every executed copy (failed ones too) in --out. NOTEBOOKS are names or numbers
    (e.g. 02 or 02-row-level-security); default: all, in order. Exit code 1 if any step failed.

    Example: labhelpers run 00 01 -p tenant acme
    """
    from rich.console import Console
    from rich.table import Table

    from .. import runner

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160)  # CI logs: a summary table without wrapping
    params = {name: _parse_value(value) for name, value in parameters}

    def started(name: str) -> None:
        console.print(f"[dim]...[/] {name}")

    def show(result: runner.StepResult) -> None:
        mark = "[green]ok[/]" if result.ok else "[red]FAILED[/]"
        console.print(f"{mark} {result.name} ({result.seconds:.1f}s) {result.detail}", soft_wrap=True)

    from contextlib import ExitStack

    bars = ExitStack()  # the data step's progress bars, shown while it runs
    progress: list[Callable[[str, int, int], None]] = []

    def on_progress(task: str, done: int, total: int) -> None:
        if not progress:
            from .._progress import rich_progress

            progress.append(bars.enter_context(rich_progress(transient=True)))
        progress[0](task, done, total)

    def show_result(result: runner.StepResult) -> None:
        bars.close()
        progress.clear()
        show(result)

    kwargs = {"out_dir": out_dir} if out_dir else {}
    results = runner.run_course(dsn=dsn, notebooks=notebooks, parameters=params, scale=scale, timeout=timeout,
                                prepare=not no_prepare, replace=replace, on_start=started,
                                on_result=show_result, on_progress=on_progress, **kwargs)
    table = Table(title="Summary")
    for column in ("step", "status", "seconds", "failing cell", "error (or detail)"):
        table.add_column(column)
    for r in results:
        table.add_row(r.name, "ok" if r.ok else "[red]FAILED[/]", f"{r.seconds:.1f}", r.cell,
                      r.detail if r.ok else (r.error or r.detail))
    console.print(table)
    failed = [r for r in results if not r.ok]
    total = sum(r.seconds for r in results)
    console.print(f"{len(results) - len(failed)} of {len(results)} steps passed in {total:.0f}s")
    saved = {r.output.parent for r in results if r.output}
    for folder in sorted(saved):
        console.print(f"executed notebooks: {folder}")
    if failed:
        sys.exit(1)


# --------------------------------------------------------------------------------------------------
# labhelpers explain
# --------------------------------------------------------------------------------------------------


@cli.command("explain")
@dsn_option
@click.argument("query")
@click.option("--tenant", "tenant_ref", default=None, metavar="TENANT",
              help="Tenant slug or UUID whose context the statement runs in (app.current_tenant).")
@click.option("--role", type=click.Choice(db.APP_ROLES), default=None,
              help="Log in as this application role, so RLS applies (default: the administrator).")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw the plan tree to this PNG file.")
@click.option("--no-analyze", is_flag=True, help="Plan only, do not run the statement.")
def explain_cmd(dsn: str | None, query: str, tenant_ref: str | None, role: str | None, png: Path | None,
                no_analyze: bool) -> None:
    """Show a statement's plan, node by node: time, rows estimated vs actual, indexes, pruning.

    Runs EXPLAIN (ANALYZE, BUFFERS, SETTINGS) as --role in --tenant's context; a write is rolled back.

    Example: labhelpers explain "SELECT count(*) FROM contacts" --tenant acme --role app_user --png plan.png
    """
    from .. import explain as explaining
    from .. import tenants

    with db.connect(dsn, role=role, autocommit=True) as conn:
        if tenant_ref:
            tenants.use_tenant(conn, tenant_ref)
        plan = explaining.explain(conn, query, analyze=not no_analyze, rollback=True)
    table = plan.table()
    table = table.astype(object).where(table.notna(), "")
    width = max(len(str(v)) for v in table["node"])
    click.echo(table.to_string(formatters={"node": lambda v: f"{v:<{width}}"}, justify="left"))
    click.echo()
    click.echo(plan.summary())
    if png:
        from .. import plots

        plots.plot_plan(plan).savefig(png, dpi=110)
        click.echo(f"plan picture: {png}")


# --------------------------------------------------------------------------------------------------
# labhelpers check
# --------------------------------------------------------------------------------------------------


@cli.command("check")
@dsn_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output, with the evidence.")
def check_cmd(dsn: str | None, as_json: bool) -> None:
    """Measure the lesson's success criteria on the database (as app_user, under RLS).

    Prints one line per criterion: PASS, FAIL or SKIP (benchmarks without a `labhelpers bench` run).
    Exit code 1 if any criterion FAILs; SKIP does not fail.

    Example: labhelpers check --json
    """
    from .. import checks

    results = checks.run_checks(db.resolve_dsn(dsn))
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2, default=str))
    else:
        from rich.console import Console
        from rich.table import Table

        colour = {"PASS": "green", "FAIL": "red", "SKIP": "yellow"}
        table = Table(title="Success criteria")
        for column in ("criterion", "status", "summary"):
            table.add_column(column)
        for r in results:
            table.add_row(r.criterion, f"[{colour[r.status]}]{r.status}[/]", r.summary)
        Console(highlight=False).print(table)
    if any(r.passed is False for r in results):
        sys.exit(1)


def _parse_value(text: str) -> Any:
    """Notebook parameters from the command line: numbers and booleans as such, else strings."""
    try:
        return json.loads(text)
    except ValueError:
        return text
