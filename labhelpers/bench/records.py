"""The benchmark's records, one frozen dataclass per kind, each serialised by `Record` (``_json``).

Every record reads back from results.json with ``Kind.from_json(obj)`` and writes with ``to_json()``;
the fields are the JSON keys, in the order results.json has always had them. The grader and the stress
tool reuse them. Where results.json holds two kinds in one list (a timed query or one skipped for a
missing schema; a pool series or one skipped), `either` tells them apart by a key only one kind has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._stats import percentile
from ..errors import LabError
from ._json import Record, dict_of, either, json_field, list_of

__all__ = [
    "BenchRecord", "BenchTenant", "ColdFirstQuery", "LeakproofRecord", "LeakproofSkipped", "OwnerRole",
    "Percentiles", "PlanError", "PlanRecord", "PolicyVariant", "PoolFirstQueries", "PoolSkipped",
    "RlsOverhead", "SessionCheck", "SkippedBenchmark", "Stats", "Verified", "stats",
]

# --------------------------------------------------------------------------------------------------
# Figures and sessions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Stats(Record):
    """Summary of one series of timings, in milliseconds."""

    n: int
    min_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float


def stats(samples: Sequence[float]) -> Stats:
    """p50/p95/p99 and friends of ``samples`` (ms). Raise LabError if there is no sample."""
    if not samples:
        raise LabError("no samples")
    return Stats(
        n=len(samples), min_ms=min(samples), p50_ms=percentile(samples, 50), p95_ms=percentile(samples, 95),
        p99_ms=percentile(samples, 99), max_ms=max(samples), mean_ms=sum(samples) / len(samples),
    )


def stats_or_none(samples: Sequence[float]) -> Stats | None:
    """`stats`, or None for no sample."""
    return stats(samples) if samples else None


@dataclass(frozen=True, kw_only=True)
class Percentiles(Record):
    """p50, p95 and p99 of a series (ms): what a record quotes of another one."""

    p50_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def of(cls, s: Stats) -> Percentiles:
        """The percentiles of ``s``."""
        return cls(p50_ms=s.p50_ms, p95_ms=s.p95_ms, p99_ms=s.p99_ms)


@dataclass(frozen=True, kw_only=True)
class SessionCheck(Record):
    """What `verify_session` saw inside a measured session."""

    current_user: str
    session_user: str
    rolsuper: bool
    rolbypassrls: bool
    owns_tables: bool
    tenant: str | None
    pid: int


@dataclass(frozen=True, kw_only=True)
class Verified(Record):
    """What `verify_session` saw on many sessions: the distinct values of each fact, and how many."""

    current_user: list[str]
    session_user: list[str]
    rolsuper: list[bool]
    rolbypassrls: list[bool]
    owns_tables: list[bool]
    tenant: list[str | None]
    checked: int
    distinct_backends: int

    @classmethod
    def of(cls, seen: Sequence[SessionCheck]) -> Verified:
        """The facts of ``seen``, each as its sorted distinct values."""

        def distinct(name: str) -> list[Any]:
            return sorted({getattr(s, name) for s in seen}, key=str)

        return cls(current_user=distinct("current_user"), session_user=distinct("session_user"),
                   rolsuper=distinct("rolsuper"), rolbypassrls=distinct("rolbypassrls"),
                   owns_tables=distinct("owns_tables"), tenant=distinct("tenant"), checked=len(seen),
                   distinct_backends=len({s.pid for s in seen}))


@dataclass(frozen=True, kw_only=True)
class BenchTenant(Record):
    """A measured tenant: its id and slug, its row counts, and why it was picked (largest/smallest)."""

    id: str
    slug: str
    contacts: int
    leads: int
    activities: int
    role: str  # 'largest' / 'smallest' / 'chosen'


# --------------------------------------------------------------------------------------------------
# The warm series
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PlanRecord(Record):
    """The ``EXPLAIN ANALYZE`` plan taken in the timed session, as evidence."""

    summary: str
    plan_json: Any = json_field(key="json")  # the plan as `labhelpers.explain.Plan.to_json` wrote it
    execution_ms: float | None
    planning_ms: float | None
    indexes_used: list[str]
    top: str


@dataclass(frozen=True, kw_only=True)
class PlanError(Record):
    """A plan that could not be taken (the measurement stands without it)."""

    error: str


_load_plan = either("error", PlanError.from_json, PlanRecord.from_json)


@dataclass(frozen=True, kw_only=True)
class BenchRecord(Record):
    """One query (or the tenant switch, or the floor) timed as ``app_user`` for one tenant."""

    name: str                        # "<key> [<tenant>]"
    key: str
    lesson: str                      # key into TARGETS_MS
    title: str
    variant: str                     # 'verbatim', 'tuned' or 'floor'
    tenant: str
    tenant_id: str
    tenant_role: str
    role: str                        # current_user of the timed session
    session: SessionCheck = json_field(load=SessionCheck.from_json)
    sql: str
    params: list[Any]
    rows_returned: int | None
    result_value: Any                # the single value of a one-cell answer (a count), else None
    target_ms: float | None
    samples_ms: list[float]
    stats: Stats = json_field(flatten=True, load=Stats.from_json)
    note: str
    criterion: bool                  # counts for the success criterion (`mark_criterion`)
    passed: bool | None = json_field(default=None, omit_when_none="target_ms")
    margin: float | None = json_field(default=None, omit_when_none="target_ms")
    same_result_as_verbatim: bool | None = json_field(default=None, omit_when_none=True)
    plan: PlanRecord | PlanError | None = json_field(default=None, omit_when_none=True, load=_load_plan)


@dataclass(frozen=True, kw_only=True)
class SkippedBenchmark(Record):
    """A tuned query the schema cannot run yet (a column or table of a later stage is missing)."""

    name: str
    key: str
    lesson: str
    title: str
    variant: str
    tenant: str
    tenant_role: str
    sql: str
    error: str
    needs: str
    target_ms: float
    criterion: bool = False


load_benchmark = either("error", SkippedBenchmark.from_json, BenchRecord.from_json)


@dataclass(frozen=True, kw_only=True)
class OwnerRole(Record):
    """Who ran the owner's side of the RLS overhead comparison."""

    current_user: str
    rolsuper: bool
    rolbypassrls: bool


