"""Opening a connection to a given DSN with one-line errors, and creating and dropping databases."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..errors import LabError
from .dsn import redact, with_dbname

__all__ = ["TRANSACTION_POOLING", "create_database", "drop_database", "error_line", "open_connection"]


# Connection options for a client behind a transaction pooler (PgBouncer ``pool_mode = transaction``),
# where each transaction may run on another server connection: no server-side prepared statements, so
# no statement name can resolve to another client's statement there (PITFALLS 26). Pass them to
# psycopg_pool as ``ConnectionPool(dsn, kwargs=TRANSACTION_POOLING)``.
TRANSACTION_POOLING: dict[str, object] = {"prepare_threshold": None}


def error_line(exc: BaseException) -> str:
    """The line of a libpq error that says what went wrong (its FATAL, else its last line)."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # libpq prefixes details with "connection to server at ... failed:"; keep the cause.
    for ln in lines:
        if "FATAL:" in ln:
            return ln.split("FATAL:", 1)[1].strip()
    if lines:
        return lines[-1] if len(lines) > 1 and lines[0].endswith("failed:") else lines[0]
    return type(exc).__name__


def open_connection(conninfo: str, *, autocommit: bool, **kwargs: object) -> psycopg.Connection:
    """Connect to exactly ``conninfo`` (no resolution, no role check). Raise LabError in one line if it fails."""
    try:
        return psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=10, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as e:
        reason = error_line(e)
        if "Connection refused" in reason or "No such file or directory" in reason:
            reason = "nothing listens there; is the server running? (`labhelpers db up` starts the embedded one)"
        raise LabError(f"cannot connect to {redact(conninfo)}: {reason}") from None
    except psycopg.ProgrammingError as e:
        raise LabError(f"invalid DSN {redact(conninfo)!r}: {error_line(e)}") from None


def create_database(admin_dsn: str, name: str, *, template: str | None = None, exist_ok: bool = False) -> bool:
    """Create database ``name`` on the server of ``admin_dsn``; return False if it existed and ``exist_ok``."""
    with open_connection(with_dbname(admin_dsn, "postgres"), autocommit=True) as conn:
        if exist_ok and conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            stmt += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        try:
            conn.execute(stmt)
        except psycopg.errors.DuplicateDatabase:
            if not exist_ok:
                raise LabError(f"database {name} already exists") from None
            return False
    return True


def drop_database(admin_dsn: str, name: str) -> str | None:
    """Drop database ``name`` (closing its sessions); return a description of what was dropped, or None."""
    with open_connection(with_dbname(admin_dsn, "postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_size_pretty(pg_database_size(datname)) FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if row is None:
            return None
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    return f"database {name} ({row[0]})"
