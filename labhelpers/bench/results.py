"""A run's results: `BenchResults` and its parts, and results.json on disk (written and read back).

``BenchResults.from_json(json.load(f))`` and ``results.to_json()`` are the one way in and out of
results.json; `load_typed` reads the newest one. `load_results` and `latest_results` return the JSON
itself, as the success criterion of `labhelpers.checks` has always read it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import db
from ..errors import LabError
from ._json import Record, json_field, list_of
from .records import (BenchRecord, BenchTenant, ColdFirstQuery, LeakproofRecord, LeakproofSkipped, PolicyVariant,
                      PoolFirstQueries, PoolSkipped, RlsOverhead, SessionCheck, SkippedBenchmark, Stats,
                      load_benchmark, load_cold_queries, load_leakproof, load_pool, load_stats_by_tenant)

__all__ = ["DEFAULT_OUT", "RESULTS_VERSION", "BenchResults", "ColdSection", "Machine", "SeedInfo", "Server",
           "TenantSessions", "latest_results", "load_results", "load_typed"]

log = logging.getLogger("labhelpers")

DEFAULT_OUT = db.PROJECT_DIR / "runs" / "bench"
RESULTS_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Machine(Record):
    """The machine the figures come from (`machine_info`)."""

    cpu_model: str
    cores: int | None
    ram_gb: float
    platform: str
    python: str
    hostname: str
    load_avg_1_5_15: list[float] | None
    load_avg_at_end: list[float] | None = json_field(default=None, omit_when_none=True)


@dataclass(frozen=True, kw_only=True)
class Server(Record):
    """The server: its version and settings; for the benchmark also sql/04's LEAKPROOF marks and sizes."""

    version: str
    settings: dict[str, Any]
    leakproof: dict[str, bool] | None = json_field(default=None, omit_when_none=True)
    table_sizes: dict[str, str] | None = json_field(default=None, omit_when_none=True)


@dataclass(frozen=True, kw_only=True)
class SeedInfo(Record):
    """The generated data the run measured (`labhelpers seed`)."""

    id: int
    scale: str
    seed: int
    status: str
    anchor: str
    rows: dict[str, int] | None
    load_seconds: float | None


@dataclass(frozen=True, kw_only=True)
class TenantSessions(Record):
    """The timed session of one tenant, verified before and after its timings."""

    tenant: str
    before: SessionCheck = json_field(load=SessionCheck.from_json)
    after: SessionCheck = json_field(load=SessionCheck.from_json)


@dataclass(frozen=True, kw_only=True)
class ColdSection(Record):
    """The first query on new connections, and the first checkouts behind real pools."""

    connections: int
    how: str
    queries: list[ColdFirstQuery] = json_field(load=load_cold_queries)
    connect: dict[str, Stats] = json_field(load=load_stats_by_tenant)  # logins, per tenant slug
    pool: list[PoolFirstQueries | PoolSkipped] = json_field(load=list_of(load_pool))


@dataclass(frozen=True, kw_only=True)
class BenchResults(Record):
    """Everything one `run_bench` measured: the content of results.json."""

    version: int
    created_at: str
    scale: str
    seed_run: SeedInfo | None = json_field(load=SeedInfo.from_json)
    database: str
    repeat: int
    warmup: int
    prepared_statements: bool
    checkpoint_first: bool
    timing: str
    machine: Machine = json_field(load=Machine.from_json)
    server: Server = json_field(load=Server.from_json)
    tenants: list[BenchTenant] = json_field(load=list_of(BenchTenant.from_json))
    targets_ms: dict[str, float]
    margin_required: float
    benchmarks: list[BenchRecord | SkippedBenchmark] = json_field(load=list_of(load_benchmark))
    rls_overhead: list[RlsOverhead] = json_field(load=list_of(RlsOverhead.from_json))
    policy_variants: list[PolicyVariant] = json_field(load=list_of(PolicyVariant.from_json))
    leakproof: list[LeakproofRecord | LeakproofSkipped] = json_field(load=list_of(load_leakproof))
    data_age_days: float | None
    sessions: list[TenantSessions] = json_field(load=list_of(TenantSessions.from_json))
    cold: ColdSection | None = json_field(load=ColdSection.from_json)

    @property
    def timed(self) -> list[BenchRecord]:
        """The benchmark records that were timed (not skipped for a missing schema)."""
        return [r for r in self.benchmarks if isinstance(r, BenchRecord)]

    @property
    def criterion_records(self) -> list[BenchRecord]:
        """The records that count for the success criterion: one per lesson benchmark and tenant."""
        return [r for r in self.timed if r.criterion]

    def warm(self, key: str, tenant: str) -> BenchRecord | None:
        """The timed record of benchmark ``key`` for tenant ``tenant`` (a slug), or None."""
        return warm_record(self.timed, key, tenant)


def warm_record(records: Sequence[BenchRecord | SkippedBenchmark], key: str, tenant: str) -> BenchRecord | None:
    """The first timed record of ``key`` for ``tenant`` in ``records``, or None."""
    return next((r for r in records if isinstance(r, BenchRecord) and r.key == key and r.tenant == tenant), None)


# --------------------------------------------------------------------------------------------------
# On disk
# --------------------------------------------------------------------------------------------------


def write_results(results: BenchResults, out: Path) -> None:
    """results.json in directory ``out`` (which exists)."""
    (out / "results.json").write_text(json.dumps(results.to_json(), indent=1, default=str), encoding="utf-8")


def load_results(scale: str | None = None, *, database: str | None = None,
                 out_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The newest results.json (of ``scale``, or of any scale; of ``database`` if given), or None."""
    base = Path(out_dir) if out_dir else DEFAULT_OUT
    candidates = [base / scale / "results.json"] if scale else sorted(base.glob("*/results.json"))
    found = sorted((p for p in candidates if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in found:
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("bench: unreadable results file %s", path)
            continue
        if database is None or results.get("database") == database:
            return results
    return None


def load_typed(scale: str | None = None, *, database: str | None = None,
               out_dir: str | Path | None = None) -> BenchResults | None:
    """`load_results`, typed: the newest results as `BenchResults`, or None.

    Raise LabError if the newest file is not in the format `run_bench` writes.
    """
    data = load_results(scale, database=database, out_dir=out_dir)
    if data is None:
        return None
    try:
        return BenchResults.from_json(data)
    except (KeyError, TypeError, AttributeError) as e:
        raise LabError(f"benchmark results in an unknown format ({type(e).__name__}: {e}): "
                       "rerun `labhelpers bench`") from None


def latest_results(scale: str | None = None, *, database: str | None = None) -> dict[str, dict[str, Any]] | None:
    """The newest benchmark results as ``{name: {p95_ms, target_ms, ...}}``, for the success criterion.

    Only the records that count for the criterion are returned: per lesson benchmark and tenant, the
    verbatim query when it meets its target with the course's margin, else the course's tuned version.
    None when no benchmark ran yet (on ``database``, when given). (`load_typed` gives all of it, typed.)
    """
    results = load_typed(scale, database=database)
    if results is None:
        return None
    return {r.name: {"title": r.title, "variant": r.variant, "tenant": r.tenant, "role": r.role,
                     "p50_ms": r.stats.p50_ms, "p95_ms": r.stats.p95_ms, "p99_ms": r.stats.p99_ms,
                     "max_ms": r.stats.max_ms, "target_ms": r.target_ms, "passed": r.passed, "margin": r.margin,
                     "scale": results.scale, "created_at": results.created_at}
            for r in results.criterion_records}
