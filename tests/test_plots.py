"""labhelpers.plots: every picture renders for every golden plan, with the artists a student relies on.

Set ``LAB_PLOTS_DIR`` to keep the PNGs (e.g. ``LAB_PLOTS_DIR=/tmp/plots``) and look at them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from labhelpers import plots  # noqa: E402
from labhelpers.errors import LabError  # noqa: E402
from labhelpers.explain import PRUNING_STATUSES, Plan  # noqa: E402

PLANS = Path(__file__).parent / "data" / "plans"
NAMES = sorted(p.name[: -len(".expect.json")] for p in PLANS.glob("*.expect.json"))
CATALOG = json.loads((PLANS / "catalog.json").read_text())
# the course database's activities: month RANGE, then HASH(tenant_id) x 4 (see capture.py --two-level)
TWO_LEVEL_CATALOG = json.loads((PLANS / "two_level" / "catalog.json").read_text())
TWO_LEVEL = sorted(n for n in NAMES if n.startswith("pruning_two_level_"))
OUT = os.environ.get("LAB_PLOTS_DIR")


def load(name: str) -> Plan:
    catalog = TWO_LEVEL_CATALOG if name in TWO_LEVEL else CATALOG
    return Plan.from_json((PLANS / f"{name}.json").read_text(), partitions=catalog)


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def render(fig: Figure, name: str) -> None:
    """Draw the figure (catches layout errors) and keep the PNG if asked."""
    fig.canvas.draw()
    if OUT:
        Path(OUT).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(OUT) / f"{name}.png", dpi=100)


@pytest.mark.parametrize("name", NAMES)
def test_plot_plan_renders_every_golden(name: str) -> None:
    plan = load(name)
    fig = plots.plot_plan(plan)
    render(fig, f"plan_{name}")
    assert isinstance(fig, Figure)
    assert fig.get_suptitle().startswith("Plan")
    all_text = " ".join(texts(fig))
    bar_ax = fig.axes[1]
    assert bar_ax.get_xlabel() in ("exclusive time (ms)", "exclusive cost (planner units)")
    for label in plan.nodes["label"]:
        assert label[:25] in all_text or "never executed" in all_text
    if plan.analyzed:
        assert "<- slowest" in all_text
        assert "ms" in bar_ax.get_xlabel()


def test_plot_plan_shows_each_kind_of_pruning() -> None:
    assert "11 partitions of activities pruned at plan time" in texts(plots.plot_plan(load("pruning_plan_time")))
    assert "12 partitions of activities pruned at executor start" in texts(plots.plot_plan(load("pruning_now")))
    folded = texts(plots.plot_plan(load("pruning_never_executed")))
    assert "12 partitions never executed (pruned during execution)" in folded
    assert any("activities_2025_11 … activities_2026_10" in t for t in folded)
    generic = texts(plots.plot_plan(load("pruning_generic_plan")))
    assert any("activities_2025_11 … activities_2026_04, activities_2026_07 … activities_2026_11" in t for t in generic)


@pytest.mark.parametrize("name", NAMES)
def test_plot_pruning_renders_every_golden(name: str) -> None:
    plan = load(name)
    fig = plots.plot_pruning(plan)
    render(fig, f"pruning_{name}")
    assert fig.get_suptitle().startswith("Partition pruning")
    summary = plan.pruning_summary()
    if summary.empty:
        assert "No partitioned table in this plan: nothing to prune." in texts(fig)
    elif name in TWO_LEVEL:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["h0", "h1", "h2", "h3"]
        assert ax.get_title(loc="left").startswith("activities: scanned ")
        assert " of 164 partitions" in ax.get_title(loc="left")
    else:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_yticklabels()] == CATALOG["activities"]
        head = "activities: scanned " if plan.analyzed else "activities: 13 partitions"
        assert ax.get_title(loc="left").startswith(head)
        assert "13 partitions" in ax.get_title(loc="left")


def test_plot_pruning_labels_the_three_kinds() -> None:
    assert "pruned at executor start (Subplans Removed)" in texts(plots.plot_pruning(load("pruning_now")))
    assert "pruned at plan time (absent from the plan)" in texts(plots.plot_pruning(load("pruning_plan_time")))
    t = texts(plots.plot_pruning(load("pruning_never_executed")))
    assert "never executed: pruned during execution (still locked)" in t
    assert "scanned: 8,478 rows" in t


def grid_counts(fig: Figure) -> dict[str, int]:
    """Status -> number of cells in the first panel's grid (cell values index PRUNING_STATUSES)."""
    mesh = fig.axes[0].collections[0]
    values = np.ma.asarray(mesh.get_array()).compressed().astype(int)
    return {PRUNING_STATUSES[i]: int(n) for i, n in zip(*np.unique(values, return_counts=True))}


