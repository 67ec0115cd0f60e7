"""On-disk sizes side by side, with ratios to a baseline."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..errors import LabError
from ._style import WIDTH_IN, byte_unit, human_bytes, shorten

__all__ = ["plot_sizes"]


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
    df = _size_frame(sizes)
    unit, div = byte_unit(float(df["bytes"].max()))
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
        txt = human_bytes(float(b))
        if base and n > 1:
            txt += f"  ({b / base:.2f}x)"
        ax.text(v + vmax * 0.01, float(y), txt, va="center", ha="left", fontsize=8.5)
    ax.set_yticks(ys, [shorten(str(s), 40) for s in df["label"]], fontsize=9)
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


def _size_frame(sizes: Mapping[str, float] | pd.DataFrame) -> pd.DataFrame:
    """Sizes as a DataFrame with columns ``label`` and ``bytes`` (float). Raise LabError if unusable."""
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
    return df
