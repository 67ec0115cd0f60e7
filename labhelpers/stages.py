"""Running the lesson's SQL stage files, in order, idempotently.

The files are plain SQL (no psql meta-commands), so ``psql -v ON_ERROR_STOP=1 -f FILE`` and
`run_stage` execute exactly the same text. `run_stage` splits a file into statements itself
(respecting comments, quoted strings, quoted identifiers and dollar quotes), runs them in ONE
transaction, and on failure raises `StageError` (a `LabError`) that names the file, the line and
PostgreSQL's message; the failed file leaves nothing behind. (`describe`, a table like psql's ``\\d+``,
lives in `labhelpers.catalog`; it is re-exported here, where the notebooks first met it.)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from . import db
from .catalog import describe
from .errors import LabError

__all__ = [
    "PROJECT_DIR",
    "STAGES",
    "Stage",
    "StageError",
    "Statement",
    "build",
    "describe",
    "run_stage",
    "split_statements",
    "stage_keys",
]

log = logging.getLogger("labhelpers")

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Stage:
    """One step of the build: a key (``"01"`` .. ``"05"``, ``"seed"``) and its SQL file."""

    key: str
    path: Path
    title: str


STAGES: list[Stage] = [
    Stage("01", PROJECT_DIR / "sql" / "01-foundation-schema.sql", "foundation schema"),
    Stage("02", PROJECT_DIR / "sql" / "02-rls-policies.sql", "roles and row-level security"),
    Stage("03", PROJECT_DIR / "sql" / "03-jsonb-fields.sql", "JSONB custom fields"),
    Stage("04", PROJECT_DIR / "sql" / "04-jsonb-indexes.sql", "JSONB indexes"),
    Stage("05", PROJECT_DIR / "sql" / "05-partitioning.sql", "partitioning"),
    # The course's addition beyond the lesson's files (needs 04's generated columns; 05 does not need it).
    Stage("rollups", PROJECT_DIR / "sql" / "course-rollups.sql", "the course's rollups (beyond the lesson)"),
    Stage("seed", PROJECT_DIR / "data" / "seed-tenants.sql", "the three scenario tenants"),
]


def stage_keys() -> list[str]:
    """The keys `build` accepts for ``through``, in order."""
    return [s.key for s in STAGES]


class StageError(LabError):
    """A SQL stage file failed: ``path:line: ERROR sqlstate: message``.

    Attributes: ``path`` (Path), ``line`` (1-based line in the file), ``sqlstate`` (str or None),
    ``pg_message`` (PostgreSQL's primary message).
    """

    def __init__(self, path: Path, line: int, sqlstate: str | None, pg_message: str) -> None:
        self.path = path
        self.line = line
        self.sqlstate = sqlstate
        self.pg_message = pg_message
        state = f" {sqlstate}" if sqlstate else ""
        super().__init__(f"{_display(path)}:{line}: ERROR{state}: {pg_message}")


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_DIR))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------------
# Splitting a file into statements
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a file: its text (without the final ``;``) and where it starts."""

    text: str
    offset: int  # character offset of the statement's first character in the file
    line: int  # 1-based line of that character


_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z_0-9\x80-\uffff]*)?\$")


def split_statements(sql: str) -> list[Statement]:
    """Split SQL text into statements at top-level semicolons.

    Understands ``--`` and nested ``/* */`` comments, ``'...'`` strings (with ``''``), ``E'...'``
    strings (with backslash escapes), ``"..."`` identifiers and ``$tag$...$tag$`` dollar quotes.
    Statements that are only comments or whitespace are dropped; leading comments and whitespace
    are not part of a statement, so its ``line`` is the line of its first keyword.
    (Not supported: SQL-standard ``BEGIN ATOMIC ... END`` function bodies, which contain bare
    semicolons; the lab's files use dollar-quoted bodies.)
    """
    out: list[Statement] = []
    i, n = 0, len(sql)
    start: int | None = None  # offset of the current statement's first significant character

    def flush(end: int) -> None:
        nonlocal start
        if start is not None:
            text = sql[start:end].rstrip()
            out.append(Statement(text, start, sql.count("\n", 0, start) + 1))
        start = None

    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c == "/" and sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        if c.isspace():
            i += 1
            continue
        if c == ";":
            flush(i)
            i += 1
            continue
        if start is None:
            start = i
        if c == "'":
            escape = i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            i += 1
            while i < n:
                if escape and sql[i] == "\\":
                    i += 2
                    continue
                if sql[i] == "'":
                    if i + 1 < n and sql[i + 1] == "'":
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            continue
        if c == '"':
            j = i + 1
            while True:
                j = sql.find('"', j)
                if j < 0 or not sql.startswith('""', j):
                    break
                j += 2
            i = n if j < 0 else j + 1
            continue
        if c == "$":
            m = _DOLLAR_TAG.match(sql, i)
            # A tag cannot follow an identifier character ($1 params and names like a$b are not quotes).
            if m and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                tag = m.group(0)
                j = sql.find(tag, m.end())
                i = n if j < 0 else j + len(tag)
                continue
        i += 1
    flush(n)
    return out


