"""The JSONB criteria: ``jsonb_indexes`` (the lesson's custom-field queries use an index, as app_user
under RLS) and ``custom_fields`` (100+ custom fields per entity, per tenant)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg

from .. import lesson
from ..explain import Plan, explain
from ._session import app_session, first_tenant, in_tenant, tenant_ids
from .results import CheckResult

__all__ = ["JSONB_QUERIES", "MIN_CUSTOM_FIELDS", "check_custom_fields", "check_jsonb_indexes", "custom_field_indexes"]

MIN_CUSTOM_FIELDS = 100
# The lesson's queries, verbatim ($1 = the tenant; the RLS policy adds the same predicate anyway).
JSONB_QUERIES = {
    "Test 1 (contact search)": lesson.TEST_1,
    "Scenario 2 (custom fields)": lesson.SCENARIO_2,
}
JSONB_TABLE = "contacts"
ENTITY_OF_TABLE = {"contacts": "contact", "leads": "lead", "activities": "activity"}


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


@dataclass(frozen=True)
class _IndexFacts:
    """What the catalog says about the custom-field indexes of `JSONB_TABLE`."""

    names: set[str]            # every custom-field index
    columns: list[str]         # generated columns computed from custom_fields (04's cf_*)
    gin: list[str]             # the GIN ones
    leakproof: bool            # @> (jsonb_contains) is LEAKPROOF: usable as an index condition under RLS


def _index_facts(admin: psycopg.Connection[Any], idx: pd.DataFrame) -> _IndexFacts:
    columns = [r[0] for r in admin.execute(
        """
        SELECT a.attname::text FROM pg_attribute AS a JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = %s::regclass AND a.attgenerated <> '' AND NOT a.attisdropped
           AND pg_get_expr(d.adbin, d.adrelid) ~ '\\mcustom_fields\\M'
        """,
        (JSONB_TABLE,),
    ).fetchall()]
    leakproof = bool(admin.execute(
        """SELECT p.proleakproof FROM pg_operator AS o JOIN pg_proc AS p ON p.oid = o.oprcode
            WHERE o.oprname = '@>' AND o.oprleft = 'jsonb'::regtype AND o.oprright = 'jsonb'::regtype"""
    ).fetchone()[0])  # type: ignore[index]
    return _IndexFacts(set(idx["index"]), columns, sorted(idx[idx["method"] == "gin"]["index"]), leakproof)


def _custom_index_conditions(plan: Plan, indexes: set[str], columns: Sequence[str]) -> list[str]:
    """Custom-field indexes the plan uses WITH a custom-field index condition (not only for tenant_id)."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, ["custom_fields", *columns])) + r")\b")
    found = []
    for n in plan.node_list:
        if n.index in indexes and pattern.search(str(n.raw.get("Index Cond") or "")):
            found.append(n.index)
    return list(dict.fromkeys(found))


def _judge_query(app: psycopg.Connection[Any], label: str, lesson_sql: str, tenant_id: str, facts: _IndexFacts,
                 evidence: dict[str, Any]) -> tuple[bool, str]:
    """Explain one lesson query as app_user in the tenant (again with seq and plain index scans off when
    the planner prefers another plan); add the plans to ``evidence``. Returns (passed, how)."""
    query = lesson_sql.replace("$1", "%(tenant)s")  # the lesson's $1 in psycopg's style
    params = {"tenant": tenant_id} if "%(tenant)s" in query else None
    with in_tenant(app, tenant_id):
        plan = explain(app, query, params)
    evidence[label] = plan
    used = _custom_index_conditions(plan, facts.names, facts.columns)
    if used:
        return True, f"uses {', '.join(used)}"
    chosen = ", ".join(plan.indexes_used) or "a Seq Scan"
    with in_tenant(app, tenant_id):
        app.execute("SET LOCAL enable_seqscan = off")
        app.execute("SET LOCAL enable_indexscan = off")
        app.execute("SET LOCAL enable_indexonlyscan = off")
        forced = explain(app, query, params)
    evidence[f"{label} (seq and index scans disabled)"] = forced
    used = _custom_index_conditions(forced, facts.names, facts.columns)
    if used:
        return True, f"planner prefers {chosen} at this size; {', '.join(used)} usable under RLS"
    if facts.gin and facts.leakproof:
        # The costs of the two bitmap plans are close at small sizes; the catalog decides.
        return True, f"planner prefers {chosen} at this size; GIN {', '.join(facts.gin)} usable under RLS (@> is LEAKPROOF)"
    why = "no GIN index on custom_fields" if not facts.gin else "@> (jsonb_contains) is not LEAKPROOF"
    return False, f"custom-field predicate is a Filter, never an index condition ({chosen}; {why})"


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
    idx = custom_field_indexes(admin)
    if idx.empty:
        return CheckResult("jsonb_indexes", False, f"no index on {JSONB_TABLE}.custom_fields (or a column derived from it)",
                           {"indexes": idx})
    tenant_id = tenant or first_tenant(admin)
    facts = _index_facts(admin, idx)
    evidence: dict[str, Any] = {"indexes": idx, "tenant": tenant_id, "jsonb_contains_leakproof": facts.leakproof}
    verdicts = []
    with app_session(admin, claim="a measurement of jsonb_indexes") as (app, role):
        evidence["role"] = role
        for label, lesson_sql in JSONB_QUERIES.items():
            verdicts.append((label, *_judge_query(app, label, lesson_sql, tenant_id, facts, evidence)))
    passed = all(ok for _, ok, _ in verdicts)
    summary = "; ".join(f"{label}: {how}" for label, _, how in verdicts)
    return CheckResult("jsonb_indexes", passed, summary + " (as app_user)", evidence)


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
    tenants = tenant_ids(admin)
    if not tenants:
        return CheckResult("custom_fields", False, "no tenants: load the seed data first")
    rows: list[dict[str, Any]] = []
    with app_session(admin, claim="a measurement of custom_fields") as (app, role):
        for tid, slug in tenants:
            with in_tenant(app, tid):
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
