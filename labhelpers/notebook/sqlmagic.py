"""The ``%sql`` magic (JupySQL) bound to the notebook's own psycopg connection.

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

from typing import Any

import psycopg

from ..errors import LabError

__all__ = ["SQL_ALIAS", "bind_sql_magic", "current_shell"]

SQL_ALIAS = "lab"


def current_shell() -> Any:
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
    shell = shell or current_shell()
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
