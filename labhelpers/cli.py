"""The `labhelpers` command: a thin layer, one library call per command."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click
import psycopg

from . import db
from .errors import LabError


class LabGroup(click.Group):
    """A click group that turns user-facing errors into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LabError as e:
            raise click.ClickException(str(e)) from None
        except psycopg.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise click.ClickException(f"PostgreSQL error: {first}") from None


def dsn_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """The shared ``--dsn`` option (else LAB_DSN, else DATABASE_URL, else the embedded server)."""
    return click.option(
        "--dsn",
        default=None,
        metavar="DSN",
        help="PostgreSQL URL. Default: $LAB_DSN, else $DATABASE_URL, else the embedded server.",
    )(f)


@click.group(cls=LabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="labhelpers")
def cli() -> None:
    """The Multi-Tenant Schema Lab: PostgreSQL multi-tenant schema design, hands-on.

    Example: labhelpers run
    """


# --------------------------------------------------------------------------------------------------
# labhelpers db ...
# --------------------------------------------------------------------------------------------------


@cli.group(cls=LabGroup)
def db_group() -> None:
    """The database: the embedded server's lifecycle, its URL, reset, psql.

    Example: labhelpers db up
    """


cli.add_command(db_group, name="db")


def _port_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--port", type=click.IntRange(1, 65535), default=None, help="TCP port on 127.0.0.1 (default $LAB_PORT or 54329)."
    )(f)


@db_group.command("up")
@_port_option
def db_up(port: int | None) -> None:
    """Start the embedded PostgreSQL server (idempotent) and create the lab database.

    Example: labhelpers db up
    """
    server = db.embedded_server(port=port)
    started = server.up()
    state = "started" if started else "already running"
    click.echo(f"embedded PostgreSQL {db.PG_MAJOR} {state}: {db.redact(server.dsn())}")


@db_group.command("down")
def db_down() -> None:
    """Stop the embedded server (data is kept).

    Example: labhelpers db down
    """
    server = db.embedded_server()
    server.down()
    click.echo(f"embedded server stopped (data kept in {server.pgdata})")


@db_group.command("status")
@dsn_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def db_status(dsn: str | None, as_json: bool) -> None:
    """Show the resolved server: running or not, version, DSN, tuned settings.

    Example: labhelpers db status
    """
    st = db.status(dsn)
    if as_json:
        click.echo(json.dumps({**st.__dict__, "dsn": db.redact(st.dsn), "pgdata": str(st.pgdata or "")}, indent=2))
    else:
        kind = "embedded" if st.embedded else "external"
        click.echo(f"server:   {kind}, {'running' if st.running else 'not running'}")
        click.echo(f"dsn:      {db.redact(st.dsn)}")
        if st.pgdata:
            click.echo(f"pgdata:   {st.pgdata}")
        if st.version:
            click.echo(f"version:  PostgreSQL {st.version}")
        for name, value in st.settings.items():
            click.echo(f"  {name:<32} {value}")
    if not st.running:
        sys.exit(1)


@db_group.command("url")
@dsn_option
def db_url(dsn: str | None) -> None:
    """Print the administrator's DSN and nothing else (starts the embedded server if needed).

    Example: psql "$(labhelpers db url)"
    """
    click.echo(db.resolve_dsn(dsn))


@db_group.command("reset")
@dsn_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def db_reset(dsn: str | None, yes: bool) -> None:
    """Drop and recreate the lab database: the only destructive command.

    Example: labhelpers db reset --yes
    """
    target = db.resolve_dsn(dsn)
    if not yes:
        click.confirm(f"Drop every table and row in database {db.dbname_of(target)}?", abort=True)
    click.echo(db.reset_database(target))


