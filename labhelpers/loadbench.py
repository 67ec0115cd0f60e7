"""The loading alternatives, measured side by side on one server: where the seed's method comes from.

`compare_loads` creates a scratch database (``lab_loadbench``, dropped afterwards) and, in one session
on the same server, times loading the same contacts-shaped rows (two uuids, names, an e-mail, a
company, a jsonb of eight custom fields, a timestamptz: about 300 bytes a row) in each of these ways:

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
import logging
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from . import bench, db
from .errors import LabError

__all__ = ["DEFAULT_OUT", "SCRATCH_DB", "LoadResult", "compare_loads", "report_markdown", "summary_table"]

log = logging.getLogger("labhelpers")

DEFAULT_OUT = db.PROJECT_DIR / "runs" / "bench-load"
SCRATCH_DB = "lab_loadbench"

_TABLE = """
CREATE TABLE load_rows (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    first_name    text,
    last_name     text        NOT NULL,
    email         text,
    company       text,
    custom_fields jsonb       NOT NULL,
    created_at    timestamptz NOT NULL
)"""
# The keys and indexes of the course's contacts, in miniature: a primary key, a btree, a GIN.
_INDEXES = (
    "ALTER TABLE load_rows ADD PRIMARY KEY (tenant_id, id)",
    "CREATE INDEX ON load_rows (tenant_id, created_at)",
    "CREATE INDEX ON load_rows USING gin (custom_fields jsonb_path_ops)",
)
_TYPES = ["uuid", "uuid", "text", "text", "text", "text", "jsonb", "timestamptz"]

_FIRST = ("Ada", "Alan", "Barbara", "Brian", "Carla", "Chen", "Dana", "David", "Elena", "Emeka", "Fatima", "Frank",
          "Grace", "Hiro", "Ines", "Ivan")
_LAST = ("Smith", "Garcia", "Chen", "Okafor", "Muller", "Rossi", "Tanaka", "Kowalski", "Silva", "Nguyen", "Patel",
         "Johnson", "Brown", "Dubois", "Ivanova", "Haddad")
_INDUSTRY = ("tech", "finance", "healthcare", "retail", "manufacturing", "education", "media", "energy")
_STATUS = ("active", "inactive", "prospect", "churned")
_PRIORITY = ("low", "medium", "high", "urgent")
_REGION = ("north_america", "emea", "apac", "latam")
_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def _arr(values: Sequence[str]) -> str:
    return "ARRAY[" + ",".join(f"'{v}'" for v in values) + "]"


# Rows lo..hi, made by the server; the Python twin is `_row` (same shapes, sizes within a few %).
_GENERATE = f"""
INSERT INTO load_rows
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(n %% 10), 12, '0'))::uuid,
       encode(int8send(n) || int8send(h), 'hex')::uuid,
       ({_arr(_FIRST)})[1 + (h & 15)],
       ({_arr(_LAST)})[1 + ((h >> 4) & 15)],
       lower(({_arr(_FIRST)})[1 + (h & 15)]) || '.' || n || '@example.com',
       'Company ' || ((h >> 8) & 4095),
       jsonb_build_object('industry', ({_arr(_INDUSTRY)})[1 + ((h >> 20) & 7)],
                          'status', ({_arr(_STATUS)})[1 + ((h >> 23) & 3)],
                          'priority', ({_arr(_PRIORITY)})[1 + ((h >> 25) & 3)],
                          'region', ({_arr(_REGION)})[1 + ((h >> 27) & 3)],
                          'score', (h >> 29) & 127, 'employees', (h >> 36) & 65535,
                          'vip', (h >> 52) & 1 = 1, 'note', md5(n::text)),
       timestamptz '2024-01-01 00:00:00+00' + n * interval '1 second'
  FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS n
 CROSS JOIN LATERAL (SELECT hashint8extended(n, 42) AS h OFFSET 0) AS x
