"""The lesson's success criteria and every exercise's check: one registry, typed results with evidence.

Every criterion that is about what a tenant sees is measured as ``app_user`` (a real login: not
superuser, no BYPASSRLS, owns nothing) with a tenant set, never as the administrator, who sees through
row-level security (PITFALLS 1-2). Nothing is hard-coded: tenant tables and partitions are read from
the catalog (`labhelpers.catalog`), so a table or partition added later is checked too.

====  ==========================  ================================================================
 #    id                          what passes
====  ==========================  ================================================================
 1    ``rls``                     every tenant table and partition: RLS enabled AND forced; permissive
                                  policies pin the tenant (fail closed) for every command, WITH CHECK
                                  on writes, no permissive ``true``; app roles not superuser, no
                                  BYPASSRLS, own nothing
 2    ``jsonb_indexes``           the lesson's JSONB queries use a custom-field index as app_user
 3    ``partition_pruning``       the January 2024 activity queries scan only January 2024 partitions
 4    ``zero_leakage``            per tenant, no row of another tenant on any table or partition; unset
                                  or empty context sees nothing
 5    ``custom_fields``           100+ custom fields per entity, per tenant, from the registry
 6    ``benchmarks``              p95 of the latest `labhelpers bench` run within the lesson's targets
 7    ``citus_ready``             every tenant table's PK, unique keys and FKs include the tenant key
 8    ``privileges``              app roles hold at most SELECT, INSERT, UPDATE, DELETE on tenant tables
                                  (no TRUNCATE, which bypasses RLS; no REFERENCES, TRIGGER, grant
                                  option) and nothing on partitions
 9    ``views``                   every view in every schema is ``security_invoker``; no materialized
                                  views (they run as their owner, without RLS)
10    ``definer_functions``       every SECURITY DEFINER function (trigger functions included) pins its
                                  ``search_path`` with ``pg_temp`` listed last
11    ``new_partitions``          the tables ``lab_ensure_activity_partitions`` creates for the next month
                                  (in a rolled-back transaction) pass the ``rls`` and ``privileges`` rules
====  ==========================  ================================================================

``run_checks(dsn)`` runs all of them (`REGISTRY`); each ``check_*`` function can be called alone.

Modules: `results` (`CheckResult` and its serialisation), `registry` (the registry, `run_checks`),
`rls`, `privileges` (privileges, views, SECURITY DEFINER functions), `jsonb` (indexes, custom fields),
`partitioning` (pruning, new partitions), `leakage`, `benchmarks`, `citus`; `_session` (the app_user
login and the tenant context the measurements use).
"""

from __future__ import annotations

from ..catalog import TenantTable, tenant_tables
from ..tenants import TENANT_SETTING
from ._session import APP_ROLE
from .benchmarks import check_benchmarks
from .citus import REFERENCE_TABLES, check_citus_ready
from .jsonb import (
    ENTITY_OF_TABLE, JSONB_QUERIES, JSONB_TABLE, MIN_CUSTOM_FIELDS, check_custom_fields, check_jsonb_indexes,
    custom_field_indexes,
)
from .leakage import check_zero_leakage
from .partitioning import ENSURE_PARTITIONS, PRUNING_QUERIES, PRUNING_TABLE, check_new_partitions, check_partition_pruning
from .privileges import (
    APP_TABLE_PRIVILEGES, app_privileges, check_definer_functions, check_privileges, check_views, search_path_problem,
)
from .registry import CHECKS, CRITERIA, REGISTRY, Check, run_checks
from .results import CheckResult
from .rls import app_role_facts, check_rls

__all__ = [
    "APP_ROLE",
    "APP_TABLE_PRIVILEGES",
    "CHECKS",
    "CRITERIA",
    "ENSURE_PARTITIONS",
    "ENTITY_OF_TABLE",
    "JSONB_QUERIES",
    "JSONB_TABLE",
    "MIN_CUSTOM_FIELDS",
    "PRUNING_QUERIES",
    "PRUNING_TABLE",
    "REFERENCE_TABLES",
    "REGISTRY",
    "TENANT_SETTING",
    "Check",
    "CheckResult",
    "TenantTable",
    "app_privileges",
    "app_role_facts",
    "check_benchmarks",
    "check_citus_ready",
    "check_custom_fields",
    "check_definer_functions",
    "check_jsonb_indexes",
    "check_new_partitions",
    "check_partition_pruning",
    "check_privileges",
    "check_rls",
    "check_views",
    "check_zero_leakage",
    "custom_field_indexes",
    "run_checks",
    "search_path_problem",
    "tenant_tables",
]
