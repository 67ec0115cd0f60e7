"""The plan tree: one box per node, indented as psql prints it, coloured by exclusive time, with bars."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch

from ..explain import Plan, TreeRow, tree_rows
from ..explain.pruning import PartitionSpec
from ._style import STATUS_COLORS, TIME_CMAP, WIDTH_IN, ink_for, num, runs_text, shorten

__all__ = ["plot_plan"]

_INDENT = 0.028
_NEVER_FACE = "#eeeeee"


@dataclass(frozen=True)
class _Box:
    """One drawn row: a node (with its metric) or a row of folded or pruned partitions (with its colour)."""

    row: TreeRow
    line1: str
    line2: str
    metric: float = 0.0
    never: bool = False
    slowest: bool = False
    color: str = _NEVER_FACE


def plot_plan(
    plan: Plan,
    *,
    title: str | None = None,
    partitions: PartitionSpec = None,
    collapse_after: int = 3,
) -> Figure:
    """Draw the plan as an indented tree (as psql prints it), each node's box coloured by its exclusive time.

    Each row is a node: its type, relation or index, and ``rows actual / estimated``, with the
    misestimate flagged; on the right a bar of exclusive time (or exclusive cost without ANALYZE).
    Partitions pruned before execution appear as dashed grey rows under their Append; runs of more than
    ``collapse_after`` never-executed sibling partitions are folded into one row.

    :param plan: a `labhelpers.explain.Plan`.
    :param title: default: the plan's execution time and top node.
    :param partitions: as in `Plan.partitions` (default: what `explain` read from the catalog).
    :param collapse_after: fold longer runs of never-executed siblings.
    Returns the Figure.
    """
    df = plan.nodes
    timed = bool(plan.analyzed and df["exclusive_ms"].notna().any())
    metric = df["exclusive_ms"].astype(float) if timed else df["exclusive_cost"].astype(float)
    total = float(metric.fillna(0).sum()) or 1.0
    boxes = _boxes(plan, tree_rows(plan, partitions, collapse_after=collapse_after), timed)

    fig = Figure(figsize=(WIDTH_IN, max(2.6, 1.5 + len(boxes) * 0.46)), layout="constrained")
    gs = fig.add_gridspec(1, 2, width_ratios=[3.2, 1])
    ax = fig.add_subplot(gs[0, 0])
    axb = fig.add_subplot(gs[0, 1], sharey=ax)
    norm = Normalize(vmin=0, vmax=max(100.0 * float(metric.max() or 0) / total, 1e-9))
    _draw_tree(ax, boxes, norm, total)
    _draw_bars(axb, boxes, norm, total, timed)
    fig.suptitle(shorten(title if title is not None else _default_title(plan), 110), fontsize=11,
                 fontweight="bold")
    legend = [
        Patch(facecolor=TIME_CMAP(0.85), edgecolor="#b71c1c", linewidth=2, label="slowest node (red border)"),
    ] if timed else []
    legend += [
        Patch(facecolor=_NEVER_FACE, edgecolor="#555555", hatch="///", label="never executed"),
        Patch(facecolor=STATUS_COLORS["pruned at plan time"], edgecolor="#607d8b", linestyle="dashed",
              label="pruned partitions"),
    ]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(0, 0), ncol=3, fontsize=7.5, frameon=False)
    return fig


def _default_title(plan: Plan) -> str:
    top = plan.root.label()
    if plan.analyzed and plan.execution_ms is not None:
        return f"Plan: {top} (execution {plan.execution_ms:.2f} ms, planning {plan.planning_ms:.2f} ms)"
    return f"Plan (estimates only, no ANALYZE): {top}"


# ------------------------------------------------------------------------------------------ the words
def _boxes(plan: Plan, rows: list[TreeRow], timed: bool) -> list[_Box]:
    """What each row says: a node's label and figures; how many partitions, which, and how pruned."""
    slow = plan.slowest_node()
    slow_id = None if slow is None else int(slow["id"])
    out = []
    for row in rows:
        if row.kind == "node":
            assert row.node_id is not None
            out.append(_node_box(plan, row, timed, row.node_id == slow_id))
        elif row.kind == "folded":
            out.append(_Box(row, f"{row.count} partitions never executed (pruned during execution)",
                            runs_text(row.partitions, row.runs)))
        else:
            which = runs_text(row.partitions, row.runs) if row.partitions else \
                "which ones: EXPLAIN only gives the count"
            out.append(_Box(row, f"{row.count} partitions of {row.table} {row.status}", which,
                            color=STATUS_COLORS[str(row.status)]))
    return out


def _node_box(plan: Plan, row: TreeRow, timed: bool, slowest: bool) -> _Box:
    r = plan.nodes.loc[row.node_id]
    head = r["label"]
    if isinstance(r["subplan_name"], str) and r["subplan_name"]:
        head = f"[{r['subplan_name']}] {head}"
    line1 = shorten(head, 95 - 3 * int(r["depth"]) - (13 if slowest else 0)) + ("   <- slowest" if slowest else "")
    never = bool(plan.analyzed and r["loops"] == 0)
    metric = float(r["exclusive_ms"] if timed else (r["exclusive_cost"] or 0.0))
    return _Box(row, line1, _node_figures(plan, r), metric=metric, never=never, slowest=slowest)


