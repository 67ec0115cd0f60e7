"""`Plan`: a parsed EXPLAIN (FORMAT JSON) plan, its node table, and the facts a student reads first."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..errors import LabError
from .derive import build_tree, derive_figures
from .frame import node_frame, printable_table, spill_of
from .node import Node, buffers_of
from .pruning import (
    PRUNING_STATUSES,
    PartitionSpec,
    partition_frame,
    pruning_counts,
    resolve_catalog,
)

__all__ = ["Plan"]


class Plan:
    """A parsed EXPLAIN (FORMAT JSON) plan with derived figures.

    Build one with `explain` (runs the statement) or `Plan.from_json` (a saved plan).

    Attributes: ``raw`` (the JSON object), ``root`` (the top `Node`), ``analyzed``, ``planning_ms``,
    ``execution_ms``, ``triggers`` (list of dicts: name, relation, time_ms, calls), ``jit`` (dict or None),
    ``settings`` (non-default planner settings), ``planning_buffers``, ``query`` (if known),
    ``catalog_partitions`` (partitioned table -> its leaf partitions, when known).
    """

    def __init__(
        self,
        raw: Mapping[str, Any],
        *,
        query: str | None = None,
        partitions: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Parse one EXPLAIN JSON object (the element of the one-element list EXPLAIN returns).

        :param raw: ``{"Plan": {...}, "Planning Time": ..., ...}``.
        :param query: the statement's text, for titles.
        :param partitions: partitioned table -> all its leaf partitions (see `Plan.partitions`).
        Raise LabError if ``raw`` is not an EXPLAIN plan.
        """
        if not isinstance(raw, Mapping) or not isinstance(raw.get("Plan"), Mapping):
            raise LabError("not an EXPLAIN (FORMAT JSON) plan: expected an object with a 'Plan' key")
        self.raw: dict[str, Any] = dict(raw)
        self.query = query
        self.catalog_partitions: dict[str, list[str]] = {k: list(v) for k, v in (partitions or {}).items()}
        self.settings: dict[str, str] = dict(raw.get("Settings") or {})
        self.planning_ms: float | None = raw.get("Planning Time")
        self.execution_ms: float | None = raw.get("Execution Time")
        self.jit: dict[str, Any] | None = raw.get("JIT")
        self.planning_buffers: dict[str, int] = buffers_of(raw.get("Planning") or {})
        self.triggers: list[dict[str, Any]] = [
            {
                "name": t.get("Trigger Name"),
                "constraint": t.get("Constraint Name"),
                "relation": t.get("Relation"),
                "time_ms": t.get("Time"),
                "calls": t.get("Calls"),
            }
            for t in raw.get("Triggers") or []
        ]
        self._nodes: list[Node] = build_tree(raw["Plan"], self.settings)
        self.root = self._nodes[0]
        self.analyzed = "Actual Loops" in raw["Plan"]
        derive_figures(self._nodes, analyzed=self.analyzed)
        self._frame: pd.DataFrame | None = None

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_json(
        cls,
        source: str | bytes | Mapping[str, Any] | Sequence[Any],
        *,
        query: str | None = None,
        partitions: Mapping[str, Sequence[str]] | None = None,
    ) -> Plan:
        """Read a saved plan: JSON text (also as psql prints it, with header and ``+`` continuations) or parsed.

        :param source: text, bytes, the list EXPLAIN returns, or its single object.
        :param query: the statement's text, if known.
        :param partitions: partitioned table -> leaf partitions, to tell plan-time pruning apart.
        Raise LabError if the source is not an EXPLAIN (FORMAT JSON) plan.
        """
        obj: Any = source
        if isinstance(source, bytes):
            source = source.decode()
        if isinstance(source, str):
            obj = _parse_json_text(source)
        if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
            if len(obj) != 1:
                raise LabError(f"expected one EXPLAIN plan, got a list of {len(obj)}")
            obj = obj[0]
        if not isinstance(obj, Mapping):
            raise LabError("not an EXPLAIN (FORMAT JSON) plan")
        return cls(obj, query=query, partitions=partitions)

    def to_json(self) -> str:
        """The plan as EXPLAIN printed it (a one-element JSON list), e.g. to save next to a notebook."""
        return json.dumps([self.raw], indent=2)

    # ---------------------------------------------------------------- the table
    @property
    def node_list(self) -> list[Node]:
        """All nodes in EXPLAIN's order (depth first), ids 0..n-1."""
        return list(self._nodes)

    @property
    def nodes(self) -> pd.DataFrame:
        """One row per node, indexed by node id; the columns are documented in `NODE_COLUMNS`."""
        if self._frame is None:
            self._frame = node_frame(self._nodes)
        return self._frame

    def table(self, *, max_label: int = 90) -> pd.DataFrame:
        """A compact, printable view of `nodes`: indented labels, rows, loops, times.

        :param max_label: truncate labels to this many characters.
        Returns a DataFrame meant for display (strings and numbers), one row per node.
        """
        return printable_table(self.nodes, analyzed=self.analyzed, max_label=max_label)

    # ---------------------------------------------------------------- derived facts
    @property
    def indexes_used(self) -> list[str]:
        """Names of the indexes the plan uses (executed or not), in plan order, without duplicates."""
        return list(dict.fromkeys(n.index for n in self._nodes if n.index))

    def index_scans(self) -> pd.DataFrame:
        """Rows of `nodes` that use an index (Index, Index Only, Bitmap Index Scans)."""
        return self.nodes[self.nodes["index"].notna()]

    def seq_scans(self, *, min_rows: float = 10_000) -> pd.DataFrame:
        """Sequential scans that read at least ``min_rows`` rows (kept plus removed by filter).

        :param min_rows: the size that makes a scan "large"; without ANALYZE the estimate is used.
        Returns rows of `nodes`, with an extra column ``rows_read``.
        """
        df = self.nodes[self.nodes["node_type"].str.endswith("Seq Scan")].copy()
        if self.analyzed:
            df["rows_read"] = df["actual_rows_total"].fillna(0) + df["rows_removed_by_filter"].fillna(0)
        else:
            df["rows_read"] = df["plan_rows"] * df["participants"]
        return df[df["rows_read"] >= min_rows]

    def slowest_node(self) -> pd.Series | None:
        """The node with the largest exclusive time (a row of `nodes`), None without ANALYZE timing."""
        df = self.nodes
        if df["exclusive_ms"].isna().all():
            return None
        return df.iloc[int(df["exclusive_ms"].astype(float).argmax())]

    def worst_misestimate(self) -> pd.Series | None:
        """The executed node whose row estimate is furthest off (a row of `nodes`), None without ANALYZE."""
        df = self.nodes[self.nodes["misestimate_factor"].notna()]
        if df.empty:
            return None
        key = df["misestimate_factor"].astype(float) * 1e6 + df["actual_rows_total"].fillna(0).astype(float) / 1e12
        return df.iloc[int(key.argmax())]

    def spills(self) -> pd.DataFrame:
        """Nodes that spilled to disk: sorts on disk, hashes with several batches, hash aggregates with disk usage.

        Returns rows of `nodes` with an extra ``spill`` column describing it (``external merge, 7472 kB``).
        """
        df = self.nodes
        out = df.assign(spill=pd.Series([spill_of(r) for _, r in df.iterrows()], index=df.index, dtype=object))
        return out[out["spill"].notna()]

    # ---------------------------------------------------------------- partitions
    def partitions(self, partitions: PartitionSpec = None) -> pd.DataFrame:
        """Every partition of the partitioned tables in the plan, scanned or pruned, and how.

        :param partitions: all leaf partitions per partitioned table (``{"activities": [...]}``), or a flat
            list for one table; default: what `explain` read from the catalog, if anything. Without it,
            partitions pruned at plan time cannot be seen (they are absent from the plan) and only the
            partitions in the plan are listed.
        Returns a DataFrame with columns table, partition, status (one of `PRUNING_STATUSES`), node_id.
        When both kinds of pruning happened on one table, EXPLAIN does not say which absent partition
        went at which moment: those get ``pruned (plan time or executor start)``. A table whose partitions
        were all pruned at plan time leaves no trace in the plan and is not listed.
        """
        catalog = resolve_catalog(self._nodes, self.catalog_partitions, partitions)
        return partition_frame(self._nodes, catalog, analyzed=self.analyzed)

    def pruning_summary(self, partitions: PartitionSpec = None) -> pd.DataFrame:
        """Per partitioned table: how many partitions in total, scanned, never executed, pruned by kind.

        :param partitions: as in `Plan.partitions`.
        Returns a DataFrame indexed by table with one column per status (counts) and ``total``.
        """
        return pruning_counts(self.partitions(partitions))

    # ---------------------------------------------------------------- text
    def summary(self) -> str:
        """A few lines a student reads first: timings, slowest node, worst misestimate, scans, pruning."""
        lines = self._timing_lines() if self.analyzed else [
            f"estimates only (no ANALYZE): total cost {self.root.raw.get('Total Cost')}"
        ]
        lines.append("indexes used: " + (", ".join(self.indexes_used) or "none"))
        seq = self.seq_scans()
        if not seq.empty:
            lines.append(
                "large sequential scans: "
                + ", ".join(f"{r} ({n:,.0f} rows)" for r, n in zip(seq["relation"], seq["rows_read"]))
            )
        for table, r in self.pruning_summary().iterrows():
            parts = [f"{r[s]} {s}" for s in PRUNING_STATUSES if r[s]]
            lines.append(f"partitions of {table}: " + ", ".join(parts))
        for _, r in self.spills().iterrows():
            lines.append(f"spill to disk: #{r['id']} {r['label']}: {r['spill']}")
        for t in self.triggers:
            lines.append(f"trigger {t['name']} on {t['relation']}: {t['time_ms']:.3f} ms, {t['calls']} calls")
        if self.jit:
            total = (self.jit.get("Timing") or {}).get("Total")
            total_ms = total.get("Total") if isinstance(total, Mapping) else total
            lines.append(f"JIT: {self.jit.get('Functions')} functions, {total_ms} ms")
        return "\n".join(lines)

    def _timing_lines(self) -> list[str]:
        """Execution and planning time, the slowest node, the worst estimate (if off by 2x or more)."""
        lines = [f"execution {self.execution_ms:.3f} ms, planning {self.planning_ms:.3f} ms"]
        slow = self.slowest_node()
        if slow is not None:
            lines.append(
                f"slowest node: #{slow['id']} {slow['label']} "
                f"({slow['exclusive_ms']:.3f} ms exclusive, {slow['exclusive_pct']:.0f}%)"
            )
        worst = self.worst_misestimate()
        if worst is not None and worst["misestimate_factor"] >= 2:
            lines.append(
                f"worst estimate: #{worst['id']} {worst['label']}: {worst['plan_rows']:g} rows estimated, "
                f"{worst['actual_rows']:g} actual per loop ({worst['misestimate_direction']}estimated "
                f"x{worst['misestimate_factor']:.1f})"
            )
        return lines

    def __repr__(self) -> str:
        t = f"{self.execution_ms:.3f} ms" if self.execution_ms is not None else "not analyzed"
        return f"<Plan {self.root.label()!r}, {len(self._nodes)} nodes, {t}>"


def _parse_json_text(text: str) -> Any:
    """Parse EXPLAIN JSON, also as psql prints it (``QUERY PLAN`` header, ``+`` line ends, ``(1 row)``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    lines = []
    for line in text.splitlines():
        s = line.rstrip()
        if re.fullmatch(r"\s*QUERY PLAN\s*", s) or re.fullmatch(r"\s*-{3,}\s*", s) or re.fullmatch(r"\(\d+ rows?\)", s):
            continue
        lines.append(re.sub(r"\s*\+$", "", s))
    cleaned = "\n".join(lines)
    start = min((i for i in (cleaned.find("["), cleaned.find("{")) if i >= 0), default=-1)
    if start < 0:
        raise LabError("not an EXPLAIN (FORMAT JSON) plan: no JSON found")
    try:
        obj, _ = json.JSONDecoder().raw_decode(cleaned[start:])
    except json.JSONDecodeError as e:
        raise LabError(f"not an EXPLAIN (FORMAT JSON) plan: {e.msg} at line {e.lineno}") from None
    return obj
