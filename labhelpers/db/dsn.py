"""DSN strings: the lab's names and credentials, and pure functions over connection strings."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = [
    "ADMIN_PASSWORD", "ADMIN_USER", "APP_ROLES", "LAB_DB", "configured_dsn", "dbname_of", "redact",
    "role_dsn", "with_dbname",
]

LAB_DB = "mastery_lab"
# The lesson's credentials (docker-compose.yml uses the same); lab-only, never for production.
ADMIN_USER = "postgres"
ADMIN_PASSWORD = "postgres_password"
# Login roles created by sql/02-rls-policies.sql, each with the password "<role>_password".
APP_ROLES = ("app_user", "app_readonly", "app_admin")


def redact(dsn: str) -> str:
    """Return ``dsn`` with its password replaced by ``***``, for messages."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            return urlunsplit(parts._replace(netloc=netloc))
        return dsn
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn)


def configured_dsn(dsn: str | None = None) -> str | None:
    """The DSN given explicitly or by the environment, or None when the embedded server is meant."""
    for candidate in (dsn, os.environ.get("LAB_DSN"), os.environ.get("DATABASE_URL")):
        if candidate:
            return candidate
    return None


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return make_conninfo(dsn, dbname=dbname)


def dbname_of(dsn: str) -> str:
    """The database a DSN names (libpq's default: the user name)."""
    params = conninfo_to_dict(dsn)
    return str(params.get("dbname") or params.get("user") or os.environ.get("PGDATABASE") or ADMIN_USER)


def role_dsn(dsn: str, role: str) -> str:
    """The same server and database, logged in as application role ``role`` (lab password)."""
    return make_conninfo(dsn, user=role, password=f"{role}_password")
