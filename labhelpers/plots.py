"""Every picture of the course: plan trees, latency distributions against targets, pruning, sizes.

All matplotlib lives here (`labhelpers.explain` and `labhelpers.bench` compute, this module draws).
Each function builds a `matplotlib.figure.Figure` with the object API (no pyplot state, safe with the
Agg backend and in a headless grader) and returns it; Jupyter displays a returned Figure, and
``fig.savefig("plan.png")`` writes it. Figures are sized for a notebook (about 10 inches wide), titled,
and every axis says its unit.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import ListedColormap, Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .explain import PRUNING_STATUSES, Plan

__all__ = ["plot_latencies", "plot_plan", "plot_pruning", "plot_sizes", "latency_frame"]

log = logging.getLogger("labhelpers")

WIDTH_IN = 10.0
STATUS_COLORS = {
    "scanned": "#2e7d32",
    "never executed": "#f9a825",
    "pruned at executor start": "#64b5f6",
    "pruned at plan time": "#cfd8dc",
    "pruned (plan time or executor start)": "#90a4ae",
    "in plan (not executed)": "#a5d6a7",
}
"""Colour of each partition status in `plot_pruning` and `plot_plan`."""

_TIME_CMAP = ListedColormap(colormaps["YlOrRd"](np.linspace(0.05, 0.75, 256)), name="labhelpers_time")
_STATUS_HELP = {
    "never executed": "never executed: pruned during execution (still locked)",
    "pruned at executor start": "pruned at executor start (Subplans Removed)",
    "pruned at plan time": "pruned at plan time (absent from the plan)",
    "pruned (plan time or executor start)": "pruned before execution (plan time or executor start)",
    "in plan (not executed)": "in the plan (EXPLAIN without ANALYZE)",
}
_PRUNED_STATUSES = ("pruned at plan time", "pruned at executor start", "pruned (plan time or executor start)")


# ------------------------------------------------------------------------------------------ plan tree
def plot_plan(
    plan: Plan,
    *,
    title: str | None = None,
    partitions: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
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
    timed = plan.analyzed and df["exclusive_ms"].notna().any()
    metric = df["exclusive_ms"].astype(float) if timed else df["exclusive_cost"].astype(float)
    total = float(metric.fillna(0).sum()) or 1.0
    rows = _plan_rows(plan, df, partitions, collapse_after)

    n = len(rows)
    row_h = 0.46
    fig = Figure(figsize=(WIDTH_IN, max(2.6, 1.5 + n * row_h)), layout="constrained")
    gs = fig.add_gridspec(1, 2, width_ratios=[3.2, 1])
    ax = fig.add_subplot(gs[0, 0])
    axb = fig.add_subplot(gs[0, 1], sharey=ax)
    cmap = _TIME_CMAP
    norm = Normalize(vmin=0, vmax=max(100.0 * float(metric.max() or 0) / total, 1e-9))

    ax.set_xlim(0, 1)
    ax.set_ylim(n - 0.4, -0.6)
    ax.axis("off")
    indent = 0.028
    y_of: dict[int, int] = {}
    for y, r in enumerate(rows):
        x = 0.005 + indent * r["depth"]
        if r["kind"] == "node":
            y_of[r["id"]] = y
            pct = 100.0 * (r["metric"] or 0.0) / total
            face = cmap(norm(pct)) if not r["never"] else "#eeeeee"
            edge = "#b71c1c" if r["slowest"] else "#555555"
            hatch = "///" if r["never"] else None
            lw = 2.0 if r["slowest"] else 0.8
            style = "solid"
        else:
            face, edge, hatch, lw, style = r["color"], "#607d8b", None, 0.8, "dashed"
        box = FancyBboxPatch(
            (x, y - 0.36), 0.995 - x, 0.72, boxstyle="round,pad=0,rounding_size=0.01",
            facecolor=face, edgecolor=edge, linewidth=lw, linestyle=style, hatch=hatch,
            mutation_aspect=1 / 30,
        )
        ax.add_patch(box)
        ink = _ink_for(face)
        ax.text(x + 0.008, y - 0.09, r["line1"], va="center", ha="left", fontsize=8.5,
                fontweight="bold" if r["kind"] == "node" else "normal", clip_on=True, color=ink)
        if r["line2"]:
            ax.text(x + 0.008, y + 0.2, r["line2"], va="center", ha="left", fontsize=7.5, color=ink, clip_on=True)
        parent = r.get("parent")
        if parent is not None and parent in y_of:
            py = y_of[parent]
            px = 0.005 + indent * (r["depth"] - 1) + indent * 0.45
            ax.plot([px, px, x], [py + 0.36, y, y], color="#78909c", linewidth=0.8, zorder=0)

    # the bars: exclusive time (or cost), same rows
    ys = [y for y, r in enumerate(rows) if r["kind"] == "node"]
    vals = [r["metric"] or 0.0 for r in rows if r["kind"] == "node"]
    colors = [cmap(norm(100.0 * v / total)) for v in vals]
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

    if title is None:
        top = plan.root.label()
        if plan.analyzed and plan.execution_ms is not None:
            title = f"Plan: {top} (execution {plan.execution_ms:.2f} ms, planning {plan.planning_ms:.2f} ms)"
        else:
            title = f"Plan (estimates only, no ANALYZE): {top}"
    fig.suptitle(_shorten(title, 110), fontsize=11, fontweight="bold")
    legend = [
        Patch(facecolor=cmap(0.85), edgecolor="#b71c1c", linewidth=2, label="slowest node (red border)"),
    ] if timed else []
    legend += [
        Patch(facecolor="#eeeeee", edgecolor="#555555", hatch="///", label="never executed"),
        Patch(facecolor=STATUS_COLORS["pruned at plan time"], edgecolor="#607d8b", linestyle="dashed",
              label="pruned partitions"),
    ]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(0, 0), ncol=3, fontsize=7.5, frameon=False)
    return fig


def _plan_rows(
    plan: Plan,
    df: pd.DataFrame,
    partitions: Mapping[str, Sequence[str]] | Sequence[str] | None,
    collapse_after: int,
) -> list[dict[str, Any]]:
    """Rows to draw, in tree order: nodes, folded never-executed runs, pruned-partition rows."""
    timed = plan.analyzed and df["exclusive_ms"].notna().any()
    slow = plan.slowest_node()
    slow_id = None if slow is None else int(slow["id"])
    parts = plan.partitions(partitions)
    pruned = parts[parts["status"].isin(_PRUNED_STATUSES)]
    order = list(parts["partition"])
    rows: list[dict[str, Any]] = []

    def node_row(nid: int) -> dict[str, Any]:
        r = df.loc[nid]
        misest = ""
        f = r["misestimate_factor"]
        if f is not None and not pd.isna(f) and f >= 10:
            misest = f"  ! {r['misestimate_direction']}estimated x{f:.0f}"
        if plan.analyzed and r["loops"] == 0:
            line2 = f"never executed   est {_num(r['plan_rows'])} rows"
        elif plan.analyzed:
            line2 = f"rows {_num(r['actual_rows'])} actual / {_num(r['plan_rows'])} est"
            if r["loops"] and r["loops"] > 1:
                line2 += f"   x {int(r['loops'])} loops"
            if r["participants"] and r["participants"] > 1:
                line2 += f"   ({int(r['participants'])} processes)"
            if r["rows_removed_by_filter"] and not pd.isna(r["rows_removed_by_filter"]):
                line2 += f"   removed by filter {_num(r['rows_removed_by_filter'])}"
            if r["sort_space_type"] == "Disk":
                line2 += f"   sort on disk {r['sort_space_kb']:.0f} kB"
            if r["subplans_removed"] and not pd.isna(r["subplans_removed"]):
                line2 += f"   Subplans Removed: {int(r['subplans_removed'])}"
            line2 += misest
        else:
            line2 = f"est {_num(r['plan_rows'])} rows   cost {r['total_cost']:.1f}"
        head = r["label"]
        if isinstance(r["subplan_name"], str) and r["subplan_name"]:
            head = f"[{r['subplan_name']}] {head}"
        return {
            "kind": "node", "id": nid, "depth": int(r["depth"]), "parent": None if pd.isna(r["parent"]) else int(r["parent"]),
            "line1": _shorten(head, 95 - 3 * int(r["depth"]) - (13 if nid == slow_id else 0))
            + ("   <- slowest" if nid == slow_id else ""),
            "line2": line2,
            "metric": float(r["exclusive_ms"] if timed else (r["exclusive_cost"] or 0.0)),
            "never": bool(plan.analyzed and r["loops"] == 0), "slowest": nid == slow_id,
        }

    def visit(node: Any) -> None:
        rows.append(node_row(node.id))
        kids = node.children
        i = 0
        while i < len(kids):
            j = i
            while j < len(kids) and kids[j].never_executed and kids[j].relationship == "Member":
                j += 1
            if j - i > collapse_after:
                names = [k.raw.get("Relation Name") or k.node_type for k in kids[i:j]]
                rows.append({
                    "kind": "folded", "depth": node.depth + 1, "parent": node.id, "color": "#eeeeee",
                    "line1": f"{j - i} partitions never executed (pruned during execution)",
                    "line2": _name_range(names, order),
                })
                i = j
                continue
            visit(kids[i])
            i += 1
        if node.raw.get("Node Type") in ("Append", "Merge Append"):
            tables = {parts.loc[parts["node_id"] == k.id, "table"].iloc[0]
                      for k in node.walk() if (parts["node_id"] == k.id).any()}
            if not tables and node.raw.get("Subplans Removed"):
                tables = set(pruned["table"])
            for table in sorted(tables):
                mine = pruned[pruned["table"] == table]
                for status, grp in mine.groupby("status", sort=False):
                    names = [p for p in grp["partition"] if not p.startswith("(removed")]
                    rows.append({
                        "kind": "pruned", "depth": node.depth + 1, "parent": node.id,
                        "color": STATUS_COLORS[str(status)],
                        "line1": f"{len(grp)} partitions of {table} {status}",
                        "line2": _name_range(names, order) if names else "which ones: EXPLAIN only gives the count",
                    })

    visit(plan.root)
    return rows


# ------------------------------------------------------------------------------------------ latencies
def latency_frame(samples: Mapping[str, Sequence[float]] | pd.DataFrame | Any) -> pd.DataFrame:
    """Normalise timing samples to a long DataFrame with columns ``name`` and ``ms``.

    :param samples: a dict name -> list of milliseconds; a DataFrame with columns ``name`` and ``ms``;
        or any object with a ``samples`` attribute holding one of those (e.g. a benchmark result).
    Raise LabError if the shape is not recognised or no sample is given.
    """
    from .errors import LabError

    if hasattr(samples, "samples") and not isinstance(samples, (pd.DataFrame, Mapping)):
        samples = samples.samples
    if isinstance(samples, pd.DataFrame):
        if not {"name", "ms"} <= set(samples.columns):
            raise LabError("latency samples: a DataFrame needs columns 'name' and 'ms'")
        df = samples[["name", "ms"]].copy()
    elif isinstance(samples, Mapping):
        df = pd.DataFrame(
            [(str(k), float(v)) for k, vs in samples.items() for v in vs], columns=["name", "ms"]
        )
    else:
        raise LabError("latency samples: expected a dict name -> list of ms, or a DataFrame (name, ms)")
    df["ms"] = df["ms"].astype(float)
    df = df[np.isfinite(df["ms"])]
    if df.empty:
        raise LabError("latency samples: no timing to plot")
    return df


def plot_latencies(
    samples: Mapping[str, Sequence[float]] | pd.DataFrame | Any,
    *,
    targets: float | Mapping[str, float] | None = None,
    title: str = "Query latency",
    log_scale: bool | None = None,
) -> Figure:
    """Show each query's timing distribution: ECDF on top, box plot below, same millisecond axis.

    p50, p95 and p99 are marked on every curve and listed in the legend; the target (a latency budget,
    e.g. the lesson's "< 50 ms") is a dashed red line, per query when ``targets`` is a dict, and each
    legend entry says whether p95 meets it.

    :param samples: dict name -> list of ms samples, or a DataFrame with columns ``name`` and ``ms``
        (one row per timing), or an object with a ``samples`` attribute holding one of those.
    :param targets: one budget in ms for all queries, or a dict name -> ms (missing names: no target).
    :param title: the figure title.
    :param log_scale: log x axis; default: when the slowest sample is 30x the fastest.
    Returns the Figure.
    Raise LabError if no sample is given.
    """
    df = latency_frame(samples)
    names = list(dict.fromkeys(df["name"]))
    if isinstance(targets, Mapping):
        tmap = {str(k): float(v) for k, v in targets.items()}
    elif targets is not None:
        tmap = {n: float(targets) for n in names}
    else:
        tmap = {}
    lo, hi = float(df["ms"].min()), float(df["ms"].max())
    if log_scale is None:
        log_scale = lo > 0 and hi / lo > 30

    fig = Figure(figsize=(WIDTH_IN, 3.4 + 0.45 * len(names) + 2.6 + 0.2 * len(names)), layout="constrained")
    gs = fig.add_gridspec(2, 1, height_ratios=[2.6, 0.5 + 0.45 * len(names)])
    ax = fig.add_subplot(gs[0])
    axb = fig.add_subplot(gs[1], sharex=ax)
    # One colour per series, the same in both panels: tab10, then Dark2 beyond 10 series (18 distinct).
    palette = [colormaps["tab10"](i) for i in range(10)] + [colormaps["Dark2"](i) for i in range(8)]
    stats = []
    for i, name in enumerate(names):
        v = np.sort(df.loc[df["name"] == name, "ms"].to_numpy())
        c = palette[i % len(palette)]
        p50, p95, p99 = (float(np.percentile(v, q)) for q in (50, 95, 99))
        stats.append((name, p50, p95, p99, len(v)))
        y = np.arange(1, len(v) + 1) / len(v)
        verdict = ""
        if name in tmap:
            verdict = "  meets target" if p95 <= tmap[name] else "  MISSES target"
        ax.step(v, y, where="post", color=c, linewidth=1.8,
                label=f"{name}: p50 {p50:.3g} / p95 {p95:.3g} / p99 {p99:.3g} ms (n={len(v)}){verdict}")
        for q, val, mk in ((0.50, p50, "o"), (0.95, p95, "s"), (0.99, p99, "^")):
            ax.plot([val], [q], marker=mk, color=c, markersize=6, markeredgecolor="black", linestyle="none")
    for q, lab, dy in ((0.5, "p50", 0), (0.95, "p95", -4), (0.99, "p99", 4)):
        ax.axhline(q, color="#9e9e9e", linewidth=0.6, linestyle=":")
        ax.annotate(lab, xy=(1.0, q), xycoords=("axes fraction", "data"), xytext=(3, dy),
                    textcoords="offset points", va="center", fontsize=8, color="#616161")
    drawn: set[float] = set()
    for name in names:
        if name in tmap and tmap[name] not in drawn:
            drawn.add(tmap[name])
            same = [n for n in names if tmap.get(n) == tmap[name]]
            who = "" if len(same) == len(names) else f" ({', '.join(same)})"
            ax.axvline(tmap[name], color="#d32f2f", linestyle="--", linewidth=1.6,
                       label=f"target {tmap[name]:g} ms{who}")
            ax.annotate(f"target {tmap[name]:g} ms", xy=(tmap[name], 0.03), xycoords=("data", "axes fraction"),
                        xytext=(4, 0), textcoords="offset points", rotation=90, va="bottom", ha="left",
                        fontsize=8, color="#d32f2f")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("fraction of runs at or below")
    ax.set_title("cumulative distribution (ECDF); markers: ● p50, ■ p95, ▲ p99", fontsize=9)
    ax.grid(alpha=0.3)
    fig.legend(handles=ax.get_legend_handles_labels()[0], loc="outside lower center", ncol=1, fontsize=8,
               frameon=False)
    ax.tick_params(labelbottom=False)

    data = [df.loc[df["name"] == n, "ms"].to_numpy() for n in names]
    pos = list(range(len(names)))[::-1]
    bp = axb.boxplot(data, positions=pos, orientation="horizontal", widths=0.55, whis=(1, 99),
                     showfliers=True, patch_artist=True, flierprops={"markersize": 3, "alpha": 0.5})
    for i, patch in enumerate(bp["boxes"]):
        patch.set_facecolor(palette[i % len(palette)])
        patch.set_alpha(0.45)
    for (name, p50, p95, p99, _), y in zip(stats, pos):
        axb.plot([p95], [y], marker="s", color="black", markersize=5, linestyle="none")
        axb.plot([p99], [y], marker="^", color="black", markersize=5, linestyle="none")
        if name in tmap:
            axb.plot([tmap[name]] * 2, [y - 0.4, y + 0.4], color="#d32f2f", linestyle="--", linewidth=1.6)
    axb.set_yticks(pos, [_shorten(n, 28) for n in names], fontsize=8.5)
    axb.set_xlabel("latency (ms)" + (", log scale" if log_scale else ""))
    axb.set_title("box: p25-p75, line p50, whiskers p1-p99; ■ p95, ▲ p99; red dashes: target", fontsize=9)
    axb.grid(axis="x", alpha=0.3)
    if log_scale:
        ax.set_xscale("log")
        axb.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axb.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axb.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_xlim(left=0, right=max(hi, max(tmap.values(), default=0)) * 1.08)
    fig.suptitle(title, fontsize=11, fontweight="bold")
    return fig


# ------------------------------------------------------------------------------------------ pruning
_LIST_MAX = 24
"""Up to this many partitions (single level), `plot_pruning` draws one labelled bar per partition."""
_MONTH_LEAF = re.compile(r"^(?P<base>.+?)_(?P<y>\d{4})_(?P<m>\d{2})(?:_(?P<sub>[A-Za-z]*)(?P<k>\d+))?$")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_NO_CELL = "no such partition"
_CELL_H_IN = 0.34


def plot_pruning(
    plan: Plan,
    *,
    partitions: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
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
        fig = Figure(figsize=(WIDTH_IN, 2.0), layout="constrained")
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "No partitioned table in this plan: nothing to prune.", ha="center", va="center",
                fontsize=11)
        fig.suptitle(title or "Partition pruning", fontsize=11, fontweight="bold")
        return fig
    summary = plan.pruning_summary(partitions)
    layouts = [_pruning_layout(parts[parts["table"] == t].reset_index(drop=True)) for t in tables]
    heights = [_layout_height(lay) for lay in layouts]
    fig = Figure(figsize=(WIDTH_IN, sum(heights) + 1.1), layout="constrained")
    axes = fig.subplots(len(tables), 1, squeeze=False, height_ratios=heights)[:, 0]
    rows_of = _rows_read(plan, parts)
    missing = False
    for ax, table, lay in zip(axes, tables, layouts):
        pad = 6.0
        if lay["kind"] == "list":
            _draw_pruning_list(ax, lay, rows_of)
        else:
            gaps, listed = _draw_pruning_grid(ax, lay, rows_of)
            missing |= gaps
            pad = 17.0 if listed else pad
        counts = summary.loc[table]
        ax.set_title(f"{table}: {_pruning_counts(counts, plan.analyzed)}", fontsize=9.5, loc="left", pad=pad)
    present = set(parts["status"])
    handles = [Patch(facecolor=STATUS_COLORS[s], edgecolor="#455a64", label=_STATUS_HELP.get(s, s))
               for s in PRUNING_STATUSES if s in present]
    if missing:
        handles.append(Patch(facecolor="white", edgecolor="#455a64", label=_NO_CELL))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 2), fontsize=8.5,
               frameon=False)
    if title is None:
        title = "Partition pruning"
        if plan.query:
            title += f": {_shorten(' '.join(plan.query.split()), 80)}"
    fig.suptitle(_shorten(title, 110), fontsize=11, fontweight="bold")
    return fig


def _pruning_counts(counts: pd.Series, analyzed: bool) -> str:
    """``scanned 1 of 164 partitions; 163 pruned at plan time`` (the other statuses, commas between)."""
    total = int(counts["total"])
    rest = ", ".join(f"{int(counts[s])} {s}" for s in PRUNING_STATUSES if counts[s] and s != "scanned")
    head = f"scanned {int(counts['scanned'])} of {total} partitions" if analyzed else f"{total} partitions"
    return head + (f"; {rest}" if rest else "")


def _rows_read(plan: Plan, parts: pd.DataFrame) -> dict[str, float]:
    """Partition -> rows its scan returned (all loops), for the scanned ones."""
    if not plan.analyzed:
        return {}
    df = plan.nodes
    out: dict[str, float] = {}
    for name, status, nid in zip(parts["partition"], parts["status"], parts["node_id"]):
        if status == "scanned" and nid is not None and not pd.isna(nid):
            out[str(name)] = float(df.loc[int(nid), "actual_rows_total"] or 0)
    return out


def _pruning_layout(mine: pd.DataFrame) -> dict[str, Any]:
    """How to draw one table's partitions: a list of bars, or a grid of cells (with its labels).

    Returns a dict with ``kind`` (``list``, ``two_level``, ``year_month``, ``wrapped``), ``names`` and
    ``status`` (in catalog order) and, for grids, ``cells`` (row x column of indexes into ``names``, -1
    where there is no partition), ``row_labels``, ``col_labels``, ``row_title``, ``col_title`` and
    ``year_cols`` (columns that start a year, for month axes).
    """
    names = [str(n) for n in mine["partition"]]
    status = [str(s) for s in mine["status"]]
    base: dict[str, Any] = {"names": names, "status": status}
    n = len(names)
    parent = list(mine["parent"]) if "parent" in mine.columns else None
    grouped = _two_level_by_parent(names, parent) if parent is not None else _two_level_by_name(names)
    if grouped is not None:
        return {**base, "kind": "two_level", **grouped}
    if n <= _LIST_MAX:
        return {**base, "kind": "list"}
    ym = [_MONTH_LEAF.match(x) for x in names]
    if all(m is not None and m.group("sub") is None for m in ym):
        keys = [(int(m.group("y")), int(m.group("m"))) for m in ym if m is not None]
        years = list(range(min(k[0] for k in keys), max(k[0] for k in keys) + 1))
        cells = np.full((len(years), 12), -1)
        for i, (y, mo) in enumerate(keys):
            cells[years.index(y), mo - 1] = i
        return {**base, "kind": "year_month", "cells": cells, "row_labels": [str(y) for y in years],
                "col_labels": list(_MONTHS), "row_title": "year", "col_title": "month", "year_cols": []}
    ncols = 20 if n > 40 else math.ceil(n / 2)
    nrows = math.ceil(n / ncols)
    cells = np.full((nrows, ncols), -1)
    cells.flat[:n] = np.arange(n)
    return {**base, "kind": "wrapped", "cells": cells,
            "row_labels": [_shorten(names[r * ncols], 28) for r in range(nrows)],
            "col_labels": [f"+{c}" for c in range(ncols)], "row_title": "first partition of the row",
            "col_title": "position in the row (catalog order)", "year_cols": []}


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
    return {"cells": cells, "row_labels": [f"{a}{k}" for a, k in subs], "col_labels": _month_ticks(months),
            "row_title": "sub-partition", "col_title": "month (bound order)",
            "year_cols": [c for c, (_, mo) in enumerate(months) if mo == 1 and c > 0]}


def _two_level_by_parent(names: Sequence[str], parents: Sequence[Any]) -> dict[str, Any] | None:
    """Grid from the catalog's parent of each leaf: one column per parent, one row per position in it."""
    if any(p is None or (isinstance(p, float) and math.isnan(p)) for p in parents) or len(set(parents)) < 2:
        return None
    order = list(dict.fromkeys(str(p) for p in parents))
    month = {p: _MONTH_LEAF.match(p) for p in order}
    if all(m is not None and m.group("sub") is None for m in month.values()):
        order.sort(key=lambda p: (int(month[p].group("y")), int(month[p].group("m"))))  # type: ignore[union-attr]
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
        row_labels.append(suffix or _shorten(leaf, 20))
    if all(m is not None for m in month.values()):
        months = [(int(month[p].group("y")), int(month[p].group("m"))) for p in order]  # type: ignore[union-attr]
        col_labels = _month_ticks(months)
        year_cols = [c for c, (_, mo) in enumerate(months) if mo == 1 and c > 0]
    else:
        col_labels, year_cols = [_shorten(p, 16) for p in order], []
    return {"cells": cells, "row_labels": row_labels, "col_labels": col_labels, "row_title": "sub-partition",
            "col_title": "parent partition (bound order)", "year_cols": year_cols}


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
        labels.append(f"{_MONTHS[m - 1]}\n{y}" if with_year else _MONTHS[m - 1])
    return labels


def _layout_height(lay: Mapping[str, Any]) -> float:
    """Inches one table's panel needs."""
    if lay["kind"] == "list":
        return max(1.2, 0.3 * len(lay["names"])) + 0.9
    nrows = lay["cells"].shape[0]
    scanned = sum(s == "scanned" for s in lay["status"])
    return nrows * _CELL_H_IN + 1.3 + (0.25 if scanned else 0.0)


def _draw_pruning_list(ax: Any, lay: Mapping[str, Any], rows_of: Mapping[str, float]) -> None:
    """One labelled bar per partition (short single-level trees)."""
    names, status = lay["names"], lay["status"]
    n = len(names)
    ys = np.arange(n)
    ax.barh(ys, [1.0] * n, height=0.82, color=[STATUS_COLORS[s] for s in status], edgecolor="#455a64",
            linewidth=0.6)
    for y, name, s in zip(ys, names, status):
        r = rows_of.get(name)
        txt = _STATUS_HELP.get(s, s) if r is None or s != "scanned" else f"{s}: {_num(r)} rows"
        ax.text(0.02, y, txt, va="center", ha="left", fontsize=8.5, color=_ink_for(STATUS_COLORS[s]))
    ax.set_yticks(ys, names, fontsize=8.5)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_xticks([])
    ax.spines[["top", "right", "bottom"]].set_visible(False)
    ax.set_ylabel("partition (bound order)", fontsize=8.5)


def _draw_pruning_grid(ax: Any, lay: Mapping[str, Any], rows_of: Mapping[str, float]) -> tuple[bool, bool]:
    """The cells of one table as one pcolormesh, scanned partitions listed just above.

    Returns (some cells stand for no partition, e.g. a missing month; not the padding of a wrapped grid;
    a line of scanned partitions was written above the grid).
    """
    cells = lay["cells"]
    names, status = lay["names"], lay["status"]
    code = {s: i for i, s in enumerate(PRUNING_STATUSES)}
    values = np.ma.masked_less(np.where(cells >= 0, [[code[status[i]] if i >= 0 else -1 for i in row]
                                                     for row in cells], -1), 0)
    cmap = ListedColormap([STATUS_COLORS[s] for s in PRUNING_STATUSES], name="labhelpers_pruning").with_extremes(
        bad="white")
    nrows, ncols = cells.shape
    ax.pcolormesh(np.arange(ncols + 1), np.arange(nrows + 1), values, cmap=cmap,
                  norm=Normalize(vmin=-0.5, vmax=len(PRUNING_STATUSES) - 0.5), edgecolors="white",
                  linewidth=1.0 if ncols <= 60 else 0.4)
    for c in lay["year_cols"]:
        ax.axvline(c, color="#263238", linewidth=1.2)
    ax.set_xlim(0, ncols)
    ax.set_ylim(nrows, 0)
    ax.set_yticks(np.arange(nrows) + 0.5, lay["row_labels"], fontsize=8.5)
    ticks = [c for c, lab in enumerate(lay["col_labels"]) if lab]
    ax.set_xticks(np.array(ticks) + 0.5, [lay["col_labels"][c] for c in ticks], fontsize=8)
    ax.tick_params(length=2)
    ax.set_ylabel(lay["row_title"], fontsize=8.5)
    ax.set_xlabel(lay["col_title"], fontsize=8.5)
    ax.spines[:].set_visible(False)
    scanned = [x for x, s in zip(names, status) if s == "scanned"]
    if scanned:
        busiest = sorted(scanned, key=lambda x: -rows_of.get(x, 0.0))[:3]
        shown = [f"{x} ({_num(rows_of[x])} rows)" if x in rows_of else x for x in busiest]
        more = f" and {len(scanned) - 3} more" if len(scanned) > 3 else ""
        total = f", {_num(sum(rows_of.get(x, 0.0) for x in scanned))} rows in all" if rows_of and more else ""
        ax.annotate(f"scanned{total}: " + ", ".join(shown) + more, xy=(0, 1), xycoords="axes fraction",
                    xytext=(0, 3), textcoords="offset points", ha="left", va="bottom", fontsize=8,
                    color=STATUS_COLORS["scanned"], annotation_clip=False)
    return lay["kind"] != "wrapped" and bool((cells < 0).any()), bool(scanned)


# ------------------------------------------------------------------------------------------ sizes
def plot_sizes(
    sizes: Mapping[str, float] | pd.DataFrame,
    *,
    title: str = "Relation and index sizes",
    baseline: str | None = None,
) -> Figure:
    """Compare on-disk sizes side by side (e.g. GIN jsonb_ops vs jsonb_path_ops, UUIDv4 vs v7 primary keys).

    :param sizes: a dict label -> bytes, or a DataFrame with columns ``label`` and ``bytes`` (and an
        optional ``group`` column: bars of one group share a colour and the legend names the group).
    :param title: the figure title.
    :param baseline: label the ratios are relative to (default: the smallest).
    Returns the Figure.
    Raise LabError if there is nothing to plot or a size is negative.
    """
    from .errors import LabError

    if isinstance(sizes, pd.DataFrame):
        if not {"label", "bytes"} <= set(sizes.columns):
            raise LabError("sizes: a DataFrame needs columns 'label' and 'bytes'")
        df = sizes.copy()
    elif isinstance(sizes, Mapping):
        df = pd.DataFrame({"label": [str(k) for k in sizes], "bytes": [float(v) for v in sizes.values()]})
    else:
        raise LabError("sizes: expected a dict label -> bytes or a DataFrame (label, bytes)")
    if df.empty:
        raise LabError("sizes: nothing to plot")
    df["bytes"] = df["bytes"].astype(float)
    if (df["bytes"] < 0).any():
        raise LabError("sizes: a size is negative")
    unit, div = _byte_unit(float(df["bytes"].max()))
    base = float(df.loc[df["label"] == baseline, "bytes"].iloc[0]) if baseline in set(df["label"]) else None
    if base is None:
        positive = df.loc[df["bytes"] > 0, "bytes"]
        base = float(positive.min()) if not positive.empty else None
    n = len(df)
    fig = Figure(figsize=(WIDTH_IN, 1.4 + 0.5 * n), layout="constrained")
    ax = fig.add_subplot()
    ys = np.arange(n)
    palette = colormaps["tab10"]
    if "group" in df.columns:
        groups = list(dict.fromkeys(df["group"].astype(str)))
        colors = [palette(groups.index(str(g)) % 10) for g in df["group"]]
    else:
        groups, colors = [], [palette(0)] * n
    vals = df["bytes"].to_numpy() / div
    ax.barh(ys, vals, height=0.6, color=colors, edgecolor="#37474f", linewidth=0.5)
    vmax = float(vals.max()) or 1.0
    for y, v, b in zip(ys, vals, df["bytes"]):
        txt = _human_bytes(float(b))
        if base and n > 1:
            txt += f"  ({b / base:.2f}x)"
        ax.text(v + vmax * 0.01, y, txt, va="center", ha="left", fontsize=8.5)
    ax.set_yticks(ys, [_shorten(str(s), 40) for s in df["label"]], fontsize=9)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, vmax * 1.3)
    ax.set_xlabel(f"size on disk ({unit})")
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if groups:
        ax.legend(handles=[Patch(facecolor=palette(i % 10), label=g) for i, g in enumerate(groups)],
                  fontsize=8, loc="lower right")
    ratio_note = f"; ratios vs {baseline}" if baseline in set(df["label"]) else "; ratios vs the smallest"
    fig.suptitle(title + (ratio_note if n > 1 else ""), fontsize=11, fontweight="bold")
    return fig