"""


def _row(n: int) -> tuple[Any, ...]:
    """Row ``n`` made in Python (for the COPY methods)."""
    import hashlib

    h = int.from_bytes(hashlib.blake2b(n.to_bytes(8, "little"), digest_size=8).digest(), "little")
    first = _FIRST[h & 15]
    return (
        uuid.UUID(f"00000000-0000-7000-8000-{n % 10:012x}"),
        uuid.UUID(int=(n << 64) | h),
        first,
        _LAST[(h >> 4) & 15],
        f"{first.lower()}.{n}@example.com",
        f"Company {(h >> 8) & 4095}",
        Jsonb({"industry": _INDUSTRY[(h >> 20) & 7], "status": _STATUS[(h >> 23) & 3],
               "priority": _PRIORITY[(h >> 25) & 3], "region": _REGION[(h >> 27) & 3],
               "score": (h >> 29) & 127, "employees": (h >> 36) & 65535, "vip": bool((h >> 52) & 1),
               "note": hashlib.md5(str(n).encode()).hexdigest()}),
        _EPOCH + dt.timedelta(seconds=n),
    )


@dataclass
class LoadResult:
    """One method's figures. Seconds are None for a phase the method does not have."""

    method: str
    streams: int
    rows: int
    load_s: float
    bytes: int
    index_s: float | None = None
    vacuum_s: float | None = None
    total_s: float | None = None
    note: str = ""
    error: str | None = None

    @property
    def rows_per_s(self) -> float:
        """Rows per second of the load phase."""
        return self.rows / self.load_s if self.load_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        """MB (10^6 bytes of table) per second of the load phase."""
        return self.bytes / 1e6 / self.load_s if self.load_s > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        """A plain dict, with the derived rates."""
        return {**asdict(self), "rows_per_s": round(self.rows_per_s), "mb_per_s": round(self.mb_per_s, 1)}


# --------------------------------------------------------------------------------------------------
# The methods
# --------------------------------------------------------------------------------------------------


