"""The loading alternatives, measured side by side on one server: where the seed's method comes from.

`compare_loads` creates a scratch database (``lab_loadbench``, dropped afterwards) and, in one session
on the same server, times loading the same contacts-shaped rows (two uuids, names, an e-mail, a
company, a jsonb of eight custom fields, a timestamptz: about 300 bytes a row) in each of these ways
(`load_methods`):

- ``INSERT ... SELECT`` over ``generate_series``, rows made by the server: 1 stream, then ``jobs``
  parallel streams; with the keys and indexes present during the load, and created after it;
- ``COPY ... (FORMAT BINARY)`` from Python (psycopg ``write_row``), 1 stream and ``jobs`` threads;
- ``COPY ... FREEZE`` into a table truncated in the same transaction (no parallel streams possible);
- ``pgbench -i`` (the wheel ships it), client-side generation (its COPY FREEZE) and server-side
  generation, as the reference for what this server can take;
- the course's own loader, ``labhelpers seed``, on a custom shape of about the same number of rows.

Each method gets a fresh table and a ``CHECKPOINT`` first, so no method pays for the previous one's
dirty pages. Rows/s and MB/s are over the load phase only (MB = the table's heap and TOAST bytes
afterwards); "query-ready" adds what the data needs before the lesson's queries can use it (indexes,
``VACUUM (ANALYZE)`` for the visibility map and the statistics). Results: ``results.json`` and
``report.md`` in ``runs/bench-load/`` by default.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from pathlib import Path

from rich.table import Table

from .. import db, tenants
from .._progress import ProgressFn
from ..errors import LabError
from ._json import Record, json_field, list_of
from .environment import load_avg, machine_info
from .load_methods import LoadResult, Scratch, methods
from .results import Machine, Server

__all__ = ["DEFAULT_OUT", "SCRATCH_DB", "LoadComparison", "LoadResult", "compare_loads", "report_markdown",
           "summary_table"]

DEFAULT_OUT = db.PROJECT_DIR / "runs" / "bench-load"
SCRATCH_DB = "lab_loadbench"


@dataclass(frozen=True, kw_only=True)
class LoadComparison(Record):
    """Every method's figures on one server: the content of the comparison's results.json."""

    created_at: str
    rows: int
    jobs: int
    pgbench_scale: int
    machine: Machine = json_field(load=Machine.from_json)
    server: Server = json_field(load=Server.from_json)
    methods: list[LoadResult] = json_field(load=list_of(LoadResult.from_json))


def compare_loads(
    dsn: str | None = None,
    *,
    rows: int = 1_000_000,
    jobs: int = 2,
    pgbench_scale: int | None = None,
    out_dir: str | Path | None = None,
    on_progress: ProgressFn | None = None,
) -> LoadComparison:
    """Time every loading method on the server of ``dsn``, in a scratch database dropped afterwards.

    :param dsn: admin DSN (a superuser: the course's seed and pgbench need to create and own tables).
    :param rows: rows per method.
    :param jobs: parallel streams for the methods that have them.
    :param pgbench_scale: ``pgbench -i -s`` (default: as many accounts as ``rows``, at least 1).
    :param out_dir: where results.json and report.md go (default ``runs/bench-load/``).
    :param on_progress: ``callback(task, done, total)``.
    Returns the results (what results.json holds).
    Raise LabError if the server cannot be reached, the role is not a superuser, or a method loads a
    wrong number of rows.
    """
    admin = db.resolve_dsn(dsn)
    scale = pgbench_scale or max(1, round(rows / 100_000))
    with db.connect(admin, autocommit=True) as conn:
        if not tenants.whoami(conn).superuser:
            raise LabError("comparing load methods needs a superuser (it creates a scratch database and seeds it)")
        server = Server(version=conn.execute("SELECT version()").fetchone()[0],  # type: ignore[index]
                        settings=db.server_settings(conn))
    db.drop_database(admin, SCRATCH_DB)  # a scratch database left by an interrupted comparison
    db.create_database(admin, SCRATCH_DB)
    scratch_dsn = db.with_dbname(admin, SCRATCH_DB)
    created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    machine = machine_info()
    try:
        measured = _run_methods(scratch_dsn, rows=rows, jobs=jobs, scale=scale, on_progress=on_progress)
    finally:
        db.drop_database(admin, SCRATCH_DB)
    results = LoadComparison(created_at=created_at, rows=rows, jobs=jobs, pgbench_scale=scale,
                             machine=replace(machine, load_avg_at_end=load_avg()), server=server, methods=measured)
    out = Path(out_dir) if out_dir else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results.to_json(), indent=1, default=str), encoding="utf-8")
    (out / "report.md").write_text(report_markdown(results), encoding="utf-8")
    return results


def _run_methods(scratch_dsn: str, *, rows: int, jobs: int, scale: int,
                 on_progress: ProgressFn | None) -> list[LoadResult]:
    """Each method in turn on one admin session of the scratch database, reported as task "bench-load"."""
    out = []
    with db.connect(scratch_dsn, autocommit=True) as conn:
        scratch = Scratch(scratch_dsn, conn)
        todo = methods(rows, jobs, scale, scratch_dsn)
        for i, m in enumerate(todo):
            if on_progress:
                on_progress("bench-load", i, len(todo))
            out.append(replace(m.run(scratch), key=m.key))
        if on_progress:
            on_progress("bench-load", len(todo), len(todo))
    return out


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------

_COLUMNS = ("method", "streams", "rows", "load s", "rows/s", "MB/s", "indexes s", "vacuum s", "query-ready s")


def _cells(r: LoadResult) -> list[str]:
    if r.error:
        return [r.method, "-", "-", "-", "-", "-", "-", "-", r.error]

    def sec(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    return [r.method, str(r.streams), f"{r.rows:,}", sec(r.load_s), f"{round(r.rows_per_s):,}",
            f"{round(r.mb_per_s, 1):.1f}", sec(r.index_s), sec(r.vacuum_s), sec(r.total_s)]


def report_markdown(results: LoadComparison) -> str:
    """The comparison as a Markdown table, with the machine and the server."""
    m = results.machine
    lines = [
        "# Loading methods compared",
        "",
        f"{results.created_at} on {m.cpu_model}, {m.cores} cores, {m.ram_gb} GB RAM; "
        f"{results.server.version.split(',')[0]}. {results.rows:,} contacts-shaped rows per method "
        f"(pgbench: scale {results.pgbench_scale}); load average at start {m.load_avg_1_5_15}, "
        f"at end {m.load_avg_at_end}. rows/s and MB/s are over the load phase; query-ready adds the "
        "indexes (where the method builds them after) and VACUUM (ANALYZE).",
        "",
        "| " + " | ".join(_COLUMNS) + " | note |",
        "|---|" + "---:|" * (len(_COLUMNS) - 1) + "---|",
    ]
    for r in results.methods:
        lines.append("| " + " | ".join(_cells(r)) + f" | {r.note} |")
    lines.append("")
    return "\n".join(lines)


def summary_table(results: LoadComparison) -> Table:
    """A rich Table of the comparison (what `labhelpers bench-load` prints)."""
    m = results.machine
    table = Table(title=f"loading {results.rows:,} rows ({m.cpu_model}, {m.cores} cores)")
    for col in _COLUMNS:
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in results.methods:
        table.add_row(*_cells(r))
    return table
