"""Shared fixtures: one real PostgreSQL server per session, a fresh database per test.

The server is ``LAB_TEST_DSN`` when set (any PostgreSQL 15+ where the DSN's user may create databases
and roles), else an embedded server of its own (``.lab/test-pgdata``, port ``LAB_TEST_PORT`` or 54339),
so the tests never touch the course database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from labhelpers import db
from labhelpers.errors import LabError

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_ambient_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests say which server they mean; a developer's LAB_DSN or DATABASE_URL must not leak in."""
    monkeypatch.delenv("LAB_DSN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """Admin DSN (database ``postgres``) of the session's server; stops the run if it is unreachable."""
    external = os.environ.get("LAB_TEST_DSN")
    if external:
        dsn = db.with_dbname(external, "postgres")
    else:
        server = db.EmbeddedServer(PROJECT / ".lab" / "test-pgdata", int(os.environ.get("LAB_TEST_PORT", "54339")))
        try:
            server.up()
        except LabError as e:
            pytest.exit(f"cannot start the embedded test server: {e}", returncode=3)
        dsn = server.dsn("postgres")
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as e:
        pytest.exit(f"the test server is unreachable at {db.redact(dsn)}: {str(e).strip()}", returncode=3)
    yield dsn


def new_database(server_dsn: str, *, template: str | None = None) -> str:
    """Create a uniquely named database on the test server; return its admin DSN."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    db.create_database(server_dsn, name, template=template)
    return db.with_dbname(server_dsn, name)


@pytest.fixture
def fresh_dsn(server_dsn: str) -> Iterator[str]:
    """Admin DSN of a new, empty database, dropped after the test."""
    dsn = new_database(server_dsn)
    yield dsn
    db.drop_database(server_dsn, db.dbname_of(dsn))


# --------------------------------------------------------------------------------------------------
# A built database: the whole schema and seed data, built once per session, copied per test
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def built_template(server_dsn: str) -> Iterator[str]:
    """Name of a template database holding every stage (01..05) and the seed data, built once per session.

    Copy it with `new_database(server_dsn, template=...)`; never connect to it while a copy is made
    (CREATE DATABASE ... TEMPLATE needs it idle).
    """
    from labhelpers import stages

    name = f"tmpl_{uuid.uuid4().hex[:12]}"
    db.create_database(server_dsn, name)
    try:
        with psycopg.connect(db.with_dbname(server_dsn, name), autocommit=True) as conn:
            stages.build(conn)
    except BaseException:
        db.drop_database(server_dsn, name)
        raise
    yield name
    db.drop_database(server_dsn, name)


@pytest.fixture
def built_dsn(server_dsn: str, built_template: str) -> Iterator[str]:
    """Admin DSN of a fresh copy of the built database (schema + seed), dropped after the test."""
    dsn = new_database(server_dsn, template=built_template)
    yield dsn
    db.drop_database(server_dsn, db.dbname_of(dsn))


@pytest.fixture(scope="module")
def shared_built_dsn(server_dsn: str, built_template: str) -> Iterator[str]:
    """Like `built_dsn`, one copy per test module: for tests that read, or roll back what they write."""
    dsn = new_database(server_dsn, template=built_template)
    yield dsn
    db.drop_database(server_dsn, db.dbname_of(dsn))
