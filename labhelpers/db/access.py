"""Which server the lab uses and how to log in to it.

DSN resolution, the same for every command and function: an explicit ``dsn``, else ``LAB_DSN``,
else ``DATABASE_URL``, else the embedded server (started on demand). ``connect`` is the one way the
package opens a connection: as the administrator or as a real login of an application role, optionally
for a transaction pooler.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..errors import LabError
from .connection import TRANSACTION_POOLING, create_database, drop_database, error_line, open_connection
from .dsn import APP_ROLES, configured_dsn, dbname_of, redact, role_dsn
from .embedded import embedded_server, pg_bin
from .versions import check_server_version

__all__ = ["TUNED", "ServerStatus", "connect", "psql_path", "reset_database", "resolve_dsn", "server_settings", "status"]

# Settings shown by `labhelpers db status` (the embedded server's are tuned in `_tuning`).
TUNED = (
    "shared_buffers",
    "effective_cache_size",
    "work_mem",
    "maintenance_work_mem",
    "max_wal_size",
    "checkpoint_timeout",
    "random_page_cost",
    "effective_io_concurrency",
    "max_parallel_workers_per_gather",
    "jit",
    "track_io_timing",
    "TimeZone",
)


@dataclass(frozen=True)
class ServerStatus:
    """What `labhelpers db status` reports."""

    dsn: str
    running: bool
    embedded: bool
    version: str | None = None
    pgdata: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)


def resolve_dsn(dsn: str | None = None, *, start: bool = True) -> str:
    """Return the administrator's DSN: ``dsn``, else ``LAB_DSN``, else ``DATABASE_URL``, else embedded.

    The embedded server is started on demand unless ``start`` is False.
    Raise LabError if the embedded server cannot start.
    """
    chosen = configured_dsn(dsn)
    if chosen is not None:
        try:
            conninfo_to_dict(chosen)
        except psycopg.ProgrammingError as e:
            raise LabError(f"invalid DSN {redact(chosen)!r}: {error_line(e)}") from None
        return chosen
    server = embedded_server()
    if start:
        server.up()
    return server.dsn()


def connect(
    dsn: str | None = None, *, role: str | None = None, autocommit: bool = False,
    transaction_pooling: bool = False,
) -> psycopg.Connection:
    """Open a psycopg connection to the lab database.

    :param dsn: as in `resolve_dsn`.
    :param role: None for the administrator (the schema owner), or one of ``APP_ROLES``: a real login
        as that role (not ``SET ROLE``, which the session could undo), so RLS applies.
    :param autocommit: passed to psycopg.
    :param transaction_pooling: the DSN leads to a transaction pooler (PgBouncer in transaction mode,
        before 1.21 or without ``max_prepared_statements``): never prepare statements on the server
        (psycopg otherwise prepares a query from its 6th execution). Always right behind a pooler;
        costs a re-plan per execution.
    Raise LabError if the server cannot be reached or the role does not exist yet.
    """
    admin = resolve_dsn(dsn)
    options = TRANSACTION_POOLING if transaction_pooling else {}
    if role is None:
        return open_connection(admin, autocommit=autocommit, **options)
    if role not in APP_ROLES:
        raise LabError(f"unknown role {role!r}; expected one of: {', '.join(APP_ROLES)}")
    with open_connection(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if not exists:
        raise LabError(
            f"role {role} does not exist yet: build the RLS stage first (`labhelpers build --through 02`)"
        )
    return open_connection(role_dsn(admin, role), autocommit=autocommit, **options)


def reset_database(dsn: str | None = None) -> str:
    """Drop and recreate the lab database (the one the resolved DSN names); return what was dropped."""
    admin = resolve_dsn(dsn)
    name = dbname_of(admin)
    if name in ("postgres", "template0", "template1"):
        raise LabError(f"refusing to reset the maintenance database {name}; point the DSN at the lab database")
    dropped = drop_database(admin, name)
    create_database(admin, name)
    return f"dropped {dropped} and created it empty" if dropped else f"created database {name} (it did not exist)"


def server_settings(conn: psycopg.Connection) -> dict[str, str]:
    """The tuned settings as the server reports them (value with unit)."""
    rows = conn.execute(
        "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s) ORDER BY name", (list(TUNED),)
    ).fetchall()
    return dict(rows)


def status(dsn: str | None = None) -> ServerStatus:
    """Report the resolved server: reachable or not, version, settings. Never starts anything.

    Raise LabError if a configured server cannot be reached, or if it is older than `MIN_SERVER_VERSION`.
    """
    chosen = configured_dsn(dsn)
    server = None if chosen else embedded_server()
    target = chosen or server.dsn()  # type: ignore[union-attr]
    if server is not None and not server.is_running():
        return ServerStatus(dsn=target, running=False, embedded=True, pgdata=server.pgdata)
    try:
        with open_connection(target, autocommit=True) as conn:
            version_num = conn.info.server_version
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            settings = server_settings(conn)
    except LabError:
        if server is None:
            raise
        return ServerStatus(dsn=target, running=True, embedded=True, pgdata=server.pgdata)
    check_server_version(version_num)
    return ServerStatus(
        dsn=target, running=True, embedded=server is not None, version=version,
        pgdata=server.pgdata if server else None, settings=settings,
    )


def psql_path() -> Path | None:
    """A psql client: the one shipped in the wheel, else one on PATH."""
    bundled = pg_bin() / "psql"
    if bundled.exists() and os.access(bundled, os.X_OK):
        return bundled
    found = shutil.which("psql")
    return Path(found) if found else None
