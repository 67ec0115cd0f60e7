"""What one shared application role lets a tenant see beyond its rows (PITFALLS 27).

RLS filters rows. A session of ``app_user`` in tenant A can still look at things that are not rows of
a tenant table: the activity of the server (other sessions' statement text) and the catalog's
statistics (row and insert counts per partition, the planner's estimates). This module measures each
channel as an application role, so notebook 02 and the tests show the same evidence:

- `statement_text`: a session in tenant B runs a statement with a literal in it; a session in tenant A
  reads the activity through every path PostgreSQL offers. Closed by ``track_activities = off`` for
  the app roles (sql/02).
- `catalog_shape`: per-partition row counts (``pg_class.reltuples``), insert counters
  (``pg_stat_user_tables``) and EXPLAIN's row estimates, read as app_user, beside the truth per tenant.
  Shape rather than rows; closed only by separate databases (or a cluster) per tenant.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from . import db, tenants

__all__ = ["ACTIVITY_PATHS", "catalog_shape", "statement_text", "tracking_restored"]

# Every way to read another backend's current statement (PostgreSQL 15-18).
ACTIVITY_PATHS = {
    "pg_stat_activity": "SELECT pid, state, query FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
    "pg_stat_get_activity(NULL)": "SELECT pid, state, query FROM pg_stat_get_activity(NULL) WHERE pid <> pg_backend_pid()",
    "pg_stat_get_backend_activity()": (
        "SELECT pg_stat_get_backend_pid(b) AS pid, NULL AS state, pg_stat_get_backend_activity(b) AS query"
        " FROM pg_stat_get_backend_idset() AS b WHERE pg_stat_get_backend_pid(b) <> pg_backend_pid()"
    ),
}


@dataclass(frozen=True)
class _Victim:
    secret: str
    thread: threading.Thread
    started: threading.Event
    pid: list[int]


def _run_victim(dsn: str, role: str, tenant: str, seconds: float) -> _Victim:
    """A session in ``tenant`` running, for ``seconds``, a statement with a secret literal in its text."""
    secret = f"secret-{uuid.uuid4().hex[:10]}@example.com"
    query = sql.SQL("SELECT (SELECT count(*) FROM contacts WHERE email = {}), pg_sleep({})").format(
        sql.Literal(secret), sql.Literal(seconds))
    started, pid = threading.Event(), []

    def run() -> None:
        with db.connect(dsn, role=role, autocommit=True) as conn, tenants.tenant(conn, tenant):
            pid.append(conn.info.backend_pid)
            started.set()
            conn.execute(query)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    return _Victim(secret, thread, started, pid)


def statement_text(
    dsn: str, *, observer: str = "acme", victim: str = "globex", role: str = "app_user", seconds: float = 1.5
) -> pd.DataFrame:
    """Whether a session of ``role`` in tenant ``observer`` can read another tenant's statement text.

    A session of the same role in tenant ``victim`` runs ``SELECT (SELECT count(*) FROM contacts WHERE
    email = '<secret>'), pg_sleep(...)`` while the observer polls every path of `ACTIVITY_PATHS`.

    :param dsn: the administrator's DSN (as in `db.resolve_dsn`).
    :returns: one row per path: path, the SQL the observer ran, whether it saw the victim's backend
        (``saw_backend``), what it saw as the victim's state and query, and ``saw_secret``.
    Raise LabError if the server, the role or a tenant is unknown.
    """
    run = _run_victim(dsn, role, victim, seconds)
    found: dict[str, dict[str, Any]] = {p: {"saw_backend": False, "state": None, "query": None, "saw_secret": False}
                                        for p in ACTIVITY_PATHS}
    try:
        with db.connect(dsn, role=role, autocommit=True) as conn, tenants.tenant(conn, observer):
            deadline = time.monotonic() + seconds * 0.8
            while time.monotonic() < deadline:
                for path, text in ACTIVITY_PATHS.items():
                    for pid, state, query in conn.execute(text, prepare=False).fetchall():
                        if pid not in run.pid:
                            continue
                        seen = found[path]
                        seen.update(saw_backend=True, state=state, query=query if query else seen["query"])
                        seen["saw_secret"] = seen["saw_secret"] or run.secret in (query or "")
                time.sleep(0.05)
    finally:
        run.thread.join(seconds + 30)
    return pd.DataFrame([{"path": p, "sql": ACTIVITY_PATHS[p], **v} for p, v in found.items()])


@contextmanager
def tracking_restored(dsn: str, role: str = "app_user") -> Iterator[None]:
    """For a demonstration: ``role``'s new sessions track their statements again, as before sql/02.

    ``ALTER ROLE ... RESET track_activities`` (cluster-wide: every database of the server), undone on
    leaving the block whatever happens. Only sessions opened inside the block are affected.
    """
    ident = sql.Identifier(role)
    with db.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER ROLE {} RESET track_activities").format(ident))
        try:
            yield
        finally:
            admin.execute(sql.SQL("ALTER ROLE {} SET track_activities = off").format(ident))


def catalog_shape(dsn: str, *, observer: str = "acme", role: str = "app_user") -> dict[str, pd.DataFrame]:
    """What the catalog's statistics tell a session of ``role`` in tenant ``observer`` about the others.

    :returns: three DataFrames, each read as the app role beside the truth read by the administrator:
        ``partitions``: for each leaf of activities in the latest full month, ``reltuples`` and
        ``n_tup_ins`` as the app role sees them, and the tenants whose rows the leaf holds;
        ``estimates``: EXPLAIN's row estimate for ``contacts WHERE tenant_id = <t>`` for every tenant,
        beside its true count;
        ``own_rows``: what RLS lets the same session count (its own tenant only), for contrast.
    """
    with db.connect(dsn, autocommit=True) as admin:
        ids: dict[str, Any] = dict(admin.execute("SELECT slug, id FROM tenants ORDER BY slug").fetchall())
        month = admin.execute(
            "SELECT min(inhrelid::regclass::text) FROM pg_inherits"
            " WHERE inhparent = 'activities'::regclass"
            "   AND inhrelid::regclass::text ~ ('^activities_' || to_char(now() - interval '1 month', 'YYYY_MM') || '$')"
        ).fetchone()[0]  # type: ignore[index]
        truth = _leaf_truth(admin, month)
        contacts: dict[Any, int] = dict(admin.execute("SELECT tenant_id, count(*) FROM contacts GROUP BY 1").fetchall())
    slug_of = {v: k for k, v in ids.items()}
    with db.connect(dsn, role=role, autocommit=True) as conn, tenants.tenant(conn, observer):
        seen = conn.execute(
            "SELECT c.relname, c.reltuples::bigint AS reltuples, s.n_tup_ins"
            " FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
            " WHERE c.relkind = 'r' AND c.relispartition AND c.relname LIKE %s ORDER BY c.relname",
            (f"{month}_%" if month else "activities_%",), prepare=False).fetchall()
        estimates = []
        for slug, tid in ids.items():
            plan = conn.execute("EXPLAIN (FORMAT JSON) SELECT * FROM contacts WHERE tenant_id = %s", (tid,),
                                prepare=False).fetchone()[0]  # type: ignore[index]
            estimates.append({"tenant": slug, "estimated_rows": plan[0]["Plan"]["Plan Rows"],
                              "true_rows": contacts.get(tid, 0)})
        own = conn.execute("SELECT count(*) FROM contacts", prepare=False).fetchone()[0]  # type: ignore[index]
    partitions = pd.DataFrame(seen, columns=["partition", "reltuples", "n_tup_ins"])
    partitions["holds"] = partitions["partition"].map(
        lambda p: ", ".join(f"{slug_of[t]} {n}" for t, n in truth.get(p, [])) or "(empty)")
    return {
        "partitions": partitions,
        "estimates": pd.DataFrame(estimates),
        "own_rows": pd.DataFrame([{"tenant": observer, "count(*) as app_user": own}]),
    }


def _leaf_truth(admin: psycopg.Connection[Any], month: str | None) -> dict[str, list[tuple[Any, int]]]:
    """leaf name -> [(tenant_id, rows)] for the leaves of one month, counted by the administrator."""
    if month is None:
        return {}
    rows = admin.execute(
        "SELECT tableoid::regclass::text, tenant_id, count(*) FROM activities"
        " WHERE tableoid::regclass::text LIKE %s GROUP BY 1, 2 ORDER BY 1, 2", (f"{month}_%",)).fetchall()
    out: dict[str, list[tuple[Any, int]]] = {}
    for leaf, tid, n in rows:
        out.setdefault(leaf, []).append((tid, n))
    return out