@pytest.mark.parametrize("name", TWO_LEVEL)
def test_plot_pruning_two_level_is_a_month_by_hash_grid(name: str) -> None:
    plan = load(name)
    exp = json.loads((PLANS / f"{name}.expect.json").read_text())["two_level_pruning"]
    assert exp["catalog"] == "two_level/catalog.json"
    summary = plan.pruning_summary()
    want = {s: int(summary.loc["activities", s]) for s in PRUNING_STATUSES if summary.loc["activities", s]}
    assert want == {k: v for k, v in exp["activities"].items() if k != "total"}
    fig = plots.plot_pruning(plan)
    render(fig, f"pruning_{name}")
    ax = fig.axes[0]
    assert len(fig.axes) == 1
    mesh = ax.collections[0]
    assert np.ma.asarray(mesh.get_array()).shape == (4, 41)  # 4 hash rows x 41 months, not one column
    assert grid_counts(fig) == want
    assert fig.get_size_inches()[1] < 6
    # the title says the same counts
    head = ax.get_title(loc="left")
    assert head.startswith(f"activities: scanned {want.get('scanned', 0)} of 164 partitions")
    for status, n in want.items():
        if status != "scanned":
            assert f"{n} {status}" in head
    # months in bound order, years on January, the legend in words
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "Jan\n2024" and "Jan\n2025" in ticks and "Apr" in ticks
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    for status in want:
        assert plots._STATUS_HELP.get(status, status) in legend


def test_plot_pruning_two_level_cells_follow_the_names() -> None:
    fig = plots.plot_pruning(load("pruning_two_level_executor_start"))
    values = np.ma.asarray(fig.axes[0].collections[0].get_array())
    scanned = PRUNING_STATUSES.index("scanned")
    # h0 of the last 7 months (2026-11 .. 2027-05) were scanned; every other cell was pruned
    assert [int(c) for c in np.nonzero(values[0] == scanned)[0]] == list(range(34, 41))
    assert not (values[1:] == scanned).any()
    assert any(t.startswith("scanned, ") and "activities_2026_11_h0" in t for t in texts(fig))


class _Renamed(Plan):
    """A plan whose partition frame is rewritten (parent column, other names), for the other layouts."""

    rewrite: staticmethod

    def partitions(self, partitions=None):  # type: ignore[no-untyped-def]
        return type(self).rewrite(super().partitions(partitions))


def _renamed(name: str, rewrite) -> Plan:  # type: ignore[no-untyped-def]
    cls = type("P", (_Renamed,), {"rewrite": staticmethod(rewrite)})
    return cls.from_json((PLANS / f"{name}.json").read_text(), partitions=TWO_LEVEL_CATALOG)


