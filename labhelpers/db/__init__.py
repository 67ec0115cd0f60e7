"""Where the lab's database is, and how to reach it.

- `dsn`: the lab's names and credentials, and pure functions over DSN strings;
- `versions`: which PostgreSQL the lab supports (15 or later);
- `connection`: opening exactly a DSN with one-line errors; creating and dropping databases;
- `embedded`: the embedded PostgreSQL server (the wheel's 18, or another bindir);
- `access`: which server the lab uses (``--dsn`` > ``LAB_DSN`` > ``DATABASE_URL`` > embedded) and the one
  public `connect`.
"""

from __future__ import annotations

from .access import TUNED, ServerStatus, connect, psql_path, reset_database, resolve_dsn, server_settings, status
from .connection import TRANSACTION_POOLING, create_database, drop_database, error_line, open_connection
from .dsn import ADMIN_PASSWORD, ADMIN_USER, APP_ROLES, LAB_DB, configured_dsn, dbname_of, redact, role_dsn, with_dbname
from .embedded import DEFAULT_PORT, PROJECT_DIR, EmbeddedServer, embedded_server, ensure_os_user, pg_bin
from .versions import MIN_SERVER_VERSION, PG_MAJOR, check_server_version, format_version, require_supported_server

__all__ = [
    "ADMIN_PASSWORD", "ADMIN_USER", "APP_ROLES", "DEFAULT_PORT", "LAB_DB", "MIN_SERVER_VERSION", "PG_MAJOR",
    "PROJECT_DIR", "TRANSACTION_POOLING", "TUNED", "EmbeddedServer", "ServerStatus", "check_server_version",
    "configured_dsn", "connect", "create_database", "dbname_of", "drop_database", "embedded_server",
    "ensure_os_user", "error_line", "format_version", "open_connection", "pg_bin", "psql_path", "redact",
    "require_supported_server", "reset_database", "resolve_dsn", "role_dsn", "server_settings", "status",
    "with_dbname",
]
