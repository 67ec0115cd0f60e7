"""What every course notebook's setup cell calls: check the environment, connect, bind ``%sql``.

``setup()`` returns one autocommit psycopg connection and binds ``%sql`` to that same connection
(`sqlmagic` says why a DBAPI connection, and why autocommit), so Python and SQL cells share one session.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable
from typing import Any

import psycopg

from .. import datagen, db, stages, tenants
from ..errors import LabError
from ..tenants import whoami
from .demos import find_tenant_as_admin
from .sqlmagic import bind_sql_magic, current_shell

__all__ = ["MIN_PYTHON", "REQUIRED_MODULES", "check_environment", "session", "setup"]

log = logging.getLogger("labhelpers")

MIN_PYTHON = (3, 10)
# module to import -> what to install when it is missing
REQUIRED_MODULES = {
    "psycopg": "psycopg[binary]",
    "psycopg_pool": "psycopg-pool",
    "pandas": "pandas",
    "matplotlib": "matplotlib",
    "sql": "jupysql",
}
FIX_INSTALL = "run `make install` (or `pip install -e .` in the project) and restart the kernel"

# The connection setup() made last, so a re-run of the setup cell closes the old one.
_current: psycopg.Connection | None = None


def check_environment(*, modules: Iterable[str] = REQUIRED_MODULES) -> None:
    """Check the Python version and that the course's packages import.

    Raise LabError (one sentence saying what to do) if Python is too old or a package is missing.
    """
    if sys.version_info < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        raise LabError(
            f"this kernel runs Python {sys.version.split()[0]} but the lab needs {need}+: "
            f"choose the project's kernel (.venv) or recreate it with `make install`"
        )
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            package = REQUIRED_MODULES.get(name, name)
            raise LabError(f"package {package} is missing or broken ({e}): {FIX_INSTALL}") from None


def _check_stage(conn: psycopg.Connection, through: str) -> None:
    """Build the stages up to ``through`` (idempotent: finished work is skipped)."""
    stages.build(conn, through=through)


def _check_data(admin_dsn: str, scale: str) -> None:
    """Load the tenants' data at ``scale`` (building the schema first) unless it is already there."""
    result = datagen.seed(admin_dsn, scale=scale)
    log.info("%s", result.summary())


def session(
    dsn: str | None = None,
    *,
    role: str | None = None,
    tenant: str | None = None,
    user: str | None = None,
    sql_magic: bool = False,
) -> psycopg.Connection:
    """Open another autocommit session (e.g. as ``app_user`` next to the administrator's).

    :param role: None for the administrator, or an application role.
    :param tenant: slug or UUID to set for the whole session (``use_tenant``; looked up as the
        administrator, since an application role cannot see the other tenants).
    :param user: the acting user (e-mail or id) within the tenant, which the write policies need.
    :param sql_magic: also make it the connection of ``%sql`` (until `bind_sql_magic` binds another).
    Raise LabError if the role, tenant or user does not exist.
    """
    found = find_tenant_as_admin(dsn, tenant) if tenant is not None else None
    conn = db.connect(dsn, role=role, autocommit=True)
    if found is not None:
        tenants.use_tenant(conn, found, user=user)
    if sql_magic:
        bind_sql_magic(conn)
    return conn


def _show_lab_errors_briefly(shell: Any) -> None:
    """In a notebook, a LabError shows as its one sentence, like the CLI, and still fails the cell."""

    def handler(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
        stb = [f"{etype.__name__}: {value}"]
        shell._showtraceback(etype, value, stb)
        return stb

    shell.set_custom_exc((LabError,), handler)


def setup(
    dsn: str | None = None,
    *,
    role: str | None = None,
    tenant: str | None = None,
    through: str | None = None,
    scale: str | None = None,
    sql_magic: bool = True,
) -> psycopg.Connection:
    """Check the environment, connect, and bind ``%sql`` to the same session: a notebook's setup cell.

    :param dsn: the administrator's DSN; None resolves as everywhere (``LAB_DSN``, ``DATABASE_URL``,
        else the embedded server, started on demand).
    :param role: None for the administrator (schema owner, superuser on the lab servers), or an
        application role (``app_user``) for anything that claims isolation.
    :param tenant: slug or UUID to set for the session (``use_tenant``), or None.
    :param through: build the SQL stages up to this one first (``"02"``); idempotent, skipped when done.
    :param scale: make sure the tenants' data is loaded at this scale (``"small"``) first; this builds
        every stage first when the schema is missing (the data needs all of them).
    :param sql_magic: bind ``%sql`` to the returned connection (when running under IPython).
    :returns: an autocommit psycopg connection, the one ``%sql`` uses.
    Raise LabError with one sentence saying what to do if Python or a package is wrong, the server is
    unreachable, a role is missing, or a stage fails.
    """
    global _current
    shell = current_shell()
    if shell is not None:
        _show_lab_errors_briefly(shell)
    check_environment()
    if shell is not None:
        # labhelpers.plots returns Figures (no pyplot); inline display must be on for them to render.
        shell.run_line_magic("matplotlib", "inline")
    import pandas as pd

    pd.set_option("display.max_colwidth", 120)  # SQL statements and plan labels are long
    admin = db.resolve_dsn(dsn)
    if through is not None:
        with db.connect(admin, autocommit=True) as conn:
            _check_stage(conn, through)
    if scale is not None:
        _check_data(admin, scale)
    if _current is not None and not _current.closed:
        _current.close()
    found = find_tenant_as_admin(admin, tenant) if tenant is not None else None
    conn = db.connect(admin, role=role, autocommit=True)
    _current = conn
    if found is not None:
        tenants.use_tenant(conn, found)
    if sql_magic and shell is not None:
        bind_sql_magic(conn, shell=shell)
    log.info("notebook session: %s", whoami(conn))
    return conn
