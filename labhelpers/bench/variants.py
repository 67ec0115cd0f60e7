"""What RLS costs, and what the way a policy is written costs: measured beside the warm series.

- **RLS overhead**: each query as ``app_user`` against the owner (``postgres``, who bypasses RLS) with
  the tenant as an explicit predicate;
- **policy-expression variants** (PITFALLS 10): the tenant policy of contacts rewritten as a direct
  ``current_setting`` read (the course's), a scalar subselect, a STABLE function, a subselect around it,
  and a plpgsql function (VOLATILE by default); each variant is created *inside a transaction that is
  rolled back* (the measured session switches to ``app_user`` with ``SET LOCAL ROLE``), so the schema is
  never changed (but contacts is locked for the duration: run it on a database of its own);
- **the LEAKPROOF decision of sql/04** (PITFALLS 11): the verbatim queries with the LEAKPROOF marks of
  ``jsonb_contains`` and the ``timestamptz``-vs-``timestamp`` comparisons taken back, the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from psycopg import sql

from .. import db, tenants
from .environment import leakproof_marks
from .queries import BENCHMARKS, POLICY_VARIANTS, VARIANT_QUERIES
from .records import (BenchRecord, BenchTenant, LeakproofRecord, LeakproofSkipped, OwnerRole, Percentiles, PlanRecord,
                      PolicyVariant, RlsOverhead, SkippedBenchmark, stats)
from .results import warm_record
from .session import rolled_back_as_app_user
from .timing import capture_plan, jsonable, params_for, raw_cursor, scalar, time_query

__all__ = ["leakproof_off", "policy_variants", "rls_overhead"]

log = logging.getLogger("labhelpers")

Records = Sequence[BenchRecord | SkippedBenchmark]


def rls_overhead(admin_dsn: str, picked: Sequence[BenchTenant], records: Records, *, repeat: int,
                 warmup: int) -> list[RlsOverhead]:
    """Each timed benchmark again as the owner, the tenant an explicit predicate, beside ``records``."""
    out = []
    for tenant in picked:
        with db.connect(admin_dsn, autocommit=True) as owner:
            owner.prepare_threshold = None
            owner.execute("SET statement_timeout = '120s'")
            tenants.set_setting(owner, tenants.TENANT_SETTING, "", local=False)
            who = tenants.whoami(owner)
            role = OwnerRole(current_user=who.user, rolsuper=who.superuser, rolbypassrls=who.bypassrls)
            cur = raw_cursor(owner)
            for bm in BENCHMARKS:
                app = warm_record(records, bm.key, tenant.slug)
                if app is None:
                    continue
                owner_sql = bm.owner_sql or bm.sql
                params = [tenant.id] + (params_for(owner, bm, tenant.id) or [])[1 if bm.tenant_param else 0:]
                samples, _ = time_query(cur, owner_sql, params, repeat=repeat, warmup=warmup)
                st = stats(samples)
                out.append(RlsOverhead(
                    query=bm.key, title=bm.title, tenant=tenant.slug, owner_sql=owner_sql, owner_role=role,
                    app_user=Percentiles.of(app.stats), owner=Percentiles.of(st),
                    owner_samples_ms=[round(s, 4) for s in samples],
                    overhead_p50_ms=app.stats.p50_ms - st.p50_ms,
                    ratio_p50=app.stats.p50_ms / st.p50_ms if st.p50_ms > 0 else None,
                ))
    return out


def policy_variants(admin_dsn: str, tenant: BenchTenant, *, repeat: int, warmup: int) -> list[PolicyVariant]:
    """Each spelling of `POLICY_VARIANTS` made the contacts policy (rolled back), each of `VARIANT_QUERIES`
    timed under it as app_user."""
    out = []
    for name, create_fn, using in POLICY_VARIANTS:
        with rolled_back_as_app_user(admin_dsn, tenant.id) as (conn, switch):
            if create_fn:
                conn.execute(sql.SQL(create_fn))  # the package's own text, written out in POLICY_VARIANTS
            expr = sql.SQL(using)
            conn.execute(sql.SQL("ALTER POLICY {} ON {} USING ({}) WITH CHECK ({})").format(
                sql.Identifier("contacts_tenant_isolation"), sql.Identifier("contacts"), expr, expr))
            session = switch()
            cur = raw_cursor(conn)
            for qname, q in VARIANT_QUERIES:
                samples, rows = time_query(cur, q, None, repeat=repeat, warmup=warmup, budget_s=20)
                st = stats(samples)
                plan = capture_plan(conn, q, None)
                out.append(PolicyVariant(
                    variant=name, policy_using=using, function=create_fn or None, query=qname, sql=q,
                    tenant=tenant.slug, session=session, result_value=jsonable(scalar(rows[0][0])), stats=st,
                    samples_ms=[round(s, 4) for s in samples],
                    plan_top=plan.top if isinstance(plan, PlanRecord) else None,
                    plan_summary=plan.summary if isinstance(plan, PlanRecord) else None,
                ))
                log.info("bench: policy %s, %s: p50 %.2f ms", name, qname, st.p50_ms)
    return out


def leakproof_off(admin_dsn: str, tenant: BenchTenant, records: Records, *, repeat: int,
                  warmup: int) -> list[LeakproofRecord | LeakproofSkipped]:
    """The verbatim queries with 04's LEAKPROOF marks taken back (in a rolled-back transaction)."""
    with db.connect(admin_dsn, autocommit=True) as admin:
        marked = [f for f, leakproof in leakproof_marks(admin).items() if leakproof]
        is_super = tenants.whoami(admin).superuser
    if not marked or not is_super:
        return [LeakproofSkipped(note="nothing to compare: no LEAKPROOF marks from sql/04 in this database"
                                 if not marked else "not a superuser: cannot toggle LEAKPROOF")]
    out: list[LeakproofRecord | LeakproofSkipped] = []
    with rolled_back_as_app_user(admin_dsn, tenant.id) as (conn, switch):
        for f in marked:  # f is a regprocedure's text, quoted as needed by the server
            conn.execute(sql.SQL("ALTER FUNCTION {} NOT LEAKPROOF").format(sql.SQL(f)))
        session = switch()
        cur = raw_cursor(conn)
        for bm in BENCHMARKS:
            if bm.variant != "verbatim":
                continue
            params = [tenant.id] if bm.tenant_param else None
            samples, _ = time_query(cur, bm.sql, params, repeat=repeat, warmup=warmup, budget_s=20)
            st = stats(samples)
            plan = capture_plan(conn, bm.sql, params)
            with_lp = warm_record(records, bm.key, tenant.slug)
            out.append(LeakproofRecord(
                query=bm.key, title=bm.title, tenant=tenant.slug, session=session,
                not_leakproof=Percentiles.of(st), leakproof=Percentiles.of(with_lp.stats) if with_lp else None,
                target_ms=bm.target_ms, passed_not_leakproof=st.p95_ms <= bm.target_ms,
                samples_ms=[round(s, 4) for s in samples], functions=marked,
                plan_top=plan.top if isinstance(plan, PlanRecord) else None,
                plan_summary=plan.summary if isinstance(plan, PlanRecord) else None,
            ))
    return out
