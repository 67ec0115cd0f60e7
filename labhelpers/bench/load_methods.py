"""The loading methods `compare_loads` times, each into a fresh table of the scratch database.

Rows are contacts-shaped (two uuids, names, an e-mail, a company, a jsonb of eight custom fields, a
timestamptz: about 300 bytes a row), made by the server (``INSERT ... SELECT`` over
``generate_series``) or in Python (`_row`, for COPY), the same shapes and sizes within a few %.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .. import datagen, db
from .._parallel import run_parallel
from ..errors import LabError
from ._json import Record

__all__ = ["LoadResult", "Method", "Scratch", "methods"]

log = logging.getLogger("labhelpers")

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
_COPY = "COPY load_rows FROM STDIN (FORMAT BINARY)"
_COPY_FREEZE = "COPY load_rows FROM STDIN (FORMAT BINARY, FREEZE)"

_FIRST = ("Ada", "Alan", "Barbara", "Brian", "Carla", "Chen", "Dana", "David", "Elena", "Emeka", "Fatima", "Frank",
          "Grace", "Hiro", "Ines", "Ivan")
_LAST = ("Smith", "Garcia", "Chen", "Okafor", "Muller", "Rossi", "Tanaka", "Kowalski", "Silva", "Nguyen", "Patel",
         "Johnson", "Brown", "Dubois", "Ivanova", "Haddad")
_INDUSTRY = ("tech", "finance", "healthcare", "retail", "manufacturing", "education", "media", "energy")
_STATUS = ("active", "inactive", "prospect", "churned")
_PRIORITY = ("low", "medium", "high", "urgent")
_REGION = ("north_america", "emea", "apac", "latam")
_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def _array(values: Sequence[str]) -> sql.Composable:
    return sql.SQL("{}::text[]").format(sql.Literal(list(values)))


# Rows lo..hi, made by the server; the Python twin is `_row` (same shapes, sizes within a few %).
_GENERATE = sql.SQL("""
INSERT INTO load_rows
SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(n %% 10), 12, '0'))::uuid,
       encode(int8send(n) || int8send(h), 'hex')::uuid,
       ({first})[1 + (h & 15)],
       ({last})[1 + ((h >> 4) & 15)],
       lower(({first})[1 + (h & 15)]) || '.' || n || '@example.com',
       'Company ' || ((h >> 8) & 4095),
       jsonb_build_object('industry', ({industry})[1 + ((h >> 20) & 7)],
                          'status', ({status})[1 + ((h >> 23) & 3)],
                          'priority', ({priority})[1 + ((h >> 25) & 3)],
                          'region', ({region})[1 + ((h >> 27) & 3)],
                          'score', (h >> 29) & 127, 'employees', (h >> 36) & 65535,
                          'vip', (h >> 52) & 1 = 1, 'note', md5(n::text)),
       timestamptz '2024-01-01 00:00:00+00' + n * interval '1 second'
  FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS n
 CROSS JOIN LATERAL (SELECT hashint8extended(n, 42) AS h OFFSET 0) AS x
""").format(first=_array(_FIRST), last=_array(_LAST), industry=_array(_INDUSTRY), status=_array(_STATUS),
            priority=_array(_PRIORITY), region=_array(_REGION))


def _row(n: int) -> tuple[Any, ...]:
    """Row ``n`` made in Python (for the COPY methods)."""
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


@dataclass(frozen=True, kw_only=True)
class LoadResult(Record):
    """One method's figures. Seconds are None for a phase the method does not have."""

    key: str = ""        # the method's key in the comparison (`methods`)
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

    def to_json(self) -> dict[str, Any]:
        """The fields, then the derived rates (rounded as the report shows them)."""
        return {**super().to_json(), "rows_per_s": round(self.rows_per_s), "mb_per_s": round(self.mb_per_s, 1)}


def _failed(method: str, error: str) -> LoadResult:
    return LoadResult(method=method, streams=1, rows=0, load_s=0.0, bytes=0, error=error)


# --------------------------------------------------------------------------------------------------
# Loading rows
# --------------------------------------------------------------------------------------------------


