"""Every picture of the course: plan trees, latency distributions against targets, pruning, sizes.

Drawing only: `labhelpers.explain` prepares the data (the plan tree's rows with never-executed runs
folded, each table's partition layout), `labhelpers.bench` and `labhelpers._stats` the numbers, and
this package draws them. Each function builds a `matplotlib.figure.Figure` with the object API (no
pyplot state, safe with the Agg backend and in a headless grader) and returns it; Jupyter displays a
returned Figure, and ``fig.savefig("plan.png")`` writes it. Figures are sized for a notebook (about 10
inches wide), titled, and every axis says its unit.

matplotlib is imported when this package is: `labhelpers.explain` does not import it, so reading plans
does not pay for it.

Modules: `plan` (`plot_plan`), `latency` (`plot_latencies`, `latency_frame`), `pruning` (`plot_pruning`),
`sizes` (`plot_sizes`); `_style` holds the colours, words and number formats they share.
"""

from __future__ import annotations

from ._style import STATUS_COLORS, WIDTH_IN
from ._style import STATUS_HELP as _STATUS_HELP  # noqa: F401  (the legend's words; tests read them)
from .latency import latency_frame, plot_latencies
from .plan import plot_plan
from .pruning import plot_pruning
from .sizes import plot_sizes

__all__ = ["STATUS_COLORS", "WIDTH_IN", "latency_frame", "plot_latencies", "plot_plan", "plot_pruning", "plot_sizes"]
