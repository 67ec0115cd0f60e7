"""One plan node: its raw EXPLAIN fields, its place in the tree, and the figures derived for it."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUFFER_KINDS", "Node", "buffers_of", "display_type"]

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

# Nodes that combine bitmaps: EXPLAIN reports 0 rows for them, whatever they hold.
BITMAP_COMBINERS = ("BitmapAnd", "BitmapOr")


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
            while up is not None and up.raw.get("Node Type") in BITMAP_COMBINERS:
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
        return self._float("Actual Rows")

    @property
    def plan_rows(self) -> float | None:
        """The planner's estimate of rows per loop."""
        return self._float("Plan Rows")

    def _float(self, key: str) -> float | None:
        v = self.raw.get(key)
        return None if v is None else float(v)

    # --- derived -------------------------------------------------------------------------------
    def misestimate(self) -> tuple[float | None, str | None]:
        """Return (factor >= 1, direction ``under``/``over``/``none``), or (None, None) without actuals.

        BitmapAnd and BitmapOr hand a bitmap to their parent, not rows: EXPLAIN always reports 0 actual
        rows for them, so they have no misestimate (their Bitmap Index Scans and Heap Scan do).
        """
        actual, planned = self.actual_rows, self.plan_rows
        if actual is None or planned is None or not self.loops or self.raw.get("Node Type") in BITMAP_COMBINERS:
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


def buffers_of(raw: Mapping[str, Any]) -> dict[str, int]:
    """The buffer counts EXPLAIN gave (``Shared Hit Blocks`` ...), keyed by `BUFFER_KINDS`."""
    return {k: int(raw[key]) for k, key in _BUFFER_KEYS.items() if key in raw}
