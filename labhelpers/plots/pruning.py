"""Partition pruning: every partition of each partitioned table, scanned, never executed, or pruned (how)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..explain import (
    PRUNING_STATUSES,
    PartitionLayout,
    Plan,
    partition_layout,
    scanned_rows,
)
from ..explain.grid import MONTHS
from ..explain.pruning import PartitionSpec
from ._style import STATUS_COLORS, STATUS_HELP, WIDTH_IN, ink_for, num, shorten

__all__ = ["plot_pruning"]

_NO_CELL = "no such partition"
_CELL_H_IN = 0.34


def plot_pruning(
    plan: Plan,
    *,
    partitions: PartitionSpec = None,
    title: str | None = None,
) -> Figure:
    """Show every partition of each partitioned table in the plan: scanned, never executed, or pruned (how).

    The layout follows the partition tree, one panel per table, each titled with the counts
    (``activities: scanned 1 of 164 partitions; 163 pruned ...``):

    * two levels (a parent per month, leaves ``<table>_<YYYY>_<MM>_h<n>``, or a ``parent`` column from
      `Plan.partitions`): a grid, one row per sub-partition (h0, h1, ...), one column per month in bound
      order, January columns labelled with the year;
    * one level, up to 24 partitions: one labelled bar per partition, with the rows it returned;
    * one level, more: monthly partitions as a year x month grid, others as cells in catalog order
      wrapped into rows.

    Grid cells are one ``pcolormesh`` whose values index `PRUNING_STATUSES` (masked: no such partition),
    so a few hundred partitions draw as fast as ten. Scanned partitions are listed under the grid with
    the rows they returned. The legend explains each status in words.

    :param plan: a `labhelpers.explain.Plan`.
    :param partitions: as in `Plan.partitions` (needed to see partitions pruned at plan time, unless
        `explain` read them from the catalog).
    :param title: default: "Partition pruning" and the query.
    Returns the Figure.
    """
    parts = plan.partitions(partitions)
    tables = list(dict.fromkeys(parts["table"])) if not parts.empty else []
    if not tables:
        return _nothing_to_prune(title)
    summary = plan.pruning_summary(partitions)
    layouts = [partition_layout(parts[parts["table"] == t].reset_index(drop=True)) for t in tables]
    heights = [_layout_height(lay) for lay in layouts]
    fig = Figure(figsize=(WIDTH_IN, sum(heights) + 1.1), layout="constrained")
    axes = fig.subplots(len(tables), 1, squeeze=False, height_ratios=heights)[:, 0]
    rows_of = scanned_rows(plan, parts)
    missing = False
    for ax, table, lay in zip(axes, tables, layouts):
        pad = 6.0
        if lay.kind == "list":
            _draw_pruning_list(ax, lay, rows_of)
        else:
            gaps, listed = _draw_pruning_grid(ax, lay, rows_of)
            missing |= gaps
            pad = 17.0 if listed else pad
        counts = summary.loc[table]
        ax.set_title(f"{table}: {_pruning_counts(counts, plan.analyzed)}", fontsize=9.5, loc="left", pad=pad)
    _status_legend(fig, set(parts["status"]), missing)
    if title is None:
        title = "Partition pruning"
        if plan.query:
            title += f": {shorten(' '.join(plan.query.split()), 80)}"
    fig.suptitle(shorten(title, 110), fontsize=11, fontweight="bold")
    return fig


def _nothing_to_prune(title: str | None) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, 2.0), layout="constrained")
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, "No partitioned table in this plan: nothing to prune.", ha="center", va="center",
            fontsize=11)
    fig.suptitle(title or "Partition pruning", fontsize=11, fontweight="bold")
    return fig


def _status_legend(fig: Figure, present: set[str], missing: bool) -> None:
    """Each status drawn, in words (and the empty cell, if a grid has one)."""
    handles = [Patch(facecolor=STATUS_COLORS[s], edgecolor="#455a64", label=STATUS_HELP.get(s, s))
               for s in PRUNING_STATUSES if s in present]
    if missing:
        handles.append(Patch(facecolor="white", edgecolor="#455a64", label=_NO_CELL))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 2), fontsize=8.5,
               frameon=False)


def _pruning_counts(counts: pd.Series, analyzed: bool) -> str:
    """``scanned 1 of 164 partitions; 163 pruned at plan time`` (the other statuses, commas between)."""
    total = int(counts["total"])
    rest = ", ".join(f"{int(counts[s])} {s}" for s in PRUNING_STATUSES if counts[s] and s != "scanned")
    head = f"scanned {int(counts['scanned'])} of {total} partitions" if analyzed else f"{total} partitions"
    return head + (f"; {rest}" if rest else "")


def _month_ticks(months: Sequence[tuple[int, int]]) -> list[str]:
    """Tick labels for month columns: every month if they fit, else quarters or half-years; years on January."""
    step = next(s for s in (1, 3, 6, 12) if s * (WIDTH_IN - 1.5) / max(len(months), 1) >= 0.34)
    labels = []
    shown_year = False
    for y, m in months:
        if (m - 1) % step:
            labels.append("")
            continue
        with_year = m == 1 or not shown_year
        shown_year = True
        labels.append(f"{MONTHS[m - 1]}\n{y}" if with_year else MONTHS[m - 1])
    return labels


def _layout_height(lay: PartitionLayout) -> float:
    """Inches one table's panel needs."""
    if lay.kind == "list":
        return max(1.2, 0.3 * len(lay.names)) + 0.9
    assert lay.cells is not None
    nrows = lay.cells.shape[0]
    scanned = sum(s == "scanned" for s in lay.status)
    return nrows * _CELL_H_IN + 1.3 + (0.25 if scanned else 0.0)


