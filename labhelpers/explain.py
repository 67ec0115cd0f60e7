"""EXPLAIN as data: run ``EXPLAIN (ANALYZE, BUFFERS, SETTINGS, FORMAT JSON)`` and derive what a student reads.

`explain` runs a statement on the caller's connection (its role, its tenant context: this module never
switches either) and returns a `Plan`; `Plan.from_json` reads a plan saved from psql or a file. A `Plan`
holds the node tree and, in `Plan.nodes`, one pandas row per node with the derived figures, computed the
way pev2 (dalibo/pev2, ``plan-service.ts``) computes them:

- **inclusive time** = actual total time x loops, divided by the parallel participants (workers launched
  + the leader) for nodes under a Gather: PostgreSQL reports the time of one average loop.
- **exclusive time** = inclusive minus the children's inclusive. InitPlans are not subtracted from their
  parent; a CTE's time is taken off the CTE Scans that read it, in proportion to their time (so it is not
  counted twice), and an InitPlan's time is taken off the one node that ran it: the lowest node that
  refers to it (``(InitPlan 1).col1`` or ``$0``) and whose time can contain it, else its parent.
  Buffers follow the same rules. Negative remainders (rounding) are clipped to 0.
- **misestimate**: the ratio of the larger to the smaller of estimated and actual rows per loop, and its
  direction (``under``: more rows than estimated, ``over``: fewer). A node that produced no row counts
  as 1 row, so "estimated 5000, got 0" is a factor of 5000.

Partition pruning comes in three kinds that EXPLAIN shows differently (PITFALLS 19): at plan time the
partition is absent from the plan (only the catalog knows it exists), at executor start the Append says
``Subplans Removed: N``, during execution the partition's node says ``never executed`` (loops 0).
`Plan.partitions` tells them apart. No plotting here: see `labhelpers.plots`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import LabError

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = ["Node", "Plan", "explain"]

log = logging.getLogger("labhelpers")

BUFFER_KINDS = (
    "shared_hit",
    "shared_read",
    "shared_dirtied",
    "shared_written",
    "local_hit",
    "local_read",
    "local_dirtied",
    "local_written",
    "temp_read",
    "temp_written",
)
_BUFFER_KEYS = {k: " ".join(w.capitalize() for w in k.split("_")) + " Blocks" for k in BUFFER_KINDS}

PRUNING_STATUSES = (
    "scanned",
    "never executed",
    "pruned at executor start",
    "pruned at plan time",
    "pruned (plan time or executor start)",
    "in plan (not executed)",
)
"""The values of the ``status`` column of `Plan.partitions`, from "read" to "never looked at"."""

_EPS_MS = 0.01


@dataclass(eq=False)
class Node:
    """One plan node: its raw EXPLAIN fields (without ``Plans``), its children and derived figures."""

    id: int
    raw: dict[str, Any]
    parent: Node | None = None
    depth: int = 0
    children: list[Node] = field(default_factory=list)
    participants: int = 1
    inclusive_ms: float | None = None
    exclusive_ms: float | None = None
    buffers: dict[str, int] = field(default_factory=dict)
    exclusive_buffers: dict[str, int] = field(default_factory=dict)

    # --- what EXPLAIN said -------------------------------------------------------------------
    @property
    def node_type(self) -> str:
        """The node's name as psql's text format prints it (``Parallel Seq Scan``, ``HashAggregate``)."""
        return display_type(self.raw)

    @property
    def relationship(self) -> str | None:
        """``Outer``, ``Inner``, ``Member``, ``InitPlan``, ``SubPlan``... (None for the root)."""
        return self.raw.get("Parent Relationship")

    @property
    def subplan_name(self) -> str | None:
        """``InitPlan 1``, ``SubPlan 2``, ``CTE name`` for the top node of a subplan, else None."""
        return self.raw.get("Subplan Name")

    @property
    def relation(self) -> str | None:
        """The scanned relation; for a Bitmap Index Scan, the relation of its Bitmap Heap Scan."""
        rel = self.raw.get("Relation Name")
        if rel is None and self.raw.get("Node Type") == "Bitmap Index Scan":
            up = self.parent
            while up is not None and up.raw.get("Node Type") in ("BitmapAnd", "BitmapOr"):
                up = up.parent
            if up is not None:
                rel = up.raw.get("Relation Name")
        return rel

    @property
    def index(self) -> str | None:
        """The index used, if any."""
        return self.raw.get("Index Name")

    @property
    def loops(self) -> int | None:
        """Actual loops (0: never executed), None for a plan without ANALYZE."""
        v = self.raw.get("Actual Loops")
        return None if v is None else int(v)

    @property
    def never_executed(self) -> bool:
        """True if ANALYZE ran and this node never ran (``never executed`` in the text format)."""
        return self.loops == 0

    @property
    def actual_rows(self) -> float | None:
        """Rows per loop (PostgreSQL 18 prints fractions: an average over loops)."""
        v = self.raw.get("Actual Rows")
        return None if v is None else float(v)

    @property
    def plan_rows(self) -> float | None:
        """The planner's estimate of rows per loop."""
        v = self.raw.get("Plan Rows")
        return None if v is None else float(v)

    def misestimate(self) -> tuple[float | None, str | None]:
        """Return (factor >= 1, direction ``under``/``over``/``none``), or (None, None) without actuals."""
        actual, planned = self.actual_rows, self.plan_rows
        if actual is None or planned is None or not self.loops:
            return None, None
        a, p = max(actual, 1.0) if actual == 0 else actual, max(planned, 1.0)
        if math.isclose(a, p, rel_tol=1e-9):
            return 1.0, "none"
        return (a / p, "under") if a > p else (p / a, "over")

    def walk(self) -> Iterator[Node]:
        """This node then its descendants, depth first, in EXPLAIN's order."""
        yield self
        for c in self.children:
            yield from c.walk()

    def ancestors(self) -> Iterator[Node]:
        """Parent, grandparent, ... up to the root."""
        up = self.parent
        while up is not None:
            yield up
            up = up.parent

    def label(self) -> str:
        """A one-line description: ``Index Scan using leads_contact on leads l``."""
        t = self.node_type
        rel, idx, alias = self.raw.get("Relation Name"), self.index, self.raw.get("Alias")
        if self.raw.get("Node Type") == "CTE Scan":
            t += f" on {self.raw.get('CTE Name')}"
            if alias and alias != self.raw.get("CTE Name"):
                t += f" {alias}"
            return t
        if idx:
            t += f" using {idx}"
        if rel:
            t += f" on {rel}"
            if alias and alias != rel:
                t += f" {alias}"
        return t


