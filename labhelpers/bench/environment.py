"""What a run measures on: the machine, the server, the generated data, and the tenants it times."""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import psutil
import psycopg

from .. import datagen, db
from ..errors import LabError
from .queries import LEAKPROOF_FUNCS
from .records import BenchTenant
from .results import Machine, SeedInfo, Server

__all__ = ["checkpoint", "chosen_tenants", "data_age_days", "leakproof_marks", "load_avg", "machine_info",
           "pick_tenants", "seed_info", "server_info"]

log = logging.getLogger("labhelpers")


def load_avg() -> list[float] | None:
    """The load average (1, 5, 15 minutes), rounded; None where the platform has none."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_info() -> Machine:
    """The machine the figures come from: CPU model, cores, RAM, platform, load average."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return Machine(cpu_model=model or platform.machine(), cores=os.cpu_count(),
                   ram_gb=round(psutil.virtual_memory().total / 2**30, 1), platform=platform.platform(),
                   python=platform.python_version(), hostname=platform.node(), load_avg_1_5_15=load_avg())


def leakproof_marks(conn: psycopg.Connection) -> dict[str, bool]:
    """Whether each of `LEAKPROOF_FUNCS` is marked LEAKPROOF in this database (sql/04 marks them)."""
    return dict(conn.execute(
        "SELECT oid::regprocedure::text, proleakproof FROM pg_proc WHERE oid = ANY(%s::regprocedure[])",
        (list(LEAKPROOF_FUNCS),),
    ).fetchall())


def server_info(conn: psycopg.Connection) -> Server:
    """The server's version and settings, the LEAKPROOF marks, and the timed tables' sizes."""
    version = conn.execute("SELECT version()").fetchone()[0]  # type: ignore[index]
    extra: dict[str, str] = dict(conn.execute(
        "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
        (["server_version", "data_checksums", "plan_cache_mode", "io_method", "max_connections"],),
    ).fetchall())
    sizes: dict[str, str] = dict(conn.execute(
        """
        SELECT t, pg_size_pretty(sum(pg_total_relation_size(r.oid))::bigint)
          FROM unnest(ARRAY['contacts', 'leads', 'activities']) AS t
          CROSS JOIN LATERAL (SELECT to_regclass(t) AS oid
                              UNION SELECT relid FROM pg_partition_tree(to_regclass(t))) AS r
         GROUP BY t
        """
    ).fetchall())
    return Server(version=version, settings={**db.server_settings(conn), **extra}, leakproof=leakproof_marks(conn),
                  table_sizes=sizes)


def checkpoint(conn: psycopg.Connection) -> bool:
    """CHECKPOINT before timing, so that writing back a fresh load's dirty pages does not run beside the
    timed queries (a superuser or pg_checkpoint member may; returns whether it happened)."""
    try:
        conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        log.warning("bench: no CHECKPOINT first (needs a superuser or pg_checkpoint): a fresh load's writeback "
                    "may show in the tails")
        return False
    return True


def seed_info(run: datagen.SeedRun | None) -> SeedInfo | None:
    """What `labhelpers seed` loaded, for the record (None: no generated data)."""
    if run is None:
        return None
    return SeedInfo(id=run.id, scale=run.scale, seed=run.seed, status=run.status, anchor=run.anchor.isoformat(),
                    rows=(run.stats or {}).get("rows"), load_seconds=(run.stats or {}).get("total_seconds"))


def data_age_days(run: datagen.SeedRun | None) -> float | None:
    """Days since the data's anchor (its 'now'); warns when the 'last 7/30 days' windows have aged."""
    if run is None:
        return None
    age = (dt.datetime.now(dt.timezone.utc) - run.anchor).total_seconds() / 86400
    if age > 2:
        log.warning("bench: the data was generated %.0f days ago: the 'last 7/30 days' windows hold fewer "
                    "rows than at seeding time (re-seed with --replace for fresh windows)", age)
    return round(age, 2)


_TENANT_COUNTS = """
SELECT t.id::text, t.slug,
       (SELECT count(*) FROM contacts AS c WHERE c.tenant_id = t.id),
       (SELECT count(*) FROM leads AS l WHERE l.tenant_id = t.id),
       (SELECT count(*) FROM activities AS a WHERE a.tenant_id = t.id)
  FROM tenants AS t
"""


def pick_tenants(conn: psycopg.Connection) -> list[BenchTenant]:
    """The largest and the smallest tenant by contacts (admin connection, sees every tenant)."""
    rows = conn.execute(_TENANT_COUNTS + " ORDER BY 3 DESC, t.slug").fetchall()
    rows = [r for r in rows if r[2] > 0]
    if not rows:
        raise LabError("no tenant has contacts: load data first (`labhelpers seed`)")
    picked = [_tenant(rows[0], "largest")]
    if len(rows) > 1:
        picked.append(_tenant(rows[-1], "smallest"))
    return picked


def chosen_tenants(conn: psycopg.Connection, slugs: Sequence[str]) -> list[BenchTenant]:
    """The tenants of ``slugs``, in that order; each picked one keeps its role (largest/smallest).

    Raise LabError if a slug is unknown.
    """
    roles = {t.slug: t.role for t in pick_tenants(conn)}
    rows = conn.execute(_TENANT_COUNTS + " WHERE t.slug = ANY(%s)", (list(slugs),)).fetchall()
    found = {r[1]: r for r in rows}
    unknown = [s for s in slugs if s not in found]
    if unknown:
        raise LabError(f"no tenant {', '.join(unknown)}")
    return [_tenant(found[s], roles.get(s, "chosen")) for s in slugs]


def _tenant(row: tuple[str, str, int, int, int], role: str) -> BenchTenant:
    return BenchTenant(id=row[0], slug=row[1], contacts=row[2], leads=row[3], activities=row[4], role=role)