@dataclass(frozen=True, kw_only=True)
class RlsOverhead(Record):
    """A query as ``app_user`` under RLS against the owner with the tenant as an explicit predicate."""

    query: str                       # the benchmark's key
    title: str
    tenant: str
    owner_sql: str
    owner_role: OwnerRole = json_field(load=OwnerRole.from_json)
    app_user: Percentiles = json_field(load=Percentiles.from_json)
    owner: Percentiles = json_field(load=Percentiles.from_json)
    owner_samples_ms: list[float]
    overhead_p50_ms: float
    ratio_p50: float | None


@dataclass(frozen=True, kw_only=True)
class PolicyVariant(Record):
    """One spelling of the contacts policy, one query timed under it (in a rolled-back transaction)."""

    variant: str
    policy_using: str
    function: str | None             # the CREATE FUNCTION the spelling needs
    query: str
    sql: str
    tenant: str
    session: SessionCheck = json_field(load=SessionCheck.from_json)
    result_value: Any
    stats: Stats = json_field(flatten=True, load=Stats.from_json)
    samples_ms: list[float]
    plan_top: str | None
    plan_summary: str | None


@dataclass(frozen=True, kw_only=True)
class LeakproofRecord(Record):
    """A verbatim query with sql/04's LEAKPROOF marks taken back, beside the query as built."""

    query: str
    title: str
    tenant: str
    session: SessionCheck = json_field(load=SessionCheck.from_json)
    not_leakproof: Percentiles = json_field(load=Percentiles.from_json)
    leakproof: Percentiles | None = json_field(load=Percentiles.from_json)
    target_ms: float
    passed_not_leakproof: bool
    samples_ms: list[float]
    functions: list[str]
    plan_top: str | None
    plan_summary: str | None


@dataclass(frozen=True, kw_only=True)
class LeakproofSkipped(Record):
    """Why the LEAKPROOF comparison did not run."""

    note: str


load_leakproof = either("query", LeakproofRecord.from_json, LeakproofSkipped.from_json)

# --------------------------------------------------------------------------------------------------
# The first query on a new connection
# --------------------------------------------------------------------------------------------------

_load_stats = Stats.from_json