# ------------------------------------------------------------------------------------------ helpers
def _num(x: Any) -> str:
    """Row counts for humans: 8,478; 120.33; 1.2M."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "?"
    x = float(x)
    if abs(x) >= 10_000_000:
        return f"{x / 1e6:.1f}M"
    if x == int(x):
        return f"{int(x):,}"
    return f"{x:,.2f}"


def _byte_unit(largest: float) -> tuple[str, float]:
    for unit, div in (("GB", 1024.0**3), ("MB", 1024.0**2), ("kB", 1024.0)):
        if largest >= div:
            return unit, div
    return "bytes", 1.0


def _human_bytes(b: float) -> str:
    unit, div = _byte_unit(b)
    return f"{b:.0f} bytes" if unit == "bytes" else f"{b / div:.1f} {unit}"


def _shorten(text: str, width: int) -> str:
    text = str(text)
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def _ink_for(face: Any) -> str:
    """Black or white text, whichever reads better on ``face``."""
    r, g, b = to_rgb(face)
    return "#111111" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _name_range(names: Sequence[str], order: Sequence[str] | None = None) -> str:
    """Names as contiguous runs in ``order`` (bound order): ``a_01 … a_04, a_07 … a_11``."""
    if not names:
        return ""
    pos = {n: i for i, n in enumerate(order or [])}
    if not all(n in pos for n in names):
        return ", ".join(names) if len(names) <= 3 else f"{names[0]}, {names[1]} … {names[-1]}"
    idx = sorted(pos[n] for n in names)
    runs: list[list[int]] = [[idx[0], idx[0]]]
    for i in idx[1:]:
        if i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    rev = list(order or [])
    parts = [rev[a] if a == b else (f"{rev[a]}, {rev[b]}" if b == a + 1 else f"{rev[a]} … {rev[b]}") for a, b in runs]
    return _shorten(", ".join(parts), 110)
