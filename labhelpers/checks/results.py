"""`CheckResult`: the typed outcome of one check, and its one serialisation (`CheckResult.to_dict`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..explain import Plan

__all__ = ["CheckResult"]


@dataclass
class CheckResult:
    """The outcome of one success criterion.

    :param name: the check's stable id (``rls``, ``zero_leakage``...), see `CRITERIA`.
    :param passed: True, False, or None when the check was skipped (``summary`` says why).
    :param summary: one line for the table `labhelpers check` prints.
    :param evidence: what was measured: DataFrames (catalog rows, counts), plans, numbers.
    """

    name: str
    passed: bool | None
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def criterion(self) -> str:
        """The lesson's wording of the criterion."""
        from .registry import CRITERIA  # here, not at the top: the registry imports every check, and they import this

        return CRITERIA.get(self.name, self.name)

    @property
    def status(self) -> str:
        """``PASS``, ``FAIL`` or ``SKIP``."""
        return "SKIP" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: DataFrames become lists of records, plans their summary text."""
        return {
            "name": self.name,
            "criterion": self.criterion,
            "status": self.status,
            "passed": self.passed,
            "summary": self.summary,
            "evidence": {k: _jsonable(v) for k, v in self.evidence.items()},
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        frame = value.reset_index() if not isinstance(value.index, pd.RangeIndex) else value
        frame = frame.astype(object).where(frame.notna(), None)
        return [{str(k): _jsonable(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
    if isinstance(value, Plan):
        return {"query": value.query, "summary": value.summary(), "indexes_used": value.indexes_used}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def first_rows(frame: pd.DataFrame, line: Callable[[pd.Series], str], n: int = 3) -> list[str]:
    """The first ``n`` rows of ``frame``, each as ``line(row)``: what a one-line summary names."""
    return [line(r) for _, r in frame.head(n).iterrows()]


def text_or_none(value: Any) -> str | None:
    """A text read from a DataFrame (a policy expression, a setting): None when absent (pandas may give NaN)."""
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def problems_result(name: str, frame: pd.DataFrame, *, ok: str, bad: str, line: Callable[[pd.Series], str],
                    evidence: str | None = None) -> CheckResult:
    """The result of a check whose evidence is one frame with a ``problems`` column ('' when none).

    Passes when no row has a problem. :param ok: the summary then. :param bad: what the failing rows are
    (``"views bypass the caller's RLS"``), said as "N of M <bad>: " before the first rows, each as
    ``line(row)``. :param evidence: the evidence key (default: ``name``).
    """
    failing = frame[frame["problems"] != ""]
    summary = ok if failing.empty else f"{len(failing)} of {len(frame)} {bad}: " + "; ".join(first_rows(failing, line))
    return CheckResult(name, failing.empty, summary, {evidence or name: frame})
