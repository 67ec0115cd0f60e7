"""Statistics the package shares: one definition of a percentile."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import LabError

__all__ = ["percentile"]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    The same definition as numpy's default (``method="linear"``): rank ``(n - 1) * q / 100``.
    Raise LabError if there is no sample or ``q`` is outside 0..100.
    """
    if not samples:
        raise LabError("percentile of no samples")
    if not 0 <= q <= 100:
        raise LabError(f"percentile {q} outside 0..100")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)
