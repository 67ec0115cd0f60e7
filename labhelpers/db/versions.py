"""Which PostgreSQL the lab supports, checked before anything is built."""

from __future__ import annotations

import psycopg

from ..errors import LabError

__all__ = ["MIN_SERVER_VERSION", "PG_MAJOR", "check_server_version", "format_version", "require_supported_server"]

PG_MAJOR = 18  # the embedded server's (the wheel's) major version
# The oldest server the lab supports, as server_version_num: sql/01 uses ON DELETE SET NULL (column list),
# new in PostgreSQL 15. 15-17 lack uuidv7(), which sql/01 polyfills (with a warning).
MIN_SERVER_VERSION = 150000


def format_version(version_num: int) -> str:
    """A ``server_version_num`` as people write it: 150018 is "15.18", 90624 is "9.6.24"."""
    if version_num >= 100000:
        return f"{version_num // 10000}.{version_num % 10000}"
    return f"{version_num // 10000}.{version_num // 100 % 100}.{version_num % 100}"


def check_server_version(version_num: int) -> None:
    """Raise LabError if a server of ``version_num`` (``server_version_num``, e.g. 150018) is too old.

    The minimum is `MIN_SERVER_VERSION`.
    """
    if version_num < MIN_SERVER_VERSION:
        raise LabError(
            f"the server runs PostgreSQL {format_version(version_num)}; this lab needs PostgreSQL "
            f"{MIN_SERVER_VERSION // 10000} or later (sql/01 uses ON DELETE SET NULL (column), new in "
            f"{MIN_SERVER_VERSION // 10000}); without --dsn/LAB_DSN the lab runs its own PostgreSQL {PG_MAJOR}"
        )


def require_supported_server(conn: psycopg.Connection) -> int:
    """Return the server's ``server_version_num`` (e.g. 150018) after checking it is supported.

    The number is the one libpq read when the connection was made (the server reports its version at
    login), so this costs no query. Raise LabError if the server is older than `MIN_SERVER_VERSION`.
    """
    version_num = conn.info.server_version
    check_server_version(version_num)
    return version_num