# --------------------------------------------------------------------------------------------------
# Running stages
# --------------------------------------------------------------------------------------------------

_PLPGSQL_LINE = re.compile(r"PL/pgSQL function inline_code_block line (\d+)")


def _error_line(stmt: Statement, err: psycopg.Error) -> int:
    """The file line an error points at: the error's position, a DO block's line, or the statement."""
    diag = err.diag
    pos = diag.statement_position
    if pos and pos.isdigit():
        # 1-based character position within the statement text we sent.
        return stmt.line + stmt.text.count("\n", 0, max(int(pos) - 1, 0))
    context = diag.context or ""
    m = _PLPGSQL_LINE.search(context)
    if m and re.match(r"(?is)do\b", stmt.text):
        # Line 1 of an inline code block is the line holding the opening dollar quote.
        q = _DOLLAR_TAG.search(stmt.text)
        if q:
            return stmt.line + stmt.text.count("\n", 0, q.start()) + int(m.group(1)) - 1
    return stmt.line


def run_stage(conn: psycopg.Connection, path: str | Path) -> int:
    """Run one SQL file, statement by statement, in a single transaction.

    :param conn: an administrator's connection (the schema owner). If it is not in autocommit mode
        and a transaction is already open, the file runs in a savepoint of it.
    :param path: the SQL file.
    :returns: the number of statements executed.
    Raise StageError (a LabError) naming file, line and PostgreSQL's message if a statement fails;
    the file's changes are then rolled back. Raise LabError if the file cannot be read.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LabError(f"cannot read {_display(path)}: {e.strerror or e}") from None
    statements = split_statements(text)
    log.info("running %s (%d statements)", _display(path), len(statements))

    def on_notice(d: psycopg.errors.Diagnostic) -> None:
        # A file's WARNING is meant for the user (sql/01's uuidv7 polyfill on PostgreSQL 15-17):
        # logged as a warning, which reaches stderr even where nobody configured logging.
        level = logging.WARNING if d.severity_nonlocalized == "WARNING" else logging.INFO
        log.log(level, "%s: %s: %s", _display(path), d.severity, d.message_primary)

    conn.add_notice_handler(on_notice)
    try:
        with conn.transaction():
            with conn.cursor() as cur:
                for stmt in statements:
                    try:
                        cur.execute(stmt.text.encode())  # bytes: sent as-is, no placeholder parsing
                    except psycopg.Error as e:
                        raise StageError(
                            path, _error_line(stmt, e), e.sqlstate, (e.diag.message_primary or str(e)).strip()
                        ) from None
    finally:
        conn.remove_notice_handler(on_notice)
    return len(statements)


def build(conn: psycopg.Connection, *, through: str | None = None, stages: Sequence[Stage] | None = None) -> list[Stage]:
    """Apply the stages in order (01..05, then the seed data), each in its own transaction.

    Idempotent: every file can run again without error or change.
    :param through: the key of the last stage to apply (``"01"`` .. ``"05"``, ``"seed"``); None
        applies all. A bare number works too (``"3"``, ``3``).
    :param stages: the list to run instead of `STAGES` (tests).
    :returns: the stages applied.
    Raise LabError for a server older than `db.MIN_SERVER_VERSION` (before anything runs) or an unknown
    ``through``; StageError (and stop) when a file fails.
    """
    db.require_supported_server(conn)
    todo = list(STAGES if stages is None else stages)
    if through is not None:
        key = str(through).strip().lower()
        if key.isdigit():
            key = f"{int(key):02d}"
        keys = [s.key for s in todo]
        if key not in keys:
            raise LabError(f"unknown stage {through!r}; expected one of: {', '.join(keys)}")
        todo = todo[: keys.index(key) + 1]
    for stage in todo:
        run_stage(conn, stage.path)
    return todo
