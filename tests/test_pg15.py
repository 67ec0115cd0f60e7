"""Which PostgreSQL: 15 is the oldest the lab supports; the schema and the isolation tests run on it.

The version gate (`db.MIN_SERVER_VERSION`, `stages.build`, `db.status`, the CLI) is tested on the
session's server seen through `VersionProxy`, a TCP proxy that changes only the version the server
reports at login, so a real server looks like PostgreSQL 14 (which this machine cannot install).

Where Debian's PostgreSQL 15 is installed (``/usr/lib/postgresql/15/bin``, or ``LAB_TEST_PG15_BINDIR``;
``.ci/run`` installs it), an `EmbeddedServer` of those binaries (``.lab/test-pg15data``, port
``LAB_TEST_PG15_PORT`` or 54341, left running like the session's server) gets the whole build through
the CLI (the uuidv7 polyfill's warning on stderr), then tests/test_isolation.py,
tests/test_isolation_property.py and tests/test_tenants.py run against it in a pytest subprocess.
Elsewhere those tests are skipped, saying why.

Cost, measured 2026-12-03 on 2 cores shared with other jobs: 1-2 min in all. The isolation subprocess
(59 tests; marked slow) takes 55-90 s, the CLI build on 15 7-13 s, the first start of the server
(initdb) about 4 s, the rest under 1 s.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from conftest import PROJECT, new_database
from labhelpers import db, stages
from labhelpers.cli import cli
from labhelpers.errors import LabError

PG15_BINDIR = Path(os.environ.get("LAB_TEST_PG15_BINDIR") or "/usr/lib/postgresql/15/bin")
ISOLATION_SUITES = ("tests/test_isolation.py", "tests/test_isolation_property.py", "tests/test_tenants.py")

needs_pg15 = pytest.mark.skipif(
    not (PG15_BINDIR / "postgres").exists(),
    reason=f"PostgreSQL 15 is not installed ({PG15_BINDIR / 'postgres'} is missing; Debian/Ubuntu: "
    "apt install postgresql-15, as .ci/run does, or set LAB_TEST_PG15_BINDIR)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------------
# A real server that reports another version
# --------------------------------------------------------------------------------------------------


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            s.close()


class VersionProxy:
    """A TCP proxy to a real server that changes one thing: the ``server_version`` it reports at login.

    libpq takes ``server_version_num`` (psycopg's ``conn.info.server_version``) from that report, so a
    client of the proxy talks to the real server and sees the version given. Clients must connect
    without TLS or GSS encryption (`dsn` says so), so the login is plain protocol messages.
    """

    def __init__(self, upstream_dsn: str, version: str) -> None:
        params = conninfo_to_dict(upstream_dsn)
        host = str(params.get("host") or "")
        if not host or host.startswith("/"):
            pytest.skip("the version proxy needs the test server on TCP")
        self.upstream_dsn = upstream_dsn
        self.upstream = (host, int(params.get("port") or 5432))
        self.version = version.encode()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def dsn(self) -> str:
        """The upstream DSN, through the proxy."""
        return make_conninfo(
            self.upstream_dsn, host="127.0.0.1", port=str(self.port), sslmode="disable", gssencmode="disable"
        )

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=_pipe, args=(client, server), daemon=True).start()
            threading.Thread(target=self._login, args=(server, client), daemon=True).start()

    def _login(self, server: socket.socket, client: socket.socket) -> None:
        """Forward the server's messages, rewriting its version report, up to ReadyForQuery; then pipe."""
        try:
            while True:
                head = _read_exactly(server, 5)
                kind, body = head[:1], _read_exactly(server, int.from_bytes(head[1:], "big") - 4)
                if kind == b"S" and body.startswith(b"server_version\0"):
                    body = b"server_version\0" + self.version + b"\0"
                client.sendall(kind + (len(body) + 4).to_bytes(4, "big") + body)
                if kind in (b"Z", b"E"):  # logged in, or refused
                    break
        except OSError:
            for s in (server, client):
                s.close()
            return
        _pipe(server, client)


@pytest.fixture
def pg14_dsn(fresh_dsn: str) -> Iterator[str]:
    """A fresh, empty database of the session's server, reached through a proxy that reports 14.12."""
    proxy = VersionProxy(fresh_dsn, "14.12")
    yield proxy.dsn()
    proxy.close()


def public_relations(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace").fetchone()[0])  # type: ignore[index]


# --------------------------------------------------------------------------------------------------
# The version gate
# --------------------------------------------------------------------------------------------------


def test_the_minimum_is_15() -> None:
    assert db.MIN_SERVER_VERSION == 150000
    db.check_server_version(150000)
    db.check_server_version(170006)
    db.check_server_version(180001)
    with pytest.raises(LabError, match=r"PostgreSQL 14\.12; this lab needs PostgreSQL 15 or later"):
        db.check_server_version(140012)
    with pytest.raises(LabError, match=r"PostgreSQL 9\.6\.24;"):
        db.check_server_version(90624)


def test_the_version_checked_is_the_servers(server_dsn: str) -> None:
    with psycopg.connect(server_dsn) as conn:
        reported = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
        assert db.require_supported_server(conn) == reported


def test_the_proxy_changes_only_the_version(pg14_dsn: str, fresh_dsn: str) -> None:
    with psycopg.connect(pg14_dsn) as conn:
        assert conn.info.server_version == 140012
        assert conn.execute("SELECT current_database()").fetchone()[0] == db.dbname_of(fresh_dsn)  # type: ignore[index]


def test_build_refuses_an_older_server_and_builds_nothing(pg14_dsn: str, fresh_dsn: str) -> None:
    with psycopg.connect(pg14_dsn) as conn:
        with pytest.raises(LabError, match=r"PostgreSQL 14\.12; this lab needs PostgreSQL 15 or later"):
            stages.build(conn)
    assert public_relations(fresh_dsn) == 0


def test_cli_build_on_an_older_server_is_one_line(pg14_dsn: str, fresh_dsn: str) -> None:
    result = CliRunner().invoke(cli, ["build", "--dsn", pg14_dsn])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        "Error: the server runs PostgreSQL 14.12; this lab needs PostgreSQL 15 or later (sql/01 uses "
        "ON DELETE SET NULL (column), new in 15); without --dsn/LAB_DSN the lab runs its own PostgreSQL 18"
    ]
    assert public_relations(fresh_dsn) == 0


def test_cli_status_of_an_older_server_is_one_line(pg14_dsn: str) -> None:
    result = CliRunner().invoke(cli, ["db", "status", "--dsn", pg14_dsn])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "PostgreSQL 14.12; this lab needs PostgreSQL 15 or later" in lines[0], lines


def test_a_bindir_without_postgres_is_a_clear_error(tmp_path: Path) -> None:
    server = db.EmbeddedServer(tmp_path / "pgdata", free_port(), bindir=tmp_path)
    with pytest.raises(LabError, match="no runnable PostgreSQL server in"):
        server.up()
    assert not (tmp_path / "pgdata").exists()


# --------------------------------------------------------------------------------------------------
# PostgreSQL 15
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg15_server() -> db.EmbeddedServer:
    """Debian's PostgreSQL 15 as an EmbeddedServer of its own, started once (and left running)."""
    if not (PG15_BINDIR / "postgres").exists():
        pytest.skip(f"PostgreSQL 15 is not installed ({PG15_BINDIR / 'postgres'} is missing)")
    server = db.EmbeddedServer(
        PROJECT / ".lab" / "test-pg15data", int(os.environ.get("LAB_TEST_PG15_PORT", "54341")), bindir=PG15_BINDIR
    )
    try:
        server.up()
    except LabError as e:
        pytest.fail(f"cannot start PostgreSQL 15 from {PG15_BINDIR}: {e}")
    return server


@pytest.fixture
def pg15_dsn(pg15_server: db.EmbeddedServer) -> Iterator[str]:
    """Admin DSN of a new, empty database on the PostgreSQL 15 server, dropped after the test."""
    admin = pg15_server.dsn("postgres")
    dsn = new_database(admin)
    yield dsn
    db.drop_database(admin, db.dbname_of(dsn))


@needs_pg15
def test_pg15_runs_as_an_embedded_server(pg15_server: db.EmbeddedServer) -> None:
    assert pg15_server.major == 15
    with psycopg.connect(pg15_server.dsn()) as conn:
        assert conn.info.server_version // 10000 == 15
        assert conn.execute("SHOW jit").fetchone()[0] == "off"  # type: ignore[index]  # lab.conf applies
        assert conn.execute("SHOW timezone").fetchone()[0] == "UTC"  # type: ignore[index]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(make_conninfo(pg15_server.dsn(), password="wrong"), connect_timeout=5)
    if os.geteuid() == 0:
        owner = (pg15_server.pgdata / "postmaster.pid").stat().st_uid
        assert owner == pwd.getpwnam("pgserver").pw_uid, "as root, the server runs as the pgserver user"


@needs_pg15
def test_pg15_binaries_leave_a_cluster_of_another_version_alone(tmp_path: Path) -> None:
    (tmp_path / "PG_VERSION").write_text("18\n")
    with pytest.raises(LabError, match="PostgreSQL 18 cluster; this server runs PostgreSQL 15"):
        db.EmbeddedServer(tmp_path, free_port(), bindir=PG15_BINDIR).up()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PG_VERSION"]


@needs_pg15
def test_build_on_pg15_polyfills_uuidv7_with_a_warning(pg15_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    # The user's path: the CLI, with nobody configuring logging; the warning must reach stderr.
    proc = subprocess.run(
        [sys.executable, "-c", "from labhelpers.cli import main; main()", "build", "--dsn", pg15_dsn],
        capture_output=True, text=True, timeout=600, cwd=PROJECT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "applied seed" in proc.stdout
    assert re.search(r"sql/01-foundation-schema\.sql: WARNING: PostgreSQL 15\.\d+ .*has no uuidv7\(\): "
                     r"created the polyfill public\.uuidv7\(\)", proc.stderr), proc.stderr
    # Again, in-process: nothing to polyfill any more, and no warning about it.
    with caplog.at_level(logging.INFO, logger="labhelpers"), psycopg.connect(pg15_dsn, autocommit=True) as conn:
        stages.build(conn)
        assert not [r for r in caplog.records if "uuidv7" in r.getMessage()]
        version, variant, ms = conn.execute(
            """SELECT substr(u::text, 15, 1), substr(u::text, 20, 1),
                      ('x' || substr(replace(u::text, '-', ''), 1, 12))::bit(48)::bigint
                 FROM (SELECT uuidv7() AS u) AS t"""
        ).fetchone()  # type: ignore[misc]
        assert (version, variant in "89ab") == ("7", True)
        assert abs(ms - time.time() * 1000) < 60_000, "the first 48 bits are the time in ms"
        assert conn.execute("SELECT count(*) FROM tenants").fetchone()[0] == 3  # type: ignore[index]


@needs_pg15
@pytest.mark.slow
def test_isolation_suites_pass_on_pg15(pg15_server: db.EmbeddedServer) -> None:
    env = {**os.environ, "LAB_TEST_DSN": pg15_server.dsn("postgres")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ISOLATION_SUITES],
        capture_output=True, text=True, timeout=1800, cwd=PROJECT, env=env,
    )
    out = proc.stdout + proc.stderr
    summary = out[out.find("short test summary info"):] if "short test summary info" in out else out[-4000:]
    assert proc.returncode == 0, f"on PostgreSQL 15 ({db.redact(env['LAB_TEST_DSN'])}):\n{summary}"
    assert re.search(r"\d+ passed", out), out[-2000:]
