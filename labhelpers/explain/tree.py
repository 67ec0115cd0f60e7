"""The rows of a drawn plan tree: nodes in EXPLAIN's order, folded never-executed runs, pruned partitions.

Runs of more than ``collapse_after`` never-executed sibling partitions become one row; partitions
pruned before execution become one row per table and status under their Append. `plots.plot_plan`
draws these rows; the words on them are the picture's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd

from .node import Node
from .plan import Plan
from .pruning import PRUNED_STATUSES, PartitionSpec

__all__ = ["TreeRow", "partition_runs", "tree_rows"]


@dataclass(frozen=True)
class TreeRow:
    """One row of the plan tree.

    ``kind`` is ``node`` (``node_id`` is the node), ``folded`` (``count`` never-executed sibling
    partitions) or ``pruned`` (``count`` partitions of ``table`` with ``status``, one of
    `PRUNED_STATUSES`). ``partitions`` names them when EXPLAIN says which, and ``runs`` groups those
    names into contiguous runs in bound order (None when some are not in the catalog).
    """

    kind: str
    depth: int
    parent: int | None
    node_id: int | None = None
    count: int = 0
    table: str | None = None
    status: str | None = None
    partitions: tuple[str, ...] = ()
    runs: tuple[tuple[str, ...], ...] | None = None


def tree_rows(plan: Plan, partitions: PartitionSpec = None, *, collapse_after: int = 3) -> list[TreeRow]:
    """The rows to draw for ``plan``, in tree order.

    :param plan: the plan.
    :param partitions: as in `Plan.partitions`.
    :param collapse_after: fold runs of more never-executed sibling partitions than this.
    """
    parts = plan.partitions(partitions)
    rows: list[TreeRow] = []
    _visit(plan.root, parts, list(parts["partition"]), collapse_after, rows)
    return rows


def _visit(node: Node, parts: pd.DataFrame, order: list[str], collapse_after: int, rows: list[TreeRow]) -> None:
    parent = None if node.parent is None else node.parent.id
    rows.append(TreeRow("node", node.depth, parent, node_id=node.id))
    for kid in _folded(node.children, collapse_after):
        if isinstance(kid, Node):
            _visit(kid, parts, order, collapse_after, rows)
        else:
            names = tuple(k.raw.get("Relation Name") or k.node_type for k in kid)
            rows.append(TreeRow("folded", node.depth + 1, node.id, count=len(kid), status="never executed",
                                partitions=names, runs=partition_runs(names, order)))
    if node.raw.get("Node Type") in ("Append", "Merge Append"):
        rows.extend(_pruned_rows(node, parts, order))


def _folded(kids: Sequence[Node], collapse_after: int) -> Iterator[Node | list[Node]]:
    """The children, with each run of more than ``collapse_after`` never-executed members as one list."""
    i = 0
    while i < len(kids):
        j = i
        while j < len(kids) and kids[j].never_executed and kids[j].relationship == "Member":
            j += 1
        if j - i > collapse_after:
            yield list(kids[i:j])
            i = j
            continue
        yield kids[i]
        i += 1


def _pruned_rows(app: Node, parts: pd.DataFrame, order: Sequence[str]) -> list[TreeRow]:
    """Under an Append: per table it reads, one row per kind of pruning before execution."""
    pruned = parts[parts["status"].isin(PRUNED_STATUSES)]
    tables = {parts.loc[parts["node_id"] == k.id, "table"].iloc[0]
              for k in app.walk() if (parts["node_id"] == k.id).any()}
    if not tables and app.raw.get("Subplans Removed"):
        tables = set(pruned["table"])
    rows = []
    for table in sorted(tables):
        mine = pruned[pruned["table"] == table]
        for status, grp in mine.groupby("status", sort=False):
            names = tuple(p for p in grp["partition"] if not p.startswith("(removed"))
            rows.append(TreeRow("pruned", app.depth + 1, app.id, count=len(grp), table=str(table),
                                status=str(status), partitions=names, runs=partition_runs(names, order)))
    return rows


def partition_runs(names: Sequence[str], order: Sequence[str]) -> tuple[tuple[str, ...], ...] | None:
    """``names`` as runs of neighbours in ``order`` (bound order), sorted; None if one is not in ``order``."""
    pos = {n: i for i, n in enumerate(order)}
    if not all(n in pos for n in names):
        return None
    idx = sorted(pos[n] for n in names)
    runs: list[list[int]] = []
    for i in idx:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return tuple(tuple(order[a:b + 1]) for a, b in runs)