@db_group.command("psql", context_settings={"ignore_unknown_options": True})
@dsn_option
@click.option("--role", type=click.Choice(db.APP_ROLES), default=None, help="Log in as this application role.")
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def db_psql(dsn: str | None, role: str | None, psql_args: tuple[str, ...]) -> None:
    """Open psql on the lab database (extra arguments go to psql).

    Example: labhelpers db psql -c 'SELECT count(*) FROM contacts'
    """
    psql = db.psql_path()
    if psql is None:
        raise LabError(
            "no psql client found: install one (Debian/Ubuntu: apt install postgresql-client; "
            "macOS: brew install libpq) or use the notebooks"
        )
    target = db.resolve_dsn(dsn)
    if role:
        db.connect(target, role=role).close()  # a clear error if the role does not exist yet
        target = db.role_dsn(target, role)
    os.execv(str(psql), [str(psql), target, *psql_args])


# --------------------------------------------------------------------------------------------------
# labhelpers build
# --------------------------------------------------------------------------------------------------


@cli.command("build")
@dsn_option
@click.option("--through", type=click.Choice(["01", "02", "03", "04", "05", "rollups", "seed"]), default=None,
              help="Stop after this stage (default: every stage and the seed data).")
def build_cmd(dsn: str | None, through: str | None) -> None:
    """Apply sql/01..05 and data/seed-tenants.sql in order; running it again changes nothing.

    A failing statement is reported with its file, line and PostgreSQL error, and the build stops
    (the failing file leaves nothing half-applied).

    Example: labhelpers build --through 02
    """
    from . import stages

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

    from . import runner

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
            from ._progress import rich_progress

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
    from . import explain as explaining
    from . import tenants

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
        from . import plots

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
    from . import checks

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


# --------------------------------------------------------------------------------------------------
# labhelpers seed, labhelpers bench
# --------------------------------------------------------------------------------------------------


@cli.command("seed")
@dsn_option
@click.option("--scale", default="small", show_default=True,
              type=click.Choice(["tiny", "small", "medium", "large", "xl"]),
              help="tiny (tests), small (3 x 10k contacts), medium (10 tenants, largest 100k), "
                   "large (10 skewed tenants, largest 1M contacts), xl (a tenant with 10M+ rows).")
@click.option("--tenants", type=click.IntRange(1, 19), default=None, help="Custom shape: number of tenants.")
@click.option("--contacts", type=click.IntRange(1, 50_000_000), default=None,
              help="Custom shape: contacts of the largest tenant.")
@click.option("--seed", "seed_value", type=int, default=42, show_default=True, help="Random seed.")
@click.option("--replace", is_flag=True, help="Remove another generated dataset first (generated rows only).")
@click.option("--jobs", type=click.IntRange(1, 16), default=None, help="Parallel streams (default: cores, max 4).")
@click.option("--validate", is_flag=True, help="Keep the custom-field validation trigger on (slower).")
def seed_cmd(dsn: str | None, scale: str, tenants: int | None, contacts: int | None, seed_value: int,
             replace: bool, jobs: int | None, validate: bool) -> None:
    """Load deterministic CRM data at a scale: tenants, users, contacts, leads, activities.

    Builds the schema first if needed. Re-running a loaded scale does nothing; an interrupted run
    (Ctrl-C, a killed server) is finished by running the same command again. Big scales belong in a
    database of their own (--dsn), so the course database stays small.

    Example: labhelpers seed --scale large --dsn postgresql://postgres:postgres_password@127.0.0.1:54329/bench_large
    """
    from . import datagen
    from ._progress import rich_progress

    try:
        with rich_progress() as bar:
            result = datagen.seed(dsn, scale=scale, tenants=tenants, contacts=contacts, seed=seed_value,
                                  replace=replace, jobs=jobs, validate=validate, on_progress=bar)
    except KeyboardInterrupt:
        click.echo("interrupted: the run is recorded as incomplete; run the same command again to finish it",
                   err=True)
        sys.exit(130)
    click.echo(result.summary())
    st = result.stats
    if result.action != "unchanged" and st.get("seconds"):
        secs = ", ".join(f"{k} {v:.1f} s" for k, v in st["seconds"].items())
        click.echo(f"  {secs}; load {st.get('load_rows_per_s') or 0:,} rows/s, {st.get('load_mb_per_s')} MB/s "
                   f"with {st.get('jobs')} streams")


