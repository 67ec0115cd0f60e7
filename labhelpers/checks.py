"""The lesson's success criteria as functions over a live database, each returning a result with evidence.

Every criterion that is about what a tenant sees is measured as ``app_user`` (a real login: not
superuser, no BYPASSRLS, owns nothing) with a tenant set, never as the administrator, who sees through
row-level security (PITFALLS 1-2). Nothing is hard-coded: tenant tables and partitions are read from
the catalog, so a table or partition added later is checked too.

====  ==========================  ================================================================
 #    name                        what passes
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

``run_checks(dsn)`` runs all of them; each ``check_*`` function can be called alone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from . import db, lesson
from .errors import LabError

__all__ = [
    "CRITERIA",
    "CheckResult",
    "TenantTable",
    "app_privileges",
    "app_role_facts",
    "check_benchmarks",
    "check_citus_ready",
    "check_custom_fields",
    "check_jsonb_indexes",
    "check_new_partitions",
    "check_definer_functions",
    "check_partition_pruning",
    "check_privileges",
    "check_rls",
    "check_views",
    "check_zero_leakage",
    "run_checks",
    "search_path_problem",
    "tenant_tables",
]

log = logging.getLogger("labhelpers")

CRITERIA = {
    "rls": "All tables implement proper RLS policies",
    "jsonb_indexes": "JSONB queries use appropriate GIN indexes",
    "partition_pruning": "Partition pruning eliminates irrelevant partitions",
    "zero_leakage": "Zero data leakage between tenants",
    "custom_fields": "Schema supports 100+ custom fields per entity",
    "benchmarks": "Benchmark queries meet performance targets",
    "citus_ready": "Keys carry the tenant (ready to distribute by tenant_id on Citus)",
    "privileges": "App roles hold no privilege beyond SELECT, INSERT, UPDATE, DELETE (no TRUNCATE)",
    "views": "Views run as the caller (security_invoker); no materialized views",
    "definer_functions": "SECURITY DEFINER functions pin search_path (pg_temp last)",
    "new_partitions": "Partitions created later are secured like the others",
}
"""Check name -> the success criterion it measures (the lesson's words)."""

APP_ROLE = "app_user"
MIN_CUSTOM_FIELDS = 100
TENANT_SETTING = "app.current_tenant"
# The lesson's queries, verbatim ($1 = the tenant; the RLS policy adds the same predicate anyway).
JSONB_QUERIES = {
    "Test 1 (contact search)": lesson.TEST_1,
    "Scenario 2 (custom fields)": lesson.SCENARIO_2,
}
JSONB_TABLE = "contacts"
PRUNING_QUERIES = {
    "Step 4 (January 2024)": (lesson.STEP_4, ("2024-01-01", "2024-02-01")),
    "Scenario 3 (January 2024)": (lesson.SCENARIO_3, ("2024-01-01", "2024-01-31 00:00:00.000001")),
}
PRUNING_TABLE = "activities"
ENTITY_OF_TABLE = {"contacts": "contact", "leads": "lead", "activities": "activity"}
# Tables that Citus would make reference tables (replicated to every node): no tenant key needed.
REFERENCE_TABLES = ("tenants",)


@dataclass
class CheckResult:
    """The outcome of one success criterion.

    :param name: short key (``rls``, ``zero_leakage``...), see `CRITERIA`.
    :param passed: True, False, or None when the check was skipped (``summary`` says why).
    :param summary: one line for the table `labhelpers check` prints.
    :param evidence: what was measured: DataFrames (catalog rows, counts), plans, numbers.
    """

    name: str
    passed: bool | None
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def criterion(self) -> str:
        """The lesson's wording of the criterion."""
        return CRITERIA.get(self.name, self.name)

    @property
    def status(self) -> str:
        """``PASS``, ``FAIL`` or ``SKIP``."""
        return "SKIP" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: DataFrames become lists of records, plans their summary text."""
        return {
            "name": self.name,
            "criterion": self.criterion,
            "status": self.status,
            "passed": self.passed,
            "summary": self.summary,
            "evidence": {k: _jsonable(v) for k, v in self.evidence.items()},
        }


def _jsonable(value: Any) -> Any:
    from .explain import Plan

    if isinstance(value, pd.DataFrame):
        frame = value.reset_index() if not isinstance(value.index, pd.RangeIndex) else value
        frame = frame.astype(object).where(frame.notna(), None)
        return [{str(k): _jsonable(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
    if isinstance(value, Plan):
        return {"query": value.query, "summary": value.summary(), "indexes_used": value.indexes_used}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


# --------------------------------------------------------------------------------------------------
# The catalog: which tables hold tenant data
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantTable:
    """A table (or partition) holding tenant rows.

    :param name: the table's name as ``regclass`` prints it.
    :param tenant_column: the column naming the tenant (``tenant_id``; ``id`` for ``tenants``).
    :param kind: ``table``, ``partitioned`` (a parent) or ``partition`` (a partition, leaf or not).
    :param parent: the partition's direct parent, else None.
    :param leaf: True when the rows live in it (not partitioned itself).
    """

    name: str
    tenant_column: str
    kind: str
    parent: str | None = None
    leaf: bool = True


def tenant_tables(conn: psycopg.Connection[Any], *, partitions: bool = True) -> list[TenantTable]:
    """Every table of the current schema that holds tenant rows: a ``tenant_id`` column, or ``tenants``.

    Read from the catalog, so tables and partitions created later are included.
    :param partitions: include partitions (at every level), not only top-level tables.
    Returns tables first (in name order), then partitions (in name order).
    """
    rows = conn.execute(
        """
        SELECT c.oid::regclass::text,
               CASE WHEN c.oid = to_regclass('tenants') THEN 'id' ELSE 'tenant_id' END,
               CASE WHEN c.relispartition THEN 'partition' WHEN c.relkind = 'p' THEN 'partitioned' ELSE 'table' END,
               (SELECT i.inhparent::regclass::text FROM pg_inherits AS i WHERE i.inhrelid = c.oid),
               c.relkind = 'r'
          FROM pg_class AS c
         WHERE c.relnamespace = current_schema()::regnamespace
           AND c.relkind IN ('r', 'p')
           AND (c.oid = to_regclass('tenants')
                OR EXISTS (SELECT 1 FROM pg_attribute AS a
                            WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
         ORDER BY c.relispartition, c.relname
        """
    ).fetchall()
    found = [TenantTable(name, col, kind, parent, leaf) for name, col, kind, parent, leaf in rows]
    return [t for t in found if partitions or t.kind != "partition"]


def app_role_facts(conn: psycopg.Connection[Any], roles: Sequence[str] = db.APP_ROLES) -> pd.DataFrame:
    """For each existing application role: superuser? BYPASSRLS? how many objects of this database it owns,
    and whether it is a member of a role that owns a tenant table (which would let it act as the owner).

    Returns a DataFrame indexed by role.
    """
    rows = conn.execute(
        """
        SELECT r.rolname AS role, r.rolsuper AS superuser, r.rolbypassrls AS bypassrls, r.rolcanlogin AS login,
               (SELECT count(*) FROM pg_class AS c WHERE c.relowner = r.oid)
               + (SELECT count(*) FROM pg_proc AS p WHERE p.proowner = r.oid)
               + (SELECT count(*) FROM pg_namespace AS n WHERE n.nspowner = r.oid) AS owns,
               EXISTS (SELECT 1 FROM pg_class AS c
                        WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
                          AND pg_has_role(r.oid, c.relowner, 'USAGE')) AS acts_as_owner
          FROM pg_roles AS r
         WHERE r.rolname = ANY(%s)
         ORDER BY r.rolname
        """,
        (list(roles),),
    ).fetchall()
    return pd.DataFrame(
        rows, columns=["role", "superuser", "bypassrls", "login", "owns", "acts_as_owner"]
    ).set_index("role")


# --------------------------------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------------------------------


def _admin_conninfo(conn: psycopg.Connection[Any]) -> str:
    """Server and database of ``conn`` (its password is not readable back: role logins use the lab's)."""
    return conn.info.dsn


@contextmanager
def _app_connection(admin: psycopg.Connection[Any], role: str = APP_ROLE) -> Iterator[psycopg.Connection[Any]]:
    exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if not exists:
        raise LabError(f"role {role} does not exist yet: build the RLS stage first (`labhelpers build --through 02`)")
    dsn = db.role_dsn(_admin_conninfo(admin), role)
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as e:
        raise LabError(f"cannot log in as {role}: {str(e).strip().splitlines()[-1]}") from None
    try:
        conn.execute("SET TimeZone = 'UTC'")  # partitions are UTC months; the lesson's dates are UTC days
        yield conn
    finally:
        conn.close()


@contextmanager
def _in_tenant(conn: psycopg.Connection[Any], tenant_id: str | None) -> Iterator[None]:
    """One transaction, rolled back, with the tenant set transaction-locally ('' when None)."""
    with conn.transaction(force_rollback=True):
        conn.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, tenant_id or ""))
        yield


def _tenant_ids(admin: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(id, slug) of every tenant, read by the administrator."""
    try:
        with admin.transaction():
            rows = admin.execute("SELECT id::text, slug FROM tenants ORDER BY slug").fetchall()
    except psycopg.errors.UndefinedTable:
        raise LabError("there is no tenants table yet: build the schema first (`labhelpers build`)") from None
    return [(str(i), str(s)) for i, s in rows]


def _am_app_role(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute(
        "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    return {"current_user": row[0], "superuser": row[1], "bypassrls": row[2]}


def _refuse_privileged(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    facts = _am_app_role(conn)
    if facts["superuser"] or facts["bypassrls"]:
        raise LabError(
            f"{facts['current_user']} is a superuser or has BYPASSRLS: an isolation check run as it proves nothing"
        )
    return facts


# --------------------------------------------------------------------------------------------------
# 1. RLS on every tenant table and partition
# --------------------------------------------------------------------------------------------------

_SETTING_READ = re.compile(r"current_setting\('app\.current_tenant'(::text)?,\s*true\)")
_COMMANDS = ("SELECT", "INSERT", "UPDATE", "DELETE")


def _expr(value: Any) -> str | None:
    """A policy expression read from a DataFrame: None when the policy has none (pandas may give NaN)."""
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _pins_tenant(expr: str | None, column: str) -> bool:
    """True if a policy expression compares the tenant column with the fail-closed setting read."""
    if not expr:
        return False
    return bool(_SETTING_READ.search(expr)) and "NULLIF" in expr and re.search(rf"\b{re.escape(column)}\b", expr) is not None


def check_rls(admin: psycopg.Connection[Any]) -> CheckResult:
    """Criterion 1: every tenant table and partition has RLS enabled and forced, policies that pin the
    tenant for every command (fail closed), WITH CHECK on writes, no permissive ``true``; the app roles are
    neither superuser nor BYPASSRLS and own nothing.

    :param admin: a connection to the lab database (catalog reads only).
    Returns the result; evidence ``tables`` (one row per table/partition), ``policies``, ``roles``.
    """
    tables = tenant_tables(admin)
    if not tables:
        return CheckResult("rls", False, "no tenant tables found: build the schema first")
    names = [t.name for t in tables]
    flags = dict(
        (r[0], (r[1], r[2]))
        for r in admin.execute(
            "SELECT oid::regclass::text, relrowsecurity, relforcerowsecurity FROM pg_class "
            "WHERE oid = ANY(%s::regclass[])",
            (names,),
        ).fetchall()
    )
    pol_rows = admin.execute(
        """
        SELECT p.polrelid::regclass::text, p.polname::text, p.polpermissive,
               CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                             WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
               pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),
               ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END FROM unnest(p.polroles) AS r)
          FROM pg_policy AS p
         WHERE p.polrelid = ANY(%s::regclass[])
         ORDER BY 1, 2
        """,
        (names,),
    ).fetchall()
    policies = pd.DataFrame(
        pol_rows, columns=["table", "policy", "permissive", "command", "using", "with_check", "roles"]
    )
    rows = []
    for t in tables:
        enabled, forced = flags.get(t.name, (False, False))
        mine = policies[policies["table"] == t.name]
        permissive = mine[mine["permissive"]]
        problems: list[str] = []
        if not enabled:
            problems.append("RLS not enabled")
        if not forced:
            problems.append("RLS not forced")
        for cmd in _COMMANDS:
            cover = permissive[permissive["command"].isin([cmd, "ALL"])]
            if cover.empty:
                problems.append(f"no permissive policy for {cmd}")
        for _, p in permissive.iterrows():
            using, check = _expr(p["using"]), _expr(p["with_check"])
            if p["command"] in ("SELECT", "UPDATE", "DELETE", "ALL") and not _pins_tenant(using, t.tenant_column):
                problems.append(f"permissive {p['policy']} USING ({using}) does not pin the tenant")
            if p["command"] in ("INSERT", "UPDATE", "ALL"):
                if check is None:
                    problems.append(f"permissive {p['policy']} has no WITH CHECK")
                elif not _pins_tenant(check, t.tenant_column):
                    problems.append(f"permissive {p['policy']} WITH CHECK ({check}) does not pin the tenant")
        rows.append(
            {"table": t.name, "kind": t.kind, "rls_enabled": enabled, "rls_forced": forced,
             "policies": len(mine), "permissive": len(permissive), "problems": "; ".join(problems)}
        )
    frame = pd.DataFrame(rows)
    roles = app_role_facts(admin)
    role_problems = [
        f"{role}: {what}"
        for role, r in roles.iterrows()
        for what, bad in (("superuser", r["superuser"]), ("BYPASSRLS", r["bypassrls"]),
                          (f"owns {r['owns']} objects", r["owns"] > 0), ("can act as a table owner", r["acts_as_owner"]))
        if bad
    ]
    if APP_ROLE not in roles.index:
        role_problems.append(f"{APP_ROLE} does not exist")
    bad = frame[frame["problems"] != ""]
    passed = bad.empty and not role_problems
    n_parts = int((frame["kind"] == "partition").sum())
    if passed:
        summary = (f"{len(frame) - n_parts} tables and {n_parts} partitions: RLS enabled+forced, "
                   f"fail-closed tenant policies with WITH CHECK; app roles unprivileged")
    else:
        first = [f"{r['table']}: {r['problems']}" for _, r in bad.head(3).iterrows()] + role_problems[:2]
        summary = f"{len(bad)} of {len(frame)} tables/partitions wrong; " + " | ".join(first)
    return CheckResult("rls", passed, summary, {"tables": frame, "policies": policies, "roles": roles})


# --------------------------------------------------------------------------------------------------
# 2. JSONB queries use the custom-field index, under RLS, as app_user
# --------------------------------------------------------------------------------------------------


def custom_field_indexes(conn: psycopg.Connection[Any], table: str = JSONB_TABLE) -> pd.DataFrame:
    """Indexes of ``table`` (and its partitions) that serve custom-field queries: defined on ``custom_fields``
    (GIN, or an expression on it) or on a generated column computed from it.

    Returns a DataFrame: index, method, definition.
    """
    rows = conn.execute(
        """
        SELECT i.indexrelid::regclass::text, am.amname, pg_get_indexdef(i.indexrelid)
          FROM pg_index AS i
          JOIN pg_class AS ic ON ic.oid = i.indexrelid
          JOIN pg_am AS am ON am.oid = ic.relam
         WHERE i.indrelid IN (SELECT %(t)s::regclass UNION SELECT relid FROM pg_partition_tree(%(t)s::regclass))
           AND (pg_get_indexdef(i.indexrelid) ~ '\\mcustom_fields\\M'
                OR EXISTS (SELECT 1 FROM pg_attribute AS a
                            WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                              AND a.attgenerated <> ''
                              AND pg_get_expr((SELECT d.adbin FROM pg_attrdef AS d
                                                WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum),
                                              a.attrelid) ~ '\\mcustom_fields\\M'))
         ORDER BY 1
        """,
        {"t": table},
    ).fetchall()
    return pd.DataFrame(rows, columns=["index", "method", "definition"])


def _generated_custom_columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """Stored generated columns of ``table`` computed from ``custom_fields`` (04's ``cf_*`` columns)."""
    rows = conn.execute(
        """
        SELECT a.attname::text FROM pg_attribute AS a JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = %s::regclass AND a.attgenerated <> '' AND NOT a.attisdropped
           AND pg_get_expr(d.adbin, d.adrelid) ~ '\\mcustom_fields\\M'
        """,
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


def _custom_index_conditions(plan: Any, indexes: set[str], columns: Sequence[str]) -> list[str]:
    """Custom-field indexes the plan uses WITH a custom-field index condition (not only for tenant_id)."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, ["custom_fields", *columns])) + r")\b")
    found = []
    for n in plan.node_list:
        if n.index in indexes and pattern.search(str(n.raw.get("Index Cond") or "")):
            found.append(n.index)
    return list(dict.fromkeys(found))


def check_jsonb_indexes(admin: psycopg.Connection[Any], *, tenant: str | None = None) -> CheckResult:
    """Criterion 2: the lesson's JSONB queries (Test 1, Scenario 2) use a custom-field index for their
    custom-field predicate, as app_user with a tenant set: under RLS, where a non-LEAKPROOF operator such
    as ``@>`` cannot become an index condition (PITFALLS 11; sql/04 marks ``jsonb_contains`` LEAKPROOF).

    Each query is explained as the planner chooses; when it prefers another plan (small tables: the
    tenant's btree plus a filter is cheaper), it is explained again with sequential and plain index scans
    disabled, which shows whether the custom-field index is *usable* under RLS: it is not if ``@>``
    stays a filter. Passes when one of the two plans has an index condition on the custom field, or
    (the two bitmap plans cost nearly the same on small tables) when a GIN index on custom_fields
    exists and ``@>`` is LEAKPROOF, so the planner may use it for app_user.
    :param admin: a connection to the lab database.
    :param tenant: tenant id whose context is used (default: the first tenant by slug).
    Returns the result; evidence: the indexes considered, and each query's plan(s).
    """
    from .explain import explain

    idx = custom_field_indexes(admin)
    if idx.empty:
        return CheckResult("jsonb_indexes", False, f"no index on {JSONB_TABLE}.custom_fields (or a column derived from it)",
                           {"indexes": idx})
    tenant_id = tenant or _first_tenant(admin)
    names = set(idx["index"])
    columns = _generated_custom_columns(admin, JSONB_TABLE)
    gin = sorted(idx[idx["method"] == "gin"]["index"])
    leakproof = bool(admin.execute(
        """SELECT p.proleakproof FROM pg_operator AS o JOIN pg_proc AS p ON p.oid = o.oprcode
            WHERE o.oprname = '@>' AND o.oprleft = 'jsonb'::regtype AND o.oprright = 'jsonb'::regtype"""
    ).fetchone()[0])  # type: ignore[index]
    evidence: dict[str, Any] = {"indexes": idx, "tenant": tenant_id, "jsonb_contains_leakproof": leakproof}
    verdicts = []
    with _app_connection(admin) as app:
        evidence["role"] = _refuse_privileged(app)
        for label, lesson_sql in JSONB_QUERIES.items():
            query = lesson_sql.replace("$1", "%(tenant)s")  # the lesson's $1 in psycopg's style
            params = {"tenant": tenant_id} if "%(tenant)s" in query else None
            with _in_tenant(app, tenant_id):
                plan = explain(app, query, params)
            evidence[label] = plan
            used = _custom_index_conditions(plan, names, columns)
            if used:
                verdicts.append((label, True, f"uses {', '.join(used)}"))
                continue
            chosen = ", ".join(plan.indexes_used) or "a Seq Scan"
            with _in_tenant(app, tenant_id):
                app.execute("SET LOCAL enable_seqscan = off")
                app.execute("SET LOCAL enable_indexscan = off")
                app.execute("SET LOCAL enable_indexonlyscan = off")
                forced = explain(app, query, params)
            evidence[f"{label} (seq and index scans disabled)"] = forced
            used = _custom_index_conditions(forced, names, columns)
            if used:
                verdicts.append((label, True, f"planner prefers {chosen} at this size; {', '.join(used)} usable under RLS"))
            elif gin and leakproof:
                # The costs of the two bitmap plans are close at small sizes; the catalog decides.
                verdicts.append((label, True, f"planner prefers {chosen} at this size; GIN {', '.join(gin)} usable "
                                              f"under RLS (@> is LEAKPROOF)"))
            else:
                why = "no GIN index on custom_fields" if not gin else "@> (jsonb_contains) is not LEAKPROOF"
                verdicts.append((label, False, f"custom-field predicate is a Filter, never an index condition "
                                               f"({chosen}; {why})"))
    passed = all(ok for _, ok, _ in verdicts)
    summary = "; ".join(f"{label}: {how}" for label, _, how in verdicts)
    return CheckResult("jsonb_indexes", passed, summary + " (as app_user)", evidence)


def _first_tenant(admin: psycopg.Connection[Any]) -> str:
    tenants = _tenant_ids(admin)
    if not tenants:
        raise LabError("no tenants: load the seed data first (`labhelpers build`)")
    return tenants[0][0]


# --------------------------------------------------------------------------------------------------
# 3. Partition pruning
# --------------------------------------------------------------------------------------------------


def _leaf_ranges(conn: psycopg.Connection[Any], table: str) -> pd.DataFrame:
    """Every leaf partition of ``table`` with the range [lo, hi) of its RANGE-partitioned ancestor level."""
    rows = conn.execute(
        """
        WITH tree AS (
            SELECT t.relid, t.isleaf, pg_get_expr(c.relpartbound, c.oid) AS bound
              FROM pg_partition_tree(%(t)s::regclass) AS t JOIN pg_class AS c ON c.oid = t.relid
        )
        SELECT leaf.relid::regclass::text,
               (SELECT substring(a.bound FROM $$FROM \\('([^']+)'\\)$$)::timestamptz
                  FROM pg_partition_ancestors(leaf.relid) AS anc JOIN tree AS a ON a.relid = anc.relid
                 WHERE a.bound LIKE 'FOR VALUES FROM%%' LIMIT 1),
               (SELECT substring(a.bound FROM $$TO \\('([^']+)'\\)$$)::timestamptz
                  FROM pg_partition_ancestors(leaf.relid) AS anc JOIN tree AS a ON a.relid = anc.relid
                 WHERE a.bound LIKE 'FOR VALUES FROM%%' LIMIT 1)
          FROM tree AS leaf
         WHERE leaf.isleaf
         ORDER BY 1
        """,
        {"t": table},
    ).fetchall()
    return pd.DataFrame(rows, columns=["partition", "lo", "hi"])


def check_partition_pruning(admin: psycopg.Connection[Any], *, tenant: str | None = None) -> CheckResult:
    """Criterion 3: the lesson's Step 4 and Scenario 3 queries for January 2024 scan only partitions whose
    range overlaps January 2024 (read from EXPLAIN JSON via `labhelpers.explain`), as app_user in a tenant.

    :param admin: a connection to the lab database.
    :param tenant: tenant id whose context is used (default: the first tenant by slug).
    Returns the result; evidence: each query's plan and its per-partition pruning table.
    """
    from .explain import explain

    kind = admin.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (PRUNING_TABLE,)).fetchone()
    if kind is None or kind[0] != "p":
        return CheckResult("partition_pruning", False, f"{PRUNING_TABLE} is not partitioned (run sql/05-partitioning.sql)")
    ranges = _leaf_ranges(admin, PRUNING_TABLE)
    tenant_id = tenant or _first_tenant(admin)
    evidence: dict[str, Any] = {"tenant": tenant_id, "leaves": ranges}
    verdicts = []
    with _app_connection(admin) as app:
        evidence["role"] = _refuse_privileged(app)
        for label, (query, (lo, hi)) in PRUNING_QUERIES.items():
            lo_t, hi_t = pd.Timestamp(lo, tz="UTC"), pd.Timestamp(hi, tz="UTC")
            relevant = set(
                ranges[(ranges["lo"].notna()) & (ranges["lo"] < hi_t) & (ranges["hi"] > lo_t)]["partition"]
            )
            with _in_tenant(app, tenant_id):
                plan = explain(app, query)
            parts = plan.partitions({PRUNING_TABLE: list(ranges["partition"])})
            touched = set(parts[parts["status"].isin(["scanned", "in plan (not executed)"])]["partition"])
            pruned = parts[parts["status"].str.startswith("pruned")]
            outside = sorted(touched - relevant)
            ok = not outside and len(pruned) > 0 and bool(relevant)
            evidence[label] = plan
            evidence[f"{label}: partitions"] = parts
            verdicts.append(
                (label, ok, f"scanned {len(touched)} (all in range)" if not outside
                 else f"scanned {len(outside)} outside the range, e.g. {outside[0]}")
            )
            verdicts[-1] = (label, ok, verdicts[-1][2] + f", pruned {len(pruned)} of {len(ranges)}")
    passed = all(ok for _, ok, _ in verdicts)
    return CheckResult("partition_pruning", passed, "; ".join(f"{label}: {how}" for label, _, how in verdicts), evidence)


# --------------------------------------------------------------------------------------------------
# 4. Zero leakage
# --------------------------------------------------------------------------------------------------


def check_zero_leakage(admin: psycopg.Connection[Any]) -> CheckResult:
    """Criterion 4: as app_user, for each tenant's context, no table or partition shows a row of another
    tenant; with the context unset or empty, nothing is visible at all.

    A partition app_user has no privilege on counts as not leaking (it cannot be read directly).
    :param admin: a connection to the lab database (used to list tenants and tables).
    Returns the result; evidence ``counts``: one row per (context, table) with own rows, foreign rows.
    """
    tables = tenant_tables(admin)
    tenants = _tenant_ids(admin)
    if not tenants:
        return CheckResult("zero_leakage", False, "no tenants to test with: load the seed data first")
    contexts: list[tuple[str, str | None]] = [(slug, tid) for tid, slug in tenants] + [("(unset)", None), ("(empty)", "")]
    rows = []
    with _app_connection(admin) as app:
        role = _refuse_privileged(app)
        for label, tid in contexts:
            for t in tables:
                stmt = sql.SQL(
                    "SELECT count(*) FILTER (WHERE {c}::text = %(t)s), count(*) FILTER (WHERE {c}::text IS DISTINCT FROM %(t)s) FROM {tbl}"
                ).format(c=sql.Identifier(t.tenant_column), tbl=sql.SQL(t.name))
                try:
                    if label == "(unset)":
                        # A truly unset setting needs a transaction where it was never set.
                        with app.transaction(force_rollback=True):
                            own, foreign = app.execute(stmt, {"t": tid or ""}).fetchone()  # type: ignore[misc]
                    else:
                        with _in_tenant(app, tid):
                            own, foreign = app.execute(stmt, {"t": tid or ""}).fetchone()  # type: ignore[misc]
                    access = "read"
                except psycopg.errors.InsufficientPrivilege:
                    own, foreign, access = 0, 0, "no privilege"
                rows.append({"context": label, "table": t.name, "kind": t.kind, "access": access,
                             "own_rows": own, "foreign_rows": foreign})
    counts = pd.DataFrame(rows)
    leaks = counts[(counts["foreign_rows"] > 0)]
    unset_visible = counts[counts["context"].isin(["(unset)", "(empty)"]) & (counts["own_rows"] > 0)]
    seen_own = int(counts[~counts["context"].isin(["(unset)", "(empty)"])]["own_rows"].sum())
    passed = leaks.empty and unset_visible.empty and seen_own > 0
    if passed:
        summary = (f"{len(tenants)} tenant contexts + unset + empty x {len(tables)} tables/partitions: "
                   f"0 foreign rows ({seen_own} own rows seen)")
    elif seen_own == 0:
        summary = "app_user saw no rows at all in any tenant context: nothing was really tested"
    else:
        bad = leaks.head(3)
        summary = f"{int(leaks['foreign_rows'].sum())} foreign rows visible: " + ", ".join(
            f"{r['context']} sees {r['foreign_rows']} in {r['table']}" for _, r in bad.iterrows())
    return CheckResult("zero_leakage", passed, summary, {"counts": counts, "role": role})


# --------------------------------------------------------------------------------------------------
# 5. 100+ custom fields per entity
# --------------------------------------------------------------------------------------------------


def check_custom_fields(admin: psycopg.Connection[Any], *, minimum: int = MIN_CUSTOM_FIELDS) -> CheckResult:
    """Criterion 5: every tenant has at least ``minimum`` custom fields defined for every entity
    (contacts, leads, activities), counted as app_user in that tenant from the registry
    ``custom_field_definitions``.

    Returns the result; evidence ``fields``: one row per tenant and entity with the count.
    """
    if admin.execute("SELECT to_regclass('custom_field_definitions')").fetchone()[0] is None:  # type: ignore[index]
        return CheckResult("custom_fields", False, "no custom_field_definitions registry (run sql/03-jsonb-fields.sql)")
    entities = [
        ENTITY_OF_TABLE.get(t, t.rstrip("s"))
        for (t,) in admin.execute(
            """SELECT c.relname::text FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid
                WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
                  AND NOT c.relispartition AND a.attname = 'custom_fields' AND NOT a.attisdropped
                ORDER BY 1"""
        ).fetchall()
    ]
    tenants = _tenant_ids(admin)
    if not tenants:
        return CheckResult("custom_fields", False, "no tenants: load the seed data first")
    rows = []
    with _app_connection(admin) as app:
        role = _refuse_privileged(app)
        for tid, slug in tenants:
            with _in_tenant(app, tid):
                got = dict(app.execute(
                    "SELECT entity, count(*) FROM custom_field_definitions GROUP BY entity").fetchall())
            rows.extend({"tenant": slug, "entity": e, "fields": int(got.get(e, 0))} for e in entities)
    fields = pd.DataFrame(rows, columns=["tenant", "entity", "fields"])
    short = fields[fields["fields"] < minimum]
    passed = short.empty and not fields.empty
    if passed:
        summary = (f"{len(tenants)} tenants x {len(entities)} entities: "
                   f"{int(fields['fields'].min())}-{int(fields['fields'].max())} fields each (>= {minimum})")
    else:
        summary = f"{len(short)} tenant/entity pairs below {minimum}: " + ", ".join(
            f"{r['tenant']}/{r['entity']} has {r['fields']}" for _, r in short.head(3).iterrows())
    return CheckResult("custom_fields", passed, summary, {"fields": fields, "role": role})


# --------------------------------------------------------------------------------------------------
# 6. Benchmarks
# --------------------------------------------------------------------------------------------------


def check_benchmarks(admin: psycopg.Connection[Any] | None = None) -> CheckResult:
    """Criterion 6: the latest `labhelpers bench` results meet the lesson's targets (p95 <= target).

    :param admin: when given, only results measured on its database count (a benchmark of another
        database says nothing about this one).
    Skipped (passed None) when there are no results yet. Returns the result; evidence ``results``.
    """
    skip = CheckResult("benchmarks", None, "no benchmark results: run `labhelpers bench` first")
    try:
        from . import bench  # type: ignore[attr-defined]
    except ImportError:
        return skip
    latest = getattr(bench, "latest_results", None)
    if latest is None:
        return skip
    try:
        results = latest(database=admin.info.dbname if admin is not None else None)
    except (LabError, FileNotFoundError) as e:
        log.info("no benchmark results: %s", e)
        return skip
    frame = _bench_frame(results)
    if frame is None or frame.empty:
        return skip
    over = frame[frame["p95_ms"] > frame["target_ms"]]
    privileged = frame[frame["role"].notna() & (frame["role"] != APP_ROLE)]
    if not privileged.empty:  # timings that bypass RLS say nothing about the course's queries (PITFALLS 1)
        return CheckResult("benchmarks", False, f"{len(privileged)} benchmarks ran as {set(privileged['role'])}, "
                           f"not {APP_ROLE}: rerun `labhelpers bench`", {"results": frame})
    passed = over.empty
    if passed:
        summary = f"{len(frame)} benchmarks, every p95 within target: " + ", ".join(
            f"{r['name']} {r['p95_ms']:.1f}/{r['target_ms']:.0f} ms" for _, r in frame.iterrows())
    else:
        summary = f"{len(over)} of {len(frame)} over target: " + ", ".join(
            f"{r['name']} p95 {r['p95_ms']:.1f} ms > {r['target_ms']:.0f} ms" for _, r in over.iterrows())
    return CheckResult("benchmarks", passed, summary, {"results": frame})


def _bench_frame(results: Any) -> pd.DataFrame | None:
    """Normalise what `bench.latest_results()` returns into name, p95_ms, target_ms rows."""
    if results is None:
        return None
    if isinstance(results, pd.DataFrame):
        frame = results.reset_index() if "name" not in results.columns else results
        records = frame.to_dict(orient="records")
    elif isinstance(results, dict):
        records = [{"name": k, **(v if isinstance(v, dict) else _as_dict(v))} for k, v in results.items()]
    else:
        records = [_as_dict(r) for r in results]
    rows = []
    for r in records:
        p95 = r.get("p95_ms", r.get("p95"))
        target = r.get("target_ms", r.get("target"))
        if p95 is None or target is None:
            continue
        rows.append({"name": str(r.get("name") or r.get("benchmark") or r.get("query") or "?"),
                     "p95_ms": float(p95), "target_ms": float(target), "role": r.get("role")})
    return pd.DataFrame(rows, columns=["name", "p95_ms", "target_ms", "role"])


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    return {k: getattr(obj, k) for k in dir(obj) if not k.startswith("_") and not callable(getattr(obj, k))}


# --------------------------------------------------------------------------------------------------
# 7. Citus readiness
# --------------------------------------------------------------------------------------------------


def check_citus_ready(admin: psycopg.Connection[Any]) -> CheckResult:
    """Criterion 7: every tenant table has a primary key, and its primary key, unique constraints, unique
    indexes and foreign keys all include the tenant key (``tenants`` itself is a reference table).

    Returns the result; evidence ``keys``: one row per key with its columns and verdict.
    """
    tables = [t for t in tenant_tables(admin, partitions=False) if t.name not in REFERENCE_TABLES]
    if not tables:
        return CheckResult("citus_ready", False, "no tenant tables found: build the schema first")
    names = [t.name for t in tables]
    keys = admin.execute(
        """
        SELECT c.conrelid::regclass::text AS "table", c.conname::text AS key,
               CASE c.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique' WHEN 'f' THEN 'foreign key' END,
               ARRAY(SELECT a.attname::text FROM unnest(c.conkey) AS k JOIN pg_attribute AS a
                      ON a.attrelid = c.conrelid AND a.attnum = k) AS columns,
               c.confrelid::regclass::text,
               ARRAY(SELECT a.attname::text FROM unnest(c.confkey) AS k JOIN pg_attribute AS a
                      ON a.attrelid = c.confrelid AND a.attnum = k) AS ref_columns
          FROM pg_constraint AS c
         WHERE c.conrelid = ANY(%(t)s::regclass[]) AND c.contype IN ('p', 'u', 'f')
        UNION ALL
        SELECT i.indrelid::regclass::text, i.indexrelid::regclass::text, 'unique index',
               ARRAY(SELECT coalesce(a.attname::text, '(expression)') FROM unnest(i.indkey) AS k
                      LEFT JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k), NULL, NULL
          FROM pg_index AS i
         WHERE i.indrelid = ANY(%(t)s::regclass[]) AND i.indisunique
           AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)
         ORDER BY 1, 2
        """,
        {"t": names},
    ).fetchall()
    frame = pd.DataFrame(keys, columns=["table", "key", "kind", "columns", "references", "ref_columns"])
    verdicts = []
    for _, k in frame.iterrows():
        ok = "tenant_id" in k["columns"]
        if ok and k["kind"] == "foreign key":
            ref = k["references"]
            ref_key = "id" if ref in REFERENCE_TABLES else "tenant_id"
            pos = list(k["columns"]).index("tenant_id")
            ok = list(k["ref_columns"])[pos] == ref_key
        verdicts.append(ok)
    frame["includes_tenant"] = verdicts
    no_pk = [t for t in names if not ((frame["table"] == t) & (frame["kind"] == "primary key")).any()]
    bad = frame[~frame["includes_tenant"]]
    passed = bad.empty and not no_pk
    if passed:
        summary = f"{len(tables)} tables, {len(frame)} keys: every PK, unique key and FK includes tenant_id"
    else:
        parts = [f"{r['table']}.{r['key']} ({r['kind']}: {', '.join(r['columns'])})" for _, r in bad.head(3).iterrows()]
        parts += [f"{t} has no primary key" for t in no_pk[:2]]
        summary = f"{len(bad) + len(no_pk)} keys without tenant_id: " + "; ".join(parts)
    return CheckResult("citus_ready", passed, summary, {"keys": frame, "tables_without_pk": no_pk})


# --------------------------------------------------------------------------------------------------
# Objects outside the policies: privileges, views, SECURITY DEFINER functions
# --------------------------------------------------------------------------------------------------

# Schemas a student or the lab may put objects in: all but the system ones (pg_toast, pg_temp_N...).
_USER_SCHEMA = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'"
# Objects that belong to an extension (pg_stat_statements' views, say) are the extension's business.
_NOT_EXTENSION = ("NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = '{catalog}'::regclass "
                  "AND d.objid = {oid} AND d.deptype = 'e')")

# Every table privilege PostgreSQL has (MAINTAIN since 17); the application roles need the first four.
_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN")
APP_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


def app_privileges(conn: psycopg.Connection[Any], roles: Sequence[str] = db.APP_ROLES) -> pd.DataFrame:
    """The table privileges each existing application role holds on every tenant table and partition,
    counting grants to PUBLIC and to roles it is a member of (``has_table_privilege``).

    Returns a DataFrame, one row per (table, role): table, kind, role, privileges (list, in the order
    SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER, MAINTAIN), grantable (the privileges
    it holds WITH GRANT OPTION).
    """
    tables = tenant_tables(conn)
    privileges = [p for p in _TABLE_PRIVILEGES if p != "MAINTAIN" or conn.info.server_version >= 170000]
    rows = conn.execute(
        """
        SELECT t.name, r.rolname::text,
               ARRAY(SELECT x.p FROM unnest(%(p)s::text[]) WITH ORDINALITY AS x(p, o)
                      WHERE has_table_privilege(r.oid, t.name::regclass, x.p) ORDER BY x.o),
               ARRAY(SELECT x.p FROM unnest(%(p)s::text[]) WITH ORDINALITY AS x(p, o)
                      WHERE has_table_privilege(r.oid, t.name::regclass, x.p || ' WITH GRANT OPTION') ORDER BY x.o)
          FROM unnest(%(t)s::text[]) WITH ORDINALITY AS t(name, o)
         CROSS JOIN pg_roles AS r
         WHERE r.rolname = ANY(%(r)s)
         ORDER BY t.o, r.rolname
        """,
        {"p": privileges, "t": [t.name for t in tables], "r": list(roles)},
    ).fetchall()
    kind = {t.name: t.kind for t in tables}
    return pd.DataFrame(
        [(name, kind[name], role, list(held), list(grantable)) for name, role, held, grantable in rows],
        columns=["table", "kind", "role", "privileges", "grantable"],
    )


def check_privileges(admin: psycopg.Connection[Any]) -> CheckResult:
    """Every application role holds at most SELECT, INSERT, UPDATE and DELETE on each tenant table, none
    of them with GRANT OPTION, and nothing at all on a partition (reached through its parent).

    TRUNCATE bypasses row-level security entirely: a role that holds it empties every tenant's rows
    (PITFALLS 31); a ``GRANT ALL`` hands it out, with REFERENCES and TRIGGER. Privileges are what the
    catalog says the role may do, measured with ``has_table_privilege`` (PUBLIC and memberships count),
    not by a TRUNCATE that may fail for another reason.
    :param admin: a connection to the lab database (catalog reads only).
    Returns the result; evidence ``privileges``: one row per (table, role) with what it holds and why
    that is too much.
    """
    tables = tenant_tables(admin)
    if not tables:
        return CheckResult("privileges", False, "no tenant tables found: build the schema first")
    frame = app_privileges(admin)
    if APP_ROLE not in set(frame["role"]):
        return CheckResult("privileges", False, f"{APP_ROLE} does not exist: build the RLS stage first",
                           {"privileges": frame})
    problems = []
    for _, r in frame.iterrows():
        found = []
        if r["kind"] == "partition" and r["privileges"]:
            found.append(f"{', '.join(r['privileges'])} on a partition (no direct access: use the parent)")
        else:
            beyond = [p for p in r["privileges"] if p not in APP_TABLE_PRIVILEGES]
            if beyond:
                found.append(", ".join(beyond) + (" (TRUNCATE bypasses RLS)" if "TRUNCATE" in beyond else ""))
        if r["grantable"]:
            found.append(f"WITH GRANT OPTION on {', '.join(r['grantable'])}")
        problems.append("; ".join(found))
    frame["problems"] = problems
    bad = frame[frame["problems"] != ""]
    n_parts = sum(1 for t in tables if t.kind == "partition")
    roles = sorted(set(frame["role"]))
    if bad.empty:
        summary = (f"{len(tables) - n_parts} tables x {len(roles)} app roles: at most SELECT, INSERT, UPDATE, "
                   f"DELETE (no TRUNCATE); {n_parts} partitions: no direct access")
    else:
        summary = f"{len(bad)} of {len(frame)} table/role pairs hold too much: " + "; ".join(
            f"{r['role']} on {r['table']}: {r['problems']}" for _, r in bad.head(3).iterrows())
    return CheckResult("privileges", bad.empty, summary, {"privileges": frame})


def check_views(admin: psycopg.Connection[Any]) -> CheckResult:
    """Every view, in every schema, is ``security_invoker`` (it reads the tables as the caller, under the
    caller's row-level security), and there is no materialized view (it has no RLS and shows whatever
    its owner saw to everyone allowed to read it). PITFALLS 12.

    Objects of extensions are not judged. Returns the result; evidence ``views``: one row per view with
    its owner, whether it is security_invoker, and the application roles that may read it.
    """
    rows = admin.execute(
        f"""
        SELECT c.oid::regclass::text, n.nspname::text,
               CASE c.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END,
               pg_get_userbyid(c.relowner)::text,
               coalesce((SELECT o.option_value::boolean FROM pg_options_to_table(c.reloptions) AS o
                          WHERE o.option_name = 'security_invoker'), false),
               ARRAY(SELECT r.rolname::text FROM pg_roles AS r
                      WHERE r.rolname = ANY(%(r)s) AND has_table_privilege(r.oid, c.oid, 'SELECT') ORDER BY 1)
          FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('v', 'm') AND {_USER_SCHEMA}
           AND {_NOT_EXTENSION.format(catalog='pg_class', oid='c.oid')}
         ORDER BY 1
        """,
        {"r": list(db.APP_ROLES)},
    ).fetchall()
    frame = pd.DataFrame(
        [(v, s, k, o, bool(i), list(rb)) for v, s, k, o, i, rb in rows],
        columns=["view", "schema", "kind", "owner", "security_invoker", "readable_by"],
    )
    frame["problems"] = [
        "materialized view: no row-level security, shows what its owner saw" if r["kind"] == "materialized view"
        else ("" if r["security_invoker"] else f"runs as its owner {r['owner']} (no security_invoker)")
        for _, r in frame.iterrows()
    ]
    bad = frame[frame["problems"] != ""]
    if frame.empty:
        summary = "no views or materialized views in any schema"
    elif bad.empty:
        summary = f"{len(frame)} views in {frame['schema'].nunique()} schemas, all security_invoker; no materialized views"
    else:
        summary = f"{len(bad)} of {len(frame)} views bypass the caller's RLS: " + "; ".join(
            f"{r['view']}: {r['problems']}" + (f", readable by {', '.join(r['readable_by'])}" if r["readable_by"] else "")
            for _, r in bad.head(3).iterrows())
    return CheckResult("views", bad.empty, summary, {"views": frame})


def search_path_problem(setting: str | None) -> str | None:
    """What makes a SECURITY DEFINER function's ``search_path`` unsafe, or None when it is safe.

    :param setting: the value of its ``SET search_path`` (from ``pg_proc.proconfig``), None when unset.
    Safe means pinned, with ``pg_temp`` listed explicitly and last: a schema that is not listed is
    searched FIRST for tables when it is the session's temporary schema, so without ``pg_temp`` at the
    end a caller's temporary table (and its triggers, running as the owner) stands in for the real one.
    """
    if setting is None:
        return "no SET search_path: the caller's search_path and temporary tables decide what its names mean"
    items = [item.strip().strip('"') for item in setting.split(",")]
    if "pg_temp" not in items:
        return f"search_path = {setting}: pg_temp is not listed, so the caller's temporary tables are searched first"
    if items[-1] != "pg_temp":
        return f"search_path = {setting}: pg_temp is not last, so the caller's temporary tables come before the lab's"
    return None


def check_definer_functions(admin: psycopg.Connection[Any]) -> CheckResult:
    """Every SECURITY DEFINER function in every schema (trigger functions included: they run as their
    owner whoever fires them) pins ``search_path`` with ``pg_temp`` last (see `search_path_problem`).

    Objects of extensions are not judged. Returns the result; evidence ``functions``: one row per
    SECURITY DEFINER function with its owner, search_path and the application roles that may call it.
    """
    rows = admin.execute(
        f"""
        SELECT p.oid::regprocedure::text, n.nspname::text, p.prorettype = 'trigger'::regtype,
               pg_get_userbyid(p.proowner)::text,
               (SELECT substr(c, length('search_path=') + 1) FROM unnest(p.proconfig) AS c
                 WHERE starts_with(c, 'search_path=')),
               ARRAY(SELECT r.rolname::text FROM pg_roles AS r
                      WHERE r.rolname = ANY(%(r)s) AND has_function_privilege(r.oid, p.oid, 'EXECUTE') ORDER BY 1)
          FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
         WHERE p.prosecdef AND {_USER_SCHEMA}
           AND {_NOT_EXTENSION.format(catalog='pg_proc', oid='p.oid')}
         ORDER BY 1
        """,
        {"r": list(db.APP_ROLES)},
    ).fetchall()
    frame = pd.DataFrame(
        [(f, s, bool(t), o, sp, list(ex)) for f, s, t, o, sp, ex in rows],
        columns=["function", "schema", "trigger", "owner", "search_path", "executable_by"],
    )
    frame["problems"] = [search_path_problem(_expr(sp)) or "" for sp in frame["search_path"]]
    bad = frame[frame["problems"] != ""]
    if frame.empty:
        summary = "no SECURITY DEFINER functions"
    elif bad.empty:
        summary = (f"{len(frame)} SECURITY DEFINER functions ({int(frame['trigger'].sum())} trigger functions): "
                   f"each pins search_path with pg_temp last")
    else:
        summary = f"{len(bad)} of {len(frame)} SECURITY DEFINER functions are unsafe: " + "; ".join(
            f"{r['function']}: {r['problems']}" for _, r in bad.head(3).iterrows())
    return CheckResult("definer_functions", bad.empty, summary, {"functions": frame})


ENSURE_PARTITIONS = "lab_ensure_activity_partitions(timestamptz, timestamptz)"


def check_new_partitions(admin: psycopg.Connection[Any]) -> CheckResult:
    """Partitions made LATER are secured like the others: ``lab_ensure_activity_partitions`` (05; bonus 1
    schedules it) is called for the month after the last one, in a transaction that is always rolled
    back, and every table it creates must pass the ``rls`` and ``privileges`` rules (PITFALLS 3).

    The build secures every partition it finds, so a function that forgets to secure what it creates
    shows only here, or in production next month. Note: this runs the database's own function as the
    connecting user (a grader does so inside the submission's sandbox). Skipped (passed None) before 05.
    Returns the result; evidence ``created`` (the tables made, then rolled back) and ``tables``: their rows
    of the ``rls`` and ``privileges`` evidence.
    """
    if admin.execute("SELECT to_regprocedure(%s)", (ENSURE_PARTITIONS,)).fetchone()[0] is None:  # type: ignore[index]
        return CheckResult("new_partitions", None, "no lab_ensure_activity_partitions() yet (run sql/05-partitioning.sql)")
    with admin.transaction(force_rollback=True):
        admin.execute("SET LOCAL lock_timeout = '5s'")   # never queue behind the application's transactions
        hi = admin.execute(
            "SELECT max(upper) FROM (SELECT substring(pg_get_expr(c.relpartbound, c.oid) FROM $$TO \\('([^']+)'\\)$$)::timestamptz"
            " AS upper FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass) AS b",
            (PRUNING_TABLE,)).fetchone()[0]  # type: ignore[index]
        if hi is None:
            return CheckResult("new_partitions", False, f"{PRUNING_TABLE} has no range partitions to follow")
        created = [r[0] for r in admin.execute(
            "SELECT * FROM lab_ensure_activity_partitions(%s, %s + interval '1 day')", (hi, hi)).fetchall()]
        rls = check_rls(admin)
        privileges = check_privileges(admin)
    if not created:
        return CheckResult("new_partitions", False, f"lab_ensure_activity_partitions created nothing for the month from {hi:%Y-%m}",
                           {"created": created})
    names = {str(c) for c in created}
    tables = rls.evidence["tables"]
    tables = tables[tables["table"].isin(names)].copy()
    privs = privileges.evidence["privileges"]
    extra = privs[privs["table"].isin(names) & (privs["problems"] != "")]
    for _, r in extra.iterrows():
        mask = tables["table"] == r["table"]
        tables.loc[mask, "problems"] = tables.loc[mask, "problems"].map(
            lambda have, add=f"{r['role']} holds {r['problems']}": f"{have}; {add}" if have else add)
    bad = tables[tables["problems"] != ""]
    evidence = {"created": sorted(names), "tables": tables}
    if bad.empty and len(tables) == len(names):
        return CheckResult("new_partitions", True, f"lab_ensure_activity_partitions for {hi:%Y-%m}: the {len(names)} tables it "
                           f"creates have RLS enabled+forced, the tenant policy and no app-role privileges", evidence)
    missing = sorted(names - set(tables["table"]))
    summary = (f"{len(bad) + len(missing)} of {len(names)} tables lab_ensure_activity_partitions creates for {hi:%Y-%m} "
               f"are not secured: {', '.join(list(bad['table'])[:3] + missing[:3])}"
               + (f" ({bad.iloc[0]['problems']})" if not bad.empty else " (not seen as tenant tables)"))
    return CheckResult("new_partitions", False, summary, evidence)


# --------------------------------------------------------------------------------------------------
# All of them
# --------------------------------------------------------------------------------------------------

CHECKS: dict[str, Callable[[psycopg.Connection[Any]], CheckResult]] = {
    "rls": check_rls,
    "jsonb_indexes": check_jsonb_indexes,
    "partition_pruning": check_partition_pruning,
    "zero_leakage": check_zero_leakage,
    "custom_fields": check_custom_fields,
    "benchmarks": check_benchmarks,
    "citus_ready": check_citus_ready,
    "privileges": check_privileges,
    "views": check_views,
    "definer_functions": check_definer_functions,
    "new_partitions": check_new_partitions,
}


def run_checks(conn_or_dsn: psycopg.Connection[Any] | str | None = None) -> list[CheckResult]:
    """Run every success criterion against a live lab database, in the lesson's order.

    :param conn_or_dsn: an administrator's connection, or a DSN (None: resolved as everywhere, see
        `labhelpers.db.resolve_dsn`). Tenant measurements log in as app_user on the same server and database.
    Returns one `CheckResult` per criterion; a check that crashes becomes a FAIL carrying the error.
    Raise LabError if the database cannot be reached.
    """
    if isinstance(conn_or_dsn, psycopg.Connection):
        return _run_all(conn_or_dsn)
    with db.connect(conn_or_dsn, autocommit=True) as admin:
        return _run_all(admin)


def _run_all(admin: psycopg.Connection[Any]) -> list[CheckResult]:
    results = []
    for name, fn in CHECKS.items():
        try:
            results.append(fn(admin))
        except Exception as e:  # noqa: BLE001 -- a check that crashes is a FAIL with the error, never a traceback
            if isinstance(e, psycopg.Error) and not admin.closed and not admin.autocommit:
                admin.rollback()
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if not isinstance(e, (psycopg.Error, LabError)):  # a bug in the check itself: say which
                message = f"{type(e).__name__}: {message}"
                log.warning("check %s crashed", name, exc_info=True)
            log.warning("check %s failed to run: %s", name, message)
            results.append(CheckResult(name, False, f"could not run: {message}", {"error": message}))
        log.info("check %s: %s", name, results[-1].status)
    return results
