"""`labhelpers seed`, `bench`, `bench-load`: data at a scale, and the measurements.

Each command imports the library module it calls when it runs, so `labhelpers --help` starts
without loading pandas or matplotlib.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ._base import cli, dsn_option


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
    from .. import datagen
    from .._progress import rich_progress

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

    from .. import bench

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

    from ..bench import load

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