def _ranges(rows: int, streams: int) -> list[tuple[int, int]]:
    """Rows 1..rows in ``streams`` contiguous ranges."""
    return [(rows * i // streams + 1, rows * (i + 1) // streams) for i in range(streams)]


def _parallel(dsn: str, streams: int, rows: int, work: Callable[[psycopg.Connection, int, int], None]) -> float:
    """Run ``work(conn, lo, hi)`` for every range on its own connection, in threads; return wall seconds."""
    conns = [db.connect(dsn, autocommit=True) for _ in range(streams)]
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=streams) as pool:
            for f in [pool.submit(work, c, lo, hi) for c, (lo, hi) in zip(conns, _ranges(rows, streams))]:
                f.result()
        return time.perf_counter() - t0
    finally:
        for c in conns:
            c.close()


def _insert_select(conn: psycopg.Connection, lo: int, hi: int) -> None:
    conn.execute(_GENERATE, {"lo": lo, "hi": hi})


def _copy_binary(conn: psycopg.Connection, lo: int, hi: int, *, freeze: bool = False) -> None:
    with conn.transaction():
        if freeze:
            conn.execute("TRUNCATE load_rows")  # FREEZE needs a table emptied in this very transaction
        opts = "FORMAT BINARY, FREEZE" if freeze else "FORMAT BINARY"
        with conn.cursor().copy(f"COPY load_rows FROM STDIN ({opts})") as copy:
            copy.set_types(_TYPES)
            for n in range(lo, hi + 1):
                copy.write_row(_row(n))


@dataclass
class _Scratch:
    """The scratch database and an admin connection to it."""

    dsn: str
    conn: psycopg.Connection

    def fresh_table(self, *, indexes: bool) -> None:
        self.conn.execute("DROP TABLE IF EXISTS load_rows")
        self.conn.execute(_TABLE)
        if indexes:
            for stmt in _INDEXES:
                self.conn.execute(stmt)
        self.conn.execute("CHECKPOINT")

    def timed(self, stmts: Sequence[str]) -> float:
        t0 = time.perf_counter()
        for stmt in stmts:
            self.conn.execute(stmt)
        return time.perf_counter() - t0

    def table_bytes(self, *tables: str) -> int:
        row = self.conn.execute("SELECT sum(pg_table_size(to_regclass(t)))::bigint FROM unnest(%s::text[]) AS t",
                                (list(tables),)).fetchone()
        return int(row[0] or 0) if row else 0

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM load_rows").fetchone()[0])  # type: ignore[index]


def _measure(s: _Scratch, method: str, streams: int, rows: int, load: Callable[[], float], *,
             indexes: str = "none", note: str = "") -> LoadResult:
    """Fresh table (keys and indexes present when ``indexes == 'during'``), load, then make it query-ready:
    the indexes (``'after'``; ``'none'`` leaves them out) and ``VACUUM (ANALYZE)``."""
    s.fresh_table(indexes=indexes == "during")
    load_s = load()
    loaded = s.count()
    if loaded != rows:
        raise LabError(f"load method {method!r} wrote {loaded} rows, expected {rows}")
    size = s.table_bytes("load_rows")
    index_s = s.timed(_INDEXES) if indexes == "after" else None
    vacuum_s = s.timed(["VACUUM (ANALYZE) load_rows"])
    total = load_s + (index_s or 0) + vacuum_s
    result = LoadResult(method, streams, rows, load_s, size, index_s, vacuum_s, total, note)
    log.info("bench-load: %s: %.0f rows/s, %.1f MB/s", method, result.rows_per_s, result.mb_per_s)
    return result


_PGBENCH_PHASES = re.compile(r"([a-z][a-z -]+?) (\d+(?:\.\d+)?) s")


def _pgbench(s: _Scratch, scale: int, *, server_side: bool) -> LoadResult:
    """``pgbench -i -s scale`` (drop, create, generate, vacuum, primary keys), timed by pgbench itself."""
    method = f"pgbench -i -s {scale}, {'server' if server_side else 'client'}-side generate"
    exe = db.pg_bin() / "pgbench"  # the wheel's binaries
    if not exe.exists():
        found = shutil.which("pgbench")
        if not found:
            return LoadResult(method, 1, 0, 0.0, 0, error="pgbench not found (neither in the wheel nor on PATH)")
        exe = Path(found)
    s.conn.execute("CHECKPOINT")
    steps = "dtGvp" if server_side else "dtgvp"
    proc = subprocess.run([str(exe), "-i", "-q", "-s", str(scale), "-I", steps, s.dsn],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return LoadResult(method, 1, 0, 0.0, 0, error=f"pgbench failed: {last}")
    done = next((ln for ln in proc.stderr.splitlines() if ln.startswith("done in")), "")
    phases = {name.strip(): float(sec) for name, sec in _PGBENCH_PHASES.findall(done.split("(", 1)[-1])}
    generate = phases.get("server-side generate" if server_side else "client-side generate")
    if generate is None:
        return LoadResult(method, 1, 0, 0.0, 0, error=f"unexpected pgbench output: {done or proc.stderr[-200:]}")
    rows = scale * (100_000 + 10 + 1)  # accounts, tellers, branches
    size = s.table_bytes("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
    total = float(done.split()[2]) if done.split()[2:3] else None
    note = ("COPY FREEZE of narrow rows (4 columns, ~100 bytes)" if not server_side
            else "INSERT ... SELECT generate_series, 1 stream, narrow rows")
    return LoadResult(method, 1, rows, generate, size, phases.get("primary keys"), phases.get("vacuum"), total,
                      note)


def _course_seed(scratch_dsn: str, rows: int, jobs: int) -> LoadResult:
    """`labhelpers seed` on 3 equal tenants of about ``rows`` rows, end to end (schema built first)."""
    from . import datagen

    contacts = max(50, round(rows / 3 / (1 + datagen.LEADS_PER_CONTACT + datagen.ACTIVITIES_PER_CONTACT)))
    result = datagen.seed(scratch_dsn, scale="small", tenants=3, contacts=contacts, jobs=jobs)
    st = result.stats
    secs = st.get("seconds", {})
    loaded = sum(st.get("rows", {}).values())
    load_s = float(secs.get("load", 0.0))
    size = sum(int(st.get("bytes", {}).get(t, 0)) for t in ("contacts", "leads", "activities"))
    mode = "keys and indexes dropped and rebuilt" if st.get("bulk") else "keys and indexes present"
    return LoadResult(
        f"labhelpers seed (3 x {contacts:,} contacts, the course schema)", int(st.get("jobs", jobs)), loaded,
        load_s, size, secs.get("keys_indexes"), secs.get("vacuum_analyze"), st.get("total_seconds"),
        f"INSERT ... SELECT generate_series, {mode}; 4 tables with all their keys, GIN and btree indexes, "
        "RLS, rollups")


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Method:
    key: str
    run: Callable[[_Scratch], LoadResult]


def _methods(rows: int, jobs: int, pgbench_scale: int, scratch_dsn: str) -> list[_Method]:
    def server(streams: int, indexes: str = "none") -> Callable[[_Scratch], LoadResult]:
        name = {"none": "INSERT ... SELECT generate_series",
                "during": "INSERT ... SELECT generate_series, keys and indexes present",
                "after": "INSERT ... SELECT generate_series, keys and indexes created after"}[indexes]
        return lambda s: _measure(s, name, streams, rows,
                                  lambda: _parallel(s.dsn, streams, rows, _insert_select), indexes=indexes)

    def python_copy(streams: int) -> Callable[[_Scratch], LoadResult]:
        return lambda s: _measure(s, "COPY (FORMAT BINARY) from Python", streams, rows,
                                  lambda: _parallel(s.dsn, streams, rows, _copy_binary),
                                  note="rows made in Python: the interpreter is the limit (one GIL)")

    def freeze(s: _Scratch) -> LoadResult:
        return _measure(s, "COPY (FORMAT BINARY, FREEZE) from Python", 1, rows,
                        lambda: _parallel(s.dsn, 1, rows, lambda c, lo, hi: _copy_binary(c, lo, hi, freeze=True)),
                        note="one transaction that truncated the table: no parallel streams, no resumable parts")

    methods = [
        _Method("pgbench_client", lambda s: _pgbench(s, pgbench_scale, server_side=False)),
        _Method("pgbench_server", lambda s: _pgbench(s, pgbench_scale, server_side=True)),
        _Method("insert_select_1", server(1)),
    ]
    if jobs > 1:
        methods.append(_Method(f"insert_select_{jobs}", server(jobs)))
    methods += [
        _Method("insert_select_indexes_during", server(jobs, "during")),
        _Method("insert_select_indexes_after", server(jobs, "after")),
        _Method("copy_binary_1", python_copy(1)),
    ]
    if jobs > 1:
        methods.append(_Method(f"copy_binary_{jobs}", python_copy(jobs)))
    methods += [
        _Method("copy_freeze", freeze),
        _Method("course_seed", lambda s: _course_seed(scratch_dsn, rows, jobs)),
    ]
    return methods


def compare_loads(
    dsn: str | None = None,
    *,
    rows: int = 1_000_000,
    jobs: int = 2,
    pgbench_scale: int | None = None,
    out_dir: str | Path | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Time every loading method on the server of ``dsn``, in a scratch database dropped afterwards.

    :param dsn: admin DSN (a superuser: the course's seed and pgbench need to create and own tables).
    :param rows: rows per method.
    :param jobs: parallel streams for the methods that have them.
    :param pgbench_scale: ``pgbench -i -s`` (default: as many accounts as ``rows``, at least 1).
    :param out_dir: where results.json and report.md go (default ``runs/bench-load/``).
    :param on_progress: ``callback(task, done, total)``.
    Returns the results (the content of results.json).
    Raise LabError if the server cannot be reached, the role is not a superuser, or a method loads a
    wrong number of rows.
    """
    admin = db.resolve_dsn(dsn)
    scale = pgbench_scale or max(1, round(rows / 100_000))
    with db.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:  # type: ignore[index]
            raise LabError("comparing load methods needs a superuser (it creates a scratch database and seeds it)")
        server = {"version": conn.execute("SELECT version()").fetchone()[0],  # type: ignore[index]
                  "settings": db.server_settings(conn)}
    db.drop_database(admin, SCRATCH_DB)  # a scratch database left by an interrupted comparison
    db.create_database(admin, SCRATCH_DB)
    scratch_dsn = db.with_dbname(admin, SCRATCH_DB)
    results: dict[str, Any] = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "rows": rows, "jobs": jobs, "pgbench_scale": scale, "machine": bench.machine_info(), "server": server,
        "methods": [],
    }
    try:
        with db.connect(scratch_dsn, autocommit=True) as conn:
            scratch = _Scratch(scratch_dsn, conn)
            methods = _methods(rows, jobs, scale, scratch_dsn)
            for i, m in enumerate(methods):
                if on_progress:
                    on_progress("bench-load", i, len(methods))
                results["methods"].append({"key": m.key, **m.run(scratch).as_json()})
            if on_progress:
                on_progress("bench-load", len(methods), len(methods))
    finally:
        db.drop_database(admin, SCRATCH_DB)
    results["machine"]["load_avg_at_end"] = bench.machine_info()["load_avg_1_5_15"]
    out = Path(out_dir) if out_dir else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    (out / "report.md").write_text(report_markdown(results), encoding="utf-8")
    return results


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------

_COLUMNS = ("method", "streams", "rows", "load s", "rows/s", "MB/s", "indexes s", "vacuum s", "query-ready s")


def _cells(r: dict[str, Any]) -> list[str]:
    if r.get("error"):
        return [r["method"], "-", "-", "-", "-", "-", "-", "-", r["error"]]

    def sec(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    return [r["method"], str(r["streams"]), f"{r['rows']:,}", sec(r["load_s"]), f"{r['rows_per_s']:,}",
            f"{r['mb_per_s']:.1f}", sec(r["index_s"]), sec(r["vacuum_s"]), sec(r["total_s"])]


def report_markdown(results: dict[str, Any]) -> str:
    """The comparison as a Markdown table, with the machine and the server."""
    m = results["machine"]
    lines = [
        "# Loading methods compared",
        "",
        f"{results['created_at']} on {m['cpu_model']}, {m['cores']} cores, {m['ram_gb']} GB RAM; "
        f"{results['server']['version'].split(',')[0]}. {results['rows']:,} contacts-shaped rows per method "
        f"(pgbench: scale {results['pgbench_scale']}); load average at start {m.get('load_avg_1_5_15')}, "
        f"at end {m.get('load_avg_at_end')}. rows/s and MB/s are over the load phase; query-ready adds the "
        "indexes (where the method builds them after) and VACUUM (ANALYZE).",
        "",
        "| " + " | ".join(_COLUMNS) + " | note |",
        "|---|" + "---:|" * (len(_COLUMNS) - 1) + "---|",
    ]
    for r in results["methods"]:
        lines.append("| " + " | ".join(_cells(r)) + f" | {r.get('note', '')} |")
    lines.append("")
    return "\n".join(lines)


def summary_table(results: dict[str, Any]) -> Any:
    """A rich Table of the comparison (what `labhelpers bench-load` prints)."""
    from rich.table import Table

    m = results["machine"]
    table = Table(title=f"loading {results['rows']:,} rows ({m['cpu_model']}, {m['cores']} cores)")
    for col in _COLUMNS:
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in results["methods"]:
        table.add_row(*_cells(r))
    return table

