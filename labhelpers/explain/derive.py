"""The node tree from EXPLAIN's JSON, and the figures derived the way pev2 does (``plan-service.ts``).

- inclusive time = actual total time x loops / the parallel participants above the node;
- exclusive time = inclusive minus the direct children's (InitPlans aside); a CTE's time is taken off
  the CTE Scans that read it, in proportion to their time, an InitPlan's off the node that ran it
  (`initplan_consumer`); buffers follow the same rules; negative remainders are clipped to 0;
- exclusive cost = total cost minus the children's (no ANALYZE needed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .node import BUFFER_KINDS, Node, buffers_of

__all__ = ["build_tree", "derive_figures", "exclusive_cost", "initplan_consumer"]

_EPS_MS = 0.01


# -------------------------------------------------------------------------------------------- the tree
def build_tree(raw: Mapping[str, Any], settings: Mapping[str, str]) -> list[Node]:
    """The nodes of ``raw`` (the ``Plan`` object of EXPLAIN's JSON) in EXPLAIN's order; ``[0]`` is the root.

    :param raw: the top plan node, with its ``Plans``.
    :param settings: the plan's ``Settings`` (``parallel_leader_participation`` changes the participants).
    """
    leader = 0 if str(settings.get("parallel_leader_participation", "on")) == "off" else 1
    nodes: list[Node] = []
    _add(raw, None, 0, 0, nodes, leader)
    return nodes


def _add(raw: Mapping[str, Any], parent: Node | None, depth: int, parallel: int, nodes: list[Node],
         leader: int) -> Node:
    node = Node(id=len(nodes), raw={k: v for k, v in raw.items() if k != "Plans"}, parent=parent, depth=depth)
    nodes.append(node)
    node.participants = parallel or 1
    launched = raw.get("Workers Launched", raw.get("Workers Planned"))
    for child in raw.get("Plans") or []:
        if child.get("Parent Relationship") in ("InitPlan", "SubPlan"):
            inherited = 0  # subplans are not run by the workers' share (pev2 does the same)
        elif launched is not None:
            inherited = max(int(launched) + leader, 1)
        else:
            inherited = parallel
        node.children.append(_add(child, node, depth + 1, inherited, nodes, leader))
    return node


# -------------------------------------------------------------------------------------------- times
def derive_figures(nodes: Sequence[Node], *, analyzed: bool) -> None:
    """Set every node's buffers, inclusive and exclusive time, and exclusive buffers, in place.

    :param nodes: all the plan's nodes, as `build_tree` returns them.
    :param analyzed: the plan has actuals (EXPLAIN ANALYZE); with TIMING OFF no time is derived.
    """
    for n in nodes:
        n.buffers = buffers_of(n.raw)
        if analyzed and n.raw.get("Actual Total Time") is not None:
            n.inclusive_ms = float(n.raw["Actual Total Time"]) * (n.loops or 0) / n.participants
        elif analyzed:
            n.inclusive_ms = None  # ANALYZE with TIMING OFF
    timed = analyzed and all(n.inclusive_ms is not None for n in nodes)
    rest = _Remainders(nodes, timed=timed)
    for sub in nodes:
        if sub.relationship == "InitPlan" and sub.parent is not None:
            _take_initplan(sub, nodes, rest)
    for n in nodes:
        if timed:
            n.exclusive_ms = max(rest.ms[n.id], 0.0)
        n.exclusive_buffers = {k: max(round(v), 0) for k, v in rest.buffers[n.id].items()}


class _Remainders:
    """Each node's time and buffers minus its direct children's, then minus the subplans it ran."""

    def __init__(self, nodes: Sequence[Node], *, timed: bool) -> None:
        self.timed = timed
        self.ms: dict[int, float] = {}
        self.buffers: dict[int, dict[str, float]] = {}
        for n in nodes:
            direct = [c for c in n.children if c.relationship != "InitPlan"]
            if timed:
                self.ms[n.id] = (n.inclusive_ms or 0.0) - sum(c.inclusive_ms or 0.0 for c in direct)
            self.buffers[n.id] = {
                k: n.buffers.get(k, 0) - sum(c.buffers.get(k, 0) for c in direct) for k in BUFFER_KINDS
            }

    def take(self, target: Node, ms: float, buf: Mapping[str, float], share: float = 1.0) -> None:
        if self.timed:
            self.ms[target.id] -= ms * share
        for k in BUFFER_KINDS:
            self.buffers[target.id][k] -= buf.get(k, 0) * share


def _take_initplan(sub: Node, nodes: Sequence[Node], rest: _Remainders) -> None:
    """Take the InitPlan ``sub``'s time and buffers off the node(s) that ran it."""
    assert sub.parent is not None
    ms = sub.inclusive_ms or 0.0
    name = sub.subplan_name or ""
    if not name.startswith("CTE "):
        rest.take(initplan_consumer(sub, nodes), ms, sub.buffers)
        return
    scans = [n for n in nodes if n.raw.get("Node Type") == "CTE Scan" and n.raw.get("CTE Name") == name[4:]]
    if not scans:
        rest.take(sub.parent, ms, sub.buffers)
        return
    # time: in proportion to each scan's time; buffers: to each scan's own buffer count
    # (the scan that pulled the rows first carries the CTE's reads)
    weights = [n.inclusive_ms or 0.0 for n in scans]
    if sum(weights) <= 0:
        weights = [1.0] * len(scans)
    for s, w in zip(scans, weights):
        rest.take(s, ms, {}, w / sum(weights))
    for k in BUFFER_KINDS:
        held = [s.buffers.get(k, 0) for s in scans]
        for s, h in zip(scans, held):
            if sum(held) > 0:
                rest.buffers[s.id][k] -= sub.buffers.get(k, 0) * h / sum(held)


def initplan_consumer(sub: Node, nodes: Sequence[Node]) -> Node:
    """The node whose time includes the InitPlan ``sub``: the lowest referring node that can hold it.

    A node refers to it by name (``(InitPlan 1).col1``, PostgreSQL 16+) or by parameter (``$0``); the
    candidate is the referring node or its lowest ancestor whose time is at least the InitPlan's. Without
    one, the InitPlan's parent.
    """
    assert sub.parent is not None
    inside = {id(n) for n in sub.walk()}
    patterns = _initplan_patterns(sub.subplan_name or "")
    refs = [n for n in nodes if id(n) not in inside and patterns and _refers(n, patterns)]
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


# -------------------------------------------------------------------------------------------- cost
def exclusive_cost(n: Node) -> float | None:
    """Total cost minus the children's (InitPlans aside), at least 0: where the planner expects the work."""
    total = n.raw.get("Total Cost")
    if total is None:
        return None
    kids = sum(float(c.raw.get("Total Cost") or 0) for c in n.children if c.relationship != "InitPlan")
    return max(float(total) - kids, 0.0)