def _draw_pruning_list(ax: Axes, lay: PartitionLayout, rows_of: Mapping[str, float]) -> None:
    """One labelled bar per partition (short single-level trees)."""
    names, status = lay.names, lay.status
    n = len(names)
    ys = np.arange(n)
    ax.barh(ys, [1.0] * n, height=0.82, color=[STATUS_COLORS[s] for s in status], edgecolor="#455a64",
            linewidth=0.6)
    for y, name, s in zip(ys, names, status):
        r = rows_of.get(name)
        txt = STATUS_HELP.get(s, s) if r is None or s != "scanned" else f"{s}: {num(r)} rows"
        ax.text(0.02, float(y), txt, va="center", ha="left", fontsize=8.5, color=ink_for(STATUS_COLORS[s]))
    ax.set_yticks(ys, names, fontsize=8.5)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_xticks([])
    ax.spines[["top", "right", "bottom"]].set_visible(False)
    ax.set_ylabel("partition (bound order)", fontsize=8.5)


def _draw_pruning_grid(ax: Axes, lay: PartitionLayout, rows_of: Mapping[str, float]) -> tuple[bool, bool]:
    """The cells of one table as one pcolormesh, scanned partitions listed just above.

    Returns (some cells stand for no partition, e.g. a missing month; not the padding of a wrapped grid;
    a line of scanned partitions was written above the grid).
    """
    assert lay.cells is not None
    cells = lay.cells
    code = {s: i for i, s in enumerate(PRUNING_STATUSES)}
    values = np.ma.masked_less(np.where(cells >= 0, [[code[lay.status[i]] if i >= 0 else -1 for i in row]
                                                     for row in cells], -1), 0)
    cmap = ListedColormap([STATUS_COLORS[s] for s in PRUNING_STATUSES], name="labhelpers_pruning").with_extremes(
        bad="white")
    nrows, ncols = cells.shape
    ax.pcolormesh(np.arange(ncols + 1), np.arange(nrows + 1), values, cmap=cmap,
                  norm=Normalize(vmin=-0.5, vmax=len(PRUNING_STATUSES) - 0.5), edgecolors="white",
                  linewidth=1.0 if ncols <= 60 else 0.4)
    for c in lay.year_cols:
        ax.axvline(c, color="#263238", linewidth=1.2)
    ax.set_xlim(0, ncols)
    ax.set_ylim(nrows, 0)
    ax.set_yticks(np.arange(nrows) + 0.5, lay.row_labels, fontsize=8.5)
    col_labels = _month_ticks(lay.months) if lay.months is not None else lay.col_labels
    ticks = [c for c, lab in enumerate(col_labels) if lab]
    ax.set_xticks(np.array(ticks) + 0.5, [col_labels[c] for c in ticks], fontsize=8)
    ax.tick_params(length=2)
    ax.set_ylabel(lay.row_title, fontsize=8.5)
    ax.set_xlabel(lay.col_title, fontsize=8.5)
    ax.spines[:].set_visible(False)
    scanned = _annotate_scanned(ax, lay, rows_of)
    return lay.kind != "wrapped" and bool((cells < 0).any()), scanned


def _annotate_scanned(ax: Axes, lay: PartitionLayout, rows_of: Mapping[str, float]) -> bool:
    """Above the grid: the three busiest scanned partitions and their rows; False if none was scanned."""
    scanned = [x for x, s in zip(lay.names, lay.status) if s == "scanned"]
    if not scanned:
        return False
    busiest = sorted(scanned, key=lambda x: -rows_of.get(x, 0.0))[:3]
    shown = [f"{x} ({num(rows_of[x])} rows)" if x in rows_of else x for x in busiest]
    more = f" and {len(scanned) - 3} more" if len(scanned) > 3 else ""
    total = f", {num(sum(rows_of.get(x, 0.0) for x in scanned))} rows in all" if rows_of and more else ""
    ax.annotate(f"scanned{total}: " + ", ".join(shown) + more, xy=(0, 1), xycoords="axes fraction",
                xytext=(0, 3), textcoords="offset points", ha="left", va="bottom", fontsize=8,
                color=STATUS_COLORS["scanned"], annotation_clip=False)
    return True
