"""What every picture shares: width, the status colours and words, the time colour map, number formats."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap, to_rgb

from ..explain.grid import shorten

__all__ = [
    "STATUS_COLORS",
    "STATUS_HELP",
    "TIME_CMAP",
    "WIDTH_IN",
    "byte_unit",
    "human_bytes",
    "ink_for",
    "num",
    "runs_text",
    "shorten",
]

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

STATUS_HELP = {
    "never executed": "never executed: pruned during execution (still locked)",
    "pruned at executor start": "pruned at executor start (Subplans Removed)",
    "pruned at plan time": "pruned at plan time (absent from the plan)",
    "pruned (plan time or executor start)": "pruned before execution (plan time or executor start)",
    "in plan (not executed)": "in the plan (EXPLAIN without ANALYZE)",
}
"""Each partition status in words, for legends."""

TIME_CMAP = ListedColormap(colormaps["YlOrRd"](np.linspace(0.05, 0.75, 256)), name="labhelpers_time")


def num(x: Any) -> str:
    """Row counts for humans: 8,478; 120.33; 1.2M."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "?"
    x = float(x)
    if abs(x) >= 10_000_000:
        return f"{x / 1e6:.1f}M"
    if x == int(x):
        return f"{int(x):,}"
    return f"{x:,.2f}"


def byte_unit(largest: float) -> tuple[str, float]:
    """The unit to show sizes up to ``largest`` bytes in, and its size in bytes."""
    for unit, div in (("GB", 1024.0**3), ("MB", 1024.0**2), ("kB", 1024.0)):
        if largest >= div:
            return unit, div
    return "bytes", 1.0


def human_bytes(b: float) -> str:
    """``40.1 MB``, ``512 bytes``."""
    unit, div = byte_unit(b)
    return f"{b:.0f} bytes" if unit == "bytes" else f"{b / div:.1f} {unit}"


def ink_for(face: Any) -> str:
    """Black or white text, whichever reads better on ``face``."""
    r, g, b = to_rgb(face)
    return "#111111" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def runs_text(names: Sequence[str], runs: Sequence[Sequence[str]] | None) -> str:
    """Partition names as their runs in bound order (`labhelpers.explain.tree.partition_runs`).

    ``a_01 … a_04, a_07, a_08``; without runs (a name not in the catalog) the first names and the last.
    """
    if not names:
        return ""
    if runs is None:
        return ", ".join(names) if len(names) <= 3 else f"{names[0]}, {names[1]} … {names[-1]}"
    parts = [r[0] if len(r) == 1 else (f"{r[0]}, {r[1]}" if len(r) == 2 else f"{r[0]} … {r[-1]}") for r in runs]
    return shorten(", ".join(parts), 110)