def display_type(raw: Mapping[str, Any]) -> str:
    """The node type as psql's text EXPLAIN names it, from the JSON fields."""
    t = str(raw.get("Node Type", "?"))
    if t == "Aggregate":
        t = {"Sorted": "GroupAggregate", "Hashed": "HashAggregate", "Mixed": "MixedAggregate"}.get(
            raw.get("Strategy", ""), "Aggregate"
        )
        t = {"Partial": "Partial ", "Finalize": "Finalize "}.get(raw.get("Partial Mode", ""), "") + t
    elif t == "ModifyTable":
        t = str(raw.get("Operation", t))
    elif t == "SetOp":
        t = ("HashSetOp" if raw.get("Strategy") == "Hashed" else "SetOp") + (
            f" {raw['Command']}" if raw.get("Command") else ""
        )
    jt = raw.get("Join Type")
    if jt and jt != "Inner":
        if t.endswith(" Join"):
            t = f"{t[:-5]} {jt} Join"
        elif t == "Nested Loop":
            t = f"Nested Loop {jt} Join"
    if raw.get("Parallel Aware"):
        t = "Parallel " + t
    return t


class Plan:
    """A parsed EXPLAIN (FORMAT JSON) plan with derived figures.

    Build one with `explain` (runs the statement) or `Plan.from_json` (a saved plan).

    Attributes: ``raw`` (the JSON object), ``root`` (the top `Node`), ``analyzed``, ``planning_ms``,
    ``execution_ms``, ``triggers`` (list of dicts: name, relation, time_ms, calls), ``jit`` (dict or None),
    ``settings`` (non-default planner settings), ``planning_buffers``, ``query`` (if known),
    ``catalog_partitions`` (partitioned table -> its leaf partitions, when known).
    """

    def __init__(
        self,
        raw: Mapping[str, Any],
        *,
        query: str | None = None,
        partitions: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Parse one EXPLAIN JSON object (the element of the one-element list EXPLAIN returns).

        :param raw: ``{"Plan": {...}, "Planning Time": ..., ...}``.
        :param query: the statement's text, for titles.
        :param partitions: partitioned table -> all its leaf partitions (see `Plan.partitions`).
        Raise LabError if ``raw`` is not an EXPLAIN plan.
        """
        if not isinstance(raw, Mapping) or not isinstance(raw.get("Plan"), Mapping):
            raise LabError("not an EXPLAIN (FORMAT JSON) plan: expected an object with a 'Plan' key")
        self.raw: dict[str, Any] = dict(raw)
        self.query = query
        self.catalog_partitions: dict[str, list[str]] = {k: list(v) for k, v in (partitions or {}).items()}
        self.settings: dict[str, str] = dict(raw.get("Settings") or {})
        self.planning_ms: float | None = raw.get("Planning Time")
        self.execution_ms: float | None = raw.get("Execution Time")
        self.jit: dict[str, Any] | None = raw.get("JIT")
        self.planning_buffers: dict[str, int] = _buffers_of(raw.get("Planning") or {})
        self.triggers: list[dict[str, Any]] = [
            {
                "name": t.get("Trigger Name"),
                "constraint": t.get("Constraint Name"),
                "relation": t.get("Relation"),
                "time_ms": t.get("Time"),
                "calls": t.get("Calls"),
            }
            for t in raw.get("Triggers") or []
        ]
        self._nodes: list[Node] = []
        self.root = self._build(raw["Plan"], None, 0, 0)
        self.analyzed = "Actual Loops" in raw["Plan"]
        self._derive()
        self._frame: pd.DataFrame | None = None

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_json(
        cls,
        source: str | bytes | Mapping[str, Any] | Sequence[Any],
        *,
        query: str | None = None,
        partitions: Mapping[str, Sequence[str]] | None = None,
    ) -> Plan:
        """Read a saved plan: JSON text (also as psql prints it, with header and ``+`` continuations) or parsed.

        :param source: text, bytes, the list EXPLAIN returns, or its single object.
        :param query: the statement's text, if known.
        :param partitions: partitioned table -> leaf partitions, to tell plan-time pruning apart.
        Raise LabError if the source is not an EXPLAIN (FORMAT JSON) plan.
        """
        obj: Any = source
        if isinstance(source, bytes):
            source = source.decode()
        if isinstance(source, str):
            obj = _parse_json_text(source)
        if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
            if len(obj) != 1:
                raise LabError(f"expected one EXPLAIN plan, got a list of {len(obj)}")
            obj = obj[0]
        if not isinstance(obj, Mapping):
            raise LabError("not an EXPLAIN (FORMAT JSON) plan")
        return cls(obj, query=query, partitions=partitions)

    def to_json(self) -> str:
        """The plan as EXPLAIN printed it (a one-element JSON list), e.g. to save next to a notebook."""
        return json.dumps([self.raw], indent=2)

    # ---------------------------------------------------------------- building
    def _build(self, raw: Mapping[str, Any], parent: Node | None, depth: int, parallel: int) -> Node:
        node = Node(
            id=len(self._nodes),
            raw={k: v for k, v in raw.items() if k != "Plans"},
            parent=parent,
            depth=depth,
        )
        self._nodes.append(node)
        node.participants = parallel or 1
        launched = raw.get("Workers Launched", raw.get("Workers Planned"))
        for child in raw.get("Plans") or []:
            rel = child.get("Parent Relationship")
            if rel in ("InitPlan", "SubPlan"):
                inherited = 0  # subplans are not run by the workers' share (pev2 does the same)
            elif launched is not None:
                leader = 0 if str(self.settings.get("parallel_leader_participation", "on")) == "off" else 1
                inherited = max(int(launched) + leader, 1)
            else:
                inherited = parallel
            node.children.append(self._build(child, node, depth + 1, inherited))
        return node

    def _derive(self) -> None:
        nodes = self._nodes
        for n in nodes:
            n.buffers = _buffers_of(n.raw)
            if self.analyzed and n.raw.get("Actual Total Time") is not None:
                n.inclusive_ms = float(n.raw["Actual Total Time"]) * (n.loops or 0) / n.participants
            elif self.analyzed:
                n.inclusive_ms = None  # ANALYZE with TIMING OFF
        timed = self.analyzed and all(n.inclusive_ms is not None for n in nodes)
        excl: dict[int, float] = {}
        ebuf: dict[int, dict[str, float]] = {}
        for n in nodes:
            direct = [c for c in n.children if c.relationship != "InitPlan"]
            if timed:
                excl[n.id] = n.inclusive_ms - sum(c.inclusive_ms for c in direct)  # type: ignore[operator]
            ebuf[n.id] = {k: n.buffers.get(k, 0) - sum(c.buffers.get(k, 0) for c in direct) for k in BUFFER_KINDS}

        def take(target: Node, ms: float, buf: Mapping[str, float], share: float = 1.0) -> None:
            if timed:
                excl[target.id] -= ms * share
            for k in BUFFER_KINDS:
                ebuf[target.id][k] -= buf.get(k, 0) * share

        for sub in nodes:
            if sub.relationship != "InitPlan" or sub.parent is None:
                continue
            ms = sub.inclusive_ms or 0.0
            name = sub.subplan_name or ""
            if name.startswith("CTE "):
                cte = name[4:]
                scans = [
                    n for n in nodes if n.raw.get("Node Type") == "CTE Scan" and n.raw.get("CTE Name") == cte
                ]
                weights = [n.inclusive_ms or 0.0 for n in scans]
                if scans and sum(weights) <= 0:
                    weights = [1.0] * len(scans)
                if scans:
                    # time: in proportion to each scan's time; buffers: to each scan's own buffer count
                    # (the scan that pulled the rows first carries the CTE's reads)
                    for s, w in zip(scans, weights):
                        take(s, ms, {}, w / sum(weights))
                    for k in BUFFER_KINDS:
                        held = [s.buffers.get(k, 0) for s in scans]
                        for s, h in zip(scans, held):
                            if sum(held) > 0:
                                ebuf[s.id][k] -= sub.buffers.get(k, 0) * h / sum(held)
                    continue
                take(sub.parent, ms, sub.buffers)
                continue
            take(self._initplan_consumer(sub), ms, sub.buffers)

        for n in nodes:
            if timed:
                n.exclusive_ms = max(excl[n.id], 0.0)
            n.exclusive_buffers = {k: max(int(round(v)), 0) for k, v in ebuf[n.id].items()}

    def _initplan_consumer(self, sub: Node) -> Node:
        """The node whose time includes the InitPlan ``sub``: the lowest referring node that can hold it."""
        assert sub.parent is not None
        inside = {id(n) for n in sub.walk()}
        patterns = _initplan_patterns(sub.subplan_name or "")
        refs = [n for n in self._nodes if id(n) not in inside and patterns and _refers(n, patterns)]
        need = (sub.inclusive_ms or 0.0) - _EPS_MS
        best: Node | None = None
        for r in refs:
            for cand in [r, *r.ancestors()]:
                if id(cand) in inside:
                    break
                if cand.inclusive_ms is None or cand.inclusive_ms >= need:
                    if best is None or cand.depth > best.depth:
                        best = cand
                    break
        return best if best is not None else sub.parent

    # ---------------------------------------------------------------- the table
    @property
    def node_list(self) -> list[Node]:
        """All nodes in EXPLAIN's order (depth first), ids 0..n-1."""
        return list(self._nodes)

    @property
    def nodes(self) -> pd.DataFrame:
        """One row per node, indexed by node id; the columns are documented in `NODE_COLUMNS`."""
        if self._frame is None:
            self._frame = self._make_frame()
        return self._frame

    def _make_frame(self) -> pd.DataFrame:
        total_excl = sum(n.exclusive_ms or 0.0 for n in self._nodes)
        rows = []
        for n in self._nodes:
            r = n.raw
            factor, direction = n.misestimate()
            loops = n.loops
            per_loop = (lambda key: None if r.get(key) is None else float(r[key]) * (loops or 0))  # noqa: E731
            row: dict[str, Any] = {
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
                "exclusive_cost": _exclusive_cost(n),
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
                "rows_removed_by_filter": per_loop("Rows Removed by Filter"),
                "rows_removed_by_join_filter": per_loop("Rows Removed by Join Filter"),
                "rows_removed_by_index_recheck": per_loop("Rows Removed by Index Recheck"),
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
            for k in BUFFER_KINDS:
                row[k] = n.buffers.get(k) if n.buffers else None
                row[f"{k}_excl"] = n.exclusive_buffers.get(k) if n.buffers else None
            rows.append(row)
        df = pd.DataFrame(rows).set_index("id", drop=False)
        df.index.name = None
        return df

    def table(self, *, max_label: int = 90) -> pd.DataFrame:
        """A compact, printable view of `nodes`: indented labels, rows, loops, times.

        :param max_label: truncate labels to this many characters.
        Returns a DataFrame meant for display (strings and numbers), one row per node.
        """
        df = self.nodes
        labels = [
            ("  " * d + ("-> " if d else "") + (f"[{sp}] " if isinstance(sp, str) and sp else "") + lab)[:max_label]
            for d, lab, sp in zip(df["depth"], df["label"], df["subplan_name"])
        ]
        out = pd.DataFrame({"node": labels, "est rows": df["plan_rows"]}, index=df.index)
        if self.analyzed:
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

    # ---------------------------------------------------------------- derived facts
    @property
    def indexes_used(self) -> list[str]:
        """Names of the indexes the plan uses (executed or not), in plan order, without duplicates."""
        return list(dict.fromkeys(n.index for n in self._nodes if n.index))

    def index_scans(self) -> pd.DataFrame:
        """Rows of `nodes` that use an index (Index, Index Only, Bitmap Index Scans)."""
        return self.nodes[self.nodes["index"].notna()]

    def seq_scans(self, *, min_rows: float = 10_000) -> pd.DataFrame:
        """Sequential scans that read at least ``min_rows`` rows (kept plus removed by filter).

        :param min_rows: the size that makes a scan "large"; without ANALYZE the estimate is used.
        Returns rows of `nodes`, with an extra column ``rows_read``.
        """
        df = self.nodes[self.nodes["node_type"].str.endswith("Seq Scan")].copy()
        if self.analyzed:
            df["rows_read"] = df["actual_rows_total"].fillna(0) + df["rows_removed_by_filter"].fillna(0)
        else:
            df["rows_read"] = df["plan_rows"] * df["participants"]
        return df[df["rows_read"] >= min_rows]

    def slowest_node(self) -> pd.Series | None:
        """The node with the largest exclusive time (a row of `nodes`), None without ANALYZE timing."""
        df = self.nodes
        if df["exclusive_ms"].isna().all():
            return None
        return df.loc[df["exclusive_ms"].astype(float).idxmax()]

    def worst_misestimate(self) -> pd.Series | None:
        """The executed node whose row estimate is furthest off (a row of `nodes`), None without ANALYZE."""
        df = self.nodes[self.nodes["misestimate_factor"].notna()]
        if df.empty:
            return None
        key = df["misestimate_factor"].astype(float) * 1e6 + df["actual_rows_total"].fillna(0).astype(float) / 1e12
        return df.loc[key.idxmax()]

    def spills(self) -> pd.DataFrame:
        """Nodes that spilled to disk: sorts on disk, hashes with several batches, hash aggregates with disk usage.

        Returns rows of `nodes` with an extra ``spill`` column describing it (``external merge, 7472 kB``).
        """
        df = self.nodes
        what: list[str | None] = []
        for _, r in df.iterrows():
            if r["sort_space_type"] == "Disk" or str(r["sort_method"] or "").startswith("external"):
                what.append(f"{r['sort_method']}, {r['sort_space_kb']:.0f} kB on disk")
            elif r["hash_batches"] is not None and not pd.isna(r["hash_batches"]) and r["hash_batches"] > 1:
                what.append(f"{int(r['hash_batches'])} hash batches")
            elif r["disk_usage_kb"] is not None and not pd.isna(r["disk_usage_kb"]) and r["disk_usage_kb"] > 0:
                what.append(f"{int(r['disk_usage_kb'])} kB on disk")
            else:
                what.append(None)
        out = df.assign(spill=what)
        return out[out["spill"].notna()]

    def sorts_on_disk(self) -> pd.DataFrame:
        """Sort nodes that spilled to disk (``external merge`` / ``external sort``): rows of `nodes`."""
        s = self.spills()
        return s[s["node_type"].str.contains("Sort")]

    # ---------------------------------------------------------------- partitions
    def partitions(self, partitions: Mapping[str, Sequence[str]] | Sequence[str] | None = None) -> pd.DataFrame:
        """Every partition of the partitioned tables in the plan, scanned or pruned, and how.

        :param partitions: all leaf partitions per partitioned table (``{"activities": [...]}``), or a flat
            list for one table; default: what `explain` read from the catalog, if anything. Without it,
            partitions pruned at plan time cannot be seen (they are absent from the plan) and only the
            partitions in the plan are listed.
        Returns a DataFrame with columns table, partition, status (one of `PRUNING_STATUSES`), node_id.
        When both kinds of pruning happened on one table, EXPLAIN does not say which absent partition
        went at which moment: those get ``pruned (plan time or executor start)``. A table whose partitions
        were all pruned at plan time leaves no trace in the plan and is not listed.
        """
        catalog = self._catalog(partitions)
        leaf_to_table = {leaf: t for t, leaves in catalog.items() for leaf in leaves}
        rows: list[dict[str, Any]] = []
        removed: dict[str, int] = {}
        for app in self._nodes:
            if app.raw.get("Node Type") not in ("Append", "Merge Append"):
                continue
            members = [c for c in app.children if c.relationship == "Member"]
            tables = {self._table_of(m, leaf_to_table) for m in members} - {None}
            if not tables and len(catalog) == 1:
                tables = set(catalog)
            for m in members:
                for scan in m.walk():
                    rel = scan.raw.get("Relation Name")
                    if rel is None:
                        continue
                    status = (
                        "in plan (not executed)"
                        if not self.analyzed
                        else ("never executed" if scan.never_executed else "scanned")
                    )
                    rows.append(
                        {"table": self._table_of(scan, leaf_to_table), "partition": rel, "status": status,
                         "node_id": scan.id}
                    )
                    break
            n_removed = int(app.raw.get("Subplans Removed") or 0)
            if n_removed:
                key = next(iter(tables)) if len(tables) == 1 else "?"
                removed[key] = removed.get(key, 0) + n_removed
        recorded = {r["node_id"] for r in rows}
        for scan in self._nodes:  # a lone surviving partition: PostgreSQL drops the Append around it
            rel = scan.raw.get("Relation Name")
            if rel in leaf_to_table and scan.id not in recorded and scan.raw.get("Node Type") != "ModifyTable":
                status = (
                    "in plan (not executed)"
                    if not self.analyzed
                    else ("never executed" if scan.never_executed else "scanned")
                )
                rows.append({"table": leaf_to_table[rel], "partition": rel, "status": status, "node_id": scan.id})
        seen = {r["partition"] for r in rows}
        present = {r["table"] for r in rows} | set(removed)
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
            rows.extend({"table": table, "partition": p, "status": status, "node_id": None} for p in absent)
        for table, n in removed.items():
            if table not in catalog:  # no catalog: we know how many, not which
                rows.extend(
                    {"table": table, "partition": f"(removed {i + 1} of {n})", "status": "pruned at executor start",
                     "node_id": None}
                    for i in range(n)
                )
        df = pd.DataFrame(rows, columns=["table", "partition", "status", "node_id"])
        order = {p: i for leaves in catalog.values() for i, p in enumerate(leaves)}
        df["_o"] = [order.get(p, 10**6) for p in df["partition"]]
        df = df.sort_values(["table", "_o", "partition"], kind="stable").drop(columns="_o").reset_index(drop=True)
        return df

    def pruning_summary(self, partitions: Mapping[str, Sequence[str]] | Sequence[str] | None = None) -> pd.DataFrame:
        """Per partitioned table: how many partitions in total, scanned, never executed, pruned by kind.

        :param partitions: as in `Plan.partitions`.
        Returns a DataFrame indexed by table with one column per status (counts) and ``total``.
        """
        df = self.partitions(partitions)
        counts = pd.crosstab(df["table"], df["status"]) if not df.empty else pd.DataFrame()
        for s in PRUNING_STATUSES:
            if s not in counts.columns:
                counts[s] = 0
        counts = counts[list(PRUNING_STATUSES)]
        counts["total"] = counts.sum(axis=1)
        counts.columns.name = None
        return counts

    def _catalog(self, partitions: Mapping[str, Sequence[str]] | Sequence[str] | None) -> dict[str, list[str]]:
        if partitions is None:
            return self.catalog_partitions
        if isinstance(partitions, Mapping):
            return {k: list(v) for k, v in partitions.items()}
        leaves = list(partitions)
        guess = {_alias_root(n.raw.get("Alias")) for n in self._nodes if n.raw.get("Relation Name") in leaves}
        guess.discard(None)
        name = guess.pop() if len(guess) == 1 else "partitions"
        return {str(name): leaves}

    @staticmethod
    def _table_of(node: Node, leaf_to_table: Mapping[str, str]) -> str | None:
        rel = node.raw.get("Relation Name")
        if rel in leaf_to_table:
            return leaf_to_table[rel]
        return _alias_root(node.raw.get("Alias")) or rel

    # ---------------------------------------------------------------- text
    def summary(self) -> str:
        """A few lines a student reads first: timings, slowest node, worst misestimate, scans, pruning."""
        lines = []
        if self.analyzed:
            lines.append(f"execution {self.execution_ms:.3f} ms, planning {self.planning_ms:.3f} ms")
            slow = self.slowest_node()
            if slow is not None:
                lines.append(
                    f"slowest node: #{slow['id']} {slow['label']} "
                    f"({slow['exclusive_ms']:.3f} ms exclusive, {slow['exclusive_pct']:.0f}%)"
                )
            worst = self.worst_misestimate()
            if worst is not None and worst["misestimate_factor"] >= 2:
                lines.append(
                    f"worst estimate: #{worst['id']} {worst['label']}: {worst['plan_rows']:g} rows estimated, "
                    f"{worst['actual_rows']:g} actual per loop ({worst['misestimate_direction']}estimated "
                    f"x{worst['misestimate_factor']:.1f})"
                )
        else:
            lines.append(f"estimates only (no ANALYZE): total cost {self.root.raw.get('Total Cost')}")
        lines.append("indexes used: " + (", ".join(self.indexes_used) or "none"))
        seq = self.seq_scans()
        if not seq.empty:
            lines.append(
                "large sequential scans: "
                + ", ".join(f"{r} ({n:,.0f} rows)" for r, n in zip(seq["relation"], seq["rows_read"]))
            )
        summ = self.pruning_summary()
        for table, r in summ.iterrows():
            parts = [f"{r[s]} {s}" for s in PRUNING_STATUSES if r[s]]
            lines.append(f"partitions of {table}: " + ", ".join(parts))
        for _, r in self.spills().iterrows():
            lines.append(f"spill to disk: #{r['id']} {r['label']}: {r['spill']}")
        for t in self.triggers:
            lines.append(f"trigger {t['name']} on {t['relation']}: {t['time_ms']:.3f} ms, {t['calls']} calls")
        if self.jit:
            total = (self.jit.get("Timing") or {}).get("Total")
            total_ms = total.get("Total") if isinstance(total, Mapping) else total
            lines.append(f"JIT: {self.jit.get('Functions')} functions, {total_ms} ms")
        return "\n".join(lines)

    def __repr__(self) -> str:
        t = f"{self.execution_ms:.3f} ms" if self.execution_ms is not None else "not analyzed"
        return f"<Plan {self.root.label()!r}, {len(self._nodes)} nodes, {t}>"


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


def explain(
    conn: psycopg.Connection[Any],
    query: str | sql.Composable,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    analyze: bool = True,
    buffers: bool = True,
    settings: bool = True,
    rollback: bool = False,
    partitions: Mapping[str, Sequence[str]] | None = None,
) -> Plan:
    """Run ``EXPLAIN (ANALYZE, BUFFERS, SETTINGS, FORMAT JSON)`` on ``query`` and return its `Plan`.

    Runs on ``conn`` as it is: its role, its ``app.current_tenant``, its transaction (never switched here).
    With ``analyze`` the statement really runs; use ``analyze=False`` for one that must not, or
    ``rollback=True`` to run it inside a savepoint that is rolled back.

    :param conn: a psycopg 3 connection.
    :param query: the statement (text or `psycopg.sql.Composable`), with ``%s``/``%(name)s`` placeholders
        if ``params`` is given. A trailing semicolon is ignored.
    :param params: bound on the server, as in `psycopg.Connection.execute`.
    :param analyze: run the statement and collect actual times and rows.
    :param buffers: collect buffer counts.
    :param settings: include non-default planner settings.
    :param rollback: run inside a transaction/savepoint that is rolled back (for INSERT/UPDATE/DELETE).
    :param partitions: partitioned table -> leaf partitions; default: read from the catalog for the
        partitions that appear in the plan.
    Returns the parsed `Plan`, with ``query`` set to the statement's text.
    Raise LabError if the query is empty; psycopg errors (syntax, permissions) propagate unchanged.
    """
    from psycopg import sql as _sql

    opts = [o for o, on in (("ANALYZE", analyze), ("BUFFERS", buffers), ("SETTINGS", settings)) if on]
    head = _sql.SQL("EXPLAIN ({}) ").format(_sql.SQL(", ".join([*opts, "FORMAT JSON"])))
    if isinstance(query, str):
        text = query.strip().rstrip(";").strip()
        if not text:
            raise LabError("nothing to explain: the query is empty")
        stmt: Any = head.as_string(conn) + text
        shown = text
    else:
        stmt = _sql.Composed([head, query])
        shown = query.as_string(conn)
    log.debug("explain: %s", shown)
    if rollback:
        with conn.transaction(force_rollback=True):
            row = conn.execute(stmt, params).fetchone()
    else:
        row = conn.execute(stmt, params).fetchone()
    if row is None:
        raise LabError("EXPLAIN returned no row")
    plan = Plan.from_json(row[0], query=shown)
    if partitions is not None:
        plan.catalog_partitions = {k: list(v) for k, v in partitions.items()}
    else:
        try:
            plan.catalog_partitions = _catalog_partitions(conn, plan)
        except Exception as e:  # the catalog is a bonus; a failing lookup must not lose the plan
            log.warning("could not read partitions from the catalog: %s", e)
    return plan


# -------------------------------------------------------------------------------------------- helpers
def _catalog_partitions(conn: psycopg.Connection[Any], plan: Plan) -> dict[str, list[str]]:
    """Partitioned table -> leaf partitions (bound order), for every partition named in the plan."""
    rels = sorted({n.raw["Relation Name"] for n in plan.node_list if n.raw.get("Relation Name")})
    if not rels:
        return {}
    q = """
        WITH named AS (
            SELECT to_regclass(quote_ident(r)) AS oid FROM unnest(%s::text[]) AS r
        ), roots AS (
            SELECT DISTINCT pg_partition_root(c.oid) AS root
            FROM named n JOIN pg_class c ON c.oid = n.oid
            WHERE c.relispartition
        )
        SELECT r.root::regclass::text, t.relid::regclass::text
        FROM roots r, pg_partition_tree(r.root) t JOIN pg_class c ON c.oid = t.relid
        WHERE t.isleaf
        ORDER BY 1, pg_get_expr(c.relpartbound, c.oid) ~ '^DEFAULT', pg_get_expr(c.relpartbound, c.oid), 2
    """
    with conn.transaction():  # a savepoint inside the caller's transaction: a failure here leaves it intact
        rows = conn.execute(q, (rels,)).fetchall()
    out: dict[str, list[str]] = {}
    for root, leaf in rows:
        out.setdefault(root, []).append(leaf)
    return out


def _exclusive_cost(n: Node) -> float | None:
    """Total cost minus the children's (InitPlans aside), at least 0: where the planner expects the work."""
    total = n.raw.get("Total Cost")
    if total is None:
        return None
    kids = sum(float(c.raw.get("Total Cost") or 0) for c in n.children if c.relationship != "InitPlan")
    return max(float(total) - kids, 0.0)


def _buffers_of(raw: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(raw[key]) for k, key in _BUFFER_KEYS.items() if key in raw}


def _alias_root(alias: Any) -> str | None:
    """``activities_3`` -> ``activities``: PostgreSQL names a partition's scan after the parent's alias."""
    if not isinstance(alias, str):
        return None
    m = re.fullmatch(r"(.+)_\d+", alias)
    return m.group(1) if m else None


def _initplan_patterns(name: str) -> list[re.Pattern[str]]:
    """Regexes that find references to an InitPlan: ``InitPlan 2`` (PG 16+) or ``$0`` (older)."""
    m = re.match(r"(InitPlan\s+\d+)(?:\s+\(returns\s+([^)]*)\))?", name)
    if not m:
        return []
    pats = [re.compile(re.escape(m.group(1)) + r"(?!\d)")]
    for p in re.findall(r"\$\d+", m.group(2) or ""):
        pats.append(re.compile(re.escape(p) + r"(?!\d)"))
    return pats


def _refers(node: Node, patterns: Sequence[re.Pattern[str]]) -> bool:
    for key, value in node.raw.items():
        if key in ("Subplan Name", "Parent Relationship"):
            continue
        texts = value if isinstance(value, list) else [value]
        for t in texts:
            if isinstance(t, str) and any(p.search(t) for p in patterns):
                return True
    return False


def _parse_json_text(text: str) -> Any:
    """Parse EXPLAIN JSON, also as psql prints it (``QUERY PLAN`` header, ``+`` line ends, ``(1 row)``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    lines = []
    for line in text.splitlines():
        s = line.rstrip()
        if re.fullmatch(r"\s*QUERY PLAN\s*", s) or re.fullmatch(r"\s*-{3,}\s*", s) or re.fullmatch(r"\(\d+ rows?\)", s):
            continue
        lines.append(re.sub(r"\s*\+$", "", s))
    cleaned = "\n".join(lines)
    start = min((i for i in (cleaned.find("["), cleaned.find("{")) if i >= 0), default=-1)
    if start < 0:
        raise LabError("not an EXPLAIN (FORMAT JSON) plan: no JSON found")
    try:
        obj, _ = json.JSONDecoder().raw_decode(cleaned[start:])
    except json.JSONDecodeError as e:
        raise LabError(f"not an EXPLAIN (FORMAT JSON) plan: {e.msg} at line {e.lineno}") from None
    return obj
