"""Partition pruning: which partition of each partitioned table was scanned, or pruned, and how.

Three kinds show differently in EXPLAIN (PITFALLS 19): pruned at plan time, the partition is absent
from the plan (only the catalog knows it exists); at executor start, the Append says ``Subplans
Removed: N``; during execution, the partition's node says ``never executed`` (loops 0).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import pandas as pd

from .node import Node

__all__ = [
    "PRUNED_STATUSES",
    "PRUNING_STATUSES",
    "PartitionSpec",
    "partition_frame",
    "pruning_counts",
    "resolve_catalog",
]

PRUNING_STATUSES = (
    "scanned",
    "never executed",
    "pruned at executor start",
    "pruned at plan time",
    "pruned (plan time or executor start)",
    "in plan (not executed)",
)
"""The values of the ``status`` column of `Plan.partitions`, from "read" to "never looked at"."""

PRUNED_STATUSES = ("pruned at plan time", "pruned at executor start", "pruned (plan time or executor start)")
"""The statuses of partitions that are not in the executed plan at all."""

PartitionSpec: TypeAlias = Mapping[str, Sequence[str]] | Sequence[str] | None
"""Leaf partitions per partitioned table, or a flat list for one table, or None (what is known)."""

_COLUMNS = ["table", "partition", "status", "node_id"]


def resolve_catalog(
    nodes: Sequence[Node], known: dict[str, list[str]], partitions: PartitionSpec
) -> dict[str, list[str]]:
    """Partitioned table -> leaf partitions: ``known`` when ``partitions`` is None, else ``partitions``.

    A flat list is named after the alias PostgreSQL gives the partitions' scans (``activities_3`` ->
    ``activities``), or ``partitions`` when that is not one name.
    """
    if partitions is None:
        return known
    if isinstance(partitions, Mapping):
        return {k: list(v) for k, v in partitions.items()}
    leaves = list(partitions)
    guess = {_alias_root(n.raw.get("Alias")) for n in nodes if n.raw.get("Relation Name") in leaves}
    guess.discard(None)
    name = guess.pop() if len(guess) == 1 else "partitions"
    return {str(name): leaves}


def partition_frame(nodes: Sequence[Node], catalog: Mapping[str, Sequence[str]], *, analyzed: bool) -> pd.DataFrame:
    """Every partition of the partitioned tables in the plan and its status (see `Plan.partitions`).

    :param nodes: the plan's nodes.
    :param catalog: partitioned table -> all its leaf partitions, in bound order.
    :param analyzed: the plan ran (without ANALYZE a partition in the plan is ``in plan (not executed)``).
    Returns a DataFrame with columns table, partition, status, node_id, by table then bound order.
    """
    leaf_to_table = {leaf: t for t, leaves in catalog.items() for leaf in leaves}
    rows, removed = _member_rows(nodes, catalog, leaf_to_table, analyzed)
    rows += _lone_scan_rows(nodes, rows, leaf_to_table, analyzed)
    rows += _absent_rows(catalog, rows, removed)
    for table, n in removed.items():
        if table not in catalog:  # no catalog: we know how many, not which
            rows.extend(_row(table, f"(removed {i + 1} of {n})", "pruned at executor start") for i in range(n))
    df = pd.DataFrame(rows, columns=_COLUMNS)
    order = {p: i for leaves in catalog.values() for i, p in enumerate(leaves)}
    df["_o"] = [order.get(p, 10**6) for p in df["partition"]]
    return df.sort_values(["table", "_o", "partition"], kind="stable").drop(columns="_o").reset_index(drop=True)


def _row(table: str | None, partition: str, status: str, node_id: int | None = None) -> dict[str, Any]:
    return {"table": table, "partition": partition, "status": status, "node_id": node_id}


def _status(scan: Node, analyzed: bool) -> str:
    if not analyzed:
        return "in plan (not executed)"
    return "never executed" if scan.never_executed else "scanned"


def _member_rows(
    nodes: Sequence[Node], catalog: Mapping[str, Sequence[str]], leaf_to_table: Mapping[str, str], analyzed: bool
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The partitions under each Append (their first scan), and how many each table's Appends removed."""
    rows: list[dict[str, Any]] = []
    removed: dict[str, int] = {}
    for app in nodes:
        if app.raw.get("Node Type") not in ("Append", "Merge Append"):
            continue
        members = [c for c in app.children if c.relationship == "Member"]
        tables = {t for t in (_table_of(m, leaf_to_table) for m in members) if t is not None}
        if not tables and len(catalog) == 1:
            tables = set(catalog)
        for m in members:
            scan = next((s for s in m.walk() if s.raw.get("Relation Name") is not None), None)
            if scan is not None:
                rel = scan.raw["Relation Name"]
                rows.append(_row(_table_of(scan, leaf_to_table), rel, _status(scan, analyzed), scan.id))
        n_removed = int(app.raw.get("Subplans Removed") or 0)
        if n_removed:
            key = next(iter(tables)) if len(tables) == 1 else "?"
            removed[key] = removed.get(key, 0) + n_removed
    return rows, removed


def _lone_scan_rows(
    nodes: Sequence[Node], rows: Sequence[Mapping[str, Any]], leaf_to_table: Mapping[str, str], analyzed: bool
) -> list[dict[str, Any]]:
    """A lone surviving partition: PostgreSQL drops the Append around it."""
    recorded = {r["node_id"] for r in rows}
    out = []
    for scan in nodes:
        rel = scan.raw.get("Relation Name")
        if rel is not None and rel in leaf_to_table and scan.id not in recorded \
                and scan.raw.get("Node Type") != "ModifyTable":
            out.append(_row(leaf_to_table[rel], rel, _status(scan, analyzed), scan.id))
    return out


def _absent_rows(
    catalog: Mapping[str, Sequence[str]], rows: Sequence[Mapping[str, Any]], removed: Mapping[str, int]
) -> list[dict[str, Any]]:
    """The catalog's partitions missing from the plan, pruned at plan time or executor start."""
    seen = {r["partition"] for r in rows}
    present = {r["table"] for r in rows} | set(removed)
    out: list[dict[str, Any]] = []
    for table, leaves in catalog.items():
        if table not in present:  # not in this plan (or pruned away entirely: EXPLAIN shows no trace)
            continue
        absent = [p for p in leaves if p not in seen]
        n_exec = removed.get(table, 0)
        if not absent:
            continue
        if n_exec == 0:
            status = "pruned at plan time"
        elif n_exec >= len(absent):
            status = "pruned at executor start"
        else:
            status = "pruned (plan time or executor start)"
        out.extend(_row(table, p, status) for p in absent)
    return out


def pruning_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Per table of a `partition_frame`: one column per status (counts) and ``total``."""
    counts = pd.crosstab(df["table"], df["status"]) if not df.empty else pd.DataFrame()
    for s in PRUNING_STATUSES:
        if s not in counts.columns:
            counts[s] = 0
    counts = counts[list(PRUNING_STATUSES)]
    counts["total"] = counts.sum(axis=1)
    counts.columns.name = None
    return counts


def _table_of(node: Node, leaf_to_table: Mapping[str, str]) -> str | None:
    rel = node.raw.get("Relation Name")
    if rel is not None and rel in leaf_to_table:
        return leaf_to_table[rel]
    return _alias_root(node.raw.get("Alias")) or rel


def _alias_root(alias: Any) -> str | None:
    """``activities_3`` -> ``activities``: PostgreSQL names a partition's scan after the parent's alias."""
    if not isinstance(alias, str):
        return None
    m = re.fullmatch(r"(.+)_\d+", alias)
    return m.group(1) if m else None
