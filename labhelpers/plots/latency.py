"""Latency distributions against targets: an ECDF with p50/p95/p99 marked, a box plot on the same axis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .._stats import percentile
from ..errors import LabError
from ._style import WIDTH_IN, shorten

__all__ = ["latency_frame", "plot_latencies"]

# One colour per series, the same in both panels: tab10, then Dark2 beyond 10 series (18 distinct).
_PALETTE = [colormaps["tab10"](i) for i in range(10)] + [colormaps["Dark2"](i) for i in range(8)]
_TARGET = "#d32f2f"

_Stats = tuple[str, float, float, float, int]
"""name, p50, p95, p99, n"""


def latency_frame(samples: Mapping[str, Sequence[float]] | pd.DataFrame | Any) -> pd.DataFrame:
    """Normalise timing samples to a long DataFrame with columns ``name`` and ``ms``.

    :param samples: a dict name -> list of milliseconds; a DataFrame with columns ``name`` and ``ms``;
        or any object with a ``samples`` attribute holding one of those (e.g. a benchmark result).
    Raise LabError if the shape is not recognised or no sample is given.
    """
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
    stats = _draw_ecdf(ax, df, names, tmap)
    _draw_targets(ax, names, tmap)
    fig.legend(handles=ax.get_legend_handles_labels()[0], loc="outside lower center", ncol=1, fontsize=8,
               frameon=False)
    ax.tick_params(labelbottom=False)
    _draw_box(axb, df, stats, tmap)
    axb.set_xlabel("latency (ms)" + (", log scale" if log_scale else ""))
    if log_scale:
        ax.set_xscale("log")
        axb.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axb.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axb.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_xlim(left=0, right=max(hi, max(tmap.values(), default=0)) * 1.08)
    fig.suptitle(title, fontsize=11, fontweight="bold")
    return fig


def _draw_ecdf(ax: Axes, df: pd.DataFrame, names: list[str], tmap: Mapping[str, float]) -> list[_Stats]:
    """One step curve per query with its percentiles marked; returns (name, p50, p95, p99, n) of each."""
    stats = []
    for i, name in enumerate(names):
        v = np.sort(df.loc[df["name"] == name, "ms"].to_numpy())
        c = _PALETTE[i % len(_PALETTE)]
        p50, p95, p99 = (percentile(v.tolist(), q) for q in (50, 95, 99))
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
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("fraction of runs at or below")
    ax.set_title("cumulative distribution (ECDF); markers: ● p50, ■ p95, ▲ p99", fontsize=9)
    ax.grid(alpha=0.3)
    return stats


def _draw_targets(ax: Axes, names: list[str], tmap: Mapping[str, float]) -> None:
    """One dashed red line per distinct target, naming its queries unless it is everyone's."""
    drawn: set[float] = set()
    for name in names:
        if name in tmap and tmap[name] not in drawn:
            drawn.add(tmap[name])
            same = [n for n in names if tmap.get(n) == tmap[name]]
            who = "" if len(same) == len(names) else f" ({', '.join(same)})"
            ax.axvline(tmap[name], color=_TARGET, linestyle="--", linewidth=1.6,
                       label=f"target {tmap[name]:g} ms{who}")
            ax.annotate(f"target {tmap[name]:g} ms", xy=(tmap[name], 0.03), xycoords=("data", "axes fraction"),
                        xytext=(4, 0), textcoords="offset points", rotation=90, va="bottom", ha="left",
                        fontsize=8, color=_TARGET)


def _draw_box(axb: Axes, df: pd.DataFrame, stats: list[_Stats], tmap: Mapping[str, float]) -> None:
    """Box plots (p25-p75, whiskers p1-p99) with p95, p99 and the target marked, first query on top."""
    names = [s[0] for s in stats]
    data = [df.loc[df["name"] == n, "ms"].to_numpy() for n in names]
    pos = list(range(len(names)))[::-1]
    bp = axb.boxplot(data, positions=pos, orientation="horizontal", widths=0.55, whis=(1, 99),
                     showfliers=True, patch_artist=True, flierprops={"markersize": 3, "alpha": 0.5})
    for i, patch in enumerate(bp["boxes"]):
        patch.set_facecolor(_PALETTE[i % len(_PALETTE)])
        patch.set_alpha(0.45)
    for (name, _p50, p95, p99, _), y in zip(stats, pos):
        axb.plot([p95], [y], marker="s", color="black", markersize=5, linestyle="none")
        axb.plot([p99], [y], marker="^", color="black", markersize=5, linestyle="none")
        if name in tmap:
            axb.plot([tmap[name]] * 2, [y - 0.4, y + 0.4], color=_TARGET, linestyle="--", linewidth=1.6)
    axb.set_yticks(pos, [shorten(n, 28) for n in names], fontsize=8.5)
    axb.set_title("box: p25-p75, line p50, whiskers p1-p99; ■ p95, ▲ p99; red dashes: target", fontsize=9)
    axb.grid(axis="x", alpha=0.3)
