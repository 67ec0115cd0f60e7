"""The registry: every check under its stable id with the lesson's criterion, in the lesson's order;
and `run_checks`, which runs them all and turns a check that crashes into a FAIL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from .. import db
from ..errors import LabError
from .benchmarks import check_benchmarks
from .citus import check_citus_ready
from .jsonb import check_custom_fields, check_jsonb_indexes
from .leakage import check_zero_leakage
from .partitioning import check_new_partitions, check_partition_pruning
from .privileges import check_definer_functions, check_privileges, check_views
from .results import CheckResult
from .rls import check_rls

__all__ = ["CHECKS", "CRITERIA", "REGISTRY", "Check", "run_checks"]

log = logging.getLogger("labhelpers")

CheckFunction = Callable[[psycopg.Connection[Any]], CheckResult]


@dataclass(frozen=True)
class Check:
    """One entry of the registry.

    :param id: the stable id (``CheckResult.name``; ``labhelpers check --json`` prints it as ``name``).
    :param criterion: the success criterion it measures, in the lesson's words.
    :param run: the function: an administrator's connection in, a `CheckResult` out.
    """

    id: str
    criterion: str
    run: CheckFunction


REGISTRY: tuple[Check, ...] = (
    Check("rls", "All tables implement proper RLS policies", check_rls),
    Check("jsonb_indexes", "JSONB queries use appropriate GIN indexes", check_jsonb_indexes),
    Check("partition_pruning", "Partition pruning eliminates irrelevant partitions", check_partition_pruning),
    Check("zero_leakage", "Zero data leakage between tenants", check_zero_leakage),
    Check("custom_fields", "Schema supports 100+ custom fields per entity", check_custom_fields),
    Check("benchmarks", "Benchmark queries meet performance targets", check_benchmarks),
    Check("citus_ready", "Keys carry the tenant (ready to distribute by tenant_id on Citus)", check_citus_ready),
    Check("privileges", "App roles hold no privilege beyond SELECT, INSERT, UPDATE, DELETE (no TRUNCATE)",
          check_privileges),
    Check("views", "Views run as the caller (security_invoker); no materialized views", check_views),
    Check("definer_functions", "SECURITY DEFINER functions pin search_path (pg_temp last)", check_definer_functions),
    Check("new_partitions", "Partitions created later are secured like the others", check_new_partitions),
)
"""Every check, in the lesson's order (the order `run_checks` runs them and `labhelpers check` prints them)."""

CRITERIA: dict[str, str] = {c.id: c.criterion for c in REGISTRY}
"""Check id -> the success criterion it measures (the lesson's words)."""

CHECKS: dict[str, CheckFunction] = {c.id: c.run for c in REGISTRY}
"""Check id -> its function: what `run_checks` runs (a test may stand another function in for one)."""


def run_checks(conn_or_dsn: psycopg.Connection[Any] | str | None = None) -> list[CheckResult]:
    """Run every success criterion against a live lab database, in the lesson's order.

    :param conn_or_dsn: an administrator's connection, or a DSN (None: resolved as everywhere, see
        `labhelpers.db.resolve_dsn`). Tenant measurements log in as app_user on the same server and database.
    Returns one `CheckResult` per criterion; a check that crashes becomes a FAIL carrying the error.
    Raise LabError if the database cannot be reached.
    """
    if isinstance(conn_or_dsn, psycopg.Connection):
        return [_run_one(conn_or_dsn, name, fn) for name, fn in CHECKS.items()]
    with db.connect(conn_or_dsn, autocommit=True) as admin:
        return [_run_one(admin, name, fn) for name, fn in CHECKS.items()]


def _run_one(admin: psycopg.Connection[Any], name: str, fn: CheckFunction) -> CheckResult:
    try:
        result = fn(admin)
    except Exception as e:  # noqa: BLE001 -- a check that crashes is a FAIL with the error, never a traceback
        if isinstance(e, psycopg.Error) and not admin.closed and not admin.autocommit:
            admin.rollback()
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not isinstance(e, (psycopg.Error, LabError)):  # a bug in the check itself: say which
            message = f"{type(e).__name__}: {message}"
            log.warning("check %s crashed", name, exc_info=True)
        log.warning("check %s failed to run: %s", name, message)
        result = CheckResult(name, False, f"could not run: {message}", {"error": message})
    log.info("check %s: %s", name, result.status)
    return result
