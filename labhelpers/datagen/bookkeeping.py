"""Runs and parts: the bookkeeping that makes a load resumable.

A run (a row of ``lab_seed_runs``) is one generated dataset: its shape, seed and anchor, whether it is
complete. Its work is split into parts (a table and a time slice, `plan_parts`); each part is one
transaction that also records itself in ``lab_seed_parts``, so a re-run loads only the parts missing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..errors import LabError
from .shapes import Shape

__all__ = [
    "PART_ROWS", "TABLES", "Part", "SeedResult", "SeedRun", "create_bookkeeping", "done_parts", "finish_run",
    "get_run", "latest_run", "mark_replaced", "plan_parts", "record_part", "runs", "save_ddl", "start_run",
]

TABLES = ("contacts", "leads", "activities")  # the tables loaded in parts, in the order of their keys
PART_ROWS = 250_000  # rows per part (one transaction each)

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS lab_seed_runs (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scale       text        NOT NULL,
    seed        bigint      NOT NULL,
    shape_key   text        NOT NULL,
    shape       jsonb       NOT NULL,
    anchor      timestamptz NOT NULL,
    bulk        boolean     NOT NULL,
    validate    boolean     NOT NULL,
    part_rows   bigint      NOT NULL,
    status      text        NOT NULL DEFAULT 'loading'
                CHECK (status IN ('loading', 'complete', 'replaced')),
    saved_ddl   jsonb,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    stats       jsonb       NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE lab_seed_runs IS
    'labhelpers seed: one row per generated dataset (scale, seed, status); loading = incomplete, run it again';
CREATE TABLE IF NOT EXISTS lab_seed_parts (
    run_id   bigint      NOT NULL REFERENCES lab_seed_runs (id) ON DELETE CASCADE,
    part     text        NOT NULL,
    rows     bigint      NOT NULL,
    seconds  float8      NOT NULL,
    done_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, part)
);
COMMENT ON TABLE lab_seed_parts IS 'labhelpers seed: the parts of a run already committed (each with its rows)';
REVOKE ALL ON lab_seed_runs, lab_seed_parts FROM PUBLIC;
"""


# ---- parts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One unit of loading: ``table`` rows of time slice ``index`` of ``count``, for every tenant."""

    table: str
    index: int
    count: int
    rows: int

    @property
    def name(self) -> str:
        """The key recorded in ``lab_seed_parts``."""
        return f"{self.table}:{self.index + 1:03d}/{self.count:03d}"

    def bounds(self, total: int) -> tuple[int, int]:
        """Row numbers [lo, hi] of this slice for a tenant with ``total`` rows of the table."""
        return total * self.index // self.count + 1, total * (self.index + 1) // self.count


def plan_parts(shape: Shape, *, part_rows: int = PART_ROWS) -> list[Part]:
    """Split the load into parts: per table, equal time slices of about ``part_rows`` rows each."""
    parts: list[Part] = []
    for table in TABLES:
        total = sum(getattr(t, table) for t in shape.tenants)
        count = max(1, math.ceil(total / part_rows))
        for i in range(count):
            rows = sum(
                getattr(t, table) * (i + 1) // count - getattr(t, table) * i // count for t in shape.tenants
            )
            parts.append(Part(table, i, count, rows))
    return parts


def done_parts(conn: psycopg.Connection, run_id: int, parts: list[Part]) -> set[str]:
    """The names of the ``parts`` of run ``run_id`` already committed.

    Raise LabError if the run recorded parts that ``parts`` does not have (the bookkeeping does not match).
    """
    done = {name for (name,) in conn.execute(
        "SELECT part FROM lab_seed_parts WHERE run_id = %s AND part <> 'setup'", (run_id,))}
    unknown = done - {p.name for p in parts}
    if unknown:
        raise LabError(f"run {run_id} recorded parts this plan does not have ({sorted(unknown)[:3]}...): "
                       "the bookkeeping does not match the data; use `labhelpers db reset`")
    return done


def record_part(conn: psycopg.Connection, run_id: int, name: str, rows: int, seconds: float) -> None:
    """Record part ``name`` as committed (inside the transaction that loaded it)."""
    conn.execute("INSERT INTO lab_seed_parts (run_id, part, rows, seconds) VALUES (%s, %s, %s, %s)",
                 (run_id, name, rows, seconds))


