"""What a student reads of a run: report.md, the table `labhelpers bench` prints, the pictures.

Everything here reads typed results (`BenchResults`); the pictures are drawn by `labhelpers.plots`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from .._stats import percentile
from .queries import MARGIN
from .records import BenchRecord, BenchTenant, ColdFirstQuery, LeakproofRecord, PlanRecord, PoolFirstQueries, \
    PoolSkipped, Stats
from .results import BenchResults, ColdSection, write_results

__all__ = ["cold_table", "report_markdown", "summary_table", "write_report"]

log = logging.getLogger("labhelpers")


def _fmt(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _short_title(title: str, variant: str, *, rollup_is_tuned: bool = False) -> str:
    """"Test 3 tuned: the time window..." -> "Test 3 tuned"; a tuned title without "tuned" gets it (a
    rollup's too only with ``rollup_is_tuned``, as the latency pictures have always said)."""
    head = title.split(":")[0]
    plain = "tuned" in head or ("rollup" in head and not rollup_is_tuned)
    return head if variant != "tuned" or plain else f"{head} (tuned)"


# --------------------------------------------------------------------------------------------------
# report.md
# --------------------------------------------------------------------------------------------------


def report_markdown(results: BenchResults) -> str:
    """The report a student reads: the benchmark table, RLS overhead, policy variants, LEAKPROOF."""
    lines = _header(results) + _benchmark_table(results) + _misses(results) + _rls_section(results)
    lines += _variants_section(results) + _leakproof_section(results) + _cold_markdown(results.cold)
    lines += ["## Server", "", ", ".join(f"{k} {v}" for k, v in results.server.settings.items()), ""]
    return "\n".join(lines)


def _header(results: BenchResults) -> list[str]:
    m = results.machine
    lines = [
        f"# Benchmark: scale {results.scale}",
        "",
        f"{results.created_at} on {m.cpu_model}, {m.cores} cores, {m.ram_gb} GB RAM; "
        f"{results.server.version.split(',')[0]}. Each query: {results.warmup} warm-up runs, then "
        f"{results.repeat} timed runs as **app_user under RLS** with the tenant set "
        "(verified inside the session). Times: client wall clock per execute + fetch, values received as "
        "text (as psql's `\\timing`), ms. "
        f"Pass: p95 within the lesson's target; the course asks for {MARGIN:g}x margin. "
        f"Load average (1, 5, 15 min) at start {m.load_avg_1_5_15}, at end {m.load_avg_at_end}: "
        "other work on the machine shows up in the tail (p99, max).",
        "",
    ]
    if results.seed_run:
        s = results.seed_run
        lines.append(f"Data: seed run {s.id} (scale {s.scale}, seed {s.seed}, anchor {s.anchor}), "
                     + ", ".join(f"{k} {v:,}" for k, v in (s.rows or {}).items()) + ".")
        lines.append("")
    for t in results.tenants:
        lines.append(f"- {t.role} tenant: **{t.slug}** ({t.contacts:,} contacts, {t.leads:,} leads, "
                     f"{t.activities:,} activities)")
    return lines


def _verdict(r: BenchRecord, *, pass_style: tuple[str, str] = ("PASS", "**MISS**"), spaced: bool = False) -> str:
    """PASS/MISS with the margin, ``*`` when it counts for the criterion ('' without a target)."""
    if not r.target_ms:
        return ""
    ok, miss = pass_style
    margin = f" {r.margin}x" if spaced else f" ({r.margin}x)"
    return (ok if r.passed else miss) + margin + (" *" if r.criterion else "")


def _benchmark_table(results: BenchResults) -> list[str]:
    lines = ["", "| query | tenant | variant | rows | p50 | p95 | p99 | max | target | p95 vs target |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results.benchmarks:
        if not isinstance(r, BenchRecord):
            lines.append(f"| {r.title} | {r.tenant} | {r.variant} | - | - | - | - | - | "
                         f"{r.target_ms:g} | needs schema: {r.needs} |")
            continue
        verdict = _verdict(r) or "-"
        if r.target_ms and r.same_result_as_verbatim is False:
            verdict += " DIFFERENT RESULT"
        rows = r.result_value if r.result_value is not None else r.rows_returned
        s = r.stats
        lines.append(
            f"| {r.title} | {r.tenant} | {r.variant} | {rows if rows is not None else '-'} | "
            f"{_fmt(s.p50_ms)} | {_fmt(s.p95_ms)} | {_fmt(s.p99_ms)} | {_fmt(s.max_ms)} | "
            f"{f'{r.target_ms:g}' if r.target_ms else '-'} | {verdict} |"
        )
    return lines + ["", "`*` counts for the success criterion (the verbatim query when it has the margin, else "
                    "the course's tuned version). Margin = target / p95.", ""]


def _misses(results: BenchResults) -> list[str]:
    misses = [r for r in results.timed
              if r.variant == "verbatim" and r.target_ms and r.stats.p95_ms * MARGIN > r.target_ms]
    if not misses:
        return []
    lines = ["## Verbatim queries without the margin, and why", ""]
    for r in misses:
        plan = (r.plan.summary if isinstance(r.plan, PlanRecord) else "").splitlines()
        lines.append(f"- **{r.title}** [{r.tenant}]: p95 {_fmt(r.stats.p95_ms)} ms "
                     f"(target {r.target_ms:g} ms, {r.margin}x). Plan: " + "; ".join(p for p in plan[:3]))
    return lines + [""]


def _rls_section(results: BenchResults) -> list[str]:
    if not results.rls_overhead:
        return []
    lines = ["## RLS overhead: app_user vs the owner with an explicit tenant predicate", "",
             "| query | tenant | app_user p50 | owner p50 | app_user p95 | owner p95 | ratio p50 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results.rls_overhead:
        ratio = f"{r.ratio_p50:.2f}x" if r.ratio_p50 else "-"
        lines.append(f"| {r.title} | {r.tenant} | {_fmt(r.app_user.p50_ms)} | {_fmt(r.owner.p50_ms)} | "
                     f"{_fmt(r.app_user.p95_ms)} | {_fmt(r.owner.p95_ms)} | {ratio} |")
    return lines + [""]


def _variants_section(results: BenchResults) -> list[str]:
    if not results.policy_variants:
        return []
    lines = ["## Policy expression variants (contacts' tenant policy, rolled back after measuring)", "",
             "| policy USING | query | n | p50 | p95 | result | plan |", "|---|---|---:|---:|---:|---:|---|"]
    for r in results.policy_variants:
        lines.append(f"| {r.variant}: `{r.policy_using}` | {r.query} | {r.stats.n} | {_fmt(r.stats.p50_ms)} | "
                     f"{_fmt(r.stats.p95_ms)} | {r.result_value} | {r.plan_top or '-'} |")
    return lines + [""]


def _leakproof_section(results: BenchResults) -> list[str]:
    measured = [r for r in results.leakproof if isinstance(r, LeakproofRecord)]
    if not measured:
        return []
    lines = ["## The LEAKPROOF decision of sql/04 (verbatim queries, marks taken back in a rolled-back "
             "transaction)", "",
             "| query | tenant | p95 not leakproof | p95 leakproof (as built) | target | plan without |",
             "|---|---|---:|---:|---:|---|"]
    for r in measured:
        with_lp = _fmt(r.leakproof.p95_ms) if r.leakproof else "-"
        lines.append(f"| {r.title} | {r.tenant} | {_fmt(r.not_leakproof.p95_ms)} | {with_lp} | "
                     f"{r.target_ms:g} | {r.plan_top or '-'} |")
    return lines + [""]


# --------------------------------------------------------------------------------------------------
# report.md: the first query on a new connection
# --------------------------------------------------------------------------------------------------


def _cold_markdown(cold: ColdSection | None) -> list[str]:
    """The report's section on the first query on a new connection (nothing when it was not measured)."""
    if not cold or not cold.queries:
        return []
    lines = _cold_intro(cold) + _cold_query_table(cold.queries)
    pools = [p for p in cold.pool if isinstance(p, PoolFirstQueries)]
    if pools:
        lines += _pool_table(pools)
    for p in cold.pool:
        if isinstance(p, PoolSkipped):
            lines.append(f"- {p.title} behind PgBouncer: skipped ({p.skipped})")
    return lines + [""]


def _cold_intro(cold: ColdSection) -> list[str]:
    qs = cold.queries
    checked = sum(r.verified.checked for r in qs)
    backends = sum(r.verified.distinct_backends for r in qs)
    users = sorted({u for r in qs for u in r.verified.current_user})
    lines = [
        "## The first query on a new connection", "",
        f"{cold.connections} new logins per query and tenant, each as app_user with the tenant set, timing the "
        "query's first execute + fetch, then a second one on the same connection; on as many other new logins, "
        "`EXPLAIN (ANALYZE, BUFFERS, SUMMARY)` first and again (PostgreSQL's Planning Time and Execution Time; "
        "planning buffers = shared buffer hits while planning: the catalog pages a new backend reads to fill "
        "its relation and catalog caches); on as many more, `PREPARE` first and again (parse analysis and the "
        "rewriter, which adds the RLS policies: they fill caches too, and Planning Time leaves them out; a "
        f"round trip, client clock). {checked} sessions verified afterwards (current_user "
        f"{', '.join(users)}, no superuser, no BYPASSRLS, not the owner, the tenant set), {backends} distinct "
        "backends. Warm = the warm-up-then-repeat series above.", "",
    ]
    for slug, c in cold.connect.items():
        sets = [x for r in qs if r.tenant == slug for x in r.samples_ms["set_tenant"]]
        reads = sum(r.execution_read_cold for r in qs if r.tenant == slug)
        catalog_reads = sum(r.planning_read_cold for r in qs if r.tenant == slug)
        lines.append(f"- {slug}: connect (`psycopg.connect`: TCP, SCRAM, a new backend) p50 {_fmt(c.p50_ms)}, "
                     f"p95 {_fmt(c.p95_ms)}, p99 {_fmt(c.p99_ms)} ms over {c.n} logins; the tenant switch "
                     f"as the session's first statement p50 {_fmt(percentile(sets, 50))}, p95 "
                     f"{_fmt(percentile(sets, 95))} ms (target 10); blocks read from outside shared buffers by all "
                     f"the cold EXPLAINs: {reads:,} while executing, {catalog_reads:,} while planning")
    return lines


def _pair(a: Stats | None, b: Stats | None, fmt: Callable[[float], str] = _fmt) -> str:
    return f"{fmt(a.p50_ms) if a else '-'} / {fmt(b.p50_ms) if b else '-'}"


def _cold_query_table(qs: Sequence[ColdFirstQuery]) -> list[str]:
    lines = ["", "| query | tenant | first p50 | first p95 | first p99 | second p50 | warm p50 / p95 | "
             "connect + tenant + first p50 / p95 | parse + rewrite cold / warm p50 | planning cold / warm p50 | "
             "execution cold / warm p50 | planning buffers cold / warm | target | first p95 vs target |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in qs:
        verdict = ("PASS" if r.passed else "**MISS**") + f" ({r.margin}x)"
        warm = f"{_fmt(r.warm.p50_ms)} / {_fmt(r.warm.p95_ms)}" if r.warm else "-"
        lines.append(
            f"| {r.title} | {r.tenant} | {_fmt(r.first.p50_ms)} | {_fmt(r.first.p95_ms)} | "
            f"{_fmt(r.first.p99_ms)} | {_fmt(r.second.p50_ms)} | {warm} | "
            f"{_fmt(r.new_connection.p50_ms)} / {_fmt(r.new_connection.p95_ms)} | "
            f"{_pair(r.parse_cold, r.parse_warm)} | "
            f"{_pair(r.planning_cold, r.planning_warm)} | {_pair(r.execution_cold, r.execution_warm)} | "
            f"{_pair(r.planning_hit_cold, r.planning_hit_warm, lambda v: f'{v:,.0f}')} | "
            f"{r.target_ms:g} | {verdict} |")
    return lines


def _pool_table(pools: Sequence[PoolFirstQueries]) -> list[str]:
    lines = ["", "Behind a pool: psycopg_pool, every connection of a pool checked out once (the pool filled "
             "before timing, so no connect), and new client logins one after another through a real PgBouncer "
             "(transaction mode: the tenant set for the transaction; the server connections outlive the "
             "clients). app_user, the tenant set, verified in each session:", "",
             "| query | tenant | pool | clients | server backends | connect p50 | first query p50 | p95 | max | "
             "second p50 | warm-up per connection p50 |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in pools:
        wu = _fmt(p.warm_up_ms.p50_ms) if p.warm_up_ms else "-"
        conn_p50 = _fmt(p.connect.p50_ms) if p.connect else "-"
        lines.append(f"| {p.title} | {p.tenant} | `{p.pool}` | {p.connections} | "
                     f"{p.verified.distinct_backends} | {conn_p50} | {_fmt(p.first.p50_ms)} | "
                     f"{_fmt(p.first.p95_ms)} | {_fmt(p.first.max_ms)} | "
                     f"{_fmt(p.second.p50_ms)} | {wu} |")
    return lines


# --------------------------------------------------------------------------------------------------
# The terminal's table, a DataFrame's rows
# --------------------------------------------------------------------------------------------------


def summary_table(results: BenchResults) -> Table:
    """A rich Table of the benchmark records (what `labhelpers bench` prints)."""
    m = results.machine
    table = Table(title=f"scale {results.scale}: app_user under RLS, {results.repeat} runs, ms "
                        f"({m.cpu_model}, {m.cores} cores)")
    for col in ("query", "tenant", "variant", "p50", "p95", "p99", "max", "target", "verdict"):
        table.add_column(col, justify="right" if col in ("p50", "p95", "p99", "max", "target") else "left")
    for r in results.benchmarks:
        if not isinstance(r, BenchRecord):
            table.add_row(r.title, r.tenant, r.variant, "-", "-", "-", "-", f"{r.target_ms:g}",
                          "[yellow]needs schema[/]")
            continue
        s = r.stats
        table.add_row(r.title, r.tenant, r.variant, _fmt(s.p50_ms), _fmt(s.p95_ms), _fmt(s.p99_ms), _fmt(s.max_ms),
                      f"{r.target_ms:g}" if r.target_ms else "-",
                      _verdict(r, pass_style=("[green]PASS[/]", "[red]MISS[/]"), spaced=True))
    table.caption = "* counts for the success criterion; margin = target / p95"
    return table


def cold_table(records: Sequence[ColdFirstQuery]) -> list[dict[str, Any]]:
    """One row per record (ms): connect, first and second execution, EXPLAIN's planning and execution
    time cold and warm, the shared buffers planning hit cold and warm (p50); for a DataFrame."""

    def p50(s: Stats | None) -> float | None:
        return s.p50_ms if s is not None else None

    return [{
        "query": _short_title(r.title, r.variant), "tenant": r.tenant, "n": r.connections,
        "connect p50": r.connect.p50_ms, "first p50": r.first.p50_ms, "first p95": r.first.p95_ms,
        "second p50": r.second.p50_ms, "planning cold p50": p50(r.planning_cold),
        "planning warm p50": p50(r.planning_warm), "execution cold p50": p50(r.execution_cold),
        "execution warm p50": p50(r.execution_warm), "parse cold p50": p50(r.parse_cold),
        "parse warm p50": p50(r.parse_warm), "planning buffers cold": p50(r.planning_hit_cold),
        "planning buffers warm": p50(r.planning_hit_warm), "target": r.target_ms,
        "first p95 within target": r.passed,
    } for r in records]


# --------------------------------------------------------------------------------------------------
# The files
# --------------------------------------------------------------------------------------------------


def write_report(results: BenchResults, out_dir: str | Path, *, plot: bool = True) -> Path:
    """Write results.json, report.md and latency-<tenant>.png into ``out_dir``; returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_results(results, out)
    (out / "report.md").write_text(report_markdown(results), encoding="utf-8")
    if plot:
        _draw(results, out)
    log.info("bench: results in %s", out)
    return out


def _draw(results: BenchResults, out: Path) -> None:
    """latency-<tenant>.png for each tenant; cold-<largest tenant>.png when new connections were timed."""
    # Imported here: plots loads matplotlib, which only drawing needs.
    from .. import plots

    for tenant in results.tenants:
        recs = [r for r in results.timed if r.tenant == tenant.slug]
        if not recs:
            continue
        samples = {_short_title(r.title, r.variant, rollup_is_tuned=True): r.samples_ms for r in recs}
        targets = {_short_title(r.title, r.variant, rollup_is_tuned=True): r.target_ms for r in recs if r.target_ms}
        fig = plots.plot_latencies(
            samples, targets=targets,
            title=f"Scale {results.scale}, tenant {tenant.slug} ({tenant.role}, "
                  f"{tenant.contacts:,} contacts): app_user under RLS")
        fig.savefig(out / f"latency-{tenant.slug}.png", dpi=110)
    if results.cold:
        fig = _plot_cold(results, results.tenants[0], plots)
        if fig is not None:
            fig.savefig(out / f"cold-{results.tenants[0].slug}.png", dpi=110)


def _plot_cold(results: BenchResults, tenant: BenchTenant, plots: Any) -> Any:
    """Warm samples beside first-on-a-new-connection samples, for the criterion queries and verbatim Test 3."""
    cold = {r.key: r for r in (results.cold.queries if results.cold else []) if r.tenant == tenant.slug}
    picked = [r for r in results.timed if r.tenant == tenant.slug and r.key in cold
              and (r.criterion or r.key == "test3")]
    if not picked:
        return None
    samples: dict[str, list[float]] = {}
    targets: dict[str, float] = {}
    for r in picked:
        name = _short_title(r.title, r.variant)
        target = r.target_ms
        assert target is not None  # a benchmark query: it has the lesson's target
        for label, xs in ((f"{name}, warm", r.samples_ms), (f"{name}, cold", cold[r.key].samples_ms["first"])):
            samples[label] = xs
            targets[label] = target
    return plots.plot_latencies(
        samples, targets=targets,
        title=f"Scale {results.scale}, {tenant.slug}, app_user: warm vs cold (first query, new connection)")
