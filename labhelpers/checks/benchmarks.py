"""Criterion ``benchmarks``: the latest `labhelpers bench` run meets the lesson's targets, measured as
app_user (a timing that bypasses RLS says nothing about the course's queries, PITFALLS 1)."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import psycopg

from ..errors import LabError
from ._session import APP_ROLE
from .results import CheckResult

__all__ = ["check_benchmarks"]

log = logging.getLogger("labhelpers")


def check_benchmarks(admin: psycopg.Connection[Any] | None = None) -> CheckResult:
    """Criterion 6: the latest `labhelpers bench` results meet the lesson's targets (p95 <= target).

    :param admin: when given, only results measured on its database count (a benchmark of another
        database says nothing about this one).
    Skipped (passed None) when there are no results yet. Returns the result; evidence ``results``.
    """
    # Imported when called, not at the top: the check reads whatever `labhelpers.bench` is then (the tests
    # stand a fake with canned results in for it).
    from .. import bench

    skip = CheckResult("benchmarks", None, "no benchmark results: run `labhelpers bench` first")
    try:
        results = bench.latest_results(database=admin.info.dbname if admin is not None else None)
    except (LabError, FileNotFoundError) as e:
        log.info("no benchmark results: %s", e)
        return skip
    frame = _bench_frame(results)
    if frame.empty:
        return skip
    over = frame[frame["p95_ms"] > frame["target_ms"]]
    privileged = frame[frame["role"].notna() & (frame["role"] != APP_ROLE)]
    if not privileged.empty:  # timings that bypass RLS say nothing about the course's queries (PITFALLS 1)
        return CheckResult("benchmarks", False, f"{len(privileged)} benchmarks ran as {set(privileged['role'])}, "
                           f"not {APP_ROLE}: rerun `labhelpers bench`", {"results": frame})
    if over.empty:
        summary = f"{len(frame)} benchmarks, every p95 within target: " + ", ".join(
            f"{r['name']} {r['p95_ms']:.1f}/{r['target_ms']:.0f} ms" for _, r in frame.iterrows())
    else:
        summary = f"{len(over)} of {len(frame)} over target: " + ", ".join(
            f"{r['name']} p95 {r['p95_ms']:.1f} ms > {r['target_ms']:.0f} ms" for _, r in over.iterrows())
    return CheckResult("benchmarks", over.empty, summary, {"results": frame})


def _bench_frame(results: dict[str, dict[str, Any]] | None) -> pd.DataFrame:
    """What `bench.latest_results` returns (``{name: {p95_ms, target_ms, role, ...}}`` or None) as rows
    name, p95_ms, target_ms, role; records without a p95 or a target are left out."""
    rows = [
        {"name": name, "p95_ms": float(r["p95_ms"]), "target_ms": float(r["target_ms"]), "role": r.get("role")}
        for name, r in (results or {}).items()
        if r.get("p95_ms") is not None and r.get("target_ms") is not None
    ]
    return pd.DataFrame(rows, columns=["name", "p95_ms", "target_ms", "role"])
