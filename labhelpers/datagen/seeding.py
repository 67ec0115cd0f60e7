"""`seed`: load a generated dataset, or finish loading it, as a short sequence of named steps.

Under an advisory lock (one seeder per database): find the run of this shape and seed, or start one
(replacing another dataset only when asked), then 1. tenants and users, 2. in bulk mode drop the keys,
3. the parts not loaded yet, 4. the rollups, 5. vacuum and analyze, 6. rebuild the keys, 7. audit; only
then is the run marked complete.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from .. import db, tenants
from .._progress import ProgressFn
from ..errors import LabError
from .bookkeeping import (
    PART_ROWS,
    TABLES,
    SeedResult,
    SeedRun,
    create_bookkeeping,
    done_parts,
    finish_run,
    latest_run,
    plan_parts,
    start_run,
)
from .bulk import drop_keys, restore_keys
from .custom_fields import Pools, read_pools
from .loading import Load, delete_generated, load_parts, rebuild_rollups, setup_tenants, vacuum
from .shapes import Shape, make_shape
from .streams import connect
from .verify import audit, table_bytes

__all__ = ["BULK_THRESHOLD", "seed"]

log = logging.getLogger("labhelpers")

BULK_THRESHOLD = 200_000  # rows to load from which keys/indexes are dropped and rebuilt
_LOCK_KEY = 0x5EED_1AB5   # advisory lock: one seeder per database at a time


@dataclass(frozen=True)
class _Options:
    """What the caller of `seed` chose about the run (the shape aside)."""

    seed: int
    anchor: dt.datetime | None
    replace: bool
    bulk: bool | None
    validate: bool
    part_rows: int


def seed(
    dsn: str | None = None,
    *,
    scale: str = "small",
    tenants: int | None = None,
    contacts: int | None = None,
    seed: int = 42,
    anchor: dt.datetime | None = None,
    replace: bool = False,
    jobs: int | None = None,
    bulk: bool | None = None,
    validate: bool = False,
    build: bool = True,
    part_rows: int = PART_ROWS,
    on_progress: ProgressFn | None = None,
) -> SeedResult:
    """Load the generated dataset of ``scale`` into the database of ``dsn``, or finish loading it.

    :param dsn: admin DSN (the schema owner; resolved as everywhere).
    :param scale: ``tiny``, ``small``, ``medium``, ``large``, ``xl`` (see `SCALES`).
    :param tenants: custom number of tenants (overrides the scale's).
    :param contacts: custom contacts of the largest tenant (overrides the scale's).
    :param seed: the random seed; the same seed and anchor give the same rows.
    :param anchor: the "now" of the data (default: now, rounded down to the second). Kept in the run, so a
        resumed run generates the same rows.
    :param replace: remove another generated dataset first (else that is an error).
    :param jobs: parallel loading streams (default: the number of CPU cores, at most 4).
    :param bulk: drop keys and indexes of contacts/leads/activities during the load and rebuild them
        after (default: when loading at least `BULK_THRESHOLD` rows).
    :param validate: keep the registry's validation trigger on (slower); else audit a sample afterwards.
    :param build: build the schema (``stages.build``) when it is missing.
    :param part_rows: rows per part (transaction); smaller parts lose less work when interrupted.
    :param on_progress: ``callback(task, done, total)``, e.g. from `rich_progress`.
    Returns a `SeedResult` (action ``loaded``, ``resumed`` or ``unchanged``).
    Raise LabError if the schema is missing and cannot be built, the role does not bypass row-level
    security, another seed runs on this database, another dataset is loaded and ``replace`` is false, or
    the generated data fails its audit.
    """
    shape = make_shape(scale, tenants=tenants, contacts=contacts)
    options = _Options(seed=seed, anchor=anchor, replace=replace, bulk=bulk, validate=validate, part_rows=part_rows)
    admin = db.resolve_dsn(dsn)
    jobs = jobs or max(1, min(4, os.cpu_count() or 1))
    t_start = time.perf_counter()
    with connect(admin) as conn:
        _ensure_schema(conn, admin, build=build)
        with _seed_lock(conn):
            create_bookkeeping(conn)
            return _seed_locked(conn, admin, shape, options, jobs=jobs, on_progress=on_progress, t_start=t_start)


def _seed_locked(conn: psycopg.Connection, admin: str, shape: Shape, options: _Options, *, jobs: int,
                 on_progress: ProgressFn | None, t_start: float) -> SeedResult:
    """`seed` under its lock: the run to work on, its load, its completion."""
    who = _require_rls_bypass(conn)
    run, action = _find_or_start_run(conn, admin, shape, options)
    if action == "unchanged":
        return SeedResult(run, action, time.perf_counter() - t_start, run.stats)
    load = Load(dsn=admin, shape=shape, seed=options.seed, anchor_ms=int(run.anchor.timestamp() * 1000),
                run_id=run.id, validate=run.validate, replica=who.superuser and run.bulk and not run.validate)
    stats = _load_run(conn, load, run, jobs=jobs, on_progress=on_progress)
    final = finish_run(conn, run.id, stats)
    log.info("seed: run %s complete: %s", run.id, stats)
    return SeedResult(final, action, time.perf_counter() - t_start, stats)


# ---- before the load -----------------------------------------------------------------------------


def _ensure_schema(conn: psycopg.Connection, admin: str, *, build: bool) -> None:
    """Build the schema unless it is there (or raise LabError if ``build`` is false)."""
    ready = conn.execute(
        "SELECT to_regclass('activities') IS NOT NULL AND to_regclass('custom_field_definitions') IS NOT NULL"
        " AND to_regprocedure('lab_define_default_custom_fields(uuid)') IS NOT NULL"
    ).fetchone()
    if ready and ready[0]:
        return
    if not build:
        raise LabError("the schema is not built: run `labhelpers build` first")
    from .. import stages  # imported here: it brings pandas, which a loaded database never needs

    log.info("seed: building the schema first")
    with db.connect(admin, autocommit=False) as bconn:
        stages.build(bconn)
        bconn.commit()


@contextmanager
def _seed_lock(conn: psycopg.Connection) -> Iterator[None]:
    """Hold the seed's advisory lock. Raise LabError if another seed holds it."""
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()[0]:  # type: ignore[index]
        raise LabError("another `labhelpers seed` is running on this database; wait for it to finish")
    try:
        yield
    finally:
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        except psycopg.Error:  # the session is gone (killed): so is its lock
            pass


def _require_rls_bypass(conn: psycopg.Connection) -> tenants.Identity:
    """The session's identity. Raise LabError unless row-level security never applies to it."""
    who = tenants.whoami(conn)
    if not (who.superuser or who.bypassrls):
        # One statement writes the rows of every tenant of a time slice; FORCE ROW LEVEL SECURITY
        # would filter a plain owner to one tenant.
        raise LabError("seeding needs a role that bypasses row-level security (a superuser, or BYPASSRLS),"
                       " such as the lab's `postgres`")
    return who


def _find_or_start_run(conn: psycopg.Connection, admin: str, shape: Shape, options: _Options) -> tuple[SeedRun, str]:
    """The run to work on and what `seed` does with it: ``unchanged``, ``resumed`` or ``loaded`` (new)."""
    current = latest_run(conn)
    if current is not None and current.shape_key == shape.key(options.seed):
        if current.complete:
            log.info("seed: run %s (%s, seed %s) is complete: nothing to do", current.id, current.scale, options.seed)
            return current, "unchanged"
        log.warning("seed: resuming incomplete run %s (%s, seed %s)", current.id, current.scale, options.seed)
        return current, "resumed"
    if current is not None:
        _replace(conn, admin, current, replace=options.replace)
    run = start_run(conn, shape, seed=options.seed, anchor=_anchor(options.anchor), validate=options.validate,
                    bulk=options.bulk if options.bulk is not None else shape.total_rows >= BULK_THRESHOLD,
                    part_rows=options.part_rows)
    return run, "loaded"


def _replace(conn: psycopg.Connection, admin: str, current: SeedRun, *, replace: bool) -> None:
    """Remove the generated rows of ``current``. Raise LabError unless ``replace``."""
    what = f"scale {current.scale} seed {current.seed} ({current.status})"
    if not replace:
        raise LabError(
            f"this database already holds generated data: {what}. Use --replace to remove it first "
            "(generated rows only), or `labhelpers db reset`, or another database (--dsn)"
        )
    log.warning("seed: removing the generated data of run %s: %s", current.id, what)
    if current.saved_ddl and not current.complete:
        restore_keys(admin, current.saved_ddl, jobs=1)  # an interrupted bulk load: the schema must be whole
    delete_generated(conn, current)


def _anchor(anchor: dt.datetime | None) -> dt.datetime:
    """The run's "now": ``anchor`` or now, to the second; naive times are UTC."""
    anchor = (anchor or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    return anchor if anchor.tzinfo is not None else anchor.replace(tzinfo=dt.timezone.utc)


# ---- the load ------------------------------------------------------------------------------------


def _load_run(conn: psycopg.Connection, load: Load, run: SeedRun, *, jobs: int,
              on_progress: ProgressFn | None) -> dict[str, Any]:
    """Steps 1 to 7 (each skips what an earlier attempt of the run did); return the run's stats."""
    stats: dict[str, Any] = dict(run.stats or {})
    timings: dict[str, float] = dict(stats.get("seconds", {}))  # added to those of earlier attempts
    t0 = time.perf_counter()
    setup_tenants(conn, load)                                             # 1. tenants, users, registry
    pools = read_pools(conn, load.shape, load.seed)
    _add_time(timings, "setup", t0)
    ddl = drop_keys(conn, run.id, TABLES) if run.bulk and run.saved_ddl is None else run.saved_ddl  # 2.
    t0 = time.perf_counter()
    loaded_rows = _load_missing_parts(conn, load, pools, run, jobs=jobs, on_progress=on_progress)  # 3.
    load_s = _add_time(timings, "load", t0)
    if load.replica:                                                      # 4. no trigger kept the rollups
        t0 = time.perf_counter()
        rebuild_rollups(conn)
        _add_time(timings, "rollup", t0)
    # 5. In bulk mode before the keys: the heap is vacuumed without index passes, and the foreign keys are
    # then validated with real statistics (without them the anti-join plans are many times slower).
    timings["vacuum_analyze"] = vacuum(load.dsn, jobs=jobs, on_progress=on_progress)
    if run.bulk and ddl:                                                  # 6. rebuild keys and indexes
        t0 = time.perf_counter()
        built = restore_keys(load.dsn, ddl, jobs=jobs, on_progress=on_progress)
        _add_time(timings, "keys_indexes", t0)
        stats["ddl_seconds"] = {**stats.get("ddl_seconds", {}), **built}
    problems = audit(conn, load.shape)                                    # 7. audit
    if any(problems.values()):
        raise LabError(f"generated custom fields fail the registry's validation: {problems} (generator bug)")
    stats.update(_final_stats(conn, load, jobs=jobs, bulk=run.bulk, timings=timings, problems=problems,
                              loaded_rows=loaded_rows, load_s=load_s))
    return stats


def _add_time(timings: dict[str, float], step: str, t0: float) -> float:
    """Add the seconds since ``t0`` to ``step``; return them."""
    seconds = time.perf_counter() - t0
    timings[step] = timings.get(step, 0) + seconds
    return seconds


def _load_missing_parts(conn: psycopg.Connection, load: Load, pools: Mapping[str, Pools], run: SeedRun, *,
                        jobs: int, on_progress: ProgressFn | None) -> int:
    """Load the parts of ``run`` not committed yet; return the rows they hold."""
    parts = plan_parts(load.shape, part_rows=run.part_rows)  # the run's own split, also when resumed
    done = done_parts(conn, run.id, parts)
    todo = [p for p in parts if p.name not in done]
    load_parts(load, pools, todo, jobs=jobs, bulk=run.bulk, on_progress=on_progress,
               done=[p for p in parts if p.name in done])
    return sum(p.rows for p in todo)


def _final_stats(conn: psycopg.Connection, load: Load, *, jobs: int, bulk: bool, timings: dict[str, float],
                 problems: dict[str, int], loaded_rows: int, load_s: float) -> dict[str, Any]:
    """What the run records about itself: rows, bytes, seconds per step, load rates."""
    sizes = table_bytes(conn)
    data_bytes = sum(sizes[t] for t in TABLES)
    rated = load_s > 0 and loaded_rows > 0
    return {
        "rows": dict(load.shape.rows),
        "bytes": sizes,
        "seconds": timings,
        "jobs": jobs,
        "bulk": bulk,
        "replica_role": load.replica,
        "audit_problems": problems,
        "load_rows_per_s": round(loaded_rows / load_s) if rated else None,
        "load_mb_per_s": round(data_bytes / 1e6 / load_s, 1) if rated else None,
        "total_seconds": round(sum(timings.values()), 1),
    }