def _ranges(rows: int, streams: int) -> list[tuple[int, int]]:
    """Rows 1..rows in ``streams`` contiguous ranges."""
    return [(rows * i // streams + 1, rows * (i + 1) // streams) for i in range(streams)]


def _parallel(dsn: str, streams: int, rows: int, work: Callable[[psycopg.Connection, int, int], None]) -> float:
    """Run ``work(conn, lo, hi)`` for every range on its own connection, in threads; return wall seconds."""
    conns = [db.connect(dsn, autocommit=True) for _ in range(streams)]
    try:
        tasks = [functools.partial(work, c, lo, hi) for c, (lo, hi) in zip(conns, _ranges(rows, streams))]

        def cancel() -> None:  # the other streams' statements, when one stream failed
            for c in conns:
                c.cancel_safe()

        t0 = time.perf_counter()
        run_parallel(tasks, jobs=streams, cancel=cancel, name="bench-load")
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
        with conn.cursor().copy(_COPY_FREEZE if freeze else _COPY) as copy:
            copy.set_types(_TYPES)
            for n in range(lo, hi + 1):
                copy.write_row(_row(n))


@dataclass
class Scratch:
    """The scratch database and an admin connection to it."""

    dsn: str
    conn: psycopg.Connection

    def fresh_table(self, *, indexes: bool) -> None:
        """An empty ``load_rows`` (with its keys and indexes when ``indexes``), then a CHECKPOINT."""
        self.conn.execute("DROP TABLE IF EXISTS load_rows")
        self.conn.execute(_TABLE)
        if indexes:
            for stmt in _INDEXES:
                self.conn.execute(stmt)
        self.conn.execute("CHECKPOINT")

    def timed(self, stmts: Sequence[str]) -> float:
        """Seconds ``stmts`` took, one after another."""
        t0 = time.perf_counter()
        for stmt in stmts:
            self.conn.execute(stmt)
        return time.perf_counter() - t0

    def table_bytes(self, *tables: str) -> int:
        """Heap and TOAST bytes of ``tables`` (those that exist)."""
        row = self.conn.execute("SELECT sum(pg_table_size(to_regclass(t)))::bigint FROM unnest(%s::text[]) AS t",
                                (list(tables),)).fetchone()
        return int(row[0] or 0) if row else 0

    def count(self) -> int:
        """Rows in ``load_rows``."""
        return int(self.conn.execute("SELECT count(*) FROM load_rows").fetchone()[0])  # type: ignore[index]


def _measure(s: Scratch, method: str, streams: int, rows: int, load: Callable[[], float], *,
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
    result = LoadResult(method=method, streams=streams, rows=rows, load_s=load_s, bytes=size, index_s=index_s,
                        vacuum_s=vacuum_s, total_s=total, note=note)
    log.info("bench-load: %s: %.0f rows/s, %.1f MB/s", method, result.rows_per_s, result.mb_per_s)
    return result


_PGBENCH_PHASES = re.compile(r"([a-z][a-z -]+?) (\d+(?:\.\d+)?) s")


def _pgbench_exe() -> Path | None:
    """The wheel's pgbench, else one on PATH."""
    exe = db.pg_bin() / "pgbench"
    if exe.exists():
        return exe
    found = shutil.which("pgbench")
    return Path(found) if found else None


def _pgbench(s: Scratch, scale: int, *, server_side: bool) -> LoadResult:
    """``pgbench -i -s scale`` (drop, create, generate, vacuum, primary keys), timed by pgbench itself."""
    method = f"pgbench -i -s {scale}, {'server' if server_side else 'client'}-side generate"
    exe = _pgbench_exe()
    if exe is None:
        return _failed(method, "pgbench not found (neither in the wheel nor on PATH)")
    s.conn.execute("CHECKPOINT")
    steps = "dtGvp" if server_side else "dtgvp"
    proc = subprocess.run([str(exe), "-i", "-q", "-s", str(scale), "-I", steps, s.dsn],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return _failed(method, f"pgbench failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    done = next((ln for ln in proc.stderr.splitlines() if ln.startswith("done in")), "")
    phases = {name.strip(): float(sec) for name, sec in _PGBENCH_PHASES.findall(done.split("(", 1)[-1])}
    generate = phases.get("server-side generate" if server_side else "client-side generate")
    if generate is None:
        return _failed(method, f"unexpected pgbench output: {done or proc.stderr[-200:]}")
    note = ("COPY FREEZE of narrow rows (4 columns, ~100 bytes)" if not server_side
            else "INSERT ... SELECT generate_series, 1 stream, narrow rows")
    return LoadResult(
        method=method, streams=1, rows=scale * (100_000 + 10 + 1),  # accounts, tellers, branches
        load_s=generate, bytes=s.table_bytes("pgbench_accounts", "pgbench_branches", "pgbench_tellers",
                                             "pgbench_history"),
        index_s=phases.get("primary keys"), vacuum_s=phases.get("vacuum"),
        total_s=float(done.split()[2]) if done.split()[2:3] else None, note=note)


def _course_seed(scratch_dsn: str, rows: int, jobs: int) -> LoadResult:
    """`labhelpers seed` on 3 equal tenants of about ``rows`` rows, end to end (schema built first)."""
    contacts = max(50, round(rows / 3 / (1 + datagen.LEADS_PER_CONTACT + datagen.ACTIVITIES_PER_CONTACT)))
    st = datagen.seed(scratch_dsn, scale="small", tenants=3, contacts=contacts, jobs=jobs).stats
    secs = st.get("seconds", {})
    mode = "keys and indexes dropped and rebuilt" if st.get("bulk") else "keys and indexes present"
    return LoadResult(
        method=f"labhelpers seed (3 x {contacts:,} contacts, the course schema)", streams=int(st.get("jobs", jobs)),
        rows=sum(st.get("rows", {}).values()), load_s=float(secs.get("load", 0.0)),
        bytes=sum(int(st.get("bytes", {}).get(t, 0)) for t in ("contacts", "leads", "activities")),
        index_s=secs.get("keys_indexes"), vacuum_s=secs.get("vacuum_analyze"), total_s=st.get("total_seconds"),
        note=f"INSERT ... SELECT generate_series, {mode}; 4 tables with all their keys, GIN and btree indexes, "
             "RLS, rollups")


# --------------------------------------------------------------------------------------------------
# The methods, in the order they run
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A method of the comparison: its key, and how it loads into the scratch database."""

    key: str
    run: Callable[[Scratch], LoadResult]


_SERVER_NAMES = {"none": "INSERT ... SELECT generate_series",
                 "during": "INSERT ... SELECT generate_series, keys and indexes present",
                 "after": "INSERT ... SELECT generate_series, keys and indexes created after"}


def methods(rows: int, jobs: int, pgbench_scale: int, scratch_dsn: str) -> list[Method]:
    """Every method, ``rows`` rows each; those with parallel streams also with ``jobs`` of them."""

    def server(streams: int, indexes: str = "none") -> Callable[[Scratch], LoadResult]:
        return lambda s: _measure(s, _SERVER_NAMES[indexes], streams, rows,
                                  lambda: _parallel(s.dsn, streams, rows, _insert_select), indexes=indexes)

    def python_copy(streams: int) -> Callable[[Scratch], LoadResult]:
        return lambda s: _measure(s, "COPY (FORMAT BINARY) from Python", streams, rows,
                                  lambda: _parallel(s.dsn, streams, rows, _copy_binary),
                                  note="rows made in Python: the interpreter is the limit (one GIL)")

    def freeze(s: Scratch) -> LoadResult:
        return _measure(s, "COPY (FORMAT BINARY, FREEZE) from Python", 1, rows,
                        lambda: _parallel(s.dsn, 1, rows, functools.partial(_copy_binary, freeze=True)),
                        note="one transaction that truncated the table: no parallel streams, no resumable parts")

    out = [Method("pgbench_client", lambda s: _pgbench(s, pgbench_scale, server_side=False)),
           Method("pgbench_server", lambda s: _pgbench(s, pgbench_scale, server_side=True)),
           Method("insert_select_1", server(1))]
    if jobs > 1:
        out.append(Method(f"insert_select_{jobs}", server(jobs)))
    out += [Method("insert_select_indexes_during", server(jobs, "during")),
            Method("insert_select_indexes_after", server(jobs, "after")),
            Method("copy_binary_1", python_copy(1))]
    if jobs > 1:
        out.append(Method(f"copy_binary_{jobs}", python_copy(jobs)))
    out += [Method("copy_freeze", freeze),
            Method("course_seed", lambda s: _course_seed(scratch_dsn, rows, jobs))]
    return out
