"""What every course notebook's setup cell calls: check the environment, connect, bind ``%sql``.

``setup()`` returns one psycopg connection (autocommit) and hands *that same connection* to JupySQL,
so Python and SQL cells share one session: after ``use_tenant(conn, "acme")`` a ``%sql SELECT count(*)
FROM contacts`` sees only acme's rows, exactly like the lesson's ``SET app.current_tenant`` in psql.

Why a DBAPI connection and not a SQLAlchemy engine: JupySQL sends SQL through SQLAlchemy's ``text()``
for engines, which rewrites PostgreSQL's JSONB literals (``'{"a":1}'`` has a ``:1`` that becomes a
bind parameter) and ``%`` in ``LIKE 'a%'``. Given a psycopg connection, JupySQL runs each statement with
``cursor.execute(sql)`` and no parameters: the server sees the SQL exactly as written. SQL errors are
raised as psycopg errors (``UndefinedTable`` ...), so the cell fails, in JupyterLab and under papermill.
JupySQL holds a thin wrapper of the connection: it never closes it, a statement without a result
(DDL) reads as an empty result, and such a result displays nothing rather than an empty table.

Why autocommit: JupySQL commits after every statement and refuses ``BEGIN``; in autocommit mode a
session-level ``set_config`` persists between cells and a failed statement never leaves the session in
an aborted transaction. Transactions belong in Python cells (``with tenants.tenant(conn, t):``).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.sql

from . import db
from .errors import LabError
from .tenants import Identity, whoami  # re-exported: notebooks call notebook.whoami(conn)

__all__ = [
    "MIN_PYTHON",
    "REQUIRED_MODULES",
    "SQL_ALIAS",
    "Identity",
    "bind_sql_magic",
    "check_environment",
    "compare_roles",
    "session",
    "setup",
    "show",
    "try_statements",
    "what_if",
    "whoami",
]

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
SQL_ALIAS = "lab"
FIX_INSTALL = "run `make install` (or `pip install -e .` in the project) and restart the kernel"

# The connection setup() made last, so a re-run of the setup cell closes the old one.
_current: psycopg.Connection | None = None


# --------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------


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
    try:
        from . import stages
    except ImportError:
        raise LabError(f"labhelpers.stages is missing, so stage {through} cannot be built: {FIX_INSTALL}") from None
    stages.build(conn, through=through)


def _check_data(admin_dsn: str, scale: str) -> None:
    """Load the tenants' data at ``scale`` (building the schema first) unless it is already there."""
    try:
        from . import datagen
    except ImportError:
        raise LabError(f"labhelpers.datagen is missing, so there is no data to load: {FIX_INSTALL}") from None
    result = datagen.seed(admin_dsn, scale=scale)
    log.info("%s", result.summary())


def _find_tenant(dsn: str | None, tenant: Any) -> Any:
    """Look a tenant up as the administrator: an application role cannot read other tenants' rows."""
    from . import tenants

    if isinstance(tenant, tenants.Tenant):
        return tenant
    with db.connect(dsn, autocommit=True) as admin:
        return tenants.find_tenant(admin, tenant)


def compare_roles(
    dsn: str | None,
    query: str,
    *,
    tenant: str | None,
    roles: Iterable[str | None] = (None, "app_user"),
    table: str = "contacts",
) -> Any:
    """Run the same query as several roles, each in a session of its own; one row per role.

    :param dsn: the administrator's DSN (as in `db.resolve_dsn`).
    :param query: SQL returning one value (e.g. ``SELECT count(*) FROM contacts``).
    :param tenant: slug or UUID to set for the session (``use_tenant``), ``""`` to set it empty (what
        ``RESET`` or a finished ``SET LOCAL`` leaves behind), or None to leave it unset.
    :param roles: None for the administrator; a role of `db.APP_ROLES` logs in as that role; any other
        role name is taken with ``SET ROLE`` by the administrator (e.g. a non-superuser table owner).
    :param table: the table whose ownership the owns_table column reports.
    :returns: a pandas DataFrame with columns role, superuser, bypassrls, owns_table, tenant (slug,
        ``(not set)`` or ``(empty)``), result;
        when the query fails, result holds the error (a fail-closed policy must never error).
    Raise LabError if the server or an application role is unreachable.
    """
    import pandas as pd

    from . import tenants

    found = _find_tenant(dsn, tenant) if tenant else None
    rows = []
    for role in roles:
        login = role if role in db.APP_ROLES else None
        with db.connect(dsn, role=login, autocommit=True) as conn:
            if role is not None and login is None:
                conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(role)))
            if tenant == "":
                tenants.set_setting(conn, tenants.TENANT_SETTING, "", local=False)
            elif found is not None:
                tenants.use_tenant(conn, found)
            who = whoami(conn, table=table)
            try:
                result: Any = conn.execute(query).fetchone()[0]  # type: ignore[index]
            except psycopg.Error as e:
                result = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
            context = "(empty)" if tenant == "" else found.slug if found is not None else "(not set)"
            rows.append({
                "role": who.user, "superuser": who.superuser, "bypassrls": who.bypassrls,
                "owns_table": who.owns_tables, "tenant": context, "result": result,
            })
    return pd.DataFrame(rows)