@cli.command("bench")
@dsn_option
@click.option("--scale", default=None, type=click.Choice(["tiny", "small", "medium", "large", "xl"]),
              help="The dataset expected (seeded first if the database has none). Default: what is loaded.")
@click.option("--repeat", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Timed runs per query and tenant, after the warm-up.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where results.json, report.md and the pictures go (default runs/bench/<scale>).")
@click.option("--no-variants", is_flag=True, help="Skip RLS overhead, policy variants and LEAKPROOF comparisons.")
def bench_cmd(dsn: str | None, scale: str | None, repeat: int, out_dir: Path | None, no_variants: bool) -> None:
    """Time the lesson's benchmark queries as app_user under RLS, against the lesson's targets.

    For the largest and the smallest tenant: Tests 1-3 and Scenario 2 verbatim and tuned, the tenant
    switch; p50/p95/p99 after a warm-up; pass when p95 is within target. Exit code 1 if a query the
    success criterion counts misses its target.

    Example: labhelpers bench --scale large --repeat 200 --dsn postgresql://postgres:postgres_password@127.0.0.1:54329/bench_large
    """
    from rich.console import Console
    from rich.progress import Progress

    from . import bench

    with Progress(transient=True) as progress:
        task = progress.add_task("bench", total=None)
        results = bench.run_bench(dsn, scale=scale, repeat=repeat, out_dir=out_dir, variants=not no_variants,
                                  on_progress=lambda _t, done, total: progress.update(task, completed=done,
                                                                                      total=total))
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=180)  # logs: the table without wrapping
    console.print(bench.summary_table(results))
    out = Path(out_dir) if out_dir else bench.DEFAULT_OUT / results.scale
    console.print(f"results: {out / 'results.json'}, {out / 'report.md'}")
    if any(r.passed is False for r in results.criterion_records):
        sys.exit(1)


@cli.command("bench-load")
@dsn_option
@click.option("--rows", type=click.IntRange(100, 100_000_000), default=1_000_000, show_default=True,
              help="Rows each method loads.")
@click.option("--jobs", type=click.IntRange(1, 16), default=None,
              help="Parallel streams for the methods that have them (default: cores, max 4).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where results.json and report.md go (default runs/bench-load).")
def bench_load_cmd(dsn: str | None, rows: int, jobs: int | None, out_dir: Path | None) -> None:
    """Compare ways of loading data on this server, beside pgbench -i: rows/s, MB/s, time to query-ready.

    INSERT ... SELECT generate_series (1 and N streams, indexes during or after), COPY BINARY and
    COPY FREEZE from Python, pgbench -i (client- and server-side), and labhelpers seed itself, each
    into a fresh table of a scratch database (lab_loadbench, dropped afterwards).

    Example: labhelpers bench-load --rows 1000000
    """
    from rich.console import Console
    from rich.progress import Progress

    from .bench import load

    with Progress(transient=True) as progress:
        task = progress.add_task("bench-load", total=None)
        results = load.compare_loads(
            dsn, rows=rows, jobs=jobs or max(1, min(4, os.cpu_count() or 1)), out_dir=out_dir,
            on_progress=lambda _t, done, total: progress.update(task, completed=done, total=total))
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=180)
    console.print(load.summary_table(results))
    out = Path(out_dir) if out_dir else load.DEFAULT_OUT
    console.print(f"results: {out / 'results.json'}, {out / 'report.md'}")


def _parse_value(text: str) -> Any:
    """Notebook parameters from the command line: numbers and booleans as such, else strings."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="labhelpers")