# ---- runs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedRun:
    """A row of ``lab_seed_runs``."""

    id: int
    scale: str
    seed: int
    shape_key: str
    status: str
    anchor: dt.datetime
    bulk: bool
    validate: bool
    started_at: dt.datetime
    finished_at: dt.datetime | None
    shape: list[dict[str, Any]]
    stats: dict[str, Any]
    saved_ddl: list[dict[str, Any]] | None
    part_rows: int

    @property
    def complete(self) -> bool:
        """True once every part is loaded, keys are valid and statistics fresh."""
        return self.status == "complete"


_RUN_COLS = sql.SQL(", ").join(sql.Identifier(f.name) for f in dataclasses.fields(SeedRun))


@dataclass(frozen=True)
class SeedResult:
    """What `seed` did."""

    run: SeedRun
    action: str  # 'loaded', 'resumed' or 'unchanged'
    seconds: float
    stats: dict[str, Any]

    def summary(self) -> str:
        """One line for the terminal."""
        rows = self.stats.get("rows", {})
        total = sum(rows.values()) if rows else 0
        if self.action == "unchanged":
            return (f"scale {self.run.scale} (seed {self.run.seed}) is already loaded (run {self.run.id}, "
                    f"{self.run.finished_at:%Y-%m-%d %H:%M}): nothing to do")
        return (f"{self.action} scale {self.run.scale} (seed {self.run.seed}): {total:,} rows in "
                f"{self.seconds:.1f} s, query-ready (keys valid, vacuumed, analyzed)")


def create_bookkeeping(conn: psycopg.Connection) -> None:
    """Create ``lab_seed_runs`` and ``lab_seed_parts`` unless they exist."""
    conn.execute(_BOOKKEEPING)


def runs(conn: psycopg.Connection) -> list[SeedRun]:
    """Every recorded seed run, newest first (empty when nothing was ever seeded)."""
    if conn.execute("SELECT to_regclass('lab_seed_runs') IS NULL").fetchone()[0]:  # type: ignore[index]
        return []
    rows = conn.execute(sql.SQL("SELECT {} FROM lab_seed_runs ORDER BY id DESC").format(_RUN_COLS)).fetchall()
    return [SeedRun(*r) for r in rows]


def latest_run(conn: psycopg.Connection, *, complete: bool = False) -> SeedRun | None:
    """The newest seed run that is not replaced (only a complete one if ``complete``), or None."""
    for r in runs(conn):
        if r.status == "replaced":
            continue
        if complete and not r.complete:
            return None
        return r
    return None


def get_run(conn: psycopg.Connection, run_id: int) -> SeedRun:
    """Run ``run_id`` (which must exist)."""
    row = conn.execute(sql.SQL("SELECT {} FROM lab_seed_runs WHERE id = %s").format(_RUN_COLS), (run_id,)).fetchone()
    assert row is not None
    return SeedRun(*row)


def start_run(conn: psycopg.Connection, shape: Shape, *, seed: int, anchor: dt.datetime, bulk: bool,
              validate: bool, part_rows: int) -> SeedRun:
    """Record a new run of ``shape`` and ``seed`` (status ``loading``)."""
    row = conn.execute(
        "INSERT INTO lab_seed_runs (scale, seed, shape_key, shape, anchor, bulk, validate, part_rows)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (shape.scale, seed, shape.key(seed), json.dumps(shape.as_json()), anchor, bulk, validate, part_rows),
    ).fetchone()
    assert row is not None
    return get_run(conn, row[0])


def save_ddl(conn: psycopg.Connection, run_id: int, ddl: list[dict[str, Any]]) -> None:
    """Keep the definitions of what bulk mode drops in the run (before dropping it, same transaction)."""
    conn.execute("UPDATE lab_seed_runs SET saved_ddl = %s WHERE id = %s", (json.dumps(ddl), run_id))


def finish_run(conn: psycopg.Connection, run_id: int, stats: dict[str, Any]) -> SeedRun:
    """Mark run ``run_id`` complete with its ``stats``; return it as now recorded."""
    conn.execute(
        "UPDATE lab_seed_runs SET status = 'complete', finished_at = clock_timestamp(), stats = %s WHERE id = %s",
        (json.dumps(stats), run_id),
    )
    return get_run(conn, run_id)


def mark_replaced(conn: psycopg.Connection, run_id: int) -> None:
    """Mark run ``run_id`` replaced (its rows are gone)."""
    conn.execute("UPDATE lab_seed_runs SET status = 'replaced' WHERE id = %s", (run_id,))
