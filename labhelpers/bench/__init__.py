"""The lesson's benchmark targets, measured as the application measures them: as ``app_user``, under RLS.

`run_bench` times, for the largest and the smallest tenant of the loaded dataset:

- the lesson's Test 1, Test 2, Test 3 and Scenario 2 **verbatim** (``$1`` bound to the tenant id on the
  server, exactly the text of the lesson), and the course's tuned version of each (what the schema
  stages make possible: generated columns, covering indexes, a ``timestamptz`` bound);
- the tenant switch: one ``set_config('app.current_tenant', ...)`` round trip (session-scoped), and the
  pool-safe transaction-scoped form; with ``SELECT 1`` as the floor (one round trip, no work).

Every timed session is a real login as ``app_user``; inside it, before and after the timed runs, the
session checks ``current_user``, ``rolsuper``, ``rolbypassrls``, table ownership and the tenant setting,
and records them (`verify_session`). Each query gets a warm-up, then ``repeat`` timed runs; the raw
samples are kept and p50/p95/p99/max computed; a query passes when its p95 is within the lesson's target.
On the same data and in the same run it also measures RLS overhead, policy-expression variants and the
LEAKPROOF decision of sql/04 (`variants`), and the first query on a new connection (`cold`, `pools`).

Results are typed (`BenchResults` and the records of `records`), written as ``results.json`` (samples,
percentiles, plans, server and machine), ``report.md`` (the table a student reads), ``latency-<tenant>.png``
and ``cold-<largest tenant>.png`` in ``runs/bench/<scale>/`` by default. `load_typed` reads the newest
results back; `latest_results` and `load_results` give them as JSON (the success criterion of
`labhelpers.checks` reads them). `load` compares the ways of loading data (``labhelpers bench-load``).

Modules: `queries` (what is timed), `timing` (the one timing loop), `session` (who is timing),
`records` and `results` (typed results and their one serialiser), `environment` (machine, server,
data, tenants), `run` (the lesson's run), `cold` and `pools` (new connections), `variants`, `report`,
`load` and `load_methods` (the load comparison).
"""

from __future__ import annotations

from .._stats import percentile
from .cold import cold_first_queries, explain_timings
from .environment import machine_info
from .load import LoadComparison, LoadResult, compare_loads
from .pools import warm_up_backend
from .queries import (BENCHMARKS, COLD_CONNECTIONS, MARGIN, POLICY_VARIANTS, POOL_KEYS, SCENARIO2, TARGETS_MS, TEST1,
                      TEST2, TEST3, VARIANT_QUERIES, Benchmark)
from .records import (BenchRecord, BenchTenant, ColdFirstQuery, LeakproofRecord, LeakproofSkipped, OwnerRole,
                      Percentiles, PlanError, PlanRecord, PolicyVariant, PoolFirstQueries, PoolSkipped, RlsOverhead,
                      SessionCheck, SkippedBenchmark, Stats, Verified, stats)
from .report import cold_table, report_markdown, summary_table, write_report
from .results import (DEFAULT_OUT, BenchResults, ColdSection, Machine, SeedInfo, Server, TenantSessions,
                      latest_results, load_results, load_typed)
from .run import run_bench
from .session import verify_session
from .timing import time_query

__all__ = [
    "BENCHMARKS", "COLD_CONNECTIONS", "DEFAULT_OUT", "MARGIN", "POLICY_VARIANTS", "POOL_KEYS", "SCENARIO2",
    "TARGETS_MS", "TEST1", "TEST2", "TEST3", "VARIANT_QUERIES",
    "BenchRecord", "BenchResults", "BenchTenant", "Benchmark", "ColdFirstQuery", "ColdSection", "LeakproofRecord",
    "LeakproofSkipped", "LoadComparison", "LoadResult", "Machine", "OwnerRole", "Percentiles", "PlanError",
    "PlanRecord", "PolicyVariant", "PoolFirstQueries", "PoolSkipped", "RlsOverhead", "SeedInfo", "Server",
    "SessionCheck", "SkippedBenchmark", "Stats", "TenantSessions", "Verified",
    "cold_first_queries", "cold_table", "compare_loads", "explain_timings", "latest_results", "load_results",
    "load_typed", "machine_info", "percentile", "report_markdown", "run_bench", "stats", "summary_table",
    "time_query", "verify_session", "warm_up_backend", "write_report",
]