def _node_figures(plan: Plan, r: pd.Series) -> str:
    """``rows 8,478 actual / 120 est   x 3 loops ...``, or the estimate alone without ANALYZE."""
    if plan.analyzed and r["loops"] == 0:
        return f"never executed   est {num(r['plan_rows'])} rows"
    if not plan.analyzed:
        return f"est {num(r['plan_rows'])} rows   cost {r['total_cost']:.1f}"
    line = f"rows {num(r['actual_rows'])} actual / {num(r['plan_rows'])} est"
    if r["loops"] and r["loops"] > 1:
        line += f"   x {int(r['loops'])} loops"
    if r["participants"] and r["participants"] > 1:
        line += f"   ({int(r['participants'])} processes)"
    if r["rows_removed_by_filter"] and not pd.isna(r["rows_removed_by_filter"]):
        line += f"   removed by filter {num(r['rows_removed_by_filter'])}"
    if r["sort_space_type"] == "Disk":
        line += f"   sort on disk {r['sort_space_kb']:.0f} kB"
    if r["subplans_removed"] and not pd.isna(r["subplans_removed"]):
        line += f"   Subplans Removed: {int(r['subplans_removed'])}"
    f = r["misestimate_factor"]
    if f is not None and not pd.isna(f) and f >= 10:
        line += f"  ! {r['misestimate_direction']}estimated x{f:.0f}"
    return line


# ------------------------------------------------------------------------------------------ drawing
def _draw_tree(ax: Axes, boxes: list[_Box], norm: Normalize, total: float) -> None:
    """The boxes, indented by depth, with elbow lines from each parent."""
    ax.set_xlim(0, 1)
    ax.set_ylim(len(boxes) - 0.4, -0.6)
    ax.axis("off")
    y_of: dict[int, int] = {}
    for y, b in enumerate(boxes):
        x = 0.005 + _INDENT * b.row.depth
        if b.row.kind == "node":
            assert b.row.node_id is not None
            y_of[b.row.node_id] = y
            face = TIME_CMAP(norm(100.0 * b.metric / total)) if not b.never else _NEVER_FACE
            edge, lw = ("#b71c1c", 2.0) if b.slowest else ("#555555", 0.8)
            hatch, style = ("///" if b.never else None), "solid"
        else:
            face, edge, hatch, lw, style = b.color, "#607d8b", None, 0.8, "dashed"
        ax.add_patch(FancyBboxPatch(
            (x, y - 0.36), 0.995 - x, 0.72, boxstyle="round,pad=0,rounding_size=0.01",
            facecolor=face, edgecolor=edge, linewidth=lw, linestyle=style, hatch=hatch,
            mutation_aspect=1 / 30,
        ))
        ink = ink_for(face)
        ax.text(x + 0.008, y - 0.09, b.line1, va="center", ha="left", fontsize=8.5,
                fontweight="bold" if b.row.kind == "node" else "normal", clip_on=True, color=ink)
        if b.line2:
            ax.text(x + 0.008, y + 0.2, b.line2, va="center", ha="left", fontsize=7.5, color=ink, clip_on=True)
        parent = b.row.parent
        if parent is not None and parent in y_of:
            py = y_of[parent]
            px = 0.005 + _INDENT * (b.row.depth - 1) + _INDENT * 0.45
            ax.plot([px, px, x], [py + 0.36, y, y], color="#78909c", linewidth=0.8, zorder=0)


def _draw_bars(axb: Axes, boxes: list[_Box], norm: Normalize, total: float, timed: bool) -> None:
    """Exclusive time (or cost) of each node, on the same rows as the tree."""
    ys = [y for y, b in enumerate(boxes) if b.row.kind == "node"]
    vals = [b.metric for b in boxes if b.row.kind == "node"]
    colors = [TIME_CMAP(norm(100.0 * v / total)) for v in vals]
    axb.barh(ys, vals, height=0.6, color=colors, edgecolor="#555555", linewidth=0.5)
    vmax = max(vals) if vals else 1.0
    for y, v in zip(ys, vals):
        txt = (f"{v:.3g} ms" if timed else f"{v:.4g}") + f"  {100.0 * v / total:.0f}%"
        axb.text(v + vmax * 0.02, y, txt, va="center", ha="left", fontsize=7.5)
    axb.set_xlim(0, vmax * 1.55 if vmax > 0 else 1)
    axb.set_xlabel("exclusive time (ms)" if timed else "exclusive cost (planner units)")
    axb.tick_params(axis="y", left=False, labelleft=False)
    axb.spines[["top", "right"]].set_visible(False)
    axb.grid(axis="x", alpha=0.3)
    axb.set_title("where the time goes" if timed else "where the planner expects the work", fontsize=9)