def show(parts: Any, *, skip_empty: bool = True) -> None:
    """Display several tables under their names, e.g. ``show(stages.describe(conn, "contacts"))``.

    :param parts: a mapping name -> DataFrame (or anything Jupyter can display).
    :param skip_empty: leave out empty DataFrames (a table without policies has no ``policies`` part).
    """
    from IPython.display import Markdown, display

    for name, part in parts.items():
        if skip_empty and getattr(part, "empty", False):
            continue
        display(Markdown(f"**{name}**"), part)


def try_statements(conn: psycopg.Connection, *statements: str, keep: bool = False) -> Any:
    """Run statements one by one in a transaction that is rolled back; report what each did.

    For showing what the database refuses (a cross-tenant foreign key, a row for another tenant): each
    statement runs in its own savepoint, so one refusal does not stop the next; nothing is kept unless
    ``keep``. A statement may return one value (``INSERT ... RETURNING id``) which is shown.

    :returns: a pandas DataFrame with columns statement, outcome (``ok``, ``ok: <value>`` or
        ``<ErrorClass>: <message>``) and sqlstate.
    """
    import pandas as pd

    rows = []
    with conn.transaction(force_rollback=not keep):
        for stmt in statements:
            text = " ".join(stmt.split())
            try:
                with conn.transaction():
                    cur = conn.execute(stmt)
                    value = cur.fetchone() if cur.description else None
                outcome = "ok" if value is None else f"ok: {value[0]}"
                if cur.description is None and cur.rowcount >= 0:
                    outcome += f" ({cur.rowcount} row{'s' if cur.rowcount != 1 else ''})"
                rows.append({"statement": text, "outcome": outcome, "sqlstate": ""})
            except psycopg.Error as e:
                message = e.diag.message_primary or str(e).strip().splitlines()[0]
                rows.append({"statement": text, "outcome": f"{type(e).__name__}: {message}",
                             "sqlstate": e.sqlstate or ""})
    return pd.DataFrame(rows)


@contextmanager
def what_if(
    conn: psycopg.Connection, *statements: str, role: str | None = "app_user", tenant: Any = None
) -> Iterator[psycopg.Connection]:
    """Try a change, look at its effect as another role, and undo it: one transaction, always rolled back.

    The ``statements`` run first, as the administrator (e.g. ``ALTER FUNCTION ... NOT LEAKPROOF``); then
    the session becomes ``role`` with ``SET LOCAL ROLE`` (RLS applies to it as to a real login) and the
    tenant is set for the transaction. Inside the block, run queries or `explain` on ``conn``. Nothing
    is ever committed, so an interrupted notebook leaves the database as it was (other sessions may
    wait on the locks the statements take, until the block ends).

    :param conn: the administrator's connection (autocommit; a transaction is opened here).
    :param role: the role to become after the statements, or None to stay the administrator.
    :param tenant: slug, UUID or `tenants.Tenant` to set for the transaction, or None.
    Raise LabError if the tenant is unknown.
    """
    from psycopg import sql as _sql

    from . import tenants

    found = tenants.find_tenant(conn, tenant) if tenant is not None else None
    with conn.transaction(force_rollback=True):
        for stmt in statements:
            conn.execute(stmt)
        if role is not None:
            conn.execute(_sql.SQL("SET LOCAL ROLE {}").format(_sql.Identifier(role)))
        if found is not None:
            tenants.set_setting(conn, tenants.TENANT_SETTING, str(found.id), local=True)
        yield conn


