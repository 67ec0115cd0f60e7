"""How one table's partitions are laid out for a picture: a list, or a grid read from their names.

Two levels (a parent per month, leaves ``<table>_<YYYY>_<MM>_h<n>``, or a ``parent`` column) make a
grid of sub-partition x month; one level, short, a list; one level, long, a year x month grid for
monthly names, else the catalog order wrapped into rows. `plots.plot_pruning` draws the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .plan import Plan

__all__ = ["LIST_MAX", "MONTHS", "PartitionLayout", "partition_layout", "scanned_rows", "shorten"]

LIST_MAX = 24
"""Up to this many partitions (single level), the layout is a list: one labelled bar per partition."""
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_LEAF = re.compile(r"^(?P<base>.+?)_(?P<y>\d{4})_(?P<m>\d{2})(?:_(?P<sub>[A-Za-z]*)(?P<k>\d+))?$")


@dataclass(frozen=True)
class PartitionLayout:
    """One table's partitions, as a list of bars or as a grid of cells.

    ``kind`` is ``list``, ``two_level``, ``year_month`` or ``wrapped``; ``names`` and ``status`` are in
    catalog order. For grids: ``cells`` (row x column of indexes into ``names``, -1 where there is no
    partition), ``row_labels``, the columns as ``months`` (year, month) when they are months in a row
    (the picture chooses their tick labels) or else ``col_labels``, the axis titles, and ``year_cols``
    (columns that start a year).
    """

    kind: str
    names: list[str]
    status: list[str]
    cells: np.ndarray | None = None
    row_labels: list[str] = field(default_factory=list)
    col_labels: list[str] = field(default_factory=list)
    months: list[tuple[int, int]] | None = None
    row_title: str = ""
    col_title: str = ""
    year_cols: list[int] = field(default_factory=list)


def partition_layout(mine: pd.DataFrame) -> PartitionLayout:
    """The layout of one table's rows of `Plan.partitions` (with an optional ``parent`` column)."""
    names = [str(n) for n in mine["partition"]]
    status = [str(s) for s in mine["status"]]
    n = len(names)
    parent = list(mine["parent"]) if "parent" in mine.columns else None
    grouped = _two_level_by_parent(names, parent) if parent is not None else _two_level_by_name(names)
    if grouped is not None:
        return PartitionLayout("two_level", names, status, **grouped)
    if n <= LIST_MAX:
        return PartitionLayout("list", names, status)
    ym = [_MONTH_LEAF.match(x) for x in names]
    if all(m is not None and m.group("sub") is None for m in ym):
        keys = [(int(m.group("y")), int(m.group("m"))) for m in ym if m is not None]
        years = list(range(min(k[0] for k in keys), max(k[0] for k in keys) + 1))
        cells = np.full((len(years), 12), -1)
        for i, (y, mo) in enumerate(keys):
            cells[years.index(y), mo - 1] = i
        return PartitionLayout("year_month", names, status, cells=cells, row_labels=[str(y) for y in years],
                               col_labels=list(MONTHS), row_title="year", col_title="month")
    ncols = 20 if n > 40 else math.ceil(n / 2)
    nrows = math.ceil(n / ncols)
    cells = np.full((nrows, ncols), -1)
    cells.flat[:n] = np.arange(n)
    return PartitionLayout("wrapped", names, status, cells=cells,
                           row_labels=[shorten(names[r * ncols], 28) for r in range(nrows)],
                           col_labels=[f"+{c}" for c in range(ncols)], row_title="first partition of the row",
                           col_title="position in the row (catalog order)")


def _two_level_by_name(names: Sequence[str]) -> dict[str, Any] | None:
    """Grid for leaves named ``<table>_<YYYY>_<MM>_h<n>`` (month, then sub-partition); None otherwise."""
    keys = []
    for x in names:
        m = _MONTH_LEAF.match(x)
        if m is None or m.group("k") is None:
            return None
        keys.append(((int(m.group("y")), int(m.group("m"))), (m.group("sub"), int(m.group("k")))))
    subs = sorted({k[1] for k in keys}, key=lambda s: (s[1], s[0]))
    if len(subs) < 2:
        return None
    first, last = min(k[0] for k in keys), max(k[0] for k in keys)
    months = [(first[0] + (first[1] - 1 + i) // 12, (first[1] - 1 + i) % 12 + 1)
              for i in range((last[0] - first[0]) * 12 + last[1] - first[1] + 1)]
    cells = np.full((len(subs), len(months)), -1)
    col_of = {mo: c for c, mo in enumerate(months)}
    row_of = {s: r for r, s in enumerate(subs)}
    for i, (mo, sub) in enumerate(keys):
        cells[row_of[sub], col_of[mo]] = i
    return {"cells": cells, "row_labels": [f"{a}{k}" for a, k in subs], "months": months,
            "row_title": "sub-partition", "col_title": "month (bound order)", "year_cols": _year_cols(months)}


def _two_level_by_parent(names: Sequence[str], parents: Sequence[Any]) -> dict[str, Any] | None:
    """Grid from the catalog's parent of each leaf: one column per parent, one row per position in it."""
    if any(p is None or (isinstance(p, float) and math.isnan(p)) for p in parents) or len(set(parents)) < 2:
        return None
    order = list(dict.fromkeys(str(p) for p in parents))
    match = {p: _MONTH_LEAF.match(p) for p in order}
    if all(m is not None and m.group("sub") is None for m in match.values()):
        order.sort(key=lambda p: _year_month(match[p]))
    kids: dict[str, list[int]] = {p: [] for p in order}
    for i, p in enumerate(parents):
        kids[str(p)].append(i)
    depth = max(len(v) for v in kids.values())
    if depth < 2:
        return None
    cells = np.full((depth, len(order)), -1)
    for c, p in enumerate(order):
        for r, i in enumerate(sorted(kids[p], key=lambda i: names[i])):
            cells[r, c] = i
    row_labels = []
    for r in range(depth):
        c = next(c for c in range(len(order)) if cells[r, c] >= 0)
        leaf, par = names[cells[r, c]], order[c]
        suffix = leaf[len(par):].lstrip("_") if leaf.startswith(par) else ""
        row_labels.append(suffix or shorten(leaf, 20))
    grid = {"cells": cells, "row_labels": row_labels, "row_title": "sub-partition",
            "col_title": "parent partition (bound order)"}
    if all(m is not None for m in match.values()):
        months = [_year_month(match[p]) for p in order]
        return {**grid, "months": months, "year_cols": _year_cols(months)}
    return {**grid, "col_labels": [shorten(p, 16) for p in order]}


def _year_month(m: re.Match[str] | None) -> tuple[int, int]:
    assert m is not None
    return int(m.group("y")), int(m.group("m"))


def _year_cols(months: Sequence[tuple[int, int]]) -> list[int]:
    """The columns that start a year (January), but the first."""
    return [c for c, (_, mo) in enumerate(months) if mo == 1 and c > 0]


def scanned_rows(plan: Plan, parts: pd.DataFrame) -> dict[str, float]:
    """Partition -> rows its scan returned (all loops), for the scanned ones of ``parts`` (`Plan.partitions`)."""
    if not plan.analyzed:
        return {}
    totals = plan.nodes["actual_rows_total"]
    out: dict[str, float] = {}
    for name, status, nid in zip(parts["partition"], parts["status"], parts["node_id"]):
        if status == "scanned" and nid is not None and not pd.isna(nid):
            out[str(name)] = float(totals[int(nid)] or 0)
    return out


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one an ellipsis when it was longer."""
    text = str(text)
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"