@dataclass(frozen=True, kw_only=True)
class ColdFirstQuery(Record):
    """One benchmark query run first on new connections, each a fresh login as ``app_user``.

    ``first`` is the client wall clock of the first execute + fetch after the tenant is set (what a new
    pool connection or a student's first ``\\timing`` pays); ``second`` the same query right after on the
    same connection. On other fresh logins ``EXPLAIN (ANALYZE, BUFFERS, SUMMARY)`` ran first, then again:
    PostgreSQL's own Planning Time and Execution Time, cold and warm, and the shared buffers hit while
    planning (catalog pages: the backend filling its relation and catalog caches) or read while executing
    (data pages that were not in shared buffers). Planning Time leaves out parse analysis and the rewriter
    (which adds the RLS policies), which fill caches too: on a third set of fresh logins ``PREPARE`` (parse,
    analyze, rewrite, no planning) is timed first and again (``parse_cold``, ``parse_warm``).
    """

    key: str
    lesson: str
    title: str
    variant: str
    tenant: str
    tenant_id: str
    tenant_role: str
    target_ms: float
    connections: int                 # fresh logins timed, one first execution each
    explain_connections: int         # fresh logins whose first statement after the tenant was EXPLAIN ANALYZE
    connect: Stats = json_field(load=_load_stats)          # psycopg.connect: TCP, startup, SCRAM, a new backend
    set_tenant: Stats = json_field(load=_load_stats)       # set_config of the tenant, the first statement
    first: Stats = json_field(load=_load_stats)
    second: Stats = json_field(load=_load_stats)
    new_connection: Stats = json_field(load=_load_stats)   # connect + set_tenant + first: a request, no pool
    planning_cold: Stats | None = json_field(load=_load_stats)
    execution_cold: Stats | None = json_field(load=_load_stats)
    planning_warm: Stats | None = json_field(load=_load_stats)
    execution_warm: Stats | None = json_field(load=_load_stats)
    parse_cold: Stats | None = json_field(load=_load_stats)  # PREPARE, first statement after the tenant
    parse_warm: Stats | None = json_field(load=_load_stats)  # a second PREPARE of the same text
    planning_hit_cold: Stats | None = json_field(load=_load_stats)  # shared hits while planning, first EXPLAIN
    planning_hit_warm: Stats | None = json_field(load=_load_stats)
    planning_read_cold: int          # blocks read while planning, all cold EXPLAINs together
    execution_read_cold: int         # blocks read while executing, all cold EXPLAINs together
    rows_returned: int | None
    verified: Verified = json_field(load=Verified.from_json)  # every connection's verify_session
    explain_cold: str                # one cold EXPLAIN as PostgreSQL printed it
    explain_warm: str                # the same connection's second EXPLAIN
    samples_ms: dict[str, list[float]]
    passed: bool                     # the first execution's p95 is within the lesson's target
    margin: float | None             # target / first p95
    warm: Percentiles | None = json_field(default=None, load=Percentiles.from_json)  # the warm series'

    def timing_lines(self, which: str = "cold") -> str:
        """PostgreSQL's own lines of the ``which`` ("cold" or "warm") EXPLAIN: the top plan node, then
        the Planning buffers, Planning Time and Execution Time."""
        text = self.explain_cold if which == "cold" else self.explain_warm
        lines = text.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("Planning")), len(lines))
        return "\n".join(lines[:1] + lines[start:])


@dataclass(frozen=True, kw_only=True)
class PoolFirstQueries(Record):
    """The first query on each connection behind a real pool (psycopg_pool, or PgBouncer's clients)."""

    key: str
    title: str
    variant: str
    tenant: str
    target_ms: float
    pool: str                        # the pool as configured, e.g. ``psycopg_pool.ConnectionPool(...)``
    warm_up: bool                    # `warm_up_backend` ran as the pool's ``configure``
    connections: int
    connect: Stats | None = json_field(load=_load_stats)   # client logins (PgBouncer), None for a filled pool
    first: Stats = json_field(load=_load_stats)
    second: Stats = json_field(load=_load_stats)
    warm_up_ms: Stats | None = json_field(load=_load_stats)
    verified: Verified = json_field(load=Verified.from_json)
    samples_ms: dict[str, list[float]]


@dataclass(frozen=True, kw_only=True)
class PoolSkipped(Record):
    """A pool series that could not run (PgBouncer not installed)."""

    key: str
    title: str
    tenant: str
    skipped: str


load_pool = either("skipped", PoolSkipped.from_json, PoolFirstQueries.from_json)
load_stats_by_tenant = dict_of(_load_stats)
load_cold_queries = list_of(ColdFirstQuery.from_json)