def test_plot_pruning_uses_the_catalog_parent_when_given() -> None:
    def with_parent(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df["parent"] = [p[: -len("_h0")] for p in df["partition"]]
        return df

    plan = _renamed("pruning_two_level_run_time", with_parent)
    fig = plots.plot_pruning(plan)
    render(fig, "pruning_two_level_parent_column")
    assert np.ma.asarray(fig.axes[0].collections[0].get_array()).shape == (4, 41)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["h0", "h1", "h2", "h3"]
    assert grid_counts(fig) == {"scanned": 7, "never executed": 34, "pruned at executor start": 123}


def test_plot_pruning_many_months_one_level_is_a_year_by_month_grid() -> None:
    def monthly(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df["partition"] = [f"activities_{2000 + i // 12}_{i % 12 + 1:02d}" for i in range(len(df))]
        return df

    fig = plots.plot_pruning(_renamed("pruning_two_level_run_time", monthly))
    render(fig, "pruning_one_level_164_months")
    ax = fig.axes[0]
    assert np.ma.asarray(ax.collections[0].get_array()).shape == (14, 12)
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["Jan", "Feb"]
    assert sum(grid_counts(fig).values()) == 164


def test_plot_pruning_unknown_names_wrap_into_a_compact_grid() -> None:
    def anonymous(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df["partition"] = [f"part{i}" for i in range(len(df))]
        return df

    fig = plots.plot_pruning(_renamed("pruning_two_level_run_time", anonymous))
    render(fig, "pruning_generic_164")
    rows, cols = np.ma.asarray(fig.axes[0].collections[0].get_array()).shape
    assert rows * cols >= 164 and rows < 20 and cols > 1
    assert fig.get_size_inches()[1] < 10
    assert grid_counts(fig) == {"scanned": 7, "never executed": 34, "pruned at executor start": 123}


SAMPLES = {
    "contact search": list(np.random.default_rng(1).lognormal(np.log(8), 0.3, 300)),
    "lead analytics": list(np.random.default_rng(2).lognormal(np.log(70), 0.2, 300)),
}


def test_plot_latencies_marks_percentiles_and_targets() -> None:
    fig = plots.plot_latencies(SAMPLES, targets={"contact search": 50, "lead analytics": 100}, title="Benchmarks")
    render(fig, "latencies")
    ecdf, box = fig.axes
    assert fig.get_suptitle() == "Benchmarks"
    assert box.get_xlabel().startswith("latency (ms)")
    assert ecdf.get_ylabel() == "fraction of runs at or below"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(lab.startswith("contact search: p50") and "meets target" in lab for lab in labels)
    assert "target 50 ms (contact search)" in labels and "target 100 ms (lead analytics)" in labels
    target_lines = [ln for ln in ecdf.get_lines() if ln.get_label().startswith("target")]
    assert sorted(ln.get_xdata()[0] for ln in target_lines) == [50, 100]
    p95 = float(np.percentile(SAMPLES["contact search"], 95))
    assert any(ln.get_marker() == "s" and ln.get_xdata()[0] == pytest.approx(p95) for ln in ecdf.get_lines())
    assert {t.get_text() for t in box.get_yticklabels()} == set(SAMPLES)


def test_plot_latencies_accepts_a_dataframe_and_one_target() -> None:
    df = pd.DataFrame([(k, v) for k, vs in SAMPLES.items() for v in vs], columns=["name", "ms"])
    fig = plots.plot_latencies(df, targets=60)
    render(fig, "latencies_df")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "target 60 ms" in labels
    assert any("lead analytics" in lab and "MISSES target" in lab for lab in labels)


def test_plot_latencies_rejects_nothing() -> None:
    with pytest.raises(LabError):
        plots.plot_latencies({})
    with pytest.raises(LabError):
        plots.plot_latencies(pd.DataFrame({"query": ["a"], "t": [1.0]}))


def test_plot_sizes_dict_and_frame() -> None:
    fig = plots.plot_sizes({"gin jsonb_ops": 42_000_000, "gin jsonb_path_ops": 19_500_000})
    render(fig, "sizes")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "size on disk (MB)"
    assert "40.1 MB  (2.15x)" in texts(fig)
    assert fig.get_suptitle().startswith("Relation and index sizes")
    df = pd.DataFrame(
        {"label": ["pk uuidv4", "pk uuidv7"], "bytes": [38 * 2**20, 30 * 2**20], "group": ["v4", "v7"]}
    )
    fig = plots.plot_sizes(df, title="Primary key size at 1M rows", baseline="pk uuidv7")
    render(fig, "sizes_uuid")
    assert "38.0 MB  (1.27x)" in texts(fig)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["v4", "v7"]
    with pytest.raises(LabError):
        plots.plot_sizes({})


def test_explain_module_does_not_import_matplotlib() -> None:
    source = "".join(p.read_text() for p in (Path(__file__).parent.parent / "labhelpers" / "explain").glob("*.py"))
    assert "matplotlib" not in source
