"""The database layer: DSN resolution, the embedded server's lifecycle, connections, bad input."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest

from labhelpers import db
from labhelpers.errors import LabError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- DSN resolution -------------------------------------------------------------------------------


def test_explicit_dsn_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_DSN", "postgresql://lab@h1/a")
    monkeypatch.setenv("DATABASE_URL", "postgresql://url@h2/b")
    assert db.resolve_dsn("postgresql://explicit@h0/c") == "postgresql://explicit@h0/c"


def test_lab_dsn_wins_over_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_DSN", "postgresql://lab@h1/a")
    monkeypatch.setenv("DATABASE_URL", "postgresql://url@h2/b")
    assert db.resolve_dsn() == "postgresql://lab@h1/a"


def test_database_url_is_used_when_lab_dsn_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_DSN", "")
    monkeypatch.setenv("DATABASE_URL", "postgresql://url@h2/b")
    assert db.resolve_dsn() == "postgresql://url@h2/b"


def test_embedded_server_is_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAB_PGDATA", str(tmp_path / "pgdata"))
    monkeypatch.setenv("LAB_PORT", "54999")
    dsn = db.resolve_dsn(start=False)
    assert dsn == "postgresql://postgres:postgres_password@127.0.0.1:54999/mastery_lab"
    assert not (tmp_path / "pgdata").exists(), "start=False must not create anything"


def test_malformed_dsn_is_a_one_line_error() -> None:
    with pytest.raises(LabError, match="invalid DSN"):
        db.resolve_dsn("host=x port")


def test_redact_hides_passwords() -> None:
    assert db.redact("postgresql://u:secret@h:5/d") == "postgresql://u:***@h:5/d"
    assert "secret" not in db.redact("host=h user=u password=secret dbname=d")


# ---- connections and bad input --------------------------------------------------------------------


def test_connect_as_admin_reaches_the_database(fresh_dsn: str) -> None:
    with db.connect(fresh_dsn) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == db.dbname_of(fresh_dsn)


def test_wrong_password_is_a_clear_error(server_dsn: str) -> None:
    bad = psycopg.conninfo.make_conninfo(server_dsn, password="wrong")
    if "127.0.0.1" not in bad and "localhost" not in bad:
        pytest.skip("the test server does not use password authentication")
    with pytest.raises(LabError, match="password authentication failed") as err:
        db.connect(bad)
    assert "wrong" not in str(err.value), "the password must not be echoed"


def test_unknown_database_is_a_clear_error(server_dsn: str) -> None:
    with pytest.raises(LabError, match='database "no_such_db_xyz" does not exist'):
        db.connect(db.with_dbname(server_dsn, "no_such_db_xyz"))


def test_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(LabError, match="nothing listens there"):
        db.connect(f"postgresql://postgres:x@127.0.0.1:{free_port()}/mastery_lab")


def test_app_role_before_the_rls_stage_is_a_clear_error(scratch_server: db.EmbeddedServer) -> None:
    scratch_server.up()  # a server of its own: roles are cluster-wide, other tests create app_user
    with pytest.raises(LabError, match="role app_user does not exist yet"):
        db.connect(scratch_server.dsn(), role="app_user")


def test_unknown_role_is_refused(fresh_dsn: str) -> None:
    with pytest.raises(LabError, match="unknown role"):
        db.connect(fresh_dsn, role="postgres2")


def test_reset_drops_and_recreates_only_the_named_database(fresh_dsn: str) -> None:
    with db.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE keepme (x int)")
    message = db.reset_database(fresh_dsn)
    assert message.startswith(f"dropped database {db.dbname_of(fresh_dsn)}")
    with db.connect(fresh_dsn) as conn:
        assert conn.execute("SELECT to_regclass('keepme')").fetchone()[0] is None


def test_reset_refuses_the_maintenance_database(server_dsn: str) -> None:
    with pytest.raises(LabError, match="refusing"):
        db.reset_database(server_dsn)


# ---- the embedded server's lifecycle --------------------------------------------------------------


@pytest.fixture
def scratch_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = db.EmbeddedServer(tmp_path / "pgdata", free_port())
    yield server
    if server.is_running():
        server.down()


def test_up_is_idempotent_and_down_stops(scratch_server: db.EmbeddedServer) -> None:
    assert scratch_server.up() is True
    assert scratch_server.up() is False
    with psycopg.connect(scratch_server.dsn()) as conn:
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("18")
        assert conn.execute("SHOW jit").fetchone()[0] == "off"
    scratch_server.down()
    assert not scratch_server.is_running()
    with pytest.raises(LabError, match="not running"):
        scratch_server.down()
    # The data survives a restart.
    assert scratch_server.up() is True
    with psycopg.connect(scratch_server.dsn()) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "mastery_lab"


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = db.EmbeddedServer(tmp_path / "pgdata", port)
        with pytest.raises(LabError, match=f"port {port} .* in use"):
            server.up()
        assert not server.is_running()


def test_a_directory_that_is_not_postgresql_is_left_alone(tmp_path: Path) -> None:
    pgdata = tmp_path / "notes"
    pgdata.mkdir()
    (pgdata / "thesis.txt").write_text("precious")
    with pytest.raises(LabError, match="not a PostgreSQL data directory"):
        db.EmbeddedServer(pgdata, free_port()).up()
    assert (pgdata / "thesis.txt").read_text() == "precious"
    assert sorted(p.name for p in pgdata.iterdir()) == ["thesis.txt"]


def test_a_cluster_of_another_version_is_left_alone(tmp_path: Path) -> None:
    pgdata = tmp_path / "old"
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("16\n")
    with pytest.raises(LabError, match="PostgreSQL 16 cluster"):
        db.EmbeddedServer(pgdata, free_port()).up()
    assert (pgdata / "PG_VERSION").read_text() == "16\n"
