"""EXPLAIN as data: run ``EXPLAIN (ANALYZE, BUFFERS, SETTINGS, FORMAT JSON)`` and derive what a student reads.

`explain` runs a statement on the caller's connection (its role, its tenant context: this package never
switches either) and returns a `Plan`; `Plan.from_json` reads a plan saved from psql or a file. A `Plan`
holds the node tree and, in `Plan.nodes`, one pandas row per node with the derived figures, computed the
way pev2 (dalibo/pev2, ``plan-service.ts``) computes them:

- **inclusive time** = actual total time x loops, divided by the parallel participants (workers launched
  + the leader) for nodes under a Gather: PostgreSQL reports the time of one average loop.
- **exclusive time** = inclusive minus the children's inclusive. InitPlans are not subtracted from their
  parent; a CTE's time is taken off the CTE Scans that read it, in proportion to their time (so it is not
  counted twice), and an InitPlan's time is taken off the one node that ran it: the lowest node that
  refers to it (``(InitPlan 1).col1`` or ``$0``) and whose time can contain it, else its parent.
  Buffers follow the same rules. Negative remainders (rounding) are clipped to 0.
- **misestimate**: the ratio of the larger to the smaller of estimated and actual rows per loop, and its
  direction (``under``: more rows than estimated, ``over``: fewer). A node that produced no row counts
  as 1 row, so "estimated 5000, got 0" is a factor of 5000.

Partition pruning comes in three kinds that EXPLAIN shows differently (PITFALLS 19): at plan time the
partition is absent from the plan (only the catalog knows it exists), at executor start the Append says
``Subplans Removed: N``, during execution the partition's node says ``never executed`` (loops 0).
`Plan.partitions` tells them apart. The data a picture needs is prepared here too (`tree_rows`: the plan
tree with never-executed runs folded; `partition_layout`: a table's partitions as a list or a grid).
No drawing here: see `labhelpers.plots`.

Modules: `run` (running EXPLAIN), `plan` (`Plan`), `node` (`Node`), `derive` (the tree, times, costs),
`frame` (the node table), `pruning` (partition statuses), `tree` and `grid` (data for the pictures).
"""

from __future__ import annotations

from .frame import NODE_COLUMNS
from .grid import PartitionLayout, partition_layout, scanned_rows
from .node import BUFFER_KINDS, Node, display_type
from .plan import Plan
from .pruning import PRUNED_STATUSES, PRUNING_STATUSES, PartitionSpec
from .run import explain
from .tree import TreeRow, tree_rows

__all__ = [
    "BUFFER_KINDS",
    "NODE_COLUMNS",
    "PRUNED_STATUSES",
    "PRUNING_STATUSES",
    "Node",
    "PartitionLayout",
    "PartitionSpec",
    "Plan",
    "TreeRow",
    "display_type",
    "explain",
    "partition_layout",
    "scanned_rows",
    "tree_rows",
]
