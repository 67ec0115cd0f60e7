"""The partitioning criteria: ``partition_pruning`` (the lesson's January 2024 queries scan only January
2024) and ``new_partitions`` (the partitions made next month are secured like the others)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import psycopg

from .. import catalog, lesson
from ..explain import explain
from ._session import app_session, first_tenant, in_tenant
from .privileges import check_privileges
from .results import CheckResult
from .rls import check_rls

__all__ = ["ENSURE_PARTITIONS", "PRUNING_QUERIES", "check_new_partitions", "check_partition_pruning"]

PRUNING_QUERIES = {
    "Step 4 (January 2024)": (lesson.STEP_4, ("2024-01-01", "2024-02-01")),
    "Scenario 3 (January 2024)": (lesson.SCENARIO_3, ("2024-01-01", "2024-01-31 00:00:00.000001")),
}
PRUNING_TABLE = "activities"
ENSURE_PARTITIONS = "lab_ensure_activity_partitions(timestamptz, timestamptz)"


def _judge_pruning(app: psycopg.Connection[Any], label: str, query: str, window: tuple[str, str], tenant_id: str,
                   ranges: pd.DataFrame, evidence: dict[str, Any]) -> tuple[bool, str]:
    """Explain one lesson query as app_user in the tenant; add its plan and partition table to
    ``evidence``. Returns (passed, how): passed when every partition scanned overlaps ``window``."""
    lo, hi = pd.Timestamp(window[0], tz="UTC"), pd.Timestamp(window[1], tz="UTC")
    relevant = set(ranges[(ranges["lo"].notna()) & (ranges["lo"] < hi) & (ranges["hi"] > lo)]["partition"])
    with in_tenant(app, tenant_id):
        plan = explain(app, query)
    parts = plan.partitions({PRUNING_TABLE: list(ranges["partition"])})
    touched = set(parts[parts["status"].isin(["scanned", "in plan (not executed)"])]["partition"])
    pruned = parts[parts["status"].str.startswith("pruned")]
    outside = sorted(touched - relevant)
    evidence[label] = plan
    evidence[f"{label}: partitions"] = parts
    how = f"scanned {len(touched)} (all in range)" if not outside else f"scanned {len(outside)} outside the range, e.g. {outside[0]}"
    return not outside and len(pruned) > 0 and bool(relevant), how + f", pruned {len(pruned)} of {len(ranges)}"


def check_partition_pruning(admin: psycopg.Connection[Any], *, tenant: str | None = None) -> CheckResult:
    """Criterion 3: the lesson's Step 4 and Scenario 3 queries for January 2024 scan only partitions whose
    range overlaps January 2024 (read from EXPLAIN JSON via `labhelpers.explain`), as app_user in a tenant.

    :param admin: a connection to the lab database.
    :param tenant: tenant id whose context is used (default: the first tenant by slug).
    Returns the result; evidence: each query's plan and its per-partition pruning table.
    """
    kind = catalog.relations(admin, [PRUNING_TABLE])["kind"]
    if kind.empty or kind.iloc[0] != "partitioned table":
        return CheckResult("partition_pruning", False, f"{PRUNING_TABLE} is not partitioned (run sql/05-partitioning.sql)")
    ranges = catalog.partition_bounds(admin, PRUNING_TABLE)
    tenant_id = tenant or first_tenant(admin)
    evidence: dict[str, Any] = {"tenant": tenant_id, "leaves": ranges}
    verdicts = []
    with app_session(admin, claim="a measurement of partition_pruning") as (app, role):
        evidence["role"] = role
        for label, (query, window) in PRUNING_QUERIES.items():
            verdicts.append((label, *_judge_pruning(app, label, query, window, tenant_id, ranges, evidence)))
    passed = all(ok for _, ok, _ in verdicts)
    return CheckResult("partition_pruning", passed, "; ".join(f"{label}: {how}" for label, _, how in verdicts), evidence)


def _new_partition_rows(names: set[str], rls: CheckResult, privileges: CheckResult) -> pd.DataFrame:
    """The ``rls`` evidence rows of the tables ``names``, with the ``privileges`` problems added."""
    tables = rls.evidence["tables"]
    tables = tables[tables["table"].isin(names)].copy()
    privs = privileges.evidence["privileges"]
    extra = privs[privs["table"].isin(names) & (privs["problems"] != "")]
    for _, r in extra.iterrows():
        mask = tables["table"] == r["table"]
        tables.loc[mask, "problems"] = tables.loc[mask, "problems"].map(
            lambda have, add=f"{r['role']} holds {r['problems']}": f"{have}; {add}" if have else add)
    return tables


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
        hi = catalog.range_end(admin, PRUNING_TABLE)
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
    tables = _new_partition_rows(names, rls, privileges)
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