# --------------------------------------------------------------------------------------------------
# The %sql magic
# --------------------------------------------------------------------------------------------------


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


class _NoRowsCursor:
    """A psycopg cursor as JupySQL expects a DBAPI cursor: fetching after DDL returns no rows.

    psycopg 3 raises "the last operation didn't produce records" when a statement without a result
    (``CREATE TABLE``) is fetched from; JupySQL only recognises other drivers' wording for that.
    """

    def __init__(self, cursor: psycopg.Cursor) -> None:
        self._cursor = cursor

    def fetchmany(self, size: int = 0) -> list[Any]:
        return self._cursor.fetchmany(size) if self._cursor.description is not None else []

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall() if self._cursor.description is not None else []

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description is not None else None

    def __iter__(self) -> Any:
        return iter(self.fetchall())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _SharedConnection:
    """What JupySQL holds: the notebook's psycopg connection, which JupySQL must not close."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def cursor(self) -> _NoRowsCursor:
        return _NoRowsCursor(self.conn.cursor())

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        """JupySQL closes its connections at exit or on ``%sql --close``; the notebook owns this one."""


def _display_sql_result(result: Any) -> None:
    """Show a JupySQL result; a statement without columns (DDL) shows nothing, not an empty table."""
    from IPython.display import publish_display_data

    if not result.keys:
        return
    publish_display_data({"text/plain": repr(result), "text/html": result._repr_html_()})


def bind_sql_magic(conn: psycopg.Connection, *, shell: Any = None, alias: str = SQL_ALIAS) -> None:
    """Load JupySQL (quietly) and make ``conn`` the connection every ``%sql``/``%%sql`` cell uses.

    The connection must be in autocommit mode (see the module docstring). SQL errors raise, so the cell
    fails. Raise LabError if there is no IPython shell or ``conn`` is not autocommit.
    """
    shell = shell or _shell()
    if shell is None:
        raise LabError("the %sql magic needs IPython: run this in a Jupyter notebook or IPython")
    if not conn.autocommit:
        raise LabError("the %sql connection must be autocommit (connect with autocommit=True)")
    from IPython.utils.capture import capture_output
    from sql.connection import ConnectionManager

    if "sql" not in shell.extension_manager.loaded:
        # Loading prints a hint about the optional `toml` package; it is noise for students.
        with capture_output():
            shell.run_line_magic("load_ext", "sql")
    from sql.run.resultset import ResultSet

    shell.display_formatter.ipython_display_formatter.for_type(ResultSet, _display_sql_result)
    for option in (
        "displaycon = False",        # no "Running query in ..." line above every result
        "feedback = 0",              # no "1 rows affected." under every SELECT
        "displaylimit = 20",
        "autocommit = True",         # commit() after each statement: a no-op on an autocommit session
        "short_errors = False",      # SQL errors propagate as real exceptions: the cell fails
        "named_parameters = 'disabled'",
    ):
        shell.run_line_magic("config", f"SqlMagic.{option}")
    # Replace the binding, never close: the psycopg connections belong to the notebook (setup() closes
    # the one it made when it runs again).
    ConnectionManager.connections.pop(alias, None)
    from sql._current import _get_sql_magic

    ConnectionManager.set(_SharedConnection(conn), displaycon=False, alias=alias, config=_get_sql_magic())


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
    found = _find_tenant(dsn, tenant) if tenant is not None else None
    conn = db.connect(dsn, role=role, autocommit=True)
    if found is not None:
        from . import tenants

        tenants.use_tenant(conn, found, user=user)
    if sql_magic:
        bind_sql_magic(conn)
    return conn


# --------------------------------------------------------------------------------------------------
# The setup cell
# --------------------------------------------------------------------------------------------------


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
    shell = _shell()
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
    found = _find_tenant(admin, tenant) if tenant is not None else None
    conn = db.connect(admin, role=role, autocommit=True)
    _current = conn
    if found is not None:
        from . import tenants

        tenants.use_tenant(conn, found)
    if sql_magic and shell is not None:
        bind_sql_magic(conn, shell=shell)
    log.info("notebook session: %s", whoami(conn))
    return conn
