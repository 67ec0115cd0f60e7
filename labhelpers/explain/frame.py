"""The node table: one pandas row per node with the derived figures, a printable view, spill detection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from .derive import exclusive_cost
from .node import BUFFER_KINDS, Node

__all__ = ["NODE_COLUMNS", "node_frame", "printable_table", "spill_of"]

NODE_COLUMNS = {
    "id": "node id, depth-first order as EXPLAIN prints (0 is the top)",
    "parent": "parent node id (None for the top)",
    "depth": "nesting depth (0 for the top)",
    "node_type": "node name as psql's text EXPLAIN prints it",
    "label": "one-line description: type, index, relation, alias",
    "relationship": "Outer/Inner/Member/InitPlan/SubPlan",
    "plan_rows / actual_rows": "rows per loop, estimated / actual",
    "actual_rows_total": "actual rows x loops",
    "loops": "actual loops; 0 means never executed",
    "participants": "parallel participants dividing the time (workers launched + leader) or 1",
    "inclusive_ms / exclusive_ms": "time in the node with / without its children (see module doc)",
    "exclusive_cost": "total cost minus the children's: where the planner expects the work (no ANALYZE needed)",
    "exclusive_pct": "exclusive time as a percentage of all nodes' exclusive time",
    "misestimate_factor / _direction": ">= 1; under: more rows than estimated, over: fewer",
    "rows_removed_by_*": "totals over all loops",
    "<kind>_<op> / <kind>_<op>_excl": "buffers (8 kB blocks), inclusive / exclusive",
}
"""What the columns of `Plan.nodes` mean."""


def node_frame(nodes: Sequence[Node]) -> pd.DataFrame:
    """One row per node, indexed by node id, with the columns of `NODE_COLUMNS` (and the raw details)."""
    total_excl = sum(n.exclusive_ms or 0.0 for n in nodes)
    rows = [{**_figures(n, total_excl), **_details(n), **_buffer_columns(n)} for n in nodes]
    df = pd.DataFrame(rows).set_index("id", drop=False)
    df.index.name = None
    return df


def _figures(n: Node, total_excl: float) -> dict[str, Any]:
    """What the node is, its rows estimated and actual, its times and its misestimate."""
    r = n.raw
    factor, direction = n.misestimate()
    loops = n.loops
    return {
        "id": n.id,
        "parent": None if n.parent is None else n.parent.id,
        "depth": n.depth,
        "node_type": n.node_type,
        "label": n.label(),
        "relationship": n.relationship,
        "subplan_name": n.subplan_name,
        "relation": n.relation,
        "alias": r.get("Alias"),
        "index": n.index,
        "join_type": r.get("Join Type"),
        "cte_name": r.get("CTE Name"),
        "startup_cost": r.get("Startup Cost"),
        "total_cost": r.get("Total Cost"),
        "exclusive_cost": exclusive_cost(n),
        "plan_rows": n.plan_rows,
        "actual_rows": n.actual_rows,
        "actual_rows_total": None if n.actual_rows is None else n.actual_rows * (loops or 0),
        "loops": loops,
        "never_executed": n.never_executed,
        "workers_planned": r.get("Workers Planned"),
        "workers_launched": r.get("Workers Launched"),
        "participants": n.participants,
        "actual_startup_ms": r.get("Actual Startup Time"),
        "actual_total_ms": r.get("Actual Total Time"),
        "inclusive_ms": n.inclusive_ms,
        "exclusive_ms": n.exclusive_ms,
        "exclusive_pct": (100.0 * n.exclusive_ms / total_excl)
        if n.exclusive_ms is not None and total_excl > 0
        else None,
        "misestimate_factor": factor,
        "misestimate_direction": direction,
    }


def _details(n: Node) -> dict[str, Any]:
    """Rows removed (totals over all loops), heap fetches, sorts, hashes, conditions."""
    r = n.raw

    def all_loops(key: str) -> float | None:
        return None if r.get(key) is None else float(r[key]) * (n.loops or 0)

    return {
        "rows_removed_by_filter": all_loops("Rows Removed by Filter"),
        "rows_removed_by_join_filter": all_loops("Rows Removed by Join Filter"),
        "rows_removed_by_index_recheck": all_loops("Rows Removed by Index Recheck"),
        "heap_fetches": r.get("Heap Fetches"),
        "exact_heap_blocks": r.get("Exact Heap Blocks"),
        "lossy_heap_blocks": r.get("Lossy Heap Blocks"),
        "sort_method": r.get("Sort Method"),
        "sort_space_type": r.get("Sort Space Type"),
        "sort_space_kb": r.get("Sort Space Used"),
        "hash_batches": r.get("Hash Batches"),
        "disk_usage_kb": r.get("Disk Usage"),
        "subplans_removed": r.get("Subplans Removed"),
        "filter": r.get("Filter"),
        "index_cond": r.get("Index Cond") or r.get("Recheck Cond"),
    }


def _buffer_columns(n: Node) -> dict[str, int | None]:
    row: dict[str, int | None] = {}
    for k in BUFFER_KINDS:
        row[k] = n.buffers.get(k) if n.buffers else None
        row[f"{k}_excl"] = n.exclusive_buffers.get(k) if n.buffers else None
    return row


def printable_table(df: pd.DataFrame, *, analyzed: bool, max_label: int = 90) -> pd.DataFrame:
    """A compact view of a node table: indented labels, rows, loops, times (see `Plan.table`)."""
    labels = [
        ("  " * d + ("-> " if d else "") + (f"[{sp}] " if isinstance(sp, str) and sp else "") + lab)[:max_label]
        for d, lab, sp in zip(df["depth"], df["label"], df["subplan_name"])
    ]
    out = pd.DataFrame({"node": labels, "est rows": df["plan_rows"]}, index=df.index)
    if analyzed:
        out["rows"] = df["actual_rows"]
        out["loops"] = df["loops"]
        out["incl ms"] = df["inclusive_ms"].round(3)
        out["excl ms"] = df["exclusive_ms"].round(3)
        out["excl %"] = df["exclusive_pct"].round(1)
        out["misest"] = [
            "" if f is None or pd.isna(f) or f < 2 else f"{d} x{f:.0f}"
            for f, d in zip(df["misestimate_factor"], df["misestimate_direction"])
        ]
        out["shared hit+read"] = df["shared_hit"].fillna(0) + df["shared_read"].fillna(0)
    else:
        out["cost"] = df["total_cost"]
    return out


def spill_of(r: pd.Series) -> str | None:
    """How a node (a row of the node table) spilled to disk (``external merge, 7472 kB on disk``), or None."""
    if r["sort_space_type"] == "Disk" or str(r["sort_method"] or "").startswith("external"):
        return f"{r['sort_method']}, {r['sort_space_kb']:.0f} kB on disk"
    if r["hash_batches"] is not None and not pd.isna(r["hash_batches"]) and r["hash_batches"] > 1:
        return f"{int(r['hash_batches'])} hash batches"
    if r["disk_usage_kb"] is not None and not pd.isna(r["disk_usage_kb"]) and r["disk_usage_kb"] > 0:
        return f"{int(r['disk_usage_kb'])} kB on disk"
    return None
